"""How ContextRanker's within-patient gate chooses, on real SIIM-ISIC 2020 patients (issue 12).

The gate keeps the part of the correction that reorders a patient's lesions with a weight chosen
on inner patient-grouped folds (docs/ranking.md). This compares, on the same fitted models and
the same held-out patients, the within-patient AUC and top-1 rate of four rules:

* ``significant gain`` (the rule in use): a weight above 0 only when its within-patient AUC gain
  over weight 0 is significant on the inner folds (paired patient bootstrap), top-1 no lower;
* ``best-looking`` (the rule before): the best within-patient AUC plus top-1 among the weights no
  worse than 0 on both, on the inner folds;
* ``always 0`` (the CNN's order within each patient) and ``always 1`` (no gate).

Data: the shared 1,440 patients with real out-of-fold EfficientNet-B1 scores (clinical setting:
CNN score, age, sex, site), 5-fold PatientKFold x 3 seeds, as ``benchmarks/ranking_real.py``.
Every rule scores the held-out patients with the same fold model; only the weight differs.

Run by hand (about 2 minutes on 2 cores)::

    python benchmarks/gate_rules.py

Writes ``benchmarks/results/gate_rules.md`` and ``.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_data import load_isic_oof

from dermctx.label_guard import LABEL_COLUMNS
from dermctx.metrics import paired_bootstrap, topk_rate, within_patient_auc
from dermctx.models.ranker import ContextRanker
from dermctx.splits import PatientKFold

RESULTS = Path(__file__).resolve().parent / "results"
RULES = ("significant gain", "best-looking", "always 0", "always 1")


def best_looking(scores: list[dict[str, float]]) -> float:
    """The rule before: best within-patient AUC + top-1 among weights no worse than 0 on both."""
    base = scores[0]
    ok = [r for r in scores if r["within_patient_auc"] >= base["within_patient_auc"] - 1e-12
          and r["top1"] >= base["top1"] - 1e-12]
    return float(max(ok, key=lambda r: (r["within_patient_auc"] + r["top1"], -r["weight"]))["weight"])


def main() -> int:
    started = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg()
    table = load_isic_oof()
    y = table["target"].to_numpy()
    pid = table["patient_id"].to_numpy()
    X = table.drop(columns=[c for c in table.columns if str(c).lower() in LABEL_COLUMNS])
    seeds = [0, 1, 2]
    scores = {rule: {s: np.full(len(y), np.nan) for s in seeds} for rule in RULES}
    chosen: dict[str, list[float]] = {rule: [] for rule in RULES}
    for seed in seeds:
        fold_of = PatientKFold(5, shuffle=True, random_state=seed).assign(table, y)
        for k in range(5):
            test = fold_of == k
            model = ContextRanker().fit(X[~test], y[~test])
            frame, _, offset, codes = model._stages(X[test])
            correction = model.gbm_.decision_function(frame.assign(__offset__=offset)) - offset
            mean = pd.Series(correction).groupby(codes).transform("mean").to_numpy()
            weights = {"significant gain": model.within_patient_weight_,
                       "best-looking": best_looking(model.gate_scores_), "always 0": 0.0, "always 1": 1.0}
            for rule, w in weights.items():
                scores[rule][seed][test] = offset + mean + w * (correction - mean)
                chosen[rule].append(float(w))
            print(f"seed {seed} fold {k}: weights {weights}", flush=True)
    rows = []
    cnn = table["cnn_score"].to_numpy()
    for rule in RULES:
        wp = np.mean([within_patient_auc(y, scores[rule][s], pid).value for s in seeds])
        top1 = np.mean([topk_rate(y, scores[rule][s], pid, 1) for s in seeds])
        diff = [paired_bootstrap("within_patient_auc", y, scores[rule][s], cnn, pid, n_boot=1000, random_state=0)
                for s in seeds]
        est, lo, hi = np.mean([(d.estimate, d.low, d.high) for d in diff], axis=0)
        rows.append({"rule": rule, "within_patient_auc": wp, "top1": top1, "wp_diff_vs_cnn": est,
                     "wp_diff_ci": [lo, hi], "weights": chosen[rule]})
    cnn_wp = float(within_patient_auc(y, cnn, pid).value)
    cnn_top1 = float(topk_rate(y, cnn, pid, 1))
    finished = dt.datetime.now(dt.timezone.utc)
    md = ["# The within-patient gate's rule on real patients", "",
          "Command: `python benchmarks/gate_rules.py`", "",
          f"Run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, 2 cores, load average {load} at the start. "
          f"{len(table):,} lesions, {len(np.unique(pid)):,} patients, {int(y.sum())} melanomas (shared SIIM-ISIC "
          "2020 out-of-fold EfficientNet-B1 scores), clinical setting, 5-fold PatientKFold x 3 seeds; "
          "figures are means over the seeds, the CI of the difference to the CNN from 1,000 paired "
          "patient resamples (mean of the seeds' bounds).", "",
          f"CNN alone: within-patient AUC {cnn_wp:.4f}, top-1 {cnn_top1:.3f}.", "",
          "| rule | within-patient AUC | minus the CNN's [95% CI] | top-1 | weights chosen (15 folds) |",
          "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['rule']} | {r['within_patient_auc']:.4f} | {r['wp_diff_vs_cnn']:+.4f} "
                  f"[{r['wp_diff_ci'][0]:+.4f}, {r['wp_diff_ci'][1]:+.4f}] | {r['top1']:.3f} | "
                  f"{', '.join(f'{w:g}' for w in r['weights'])} |")
    md += ["", "The rules were compared after the best-looking rule's result was known on these patients; "
           "the held-back patients are the real test."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gate_rules.md").write_text("\n".join(md) + "\n")
    (RESULTS / "gate_rules.json").write_text(json.dumps(
        {"command": "python benchmarks/gate_rules.py", "started_utc": started.isoformat(timespec="seconds"),
         "finished_utc": finished.isoformat(timespec="seconds"), "load_average_start": load,
         "cnn": {"within_patient_auc": cnn_wp, "top1": cnn_top1}, "rules": rows}, indent=1, default=float) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
