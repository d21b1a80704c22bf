"""Benchmark: end-to-end embedding throughput vs the backbone's own forward throughput.

On the real ISIC 2020 images (``../shared/data/isic2020/images``, 139 originals of 640x480 to
6000x4000, listed ``--passes`` times under distinct ids), for efficientnet_b0 at 224 and 384 px:

* forward: ``net(x)`` alone on tensors decoded, resized and normalised beforehand, in the same
  batches of ``--batch-size`` (``torch.inference_mode``, channels_last);
* end-to-end: ``Embedder.embed(table)`` from the JPEG files: decoding (``--workers`` threads,
  running ahead of the network), normalisation, forward, assembling the result frame.

Both use ``torch.set_num_threads(--threads)``; the default (1 torch thread + 1 decoding thread)
fills the 2 cores of the development machine. The two are run alternately ``--repeats`` times and
the best run of each is compared (the machine is shared with other jobs; the load average is
recorded). Weights are random (``pretrained=False``: no network here); speed does not depend on
them. Throughput is a property of the machine, not of the patients, so no patient bootstrap is
given; the spread over repeats is.

Run by hand::

    nice python benchmarks/embed_throughput.py [--threads 1 --workers 1 --passes 2]

Writes ``benchmarks/results/embed.md`` and ``embed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dermctx.embed import Embedder
from dermctx.io.images import load_image

SHARED = Path(os.environ.get("DERMCTX_SHARED_DATA",
                             Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_only(embedder: Embedder, batches: list[torch.Tensor]) -> float:
    """Seconds for ``net(x)`` over pre-built, normalised batches already on the device (float16
    autocast on CUDA, as ``Embedder`` runs there), features copied back as ``embed`` does."""
    net, device = embedder.model_, embedder.device_
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        for x in batches:
            net(x).float().cpu()
    _sync(device)
    return time.perf_counter() - start


def end_to_end(embedder: Embedder, table: pd.DataFrame) -> tuple[float, float]:
    """Wall seconds of ``embed(table)``, and the CPU cores this process got meanwhile."""
    start, cpu = time.perf_counter(), time.process_time()
    emb, errors = embedder.embed(table, progress=False)
    elapsed = time.perf_counter() - start
    if len(errors) or len(emb) != len(table):
        raise RuntimeError(f"{len(errors)} images failed: {errors.head()}")
    return elapsed, (time.process_time() - cpu) / elapsed


def decode_only(paths: pd.Series, size: int) -> float:
    """Images per second of ``load_image`` in one thread."""
    start = time.perf_counter()
    for p in paths:
        load_image(p, size)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=2, help="times each image is listed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", default="embed", help="output stem under benchmarks/results/")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    folder = SHARED / "isic2020" / "images"
    manifest = pd.read_csv(folder / "manifest.csv").sort_values("image_name")
    table = pd.concat([
        pd.DataFrame({"image_id": manifest["image_name"] + f"_{k}",
                      "path": [str(folder / f) for f in manifest["file"]]})
        for k in range(args.passes)
    ], ignore_index=True)
    load_before = load_average()
    results = []
    for size in args.sizes:
        embedder = Embedder(args.model, pretrained=False, image_size=size, device=args.device,
                            batch_size=args.batch_size, n_jobs=args.workers).fit()
        mean = torch.tensor(embedder.mean_).view(1, 3, 1, 1) * 255
        std = torch.tensor(embedder.std_).view(1, 3, 1, 1) * 255
        once = {p: load_image(p, size) for p in tqdm(
            table["path"].drop_duplicates(), desc=f"pre-decode {size}px", unit="img")}  # each file once
        decoded = np.stack([once[p] for p in table["path"]])  # (N, S, S, 3)
        batches = []
        for i in range(0, len(decoded), args.batch_size):
            x = torch.from_numpy(decoded[i : i + args.batch_size]).permute(0, 3, 1, 2).float()
            batches.append(((x - mean) / std).to(embedder.device_).contiguous(memory_format=torch.channels_last))
        del decoded
        forward_only(embedder, batches[:1])  # warm-up
        fwd, e2e, cores = [], [], []
        for _ in tqdm(range(args.repeats), desc=f"timing {size}px", unit="repeat"):
            fwd.append(forward_only(embedder, batches))
            wall, used = end_to_end(embedder, table)
            e2e.append(wall)
            cores.append(used)
        decode_rate = decode_only(table["path"].drop_duplicates(), size)
        n = len(table)
        best_fwd, best_e2e = n / min(fwd), n / min(e2e)
        results.append({
            "size": size,
            "images": n,
            "forward_img_s": best_fwd,
            "end_to_end_img_s": best_e2e,
            "ratio": best_e2e / best_fwd,
            "decode_only_img_s": decode_rate,
            "end_to_end_cpu_cores": cores,
            "forward_img_s_all": [n / t for t in fwd],
            "end_to_end_img_s_all": [n / t for t in e2e],
            "load_average": load_average(),
        })
        del batches
    summary = {
        "model": args.model,
        "threads": args.threads,
        "decode_workers": args.workers,
        "batch_size": args.batch_size,
        "passes": args.passes,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "device": args.device,
        "gpu": (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                else "none used: CPU run" if torch.cuda.is_available()
                else "none: this machine has no GPU, so no GPU throughput was measured"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=2))
    rows = "\n".join(
        f"| {r['size']} | {r['images']} | {r['forward_img_s']:.2f} | {r['end_to_end_img_s']:.2f} | "
        f"**{100 * r['ratio']:.0f}%** | {', '.join(f'{v:.2f}' for v in r['forward_img_s_all'])} | "
        f"{', '.join(f'{v:.2f}' for v in r['end_to_end_img_s_all'])} | "
        f"{', '.join(f'{v:.2f}' for v in r['end_to_end_cpu_cores'])} | "
        f"{r['decode_only_img_s']:.1f} | {r['load_average']} |"
        for r in results)
    command = " ".join(["python benchmarks/embed_throughput.py", *sys.argv[1:]])
    distinct = len(manifest)
    where = (f"on {summary['gpu']} (float16 autocast, channels_last; forward-only batches already on the GPU)"
             if args.device.startswith("cuda") else
             "CPU only: **no GPU on this machine, so no GPU throughput was measured**"
             if not torch.cuda.is_available() else "CPU only")
    md = f"""# Embedding throughput: end-to-end vs the backbone's forward pass

Command: `{command}`

{args.model} (random weights; speed does not depend on them), batch {args.batch_size}, {where}.
torch {torch.__version__} with
{args.threads} thread(s) and {args.workers} decoding thread(s) on {summary['cores']} cores. Images: {distinct}
real ISIC 2020 originals (640x480 to 6000x4000), each listed {args.passes} times. Best of {args.repeats}
alternating runs; all runs listed. The machine is shared with other jobs: load average (1/5/15 min)
{load_before} before the run and {summary['load_average_after']} after.

| size (px) | images | forward only (img/s) | end-to-end (img/s) | end-to-end / forward | forward runs | end-to-end runs | CPU cores obtained in end-to-end runs | decode only, 1 thread (img/s) | load average after |
|---|---|---|---|---|---|---|---|---|---|
{rows}

"forward only" times `net(x)` on pre-decoded, pre-normalised channels_last tensors of the same
batches; "end-to-end" is `Embedder.embed(table)` from the JPEG files, including the pipeline fill
(the first batch is decoded before the first forward pass). "CPU cores obtained" is the
process's CPU time divided by wall time during each end-to-end run: the pipeline needs about 2
(one core for the network, one for decoding); less means other jobs held the cores.
"decode only" is `load_image` alone, one thread, over the {distinct} images once.
"""
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
