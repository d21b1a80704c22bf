"""The package namespace: every public name and submodule resolves; nothing private is shown."""

from __future__ import annotations

import importlib

import pytest

import dermctx


@pytest.mark.parametrize("name", sorted(dermctx._API))
def test_every_public_name_resolves_from_its_module(name):
    value = getattr(dermctx, name)
    assert value is getattr(importlib.import_module(dermctx._API[name]), name)


def test_submodules_are_reachable_as_attributes_and_dir_shows_only_the_api():
    for name in ("cohort", "metrics", "io", "models", "scoring", "formatting", "checkpoints"):
        assert getattr(dermctx, name).__name__ == f"dermctx.{name}"
    shown = set(dir(dermctx))
    assert {"ContextRanker", "read_table", "cohort", "__version__"} <= shown
    assert not shown & {"Any", "TYPE_CHECKING", "importlib", "annotations"}
    assert set(dermctx.__all__) <= shown
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dermctx.nope  # noqa: B018
