"""The README's tour runs as written, and every shell command the docs name exists.

The tour is the fenced ``python`` blocks under README.md's "## A tour" heading, in order:
:data:`TOUR_BLOCKS` names them. Each is run (the slow tests, by hand: ``pytest -m slow
tests/test_readme.py``) in a fresh namespace inside a temporary folder, as a reader would run it:

* ``images`` needs the SIIM-ISIC 2020 metadata CSV and a folder of its JPEGs at ``isic2020/``
  (here a link to ``../shared/data/isic2020``, whose ``images/`` holds 139 of them); it skips with
  the reason when they are absent;
* ``ranking`` reads only the table embedded in the package, so it always runs.

Before running a block the test replaces a few keyword values, listed in :data:`SUBSTITUTIONS`
with the reason for each: settings sized for a CPU and no network. Nothing else is changed, and
each replaced text must still be in the block (a README edit that drops one fails here rather
than quietly running the realistic setting). Line numbers in a traceback are README.md's.

The fast tests check without data that the blocks compile, that every ``dermctx.NAME`` they use
exists and every call's arguments fit its signature, and that every ``dermctx COMMAND`` written
in README.md, examples/README.md and docs/ is a command whose ``--help`` lists the options shown.
"""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import dermctx

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: The tour's python blocks, in README order.
TOUR_BLOCKS = ("images", "ranking")

#: What the test replaces in each tour block before running it (old text -> new text), and why.
SUBSTITUTIONS: dict[str, dict[str, str]] = {
    "images": {
        "image_size=256": "image_size=64",  # CPU-sized images (training and embedding)
        "epochs=3": "epochs=1",  # one epoch per fold
        "pretrained=True": "pretrained=False",  # tests never use the network (no ImageNet download)
    },
    "ranking": {
        "seeds=(0, 1, 2)": "seeds=(0,)",  # one seed of the 5-fold benchmark instead of three
    },
}


# --- reading the README ------------------------------------------------------------------------


def _tour() -> dict[str, tuple[int, str]]:
    """Tour block name -> (README line number of its first code line, code)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## A tour\n")
    end = text.find("\n## ", start + 1)
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text[start:end], flags=re.S | re.M):
        first_line = text.count("\n", 0, start + m.start(1)) + 1
        blocks.append((first_line, m.group(1)))
    assert len(blocks) == len(TOUR_BLOCKS), (
        f"README.md's tour has {len(blocks)} python blocks; tests/test_readme.py names "
        f"{len(TOUR_BLOCKS)} ({TOUR_BLOCKS}): update TOUR_BLOCKS and SUBSTITUTIONS")
    return dict(zip(TOUR_BLOCKS, blocks, strict=True))


def _substituted(name: str) -> tuple[int, str]:
    first_line, code = _tour()[name]
    for old, new in SUBSTITUTIONS[name].items():
        assert old in code, (f"README tour block {name!r} no longer contains {old!r}: update "
                             "SUBSTITUTIONS in tests/test_readme.py")
        assert old.count("\n") == new.count("\n")  # README line numbers stay right
        code = code.replace(old, new)
    return first_line, code


def _run(name: str) -> dict[str, Any]:
    """Run a tour block, substituted, in a fresh namespace in the current folder."""
    first_line, code = _substituted(name)
    namespace: dict[str, Any] = {"__name__": f"readme_tour_{name}"}
    exec(compile("\n" * (first_line - 1) + code, str(README), "exec"), namespace)
    return namespace


# --- fast checks: names and signatures ---------------------------------------------------------


class _Instance:
    """An object of a dermctx class, as far as the static check can tell."""

    def __init__(self, cls: type) -> None:
        self.cls = cls


class _Method:
    def __init__(self, function: Any, owner: type) -> None:
        self.function, self.owner = function, owner


def _returned(function: Any) -> Any:
    """An _Instance of the dermctx class ``function`` is annotated to return, else None."""
    try:
        hint = typing.get_type_hints(function).get("return")
    except Exception:  # annotations that cannot be evaluated: not checked further
        return None
    if inspect.isclass(hint) and hint.__module__.startswith("dermctx"):
        return _Instance(hint)
    return None


def _resolve(node: ast.AST, names: dict[str, Any], where: str) -> Any:
    """The dermctx object an expression names, an _Instance/_Method, or None when unknown."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names, where)
        if base is None:
            return None
        if isinstance(base, _Instance):
            attr = inspect.getattr_static(base.cls, node.attr, None)
            if callable(attr) and not inspect.isclass(attr):
                return _Method(getattr(base.cls, node.attr), base.cls)
            return None  # a fitted attribute or data field: not checked
        assert hasattr(base, node.attr), f"{where}: {ast.unparse(node)} does not exist"
        return getattr(base, node.attr)
    if isinstance(node, ast.Call):
        func = _resolve(node.func, names, where)
        if inspect.isclass(func):
            return _Instance(func)
        if isinstance(func, _Method):
            return _returned(func.function)
        if callable(func):
            return _returned(func)
    return None


def _check_call(node: ast.Call, names: dict[str, Any], where: str) -> None:
    func = _resolve(node.func, names, where)
    if isinstance(func, _Method):
        signature = inspect.signature(func.function)
        params = list(signature.parameters.values())[1:]  # without self
        signature = signature.replace(parameters=params)
    elif callable(func) and not isinstance(func, _Instance):
        signature = inspect.signature(func)
    else:
        return
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        return
    try:
        signature.bind(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})
    except TypeError as e:
        raise AssertionError(f"{where}: {ast.unparse(node)[:80]} does not fit {signature}: {e}") from e


def test_tour_blocks_compile_and_match_the_api():
    for name, (first_line, code) in _tour().items():
        tree = ast.parse("\n" * (first_line - 1) + code, str(README))
        names: dict[str, Any] = {"dermctx": dermctx}
        for stmt in tree.body:
            where = f"README.md line {stmt.lineno} (tour block {name!r})"
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call):
                    _check_call(node, names, where)
            if isinstance(stmt, ast.Assign):
                value = _resolve(stmt.value, names, where)
                for target in stmt.targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name):
                            names[n.id] = value if isinstance(target, ast.Name) else None
        # every substitution applies and keeps the block valid python
        compile(_substituted(name)[1], str(README), "exec")


def test_static_check_catches_a_wrong_keyword():
    tree = ast.parse("cv = dermctx.PatientKFold(n_splits=5, seed=0)\nx = dermctx.NoSuchThing()")
    names: dict[str, Any] = {"dermctx": dermctx}
    with pytest.raises(AssertionError, match="seed"):
        _check_call(tree.body[0].value, names, "here")  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="NoSuchThing"):
        _check_call(tree.body[1].value, names, "here")  # type: ignore[attr-defined]


# --- fast checks: the shell commands the docs name ---------------------------------------------

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", flags=re.S | re.M)
# `dermctx CMD ...` at the start of a line or inline code span (after an optional "$ "), or after
# "&&"; README's list "dermctx validate | describe | ..." names every command after the first
_COMMAND = re.compile(
    r"(?:^(?:\$ )?|&& )(?:python -m )?dermctx ([a-z][a-z-]*)((?:[ \n]*\|[ \n]*[a-z][a-z-]*)*)(.*)$",
    flags=re.M)


def _doc_commands() -> dict[str, dict[str, set[str]]]:
    """Command -> {doc file: the --options written with it there}."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        code = [body for lang, body in _FENCE.findall(text) if lang.strip() not in ("python", "py")]
        code += re.findall(r"`([^`]+)`", _FENCE.sub("", text))
        for snippet in code:
            for m in _COMMAND.finditer(snippet):
                options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(3)))
                listed = re.findall(r"[a-z][a-z-]*", m.group(2))
                for command in [m.group(1), *listed]:
                    found.setdefault(command, {}).setdefault(path.relative_to(ROOT).as_posix(), set())
                found[m.group(1)][path.relative_to(ROOT).as_posix()] |= options
    return found


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from dermctx.cli import main

    try:
        code = main([*argv, "--help"])
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return int(code or 0), captured.out + captured.err


def test_every_command_in_the_docs_exists(capsys):
    commands = _doc_commands()
    assert {"demo", "validate", "bench"} <= set(commands)  # the parser still finds them
    missing = {}
    for command, files in sorted(commands.items()):
        code, _ = _help(capsys, command)
        if code != 0:
            missing[command] = sorted(files)
    assert not missing, f"commands named in the docs that `dermctx --help` does not list: {missing}"


def test_every_option_in_the_docs_exists(capsys):
    unknown = []
    for command, files in sorted(_doc_commands().items()):
        code, text = _help(capsys, command)
        if code != 0:
            continue  # reported by test_every_command_in_the_docs_exists
        for doc, options in sorted(files.items()):
            unknown += [f"{doc}: dermctx {command} {option}" for option in sorted(options)
                        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)]
    assert not unknown, "options the docs show that the command's --help does not list:\n" + "\n".join(unknown)


# --- the tour, run (slow) ------------------------------------------------------------------------


@pytest.mark.slow  # trains 5 fold CNNs on the 139 shared JPEGs: several minutes on 2 CPU cores
def test_tour_images(isic_dir, isic_images, tmp_path, monkeypatch):
    (tmp_path / "isic2020").symlink_to(isic_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    ns = _run("images")
    table, pairs = ns["table"], ns["pairs"]
    n_images = len(list(isic_images.glob("*.jpg")))
    assert list(pairs.columns) == ["image_id_1", "image_id_2", "kind", "distance", "method"]
    assert pairs.attrs["n_images"] == n_images  # every image found was hashed
    assert len(table) == n_images and table["cnn_score"].between(0, 1).all()
    assert sum(c.startswith("emb_") for c in table.columns) == 1280  # efficientnet_b0's width
    assert (tmp_path / "cnn").is_dir() and (tmp_path / "emb").is_dir()


@pytest.mark.slow  # a 5-fold benchmark and a report on 1,440 patients: minutes on 2 CPU cores
def test_tour_ranking(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = _run("ranking")
    out = capsys.readouterr().out
    test, patient = ns["test"], ns["patient"]
    assert patient in set(test["patient_id"]) and test.loc[test["patient_id"] == patient, "target"].any()
    assert len(ns["proba"]) == len(test)
    n_lesions = int((test["patient_id"] == patient).sum())
    assert sum(image_id in out for image_id in test.loc[test["patient_id"] == patient, "image_id"]) >= 1
    assert n_lesions >= 1 and "ContextRanker" in out and "CNN alone" in out
    assert isinstance(ns["result"].summary(), pd.DataFrame)
    assert (tmp_path / "report" / "report.html").is_file()
