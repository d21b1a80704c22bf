"""ContextRanker fit at ISIC 2024 size (issue 12): 400,000 lesions, 34 measurement columns.

Generates ``--lesions`` lesions with :func:`dermctx.synthetic.make_tbp_patients` (outlier mode),
then fits ``ContextRanker(score_col=None, context_features=<the 34 columns>, n_jobs=2)`` (patient
features, the outlier group, 5 inner folds for the gate and the calibration, the final model) and
scores the table once. Reports wall-clock seconds of each step and the peak resident memory of the
process (``ru_maxrss``), with the memory held by the generated table alone for reference.

Run by hand on a quiet machine (goal: fit < 5 minutes on 2 cores)::

    python benchmarks/context_scale.py                  # 400,000 lesions, 5 inner folds
    python benchmarks/context_scale.py --n-folds 3      # the same with 3 inner folds
    python benchmarks/context_scale.py --lesions 50000  # smoke run

Writes ``benchmarks/results/context_scale_{n}folds.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path

from dermctx.models.ranker import ContextRanker
from dermctx.synthetic import make_tbp_patients

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesions", type=int, default=400_000)
    parser.add_argument("--threads", type=int, default=2, help="LightGBM threads (default 2)")
    parser.add_argument("--n-folds", type=int, default=5,
                        help="ContextRanker's inner folds (default 5; 3 fits 2 fewer LightGBM models)")
    args = parser.parse_args(argv)
    command = f"python benchmarks/context_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()

    t0 = time.perf_counter()
    n_patients = 100
    table = make_tbp_patients(n_patients, random_state=0)
    n_patients = max(1, round(1.03 * n_patients * args.lesions / len(table)))
    table = make_tbp_patients(n_patients, random_state=0)
    while len(table) < args.lesions:  # at least the lesions asked for
        n_patients = round(n_patients * 1.02) + 1
        table = make_tbp_patients(n_patients, random_state=0)
    cols = [c for c in table.columns if c.startswith("tbp_lv_") or c == "clin_size_long_diam_mm"]
    X = table.drop(columns=["target", "planted_feature", "planted_direction"])
    generate_s = time.perf_counter() - t0
    table_mb = _peak_mb()
    print(f"{len(table):,} lesions, {table['patient_id'].nunique():,} patients, "
          f"{int(table['target'].sum()):,} melanomas, {len(cols)} columns ({generate_s:.1f} s)", flush=True)

    t0 = time.perf_counter()
    model = ContextRanker(score_col=None, context_features=cols, n_jobs=args.threads,
                          n_folds=args.n_folds).fit(X, table["target"])
    fit_s = time.perf_counter() - t0
    fit_peak = _peak_mb()
    print(f"fit {fit_s:.1f} s, peak RSS {fit_peak:,.0f} MB", flush=True)
    t0 = time.perf_counter()
    scores, errors = model.rank(X)
    rank_s = time.perf_counter() - t0
    finished = dt.datetime.now(dt.timezone.utc)
    report = {
        "command": command, "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": finished.isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "lesions": len(table), "patients": int(table["patient_id"].nunique()),
        "melanomas": int(table["target"].sum()), "columns": len(cols),
        "gbm_features": len(model.gbm_.feature_names_in_), "threads": args.threads, "n_folds": args.n_folds,
        "generate_seconds": round(generate_s, 1), "fit_seconds": round(fit_s, 1),
        "rank_seconds": round(rank_s, 1), "peak_rss_mb_after_generating": round(table_mb),
        "peak_rss_mb_fit": round(fit_peak), "peak_rss_mb_end": round(_peak_mb()),
        "scored": len(scores), "errors": len(errors),
        "within_patient_weight": model.within_patient_weight_,
        "goal: fit < 300 s": fit_s < 300,
    }
    md = ["# ContextRanker fit at ISIC 2024 size", "", f"Command: `{command}`", "",
          f"Run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, {os.cpu_count()} cores, load average "
          f"{load_start} at the start, {report['load_average_end']} at the end.", "",
          "| what | value |", "|---|---|",
          *[f"| {k} | {v} |" for k, v in report.items() if k not in ("command",)], ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"context_scale_{args.n_folds}folds"
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
