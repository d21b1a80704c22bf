"""Benchmark: lesion-CNN training and inference throughput, end to end vs the network alone.

On the real ISIC 2020 JPEGs (``../shared/data/isic2020/images``: 139 originals of 640x480 to
6000x4000 pixels), for ``efficientnet_b0`` (random weights, ``pretrained=False``: speed does not
depend on the weights) with batches of ``--batch-size`` (16):

* **end to end** -- through :func:`dermctx.train.train_lesion_cnn`'s own DataLoader path:
  ``load_image`` (DCT-scaled JPEG decoding) and the augmentations in the DataLoader, then
  forward, backward and the optimiser step. Training: one epoch over ``--train-images`` images
  (one fold whose validation side is a single image), timed by the trainer itself
  (``history["seconds"]``: the epoch's wall time, DataLoader start included, validation not).
  Inference: :meth:`TrainResult.predict` over ``--infer-images`` images (its wall time).
  Measured with ``num_workers=0`` (the trainer's default: decoding in the training process)
  and with ``--workers`` DataLoader worker processes.
* **network alone** -- the same model, optimiser (AdamW, discriminative rates 0.01/0.1/1),
  class-weighted loss and batches, on tensors decoded, resized and normalised beforehand and
  held in memory: forward + backward + step for training, ``inference_mode`` forward for
  inference. Each training repeat starts from a freshly built model, as each
  ``train_lesion_cnn`` call does, so first-step costs are in both.

The ratio end to end / network alone is the share of the network's throughput that survives the
data path (1 - ratio is what decoding and augmenting cost). The measurements alternate
``--repeats`` times after one discarded warm-up; the median and the min-max of the repeats are
reported. Throughput is a property of the machine, not of the patients, so no patient
bootstrap is given.

GPU: only when ``torch.cuda.is_available()``: the same at ``--gpu-size`` (384) px with mixed
precision (AMP) and channels_last, the images listed ``--gpu-passes`` times; goal: end to end
>= 85% of the network alone. Without a GPU this is recorded as such and no GPU figure is given.

Run by hand (about 7 minutes on 2 CPU cores)::

    python benchmarks/train_throughput.py [--threads 1 --workers 1 --repeats 4]

Writes ``benchmarks/results/train_throughput.md`` and ``train_throughput.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from dermctx.io.images import load_image
from dermctx.optim import discriminative_param_groups
from dermctx.train import train_lesion_cnn, train_step

SHARED = Path(os.environ.get("DERMCTX_SHARED_DATA",
                             Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 0.85  # GPU: end to end at least 85% of the network alone


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


class _OneFold:
    """A split with one fold: every row but the last trains, the last one validates."""

    def split(self, X: Any, y: Any = None):
        idx = np.arange(len(X))
        yield idx[:-1], idx[-1:]


def image_table(n: int, passes: int = 1) -> pd.DataFrame:
    """``n`` rows of real images (sorted by name, listed ``passes`` times under distinct ids)."""
    folder = SHARED / "isic2020" / "images"
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        sys.exit(f"data not found: {manifest} (set DERMCTX_SHARED_DATA)")
    files = pd.read_csv(manifest, dtype={"image_name": str}).sort_values("image_name")
    rows = pd.concat([files.assign(image_id=files["image_name"] + f"_{k}") for k in range(passes)])
    rows = rows.head(n)
    if len(rows) < n:
        sys.exit(f"only {len(rows)} images available; asked for {n} (raise --gpu-passes or lower the count)")
    # both classes in the training rows; the labels do not matter for speed
    target = np.zeros(n, dtype=int)
    target[::8] = 1
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "patient_id": rows["patient_id"].to_numpy(),
                         "target": target, "path": [str(folder / f) for f in rows["file"]]})


def pre_decoded(table: pd.DataFrame, size: int, batch: int, mean: list[float], std: list[float],
                device: str) -> list[torch.Tensor]:
    """The images as normalised float32 batches (B, 3, S, S) in memory, in DataLoader order."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    decoded = {p: load_image(p, size) for p in table["path"].drop_duplicates()}  # each file once
    out = []
    for i in range(0, len(table), batch):
        x = torch.from_numpy(np.stack([decoded[p] for p in table["path"].iloc[i:i + batch]]))
        x = (x.permute(0, 3, 1, 2).float() / 255 - m) / s  # (B, 3, S, S)
        if device.startswith("cuda"):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
        out.append(x)
    return out


def data_only(table: pd.DataFrame, size: int, augment: bool) -> float:
    """Images/s of the trainer's per-image data path alone, in this process: ``load_image``, the
    uint8 -> tensor step, the training augmentations (flips, affine, colour jitter, a 90-degree
    turn; :func:`dermctx.train._augmentations`) and the normalisation; each distinct file once."""
    from dermctx.train import _augmentations

    jitter = _augmentations() if augment else None
    mean, std = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    paths = table["path"].drop_duplicates()
    start = time.perf_counter()
    for p in paths:
        x = torch.from_numpy(load_image(p, size).copy()).permute(2, 0, 1)
        if jitter is not None:
            x = torch.rot90(jitter(x), int(torch.randint(4, ())), dims=(1, 2))
        (x.float() / 255 - mean) / std
    return len(paths) / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def e2e_train(rows: pd.DataFrame, cfg: dict[str, Any], workers: int,
              cache_dir: Path | None = None) -> tuple[float, Any]:
    """Images/s of one training epoch through ``train_lesion_cnn``; and the result (for predict).
    With ``cache_dir``, the decoded images come from that (already filled) image cache."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_lesion_cnn(rows, cfg["model"], pretrained=False, folds=_OneFold(),
                                  image_size=cfg["size"], epochs=1, batch_size=cfg["batch"],
                                  device=cfg["device"], amp=cfg["amp"], num_workers=workers,
                                  cache_dir=cache_dir, progress=False)
    seconds = float(result.history["seconds"].iloc[0])
    return (len(rows) - 1) / seconds, result


def e2e_infer(result: Any, rows: pd.DataFrame) -> float:
    """Images/s of ``TrainResult.predict`` (one fold model) over ``rows``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"  # predict's device: CUDA when available
    _sync(device)
    start = time.perf_counter()
    scores, errors = result.predict(rows)  # its DataLoader workers: the training run's num_workers
    _sync(device)
    seconds = time.perf_counter() - start
    if len(errors) or len(scores) != len(rows):
        raise RuntimeError(f"{len(errors)} images failed: {errors.head()}")
    return len(rows) / seconds


def net_train(batches: list[torch.Tensor], labels: list[torch.Tensor], cfg: dict[str, Any]) -> float:
    """Images/s of forward + backward + step on in-memory batches, from a freshly built model."""
    import timm

    device, cuda = cfg["device"], cfg["device"].startswith("cuda")
    torch.manual_seed(0)
    model = timm.create_model(cfg["model"], pretrained=False, num_classes=2).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(discriminative_param_groups(model, 3e-4, weight_decay=1e-4), lr=3e-4)
    y_all = torch.cat(labels)
    counts = torch.bincount(y_all, minlength=2).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=(len(y_all) / (2 * counts)).to(device))  # "balanced", as the trainer
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg["amp"])
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in zip(batches, labels, strict=True):  # the trainer's own step
        train_step(model, x.to(device), y.to(device), loss_fn, opt, scaler, amp=cuda and cfg["amp"])
    _sync(device)
    return sum(len(x) for x in batches) / (time.perf_counter() - start)


def net_infer(model: nn.Module, batches: list[torch.Tensor], cfg: dict[str, Any]) -> float:
    """Images/s of an ``inference_mode`` forward (and softmax to CPU) on in-memory batches."""
    device, cuda = cfg["device"], cfg["device"].startswith("cuda")
    model.eval()
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", enabled=cuda and cfg["amp"]):
        for x in batches:
            torch.softmax(model(x.to(device)).float(), dim=1).cpu()
    _sync(device)
    return sum(len(x) for x in batches) / (time.perf_counter() - start)


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def measure(cfg: dict[str, Any], train_rows: pd.DataFrame, infer_rows: pd.DataFrame, workers: list[int],
            repeats: int) -> dict[str, Any]:
    """Alternating repeats of every measurement (after one discarded warm-up round)."""
    from dermctx.embed import Embedder

    probe = Embedder(cfg["model"], pretrained=False).fit()
    mean, std = list(probe.mean_), list(probe.std_)
    del probe
    fit_rows = train_rows.iloc[:-1]  # the trained rows (the last one validates)
    train_batches = pre_decoded(fit_rows, cfg["size"], cfg["batch"], mean, std, cfg["device"])
    labels = [torch.tensor(fit_rows["target"].to_numpy()[i:i + cfg["batch"]], dtype=torch.long)
              for i in range(0, len(fit_rows), cfg["batch"])]
    infer_batches = pre_decoded(infer_rows, cfg["size"], cfg["batch"], mean, std, cfg["device"])
    runs: dict[str, list[float]] = {k: [] for k in
                                    ["net_train", "net_infer", "data_train", "data_infer",
                                     *[f"e2e_train_w{w}" for w in workers],
                                     *[f"e2e_train_cached_w{w}" for w in workers],
                                     *[f"e2e_infer_w{w}" for w in workers]]}
    cache = Path(tempfile.mkdtemp(prefix="dermctx-image-cache-"))  # filled by the warm-up round
    loads = []
    for r in range(repeats + 1):  # round 0 warms up and is discarded
        got: dict[str, float] = {}
        result = None
        for w in workers:
            got[f"e2e_train_w{w}"], result = e2e_train(train_rows, cfg, w)
            got[f"e2e_train_cached_w{w}"], _ = e2e_train(train_rows, cfg, w, cache)
            got[f"e2e_infer_w{w}"] = e2e_infer(result, infer_rows)
        got["net_train"] = net_train(train_batches, labels, cfg)
        model = result.models[0].to(cfg["device"])
        if cfg["device"].startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        got["net_infer"] = net_infer(model, infer_batches, cfg)
        got["data_train"] = data_only(fit_rows, cfg["size"], augment=True)
        got["data_infer"] = data_only(infer_rows, cfg["size"], augment=False)
        print(f"  {'warm-up' if r == 0 else f'repeat {r}'}: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()),
              flush=True)
        if r > 0:
            for k, v in got.items():
                runs[k].append(v)
            loads.append(load_average())
    shutil.rmtree(cache, ignore_errors=True)
    out: dict[str, Any] = {k: summary(v) for k, v in runs.items()}
    for w in workers:
        out[f"ratio_train_cached_w{w}"] = summary([a / b for a, b in zip(runs[f"e2e_train_cached_w{w}"],
                                                                          runs["net_train"], strict=True)])
        for kind in ("train", "infer"):
            ratios = [a / b for a, b in zip(runs[f"e2e_{kind}_w{w}"], runs[f"net_{kind}"], strict=True)]
            out[f"ratio_{kind}_w{w}"] = summary(ratios)
    for kind in ("train", "infer"):  # the ratio if data and network simply took turns, nothing else
        out[f"serial_{kind}"] = summary([1 / (1 + n / d) for n, d in zip(runs[f"net_{kind}"], runs[f"data_{kind}"],
                                                                            strict=True)])
    out["load_average_after_each_repeat"] = loads
    out["config"] = {k: v for k, v in cfg.items()}
    out["train_images"] = len(fit_rows)
    out["infer_images"] = len(infer_rows)
    return out


def _fmt(s: dict[str, Any], pct: bool = False) -> str:
    if pct:
        return f"**{100 * s['median']:.0f}%** ({100 * s['min']:.0f}-{100 * s['max']:.0f}%)"
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


HEADER = ("| pass | DataLoader workers | network alone (img/s) | end to end (img/s) | end to end / network | "
          "data path alone, 1 process (img/s) | data and network taking turns (expected with 0 workers) |\n"
          "|---|---|---|---|---|---|---|")


def table_rows(res: dict[str, Any], workers: list[int]) -> str:
    lines = []
    for kind, label in (("train", "training (fwd + bwd + step)"), ("train_cached", "training, `cache_dir` filled"),
                        ("infer", "inference (forward)")):
        net, data = kind.split("_")[0], "" if kind == "train_cached" else kind
        for w in workers:
            if f"e2e_{kind}_w{w}" not in res:  # a run from before the cached row existed
                continue
            lines.append(f"| {label} | {w} | {_fmt(res[f'net_{net}'])} | {_fmt(res[f'e2e_{kind}_w{w}'])} | "
                         f"{_fmt(res[f'ratio_{kind}_w{w}'], pct=True)} | "
                         f"{_fmt(res[f'data_{data}']) if data else '-'} | "
                         f"{_fmt(res[f'serial_{data}'], pct=True) if data else '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=224, help="CPU input side, pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the training process")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the second configuration")
    parser.add_argument("--train-images", type=int, default=97, help="rows per training run (the last validates)")
    parser.add_argument("--infer-images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--gpu-size", type=int, default=384)
    parser.add_argument("--gpu-passes", type=int, default=8, help="GPU: times each image is listed")
    parser.add_argument("--gpu-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="GPU: DataLoader workers (default: all cores but one)")
    parser.add_argument("--gpu-train-images", type=int, default=1025)
    parser.add_argument("--gpu-infer-images", type=int, default=1024)
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU measurements")
    parser.add_argument("--out", default="train_throughput", help="output stem under benchmarks/results/")
    args = parser.parse_args()
    if args.gpu_only and not torch.cuda.is_available():
        sys.exit("--gpu-only: no CUDA device (torch.cuda.is_available() is False)")

    command = " ".join(["python benchmarks/train_throughput.py", *sys.argv[1:]])
    started = dt.datetime.now(dt.timezone.utc)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    workers = sorted({0, args.workers})
    cpu_cfg = {"model": args.model, "size": args.size, "batch": args.batch_size, "device": "cpu", "amp": False}
    cpu: dict[str, Any] = {}
    if not args.gpu_only:
        print(f"CPU: {args.model} at {args.size} px, batch {args.batch_size}, {args.threads} torch thread(s), "
              f"DataLoader workers {workers}", flush=True)
        cpu = measure(cpu_cfg, image_table(args.train_images), image_table(args.infer_images), workers,
                      args.repeats)

    gpu: dict[str, Any]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        gpu_cfg = {"model": args.model, "size": args.gpu_size, "batch": args.batch_size, "device": "cuda",
                   "amp": True}
        print(f"GPU {name}: {args.model} at {args.gpu_size} px, AMP, channels_last, workers "
              f"{args.gpu_workers}", flush=True)
        gpu = measure(gpu_cfg, image_table(args.gpu_train_images, args.gpu_passes),
                      image_table(args.gpu_infer_images, args.gpu_passes), [args.gpu_workers], args.repeats)
        gpu["device"] = name
        gpu["goal"] = GOAL
        gpu["met"] = {k: gpu[f"ratio_{k}_w{args.gpu_workers}"]["median"] >= GOAL
                      for k in ("train", "train_cached", "infer")}
    else:
        gpu = {"device": None, "note": "no GPU: torch.cuda.is_available() was False on this machine, "
                                       "so no GPU throughput was measured"}

    info = {
        "command": command,
        "date_utc": started.strftime("%Y-%m-%d %H:%M"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds()),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({**info, "cpu_results": cpu, "gpu_results": gpu},
                                                              indent=2))
    n_images = len(pd.read_csv(SHARED / "isic2020" / "images" / "manifest.csv"))
    if gpu["device"]:
        w = args.gpu_workers
        gpu_md = (f"{gpu['device']}, {args.model} at {args.gpu_size} px, AMP (float16 autocast), channels_last, "
                  f"batch {args.batch_size}, {w} DataLoader workers; {gpu['train_images']} training and "
                  f"{gpu['infer_images']} inference rows (the {n_images} images listed up to {args.gpu_passes} "
                  "times).\n\n"
                  + HEADER + "\n" + table_rows(gpu, [w]) + "\n\n"
                  f"Goal: end to end >= {100 * GOAL:.0f}% of the network alone. Training: "
                  f"{'met' if gpu['met']['train'] else '**not met**'}; training from the filled image cache: "
                  f"{'met' if gpu['met']['train_cached'] else '**not met**'}; inference: "
                  f"{'met' if gpu['met']['infer'] else '**not met**'}. The columns are those of the CPU "
                  "section (`train_throughput.md`); here each DataLoader worker is a process of its own. "
                  "*`cache_dir` filled*: the same epoch through `train_lesion_cnn(..., cache_dir=...)` with the "
                  "image cache filled by the discarded warm-up round, as every epoch after a run's first: "
                  "the workers read each resized image instead of decoding the original, then augment it.")
    else:
        gpu_md = ("**No GPU was available** (`torch.cuda.is_available()` was False on this machine), so no GPU "
                  f"throughput was measured. On a CUDA machine the same command measures {args.model} at "
                  f"{args.gpu_size} px with AMP and channels_last against the goal end to end >= "
                  f"{100 * GOAL:.0f}% of the network alone.")
    loads = (f"(after each CPU repeat: {'; '.join(cpu['load_average_after_each_repeat'])})." if cpu
             else f"(after each GPU repeat: {'; '.join(gpu['load_average_after_each_repeat'])}).")
    md = f"""# Training throughput: end to end (train_lesion_cnn's DataLoader) vs the network alone

Command: `{command}`

Date (UTC): {info['date_utc']}; {info['seconds']} s in all. Machine: {info['nproc']} CPU cores ({info['cpu']}),
torch {info['torch']} with {args.threads} thread(s), Python {info['python']}. The machine is shared with
other jobs: load average (1/5/15 min) {load_before} before, {info['load_average_after']} after
{loads}

"""
    if cpu:
        md += f"""## CPU

{args.model} (random weights), {args.size} px, batch {args.batch_size}, float32. Images: real ISIC 2020
JPEGs (640x480 to 6000x4000), decoded by `load_image` (DCT-scaled). Training: {cpu['train_images']} images
per run ({cpu['train_images'] // args.batch_size} batches of {args.batch_size}), augmentations on; inference:
{cpu['infer_images']} images. Median of {args.repeats} alternating repeats (min-max in brackets), after
a discarded warm-up round.

{HEADER}
{table_rows(cpu, workers)}

- *network alone*: forward (+ backward + AdamW step with discriminative rates, class-weighted
  loss, `loss.item()` each step) on batches decoded, resized and normalised beforehand and held in
  memory; each training repeat starts from a freshly built model, as each `train_lesion_cnn`
  call does.
- *end to end*, training: `train_lesion_cnn(..., epochs=1, num_workers=W)` on one fold; the
  trainer's own epoch time (`history["seconds"]`): DataLoader start, decoding, augmentations,
  forward, backward, step; not validation, scoring or building the model. Inference:
  `TrainResult.predict` wall time (DataLoader start, decoding, forward, softmax).
- *data path alone*: what the trainer's dataset does per image (`load_image`, the augmentations
  for training, normalisation), one process, no network. *Taking turns*: the ratio expected
  if decoding and the network simply alternated, 1 / (1 + network rate / data rate), per repeat.
  An end-to-end ratio well below it means time lost beyond the data path itself (or noise:
  the same network step varies by about 20% between runs on this shared virtual machine).
- *`cache_dir` filled*: the same epoch with `train_lesion_cnn(..., cache_dir=...)`, its image
  cache filled by the discarded warm-up round (as in every epoch after a run's first): resized
  images are read instead of decoded.
- Workers 0 is the trainer's default: decoding and augmenting run in the training process,
  between steps. With W >= 1 they run in W other processes, in parallel with the network; the
  training process keeps {args.threads} torch thread(s), so {args.threads} + W processes share
  the {info['nproc']} cores.
- With few batches per run the DataLoader's start (its worker process is started each epoch)
  and the first batch's decoding weigh more than in an epoch of thousands of batches, so the
  ratios here are lower bounds for long epochs on the same machine.

"""
    md += f"""## GPU

{gpu_md}
"""
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
