"""Benchmark: load a 6000x4000 ISIC 2020 original to 384 px, dermctx vs Pillow's full decode.

Part 1, speed and quality. For every 6000x4000 image in ``../shared/data/isic2020/images``
(66 images, 59 patients), side by side in one run and interleaved image by image (so that machine
load hits every method alike):

* reference: ``Image.open`` -> ``exif_transpose`` -> full decode -> ``resize((384, 384), BICUBIC)``
* ``load_image(path, 384, aspect="squash")`` with the default ``DRAFT_OVERSAMPLE`` (1.25): DCT-
  domain draft decode at the smallest scale >= 1.25x the target, then the same BICUBIC resize
* the same with ``DRAFT_OVERSAMPLE`` 2.0 and 1.0, for comparison

Each timing is the median of ``--repeats`` runs (one thread: Pillow decodes an image on one core).
Reported: total-time speedup and PSNR against the reference, with patient-bootstrap 95% CIs
(patients resampled with replacement, 2000 times).

Part 2, how ``DRAFT_OVERSAMPLE`` was chosen: worst-case PSNR against a full decode over up to 3
images of every image geometry in the folder x output sizes 224-512 x the three aspect modes.

Run by hand::

    nice python benchmarks/image_load.py [--repeats 3]

Writes ``benchmarks/results/images.md`` and ``images.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

import dermctx.io.images as images_module
from dermctx.io.images import load_image

SHARED = Path(os.environ.get("DERMCTX_SHARED_DATA",
                             Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 384


def full_decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        return np.asarray(im.resize((SIZE, SIZE), Image.Resampling.BICUBIC))


DEFAULT_OVERSAMPLE = images_module.DRAFT_OVERSAMPLE
OVERSAMPLES = (DEFAULT_OVERSAMPLE, 2.0, 1.0)


def dermctx_load(path: Path, oversample: float, size: int = SIZE, aspect: str = "squash"
                 ) -> np.ndarray:
    images_module.DRAFT_OVERSAMPLE = oversample
    try:
        return load_image(path, size, aspect=aspect)
    finally:
        images_module.DRAFT_OVERSAMPLE = DEFAULT_OVERSAMPLE


def reference(full: Image.Image, size: int, aspect: str) -> np.ndarray:
    """Full-resolution image -> the same geometry as load_image, with one BICUBIC resize."""
    tw, th = images_module._target_size(full.width, full.height, size, aspect)
    ref = np.asarray(full.resize((tw, th), Image.Resampling.BICUBIC))
    if aspect == "crop":
        top, left = (th - size) // 2, (tw - size) // 2
        return ref[top : top + size, left : left + size]
    if aspect == "pad":
        out = np.zeros((size, size, 3), np.uint8)
        top, left = (size - th) // 2, (size - tw) // 2
        out[top : top + th, left : left + tw] = ref
        return out
    return ref


def quality_sweep(folder: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    picks = manifest.sort_values("image_name").groupby(["w", "h"]).head(3)
    rows = []
    for rec in tqdm(picks.itertuples(), total=len(picks), desc="quality sweep", unit="img"):
        with Image.open(folder / rec.file) as im:
            full = ImageOps.exif_transpose(im).convert("RGB")
            full.load()
        for size in (224, 256, 384, 448, 512):
            for aspect in ("squash", "crop", "pad"):
                ref = reference(full, size, aspect)
                for ov in (1.0, 1.25, 1.5, 2.0):
                    out = dermctx_load(folder / rec.file, ov, size, aspect)
                    rows.append({"image_name": rec.image_name, "w": rec.w, "h": rec.h,
                                 "size": size, "aspect": aspect, "oversample": ov,
                                 "psnr": psnr(out, ref)})
    return pd.DataFrame(rows)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def patient_bootstrap(frame: pd.DataFrame, stat, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% CI of ``stat(frame)`` resampling patients with replacement."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in frame.groupby("patient_id")]
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(groups), len(groups))
        values.append(stat(pd.concat([groups[i] for i in pick])))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args()

    folder = SHARED / "isic2020" / "images"
    manifest = pd.read_csv(folder / "manifest.csv")
    big = manifest[(manifest["w"] == 6000) & (manifest["h"] == 4000)].sort_values("image_name")
    if args.limit:
        big = big.head(args.limit)
    load_before = load_average()
    rows = []
    for rec in tqdm(big.itertuples(), total=len(big), desc="6000x4000 images", unit="img"):
        path = folder / rec.file
        t_full, ref = timed(lambda p=path: full_decode(p), args.repeats)
        row = {"image_name": rec.image_name, "patient_id": rec.patient_id, "full_s": t_full}
        for ov in OVERSAMPLES:
            t, out = timed(lambda p=path, o=ov: dermctx_load(p, o), args.repeats)
            row[f"ov{ov}_s"], row[f"ov{ov}_psnr"] = t, psnr(out, ref)
        rows.append(row)
    load_after = load_average()
    frame = pd.DataFrame(rows)
    sweep = quality_sweep(folder, manifest)

    def speedup(f: pd.DataFrame, ov: float = DEFAULT_OVERSAMPLE) -> float:
        return float(f["full_s"].sum() / f[f"ov{ov}_s"].sum())

    methods = {}
    for ov in OVERSAMPLES:
        methods[str(ov)] = {
            "ms_median": 1000 * float(frame[f"ov{ov}_s"].median()),
            "speedup": speedup(frame, ov),
            "speedup_ci95": patient_bootstrap(frame, lambda f, o=ov: speedup(f, o)),
            "psnr_mean": float(frame[f"ov{ov}_psnr"].mean()),
            "psnr_mean_ci95": patient_bootstrap(frame, lambda f, o=ov: float(f[f"ov{o}_psnr"].mean())),
            "psnr_min": float(frame[f"ov{ov}_psnr"].min()),
            "images_below_40db": int((frame[f"ov{ov}_psnr"] < 40).sum()),
        }
    sweep_summary = sweep.groupby("oversample")["psnr"].agg(["min", "median", "count"])
    passing = [float(k) for k, v in sweep_summary.iterrows() if v["min"] >= 40.0]
    summary = {
        "images": len(frame),
        "patients": int(frame["patient_id"].nunique()),
        "size": SIZE,
        "aspect": "squash",
        "repeats": args.repeats,
        "default_oversample": DEFAULT_OVERSAMPLE,
        "full_decode_ms_median": 1000 * float(frame["full_s"].median()),
        "methods": methods,
        "sweep": {str(k): {"psnr_min": float(v["min"]), "psnr_median": float(v["median"]),
                           "combinations": int(v["count"])}
                  for k, v in sweep_summary.iterrows()},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "pillow": Image.__version__,
        "gpu": "none (CPU-only machine)",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "images.json").write_text(json.dumps(
        {"summary": summary, "per_image": rows, "sweep": sweep.to_dict("records")}, indent=2))
    s = summary
    lines = []
    for ov in OVERSAMPLES:
        m = methods[str(ov)]
        name = (f"`load_image` (default: draft >= {ov}x target, then BICUBIC)"
                if ov == DEFAULT_OVERSAMPLE else f"draft >= {ov}x target, then BICUBIC")
        lines.append(
            f"| {name} | {m['ms_median']:.0f} | **{m['speedup']:.1f}x** "
            f"({m['speedup_ci95'][0]:.1f}-{m['speedup_ci95'][1]:.1f}) | **{m['psnr_mean']:.1f} dB** "
            f"({m['psnr_mean_ci95'][0]:.1f}-{m['psnr_mean_ci95'][1]:.1f}), {m['psnr_min']:.1f} dB "
            f"| {m['images_below_40db']} |")
    sweep_lines = [f"| {k} | {v['psnr_min']:.1f} | {v['psnr_median']:.1f} | {v['combinations']} |"
                   for k, v in s["sweep"].items()]
    nl = "\n"
    md = f"""# Loading 6000x4000 ISIC originals to {SIZE} px (aspect="squash")

Command: `nice python benchmarks/image_load.py --repeats {args.repeats}` (all {s['images']} 6000x4000
images of `isic2020/images`, {s['patients']} patients). Each time is the median of {args.repeats} runs;
the methods are interleaved image by image. One decode uses one core; no GPU on this machine.
Machine: {s['cores']} cores, shared with other jobs: load average (1/5/15 min) {s['load_average_before']}
before and {s['load_average_after']} after the run. Pillow {s['pillow']}.

| method | median ms / image | speedup vs full decode (95% CI) | PSNR vs full decode: mean (95% CI), min | images < 40 dB |
|---|---|---|---|---|
| Pillow full decode + BICUBIC resize (reference) | {s['full_decode_ms_median']:.0f} | 1 | - | - |
{nl.join(lines)}

Speedup = total reference time / total method time. CIs: patient bootstrap (2000 resamples of
patients). Per-image numbers are in `images.json`.

## Choosing `DRAFT_OVERSAMPLE`

Worst-case and median PSNR of `load_image` against a full decode + one BICUBIC resize to the same
geometry, over up to 3 images of each image geometry in the folder (640x480 to 6000x4000) x output
sizes 224, 256, 384, 448, 512 x aspect crop/pad/squash:

| oversample | min PSNR (dB) | median PSNR (dB) | combinations |
|---|---|---|---|
{nl.join(sweep_lines)}

Smallest tested oversample whose worst case is >= 40 dB: {min(passing) if passing else "none"}.
This sweep includes the benchmark images themselves, so it is a design check, not a
held-out one. The default in this run was {DEFAULT_OVERSAMPLE}. (PSNR is infinite where no resampling was needed.)
"""
    (RESULTS / "images.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
