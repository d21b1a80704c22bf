"""``python -m dermctx`` runs the same command line as the ``dermctx`` script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dermctx", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def test_python_m_dermctx_help_exits_0(tmp_path: Path) -> None:
    done = _run("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: dermctx")
    for command in ("validate", "dedup", "embed", "fit", "score"):
        assert command in done.stdout


def test_python_m_dermctx_passes_the_exit_code_on(tmp_path: Path) -> None:
    done = _run("no-such-command", cwd=tmp_path)
    assert done.returncode == 2
    assert "no-such-command" in done.stderr
