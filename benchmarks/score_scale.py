"""Scoring at hospital scale (issue 13): a million lesions from Parquet, big patients, row order.

Measures, each step in a fresh process so its peak resident memory (VmHWM) is its own:

* ``score_parquet`` on 1,000,000 lesions (60,000 patients, sets of 1-200) with CNN-score inputs
  and with 64-d embeddings (goals: < 20 s and < 60 s, peak RSS < 2 GB, on 2 cores);
* the same file scored on a local Ray instance (a 100,000-lesion slice): equal to local scoring;
* ``score_patient`` on one 2,000-lesion patient (goal < 10 s, < 1 GB) and ``rank`` on one
  100,000-lesion patient (goal: no error);
* row order: the model fitted on shuffled training rows and scoring shuffled rows gives the same
  scores (goal: to 1e-9).

The models are fitted on generated patients (:func:`dermctx.synthetic.make_ugly_duckling`), which
is enough here: what is measured is time, memory and exactness, not accuracy.

Run by hand on a quiet machine (about 10 minutes)::

    python benchmarks/score_scale.py
    python benchmarks/score_scale.py --lesions 100000   # smoke run

Writes ``benchmarks/results/score_scale.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_mb() -> float:
    """Peak resident memory of this process's address space (Linux VmHWM, reset at exec, so a
    step's figure is its own; ``ru_maxrss`` would include the parent's at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fit(kind: str, work: Path) -> Path:
    """A ContextRanker fitted on generated patients, saved to ``work/model-{kind}``."""
    from dermctx.models.ranker import ContextRanker
    from dermctx.synthetic import make_ugly_duckling

    train = make_ugly_duckling(1500, dim=64, random_state=0)
    train["cnn_score"] = np.random.default_rng(0).uniform(0.005, 0.8, len(train))
    X = train.drop(columns=["diagnosis"])
    if kind == "cnn":
        X = X.drop(columns=[c for c in X.columns if c.startswith("emb_")])
    model = ContextRanker(n_jobs=2).fit(X, train["target"])
    path = work / f"model-{kind}"
    model.save(path)
    return path


def _table(n_lesions: int, n_patients: int, dim: int, seed: int) -> pd.DataFrame:
    """``n_lesions`` lesions of ``n_patients`` patients with sets of 1-200, shuffled rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 201, n_patients).astype(float)
    sizes = np.maximum(1, np.round(sizes * n_lesions / sizes.sum())).astype(int)
    sizes[-1] += n_lesions - sizes.sum()
    pid = np.repeat(np.array([f"P{i:06d}" for i in range(n_patients)], dtype=object), sizes)
    n = len(pid)
    frame = pd.DataFrame({
        "image_id": np.array([f"I{i:08d}" for i in range(n)], dtype=object),
        "patient_id": pid,
        "age": rng.integers(20, 90, n).astype(float),
        "sex": rng.choice(np.array(["male", "female"], dtype=object), n),
        "site": rng.choice(np.array(["torso", "lower extremity", "upper extremity", "head/neck"], dtype=object), n),
        "cnn_score": rng.uniform(0.001, 0.9, n),
    })
    if dim:
        emb = rng.normal(size=(n, dim)).astype(np.float32)
        frame = pd.concat([frame, pd.DataFrame(emb, columns=[f"emb_{j:04d}" for j in range(dim)])], axis=1)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def step_score(args: argparse.Namespace) -> dict[str, object]:
    from dermctx.models.ranker import ContextRanker
    from dermctx.scoring import score_parquet

    model = ContextRanker.load(args.model)
    before = _peak_mb()
    t0 = time.perf_counter()
    errors = score_parquet(model, args.table, args.out, backend=args.backend, progress=False)
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    return {"seconds": round(seconds, 1), "peak_rss_mb": round(_peak_mb()), "rss_mb_before": round(before),
            "scored": pq.ParquetFile(args.out).metadata.num_rows, "errors": len(errors)}


def step_patient(args: argparse.Namespace) -> dict[str, object]:
    from dermctx.models.ranker import ContextRanker

    model = ContextRanker.load(args.model)
    table = _table(args.lesions, 1, 64 if "emb" in str(args.model) else 0, seed=7)
    before = _peak_mb()
    t0 = time.perf_counter()
    if args.how == "score_patient":
        out = model.score_patient(table)
        n = len(out)
    else:
        scores, errors = model.rank(table)
        n = len(scores) + len(errors)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(_peak_mb()),
            "rss_mb_before": round(before), "lesions": args.lesions, "rows_out": n}


def step_order(args: argparse.Namespace) -> dict[str, object]:
    from dermctx.models.ranker import ContextRanker
    from dermctx.synthetic import make_ugly_duckling

    train = make_ugly_duckling(600, dim=16, random_state=3)
    train["cnn_score"] = np.random.default_rng(3).uniform(0.005, 0.8, len(train))
    X = train.drop(columns=["diagnosis"])
    test = _table(20000, 400, 16, seed=4)
    a = ContextRanker().fit(X, train["target"])
    shuffled = X.sample(frac=1.0, random_state=9)
    b = ContextRanker().fit(shuffled, shuffled["target"])
    sa = pd.Series(a.predict_proba(test)[:, 1], index=test["image_id"])
    perm = test.sample(frac=1.0, random_state=5)
    sb = pd.Series(b.predict_proba(perm)[:, 1], index=perm["image_id"]).loc[sa.index]
    return {"max_abs_difference": float(np.abs(sa.to_numpy() - sb.to_numpy()).max()),
            "training_rows": len(X), "scored_rows": len(test)}


def _run(step: str, **kw: object) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--step", step, *[f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesions", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=60_000)
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--table", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--how", default="score_patient", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        step = {"score": step_score, "patient": step_patient, "order": step_order}[args.step]
        print(json.dumps(step(args)))
        return 0

    command = f"python benchmarks/score_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    started = dt.datetime.now(dt.timezone.utc)
    report: dict[str, object] = {"command": command, "started_utc": started.isoformat(timespec="seconds"),
                                 "load_average_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="dermctx-scale-") as tmp:
        work = Path(tmp)
        for kind, dim in (("cnn", 0), ("emb", 64)):
            model = _fit(kind, work)
            table = _table(args.lesions, args.patients, dim, seed=1)
            src = work / f"lesions-{kind}.parquet"
            table.to_parquet(src, index=False, row_group_size=100_000)
            del table
            report[f"score_parquet_{kind}"] = _run("score", model=model, table=src, out=work / f"s-{kind}.parquet")
            print(kind, report[f"score_parquet_{kind}"], flush=True)
            if kind == "emb":
                small = work / "slice.parquet"
                pd.read_parquet(src).iloc[:100_000].to_parquet(small, index=False)
                local = _run("score", model=model, table=small, out=work / "local.parquet")
                ray = _run("score", model=model, table=small, out=work / "ray.parquet", backend="ray")
                a = pd.read_parquet(work / "local.parquet").sort_values("row")
                b = pd.read_parquet(work / "ray.parquet").sort_values("row")
                report["ray_vs_local_100k"] = {
                    "local": local, "ray": ray, "same_rows": bool((a["row"].to_numpy() == b["row"].to_numpy()).all()),
                    "max_abs_difference": float(np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max())}
                print("ray", report["ray_vs_local_100k"], flush=True)
                report["score_patient_2000_emb"] = _run("patient", model=model, lesions=2000, how="score_patient")
                report["rank_patient_100000_emb"] = _run("patient", model=model, lesions=100_000, how="rank")
                print(report["score_patient_2000_emb"], report["rank_patient_100000_emb"], flush=True)
    report["row_order"] = _run("order")
    print("order", report["row_order"], flush=True)
    finished = dt.datetime.now(dt.timezone.utc)
    report["finished_utc"] = finished.isoformat(timespec="seconds")
    report["load_average_end"] = os.getloadavg()
    md = ["# Scoring at scale", "", f"Command: `{command}`", "",
          f"Run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, {os.cpu_count()} cores; load average "
          f"{report['load_average_start']} at the start, {report['load_average_end']} at the end. "
          f"{args.lesions:,} lesions of {args.patients:,} patients (sets of 1-200), rows shuffled; "
          "each step in its own process (peak RSS is that process's).", "",
          "| step | result |", "|---|---|",
          *[f"| {k} | {json.dumps(v)} |" for k, v in report.items()
            if k not in ("command", "started_utc", "finished_utc", "load_average_start", "load_average_end", "cpu_count")], ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "score_scale.md").write_text("\n".join(md) + "\n")
    (RESULTS / "score_scale.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
