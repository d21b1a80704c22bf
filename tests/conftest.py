"""Shared fixtures. Real-data tests skip with a reason when ``../shared/data`` is absent."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub in tests

import pytest

SHARED_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
).resolve()
FIELDCASES = Path(
    os.environ.get("DERMCTX_FIELDCASES", SHARED_DATA.parent / "fieldcases")
).resolve()


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (set DERMCTX_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public data (``../shared/data``); skips when absent."""
    return _shared("")


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    """``../shared/data/isic2020``; skips when absent."""
    return _shared("isic2020")


@pytest.fixture(scope="session")
def isic_images() -> Path:
    """The folder of 139 real ISIC 2020 JPEGs (with ``manifest.csv``); skips when absent."""
    return _shared("isic2020/images")


@pytest.fixture(scope="session")
def ham_dir() -> Path:
    """``../shared/data/ham10000``; skips when absent."""
    return _shared("ham10000")


@pytest.fixture(scope="session")
def fieldcases() -> Path:
    """``../shared/fieldcases``: small real-world inputs dermctx once got wrong; skips when absent."""
    if not FIELDCASES.exists():
        pytest.skip(f"field cases not available: {FIELDCASES} is missing (set DERMCTX_FIELDCASES)")
    return FIELDCASES


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (repeatable sums; no oversubscription), then restore."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance of 2 CPUs for the Ray backends (skips when Ray Data is not installed)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    if started:
        ray.shutdown()
