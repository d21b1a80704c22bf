"""From images to ranked lesions: embeddings, duplicate search, and the ugly-duckling models.

1. Embed a few real ISIC 2020 images with ``Embedder`` (any timm backbone). By default the
   weights are random (``pretrained=False``: no download, same numbers every run) - enough to
   show the plumbing; pass ``--weights model.safetensors`` (or a state-dict ``.pth``) for real
   features.
2. Look for duplicate images with ``find_duplicates``. The real images have none, so a flipped,
   re-encoded copy of one is added to show what a near-duplicate pair looks like.
3. Show how the ``emb_*`` columns feed the models: the shared folder has only 139 images, too
   few to learn from, so the gain of patient context is shown on synthetic patients
   (``make_ugly_duckling``) whose melanomas stand out only *within* their own patient. The same
   network without context (``SetRanker(context=False)``) is the per-lesion baseline.

::

    python examples/embed_and_rank.py                         # random weights, 8 images
    python examples/embed_and_rank.py --weights derm.safetensors --model efficientnet_b0 --n 32

Run ``python examples/embed_and_rank.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

import dermctx
from dermctx import metrics

DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def embed_real_images(args: argparse.Namespace, work: Path) -> None:
    isic = args.data_dir / "isic2020"
    metadata = isic / "ISIC_2020_Training_GroundTruth_v2.csv"
    manifest = isic / "images" / "manifest.csv"
    for path in (metadata, manifest):
        if not path.is_file():
            sys.exit(f"data not found: {path}\n(pass --data-dir, or see ../shared/data/README.md)")

    # a lesion table for the n smallest image files (quick to decode), with their paths
    files = pd.read_csv(manifest, dtype={"image_name": str}).sort_values("bytes", kind="stable")
    csv = pd.read_csv(metadata, dtype={"image_name": str, "patient_id": str, "lesion_id": str})
    table = dermctx.read_isic2020(csv[csv["image_name"].isin(files["image_name"].head(args.n))],
                                  image_dir=isic / "images")

    # a near duplicate of the first image: mirrored and saved again as a lower-quality JPEG
    first = table.iloc[0]
    copy_path = work / f"{first['image_id']}_mirrored.jpg"
    with Image.open(first["path"]) as im:
        ImageOps.mirror(im.convert("RGB")).save(copy_path, quality=80)
    copy = first.to_frame().T.assign(image_id=f"{first['image_id']}_mirrored", path=str(copy_path))
    table = pd.concat([table, copy], ignore_index=True)

    # 1. embeddings: one float32 row per image, columns emb_0000..., indexed by image_id
    embedder = dermctx.Embedder(args.model, pretrained=False, checkpoint=args.weights,
                                image_size=args.image_size, device="cpu", batch_size=8, n_jobs=1)
    emb, errors = embedder.embed(table, progress=True)
    weights = args.weights if args.weights else "random weights (pretrained=False)"
    print(f"\nembedded {len(emb)} of {len(table)} images with {args.model} ({weights}): "
          f"{emb.shape[1]} features each, {len(errors)} errors")
    lesions = table.join(emb, on="image_id")  # the emb_* columns any model below reads
    print(f"lesion table with embeddings: {lesions.shape[0]} rows x {lesions.shape[1]} columns "
          f"({len(dermctx.embedding_columns(lesions))} of them emb_*)")

    # 2. duplicates: exact (identical pixels) and near (resized, re-encoded, flipped, rotated)
    pairs, dup_errors = dermctx.find_duplicates(lesions, progress=False)
    print(f"\nduplicate pairs among {len(lesions)} images ({len(dup_errors)} errors):")
    print(pairs.to_string(index=False) if len(pairs) else "none")
    # with trained weights, embeddings can find duplicates the hashes miss, e.g.:
    # dermctx.find_duplicates(lesions, images=False, embedding_threshold=0.05)
    # the pairs go to the splits: dermctx.PatientKFold(duplicates=pairs) keeps each pair together


def ugly_duckling_demo(args: argparse.Namespace) -> None:
    # 3. synthetic patients: each melanoma looks like a typical lesion of the population,
    #    but not like its own patient's other lesions
    train = dermctx.make_ugly_duckling(args.synthetic_patients, dim=16, random_state=args.seed)
    test = dermctx.make_ugly_duckling(args.synthetic_patients, dim=16, random_state=args.seed + 1)
    print(f"\nsynthetic ugly-duckling patients: fit on {train['patient_id'].nunique()} patients "
          f"({int(train['target'].sum())} melanomas), score {test['patient_id'].nunique()} new ones "
          f"({int(test['target'].sum())} melanomas)")
    models = {
        "per lesion: SetRanker(context=False)": dermctx.SetRanker(context=False, random_state=args.seed),
        "in context: SetRanker": dermctx.SetRanker(random_state=args.seed),
        # no CNN score here: ranks on embedding context features (distance to the patient's others)
        "in context: ContextRanker(score_col=None)": dermctx.ContextRanker(score_col=None, random_state=args.seed),
    }
    y, pid = test["target"].to_numpy(), test["patient_id"].to_numpy()
    rows, scores = [], {}
    for name, model in models.items():
        model.fit(train, train["target"])
        scores[name] = model.predict_proba(test)[:, 1]
        row = {"model": name}
        for metric in ("auc", "within_patient_auc", "top1"):  # keys of metrics.METRICS
            r = metrics.patient_bootstrap(metric, y, scores[name], pid, n_boot=args.n_boot,
                                          random_state=args.seed)
            row[metrics.METRICS[metric].label] = f"{r.estimate:.3f} ({r.low:.3f}-{r.high:.3f})"
        rows.append(row)
    print(f"held-out synthetic patients; 95% CI from {args.n_boot} patient resamples:")
    print(pd.DataFrame(rows).to_string(index=False))
    gain = metrics.paired_bootstrap("auc", y, scores["in context: SetRanker"],
                                    scores["per lesion: SetRanker(context=False)"], pid,
                                    n_boot=args.n_boot, random_state=args.seed)
    print(f"AUC gain of context (SetRanker - per lesion): {gain.estimate:+.3f} "
          f"(95% CI {gain.low:+.3f} to {gain.high:+.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--n", type=int, default=8, help="real images to embed (the smallest files first)")
    parser.add_argument("--model", default="efficientnet_b0", help="timm model name (default efficientnet_b0)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="local .safetensors or state-dict .pth checkpoint (default: random weights)")
    parser.add_argument("--image-size", type=int, default=224, help="input side, pixels (default 224)")
    parser.add_argument("--synthetic-patients", type=int, default=500,
                        help="synthetic patients to fit on, and as many to score (default 500)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        sys.exit(f"weights not found: {args.weights}")

    with tempfile.TemporaryDirectory() as tmp:
        embed_real_images(args, Path(tmp))
    ugly_duckling_demo(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
