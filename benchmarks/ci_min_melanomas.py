"""How many melanomas does a patient-bootstrap CI need? The evidence for ``MIN_MELANOMAS``.

Simulates datasets of patients with correlated lesions (the generator of
``bootstrap_coverage.py``) at several sizes, computes the 95% patient-bootstrap CI
(``dermctx.metrics.patient_bootstrap``) of the AUC, the within-patient AUC and the top-1 rate on
each, and counts how often the CI covers the metric's true value (from one very large sample of
the same generator), by what the metric rests on: melanomas for the AUC, patients with a
melanoma and another lesion for the within-patient AUC, patients with a melanoma for the top-1
rate (``dermctx.metrics.too_few_melanomas``). Also counts zero-width CIs.

Run by hand (about 2 minutes on 2 shared cores)::

    nice python benchmarks/ci_min_melanomas.py

Writes ``benchmarks/results/ci_min_melanomas.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bootstrap_coverage import Generator, wilson

from dermctx import metrics as M

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("auc", "within_patient_auc", "top1")
BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 7), (8, 9), (10, 14), (15, 19), (20, 29), (30, 49),
        (50, 10**9))


def units(metric: str, y: np.ndarray, patient: np.ndarray) -> int:
    """What ``metric`` rests on, as ``too_few_melanomas`` counts it."""
    if metric == "auc":
        return int(y.sum())
    n = int(patient.max()) + 1
    mel = np.bincount(patient, weights=y, minlength=n)
    other = np.bincount(patient, minlength=n) - mel
    return int(((mel > 0) & (other > 0)).sum() if metric == "within_patient_auc"
               else (mel > 0).sum())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,15,25,40,60,100,160", help="patients per dataset")
    parser.add_argument("--n-datasets", type=int, default=250, help="datasets per size")
    parser.add_argument("--n-boot", type=int, default=400)
    parser.add_argument("--truth-patients", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "ci_min_melanomas")
    args = parser.parse_args(argv)

    gen, rng, start = Generator(), np.random.default_rng(args.seed), time.perf_counter()
    yb, sb, pb = gen.sample(args.truth_patients, rng)
    truth = {m: float(M.METRICS[m](yb, sb, pb)[0] if m == "within_patient_auc"
                      else M.METRICS[m](yb, sb, pb)) for m in METRICS}
    del yb, sb, pb
    records = []
    for size in [int(v) for v in args.sizes.split(",")]:
        for i in range(args.n_datasets):
            y, s, patient = gen.sample(size, rng)
            if y.sum() == 0 or y.sum() == len(y):
                continue
            for m in METRICS:
                try:
                    r = M.patient_bootstrap(m, y, s, patient, n_boot=args.n_boot, random_state=i)
                except M.MetricError:
                    continue
                if not np.isfinite(r.low):
                    continue
                records.append({"metric": m, "units": units(m, y, patient),
                                "covered": bool(r.low <= truth[m] <= r.high),
                                "zero_width": bool(r.low == r.high)})
        print(f"{size} patients: {len(records)} CIs so far", flush=True)

    table = []
    for m in METRICS:
        for lo, hi in BINS:
            sel = [r for r in records if r["metric"] == m and lo <= r["units"] <= hi]
            if not sel:
                continue
            k = sum(r["covered"] for r in sel)
            table.append({"metric": m, "units": f"{lo}" if lo == hi else
                          (f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}"), "n": len(sel),
                          "coverage": k / len(sel),
                          "wilson_95ci": [min(max(v, 0.0), 1.0) for v in wilson(k, len(sel))],
                          "zero_width": float(np.mean([r["zero_width"] for r in sel]))})
    result = {
        "benchmark": "ci_min_melanomas",
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python benchmarks/ci_min_melanomas.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "truth": truth, "n_boot": args.n_boot, "n_datasets_per_size": args.n_datasets,
        "table": table, "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "min_melanomas": M.MIN_MELANOMAS,
    }
    write(result, args.out)
    return result


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    names = {"auc": "AUC (melanomas)", "within_patient_auc":
             "within-patient AUC (patients with a melanoma and another lesion)",
             "top1": "top-1 rate (patients with a melanoma)"}
    lines = [
        "# How many melanomas a patient-bootstrap 95% CI needs",
        "",
        f"Produced by `{result['command'].strip()}` on {result['date_utc']} UTC "
        f"({result['seconds']} s, {result['machine']}). {result['n_datasets_per_size']} simulated "
        f"datasets per size, {result['n_boot']} resamples each; the generator of "
        "`bootstrap_coverage.py`. True values (one sample of "
        + ", ".join(f"{k} {v:.4f}" for k, v in result["truth"].items()) + ").",
        "",
        "A CI should cover the true value in 95% of datasets. `dermctx.metrics.MIN_MELANOMAS` = "
        f"{result['min_melanomas']}: below it, tables show the figure as missing with the reason.",
        "",
        "| metric (counted) | count | datasets | CI covers the true value | Wilson 95% CI | "
        "zero-width CIs |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["table"]:
        lines.append(f"| {names[r['metric']]} | {r['units']} | {r['n']} | {r['coverage']:.1%} | "
                     f"{r['wilson_95ci'][0]:.1%} to {r['wilson_95ci'][1]:.1%} | "
                     f"{r['zero_width']:.0%} |")
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
