"""Look at the patient page as a person would: render it at 1200 px wide in headless Chromium.

Builds a page with :func:`dermctx.write_patient_page` from real SIIM-ISIC 2020 JPEGs in
``../shared/data/isic2020/images`` with **fake scores** (a layout check: the page says so in its
title; no model is run), plus one unreadable file to show the placeholder and the "Could not be
scored" section, and screenshots it into ``benchmarks/results/patient_page_1200px.png``::

    apt-get install -y chromium                      # once; or any Chrome/Chromium on PATH
    python benchmarks/patient_page_screenshot.py     # [--n 6] [--width 1200] [--out PNG]

The screenshot is the whole page (the empty bottom of the window trimmed), reduced to a 256-colour
palette when that is needed to stay under about 1 MB. Exits 0 with a message, writing nothing,
when Chromium or the images are missing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _real_data import SHARED  # noqa: E402
from render_report import BROWSERS, render  # noqa: E402

MAX_BYTES = 1_000_000


def fake_scores(ids: list[str], seed: int = 0) -> pd.DataFrame:
    """Scores shaped like ``ContextRanker.score_patient``'s, drawn at random: layout only."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    score = np.sort(rng.beta(0.6, 6.0, n))[::-1]
    score[-1] = 4e-5  # shown as "< 0.1%", never 4e-05
    cnn = rng.permutation(score) * rng.uniform(0.5, 1.5, n)
    return pd.DataFrame({
        "image_id": ids, "score": score, "rank": np.arange(1, n + 1),
        "cnn_score": np.clip(cnn, 0, 1),
        "explanation": [
            "raises: appearance (embedding) further from their centre than "
            f"{n - 1 - k} of the patient's {n - 1} other lesions; CNN score relative to the "
            "patient's other lesions: higher than 3 of 5 | lowers: tbp_lv_areaMM2 lower than "
            "4 of the patient's 5 other lesions (-1.2 SD from their mean)" for k in range(n)],
        "raised_by": [ids[(k + 1) % n] for k in range(n)],
        "raised_by_change": rng.uniform(0, 0.05, n),
        "lowered_by": [ids[(k + 2) % n] for k in range(n)],
        "lowered_by_change": -rng.uniform(0, 0.002, n),
        "least_similar": [ids[(k + 3) % n] for k in range(n)],
        "most_similar": [[ids[(k + 1) % n], ids[(k + 4) % n]] for k in range(n)],
    })


def trim_and_shrink(png: Path, background: tuple[int, int, int] = (247, 247, 245)) -> int:
    """Cut the empty bottom of the screenshot; quantise it if it is over :data:`MAX_BYTES`."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    rows = np.nonzero((np.abs(rgb.astype(int) - background).sum(axis=2) > 6).any(axis=1))[0]
    bottom = int(rows[-1]) + 24 if len(rows) else rgb.shape[0]
    out = Image.fromarray(rgb[: min(bottom, rgb.shape[0])])
    out.save(png, optimize=True)
    if png.stat().st_size > MAX_BYTES:
        # octree + Floyd-Steinberg keeps the lesions' colours smoother than median cut
        out.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG
                     ).save(png, optimize=True)
    return png.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED / "isic2020" / "images")
    parser.add_argument("--n", type=int, default=6, help="real JPEGs on the page")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "patient_page_1200px.png")
    parser.add_argument("--html", type=Path, default=None, help="also keep the page here")
    args = parser.parse_args()

    if not any(shutil.which(b) for b in BROWSERS):
        print(f"skipped: no Chromium found (tried {list(BROWSERS)}); install one, e.g. "
              "'apt-get install -y chromium'", file=sys.stderr)
        return 0
    jpegs = sorted(args.images.glob("ISIC_*.jpg"))[: args.n]
    if len(jpegs) < args.n:
        print(f"skipped: the real JPEGs are missing ({len(jpegs)} of {args.n} in {args.images})",
              file=sys.stderr)
        return 0

    import dermctx

    with tempfile.TemporaryDirectory(prefix="dermctx-page-") as tmp:
        broken = Path(tmp) / "ISIC_broken.jpg"
        broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        images = {p.stem: p for p in jpegs} | {"ISIC_broken": broken}
        scores = fake_scores(list(images))
        page = dermctx.write_patient_page(
            scores, args.html or Path(tmp) / "patient.html", images=images,
            patient={"patient_id": "layout-check", "age": 55, "sex": "female",
                     "n_images": f"{len(images)} files (real ISIC 2020 JPEGs, not one patient's)"},
            provenance={"model": "none: fake scores for a layout check",
                        "trained_on": "nothing (no model was run)",
                        "held_out_auc": (0.912, 0.888, 0.948), "created": "not a model"},
            title="Layout check (fake scores): patient page")
        png = render(page, args.out, width=args.width, height=6000)
        size = trim_and_shrink(png)
    print(f"wrote {png} ({size / 1e3:.0f} kB) from {page.name} with {len(jpegs)} real JPEGs and "
          "fake scores", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
