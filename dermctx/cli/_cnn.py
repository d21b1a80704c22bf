"""The commands on images and CNNs: train, embed, explain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import (
    BareFlag,
    Options,
    command,
    finish,
    given,
    library_default,
    positive_int,
    show_progress,
    tta_views,
    write_frame,
)
from ._inputs import Loaded, add_table_options, load_table


def _backbone_options(opts: Options, default: str) -> None:
    """``--backbone NAME`` (``--model`` kept as a deprecated alias), ``--checkpoint``, weights."""
    opts.model.add_argument("--backbone", default=None, metavar="NAME",
                            help=f"timm architecture (default: {default})")
    opts.renamed("--model", "--backbone", group="model")
    opts.model.add_argument("--no-pretrained", action="store_true",
                            help="random initial weights (for testing)")
    opts.model.add_argument("--image-size", type=positive_int, default=None, metavar="PX",
                            help="input side in pixels (default: the backbone's)")


# --- train ---------------------------------------------------------------------------------------


def _train_options(opts: Options) -> None:
    add_table_options(opts, folds=True, duplicates=True)
    opts.input.add_argument("--external", type=Path, default=None, metavar="FILE",
                            help="a labelled table of other patients' images (e.g. ISIC 2019) added "
                                 "to every training fold, never scored; its images are found with "
                                 "--image-dir")
    _backbone_options(opts, "the library's, efficientnet_b0")
    opts.model.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                            help="start from these weights (.safetensors)")
    opts.model.add_argument("--epochs", type=positive_int, default=None,
                            help="epochs per fold (default: the library's)")
    opts.model.add_argument("--lr", type=float, default=None,
                            help="peak learning rate (default: the library's)")
    opts.model.add_argument("--schedule", choices=("sgdr", "cosine", "constant"), default=None,
                            help="learning-rate schedule (default: the library's, sgdr)")
    opts.model.add_argument("--final-model", action="store_true",
                            help="also train on every patient (for embeddings in one space)")
    opts.output.add_argument("--out", type=Path, required=True, metavar="DIR",
                             help="output folder (fold checkpoints, oof.parquet, history.csv, "
                                  "errors.csv); re-running resumes")
    opts.device()
    opts.run.add_argument("--num-workers", type=int, default=None, metavar="N",
                          help="DataLoader worker processes (default: the library's, 0)")
    opts.renamed("--workers", "--num-workers", type=int)
    opts.run.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                          help="keep decoded, resized images here: later epochs and folds skip decoding "
                               "(same results; about 432 KiB per image at 384 px)")
    opts.random_state("seed of the folds and the training (default: the library's, 0)")
    opts.renamed("--seed", "--random-state", type=int)
    opts.progress()


def _train_folds(args: argparse.Namespace, loaded: Loaded) -> Any:
    """The splitter: the reused folds, or PatientKFold(N) seeded as the trainer seeds itself."""
    from dermctx.splits import PatientKFold
    from dermctx.train import train_lesion_cnn

    if loaded.folds is not None:
        from sklearn.model_selection import PredefinedSplit

        return PredefinedSplit(loaded.folds)
    if args.folds is None and loaded.duplicates is None:
        return None  # the trainer's own default
    seed = args.random_state if args.random_state is not None else library_default(
        train_lesion_cnn, "random_state")
    n = {} if args.folds is None else {"n_splits": args.folds}
    return PatientKFold(**n, random_state=seed, duplicates=loaded.duplicates)


@command("train", "fine-tune a lesion CNN on patient-grouped folds: out-of-fold scores and checkpoints",
         _train_options, output="folder")
def _train(args: argparse.Namespace) -> int:
    from dermctx.io.registry import read_table
    from dermctx.train import train_lesion_cnn

    loaded = load_table(args)
    table = loaded.table
    external = None
    if args.external is not None:
        external = read_table(args.external, image_dir=args.image_dir, unknown_patients="own")
    model = {} if args.backbone is None else {"model": args.backbone}
    result = train_lesion_cnn(
        table, **model, folds=_train_folds(args, loaded), pretrained=not args.no_pretrained,
        checkpoint=args.checkpoint, out_dir=args.out, external=external,
        final_model=args.final_model, device=args.device, cache_dir=args.cache_dir, progress=show_progress(args),
        **given(args, image_size="image_size", epochs="epochs", batch_size="batch_size", lr="lr",
                schedule="schedule", num_workers="num_workers", random_state="random_state"))
    valid = result.oof.merge(table[["image_id", "target"]], on="image_id")
    if valid["target"].nunique() == 2:
        from dermctx.metrics import auc

        print(f"out-of-fold AUC {auc(valid['target'], valid['cnn_score']):.4f} on {len(valid)} images",
              file=sys.stderr)
    print(f"{args.out}: {len(result.oof)} out-of-fold scores, {len(result.checkpoints)} checkpoint(s)",
          file=sys.stderr)
    return finish(args, loaded.n_rows, loaded.all_errors(result.errors), keep_empty=True)


# --- embed ---------------------------------------------------------------------------------------


def _embed_options(opts: Options) -> None:
    add_table_options(opts)
    _backbone_options(opts, "the checkpoint's, else the library's, efficientnet_b0")
    opts.renamed("--size", "--image-size", group="model", type=positive_int)
    opts.model.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                            help=".safetensors (from 'dermctx train') or a state-dict .pth")
    opts.model.add_argument("--aspect", choices=["crop", "pad", "squash"], default=None,
                            help="how a non-square image is made square (default: the library's, crop)")
    opts.model.add_argument("--colour-constancy", choices=["shades_of_grey", "grey_world"], default=None)
    opts.model.add_argument("--tta", type=tta_views, action=BareFlag, new="--tta 8", bare_value=8,
                            default=None, metavar="N",
                            help="average N flip/transpose views: 1 (none, the default), 2, 4 or 8")
    opts.output.add_argument("--out", type=Path, required=True, metavar="DIR",
                             help="embedding store folder (Parquet parts, read by --embeddings DIR "
                                  "of fit, score and bench); re-running resumes it")
    opts.device()
    opts.jobs("image decoding threads (default: the library's)")
    opts.renamed("--workers", "--jobs", type=positive_int)
    opts.run.add_argument("--backend", choices=["local", "ray"], default=None,
                          help="local (the default) or ray (pip install 'dermctx[ray]')")
    opts.progress()


@command("embed", "embed every image of a lesion table with a timm backbone (a resumable store)",
         _embed_options, output="folder")
def _embed(args: argparse.Namespace) -> int:
    from dermctx.embed import Embedder, checkpoint_metadata

    loaded = load_table(args)
    model = args.backbone
    if model is None and args.checkpoint is not None:
        model = checkpoint_metadata(args.checkpoint).get("model")
    embedder = Embedder(*([model] if model else []), pretrained=not args.no_pretrained,
                        checkpoint=args.checkpoint,
                        **given(args, image_size="image_size", aspect="aspect", tta="tta",
                                colour_constancy="colour_constancy", device="device",
                                batch_size="batch_size", n_jobs="jobs"))
    emb, errors = embedder.embed(loaded.table, store=args.out, progress=show_progress(args),
                                 **given(args, backend="backend"))
    print(f"{args.out}: {len(emb)} embeddings of width {emb.shape[1]} "
          f"({embedder.settings_['model']}, {embedder.image_size_} px), {len(errors)} failed",
          file=sys.stderr)
    return finish(args, loaded.n_rows, loaded.all_errors(errors))


# --- explain -------------------------------------------------------------------------------------


def _explain_options(opts: Options) -> None:
    opts.input.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                            help="image files (JPEG, PNG, DICOM)")
    opts.model.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                            help="a .safetensors written by 'dermctx train'")
    opts.model.add_argument("--class", dest="target_class", type=int, default=None,
                            help="class index to explain (default: the predicted one)")
    opts.output.add_argument("--out", type=Path, required=True, metavar="DIR",
                             help="folder for the Grad-CAM and guided-backpropagation PNGs and "
                                  "explanations.csv")


@command("explain", "Grad-CAM and guided-backpropagation overlays of images for a checkpoint",
         _explain_options, output="folder")
def _explain(args: argparse.Namespace) -> int:
    from dermctx.explain import explain_checkpoint

    paths, errors = explain_checkpoint(args.checkpoint, [str(p) for p in args.images], args.out,
                                       **given(args, target_class="target_class"))
    write_frame(paths, args.out / "explanations.csv")
    print(f"{args.out}: overlays of {len(paths)} image(s)", file=sys.stderr)
    return finish(args, len(args.images), errors)
