"""Render a dermctx ``report.html`` to a PNG with headless Chromium (run by hand, not in CI).

Usage (from the repository root)::

    apt-get install -y chromium          # once; or any Chrome/Chromium on PATH
    dermctx demo --out dermctx-demo       # or dermctx bench ...; writes report.html
    python benchmarks/render_report.py dermctx-demo/report.html --out benchmarks/results/report.png

The report is self-contained (plots and thumbnails are embedded), so Chromium needs no network:
it is started with ``--headless`` and a throwaway profile, and the page is loaded as a file URL.
The PNG is one tall screenshot of the whole page (``--height`` pixels; the default fits the demo).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser(explicit: str | None = None) -> str:
    for name in ([explicit] if explicit else []) + list(BROWSERS):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise SystemExit(f"no Chromium found (tried {list(BROWSERS)}); install one, e.g. "
                     "'apt-get install -y chromium', or pass --browser PATH")


def render(html: Path, png: Path, *, width: int = 1200, height: int = 6000,
           browser: str | None = None, timeout: float = 120.0) -> Path:
    """Screenshot ``html`` into ``png`` (width x height CSS pixels); returns ``png``."""
    html, png = html.resolve(), png.resolve()
    if not html.is_file():
        raise SystemExit(f"{html}: no such file")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dermctx-chromium-") as profile:
        cmd = [
            find_browser(browser), "--headless", "--no-sandbox", "--disable-gpu",
            "--hide-scrollbars", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={png}", html.as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not png.is_file():
        raise SystemExit(f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="report.html to render")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: beside it)")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--browser", default=None, help="path or name of the Chromium binary")
    args = parser.parse_args()
    out = args.out or args.html.with_suffix(".png")
    path = render(args.html, out, width=args.width, height=args.height, browser=args.browser)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)", file=sys.stderr)


if __name__ == "__main__":
    main()
