"""How often the input-shift check warns, on unchanged held-out patients and on rescaled columns.

:class:`dermctx.input_shift.InputDistribution` is fitted on half of the patients (a random half,
``--splits`` times) and checks the other half, with the columns as they are (every warning is a
false alarm) and with one column multiplied by 10, 0.1, 2.54, 1/2.54 or 100 (every warning is a
catch). Patients are checked one at a time (a clinic scoring one patient) and as one batch.

Data (real, from ``../shared/data``):

* ISIC 2024 (SLICE-3D) subset, 1,954 lesions of 1,011 patients, its 34 numeric ``tbp_lv_*``
  columns (1-20 lesions per patient, median 1);
* ISIC 2020 out-of-fold EfficientNet-B1 probabilities (``cnn_score``) of 23,299 lesions of
  1,440 patients, also sent as percentages (x100), as logits, and as ``1 - p``;
* generated whole patients (:func:`dermctx.synthetic.make_tbp_patients`, 20-200 lesions each),
  the same 34 columns, for patients with many lesions.

Rates come with 95% patient-bootstrap intervals (patients resampled, 1,000 resamples).
Run by hand::

    python benchmarks/input_shift.py

Writes ``benchmarks/results/input_shift.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_data import SHARED, load_isic_oof

from dermctx.input_shift import InputDistribution
from dermctx.synthetic import make_tbp_patients

RESULTS = Path(__file__).resolve().parent / "results"
SCALES = {"x10": 10.0, "x0.1": 0.1, "x2.54": 2.54, "x1/2.54": 1 / 2.54, "x100": 100.0}


def _rate(flags: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """Mean of per-patient 0/1 flags (or per patient mean over columns) with a bootstrap CI."""
    flags = np.asarray(flags, dtype=float)
    rng = np.random.default_rng(seed)
    boots = [flags[rng.integers(0, len(flags), len(flags))].mean() for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"rate": float(flags.mean()), "low": float(lo), "high": float(hi), "n_patients": len(flags)}


def _study(name: str, table: pd.DataFrame, cols: list[str], transforms: dict, splits: int, n_boot: int,
           max_patients: int) -> dict:
    pids = table["patient_id"].unique()
    alone_fa, batch_fa, alone_hit = [], [], {t: [] for t in transforms}
    batch_hit: dict[str, list[float]] = {t: [] for t in transforms}
    per_column_fa = {c: 0 for c in cols}
    for split in range(splits):
        rng = np.random.default_rng(split)
        train = set(rng.choice(pids, len(pids) // 2, replace=False))
        fit_rows, test_rows = table[table["patient_id"].isin(train)], table[~table["patient_id"].isin(train)]
        dist = InputDistribution.fit(fit_rows, cols)
        batch_fa.append(float(bool(dist.check(test_rows))))
        groups = [g for _, g in test_rows.groupby("patient_id", sort=True)]
        if len(groups) > max_patients:
            groups = [groups[i] for i in np.sort(rng.choice(len(groups), max_patients, replace=False))]
        for g in groups:
            found = dist.check(g)
            alone_fa.append(float(bool(found)))
            for m in found:
                per_column_fa[m.split("'")[1]] += 1
        one = {c: InputDistribution({c: dist.columns[c]}) for c in dist.columns}  # checks column c only
        checked = list(one)
        for t, f in transforms.items():
            for g in groups:  # per patient: the share of its columns caught
                alone_hit[t].append(np.mean([bool(one[c].check(g.assign(**{c: f(g[c])}))) for c in checked]))
            batch_hit[t].append(np.mean([bool(one[c].check(test_rows.assign(**{c: f(test_rows[c])})))
                                         for c in checked]))
    return {
        "name": name, "lesions": len(table), "patients": len(pids), "columns": len(cols), "splits": splits,
        "false_alarm_alone": _rate(np.array(alone_fa), n_boot, 1),
        "false_alarm_batch": {"rate": float(np.mean(batch_fa)), "batches": len(batch_fa)},
        "false_alarm_columns": {c: n for c, n in per_column_fa.items() if n},
        "caught_alone": {t: _rate(np.array(v), n_boot, 2) for t, v in alone_hit.items()},
        "caught_batch": {t: float(np.mean(v)) for t, v in batch_hit.items()},
    }


def _fmt(r: dict) -> str:
    return f"{r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--max-patients", type=int, default=300,
                        help="held-out patients checked one at a time per split (default 300)")
    parser.add_argument("--out", default="input_shift")
    args = parser.parse_args(argv)
    command = f"python benchmarks/input_shift.py {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    scale = {k: (lambda s, f=f: s * f) for k, f in SCALES.items()}
    studies = []

    isic24 = pd.read_csv(SHARED / "isic2024" / "isic2024_train_subset_1954.csv", low_memory=False)
    tbp = [c for c in isic24.columns if c.startswith("tbp_lv_") and pd.api.types.is_numeric_dtype(isic24[c])]
    print(f"ISIC 2024: {len(isic24)} lesions, {len(tbp)} columns", flush=True)
    studies.append(_study("ISIC 2024 subset (real)", isic24, tbp, scale, args.splits, args.n_boot, args.max_patients))

    oof = load_isic_oof()
    cnn = {**{k: scale[k] for k in ("x100",)},
           "as logit": lambda s: np.log(s.clip(1e-7, 1 - 1e-7) / (1 - s.clip(1e-7, 1 - 1e-7))),
           "as 1 - p": lambda s: 1 - s}
    print(f"ISIC 2020 CNN scores: {len(oof)} lesions", flush=True)
    studies.append(_study("ISIC 2020 CNN probabilities (real)", oof, ["cnn_score"], cnn, args.splits,
                          args.n_boot, args.max_patients))

    whole = make_tbp_patients(300, random_state=5)
    cols = [c for c in whole.columns if c.startswith("tbp_lv_")]
    print(f"generated whole patients: {len(whole)} lesions", flush=True)
    studies.append(_study("generated whole patients", whole, cols, scale, args.splits, args.n_boot, 150))

    seconds = time.perf_counter() - t0
    lines = [
        "# Input-shift check: false alarms and catches",
        "",
        f"`{command}` — {started:%Y-%m-%d %H:%M} UTC, {seconds:.0f} s. Fitted on a random half of the patients,",
        "checked on the other half; " + f"{args.splits} splits. Intervals: 95% patient bootstrap ({args.n_boot} resamples).",
        "\"alone\": each held-out patient checked by itself (a warning on any column counts); \"caught\": one column",
        "transformed for that patient, the share of columns warned about; \"batch\": the whole held-out half at once.",
        "",
    ]
    for s in studies:
        lines += [f"## {s['name']}: {s['lesions']:,} lesions, {s['patients']:,} patients, {s['columns']} column(s)", "",
                  "| | alone (per patient) | batch (whole half) |", "|---|---|---|",
                  f"| false alarm, columns unchanged | {_fmt(s['false_alarm_alone'])} | "
                  f"{s['false_alarm_batch']['rate']:.0%} of {s['false_alarm_batch']['batches']} batches |"]
        for t, r in s["caught_alone"].items():
            lines.append(f"| caught, {t} | {_fmt(r)} | {s['caught_batch'][t]:.0%} of columns |")
        if s["false_alarm_columns"]:
            lines += ["", "Columns warned about on unchanged patients (count over splits): "
                      + ", ".join(f"`{c}` {n}" for c, n in sorted(s["false_alarm_columns"].items(), key=lambda x: -x[1]))]
        lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"command": command, "started": f"{started:%Y-%m-%d %H:%M}",
                                                          "seconds": seconds, "studies": studies}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
