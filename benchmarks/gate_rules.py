"""How ContextRanker's within-patient gate chooses, on real SIIM-ISIC 2020 patients (issue 12).

The gate keeps the part of the correction that reorders a patient's lesions with a weight chosen
on inner patient-grouped folds (docs/ranking.md). This compares, on the same fitted models and
the same held-out patients, the within-patient AUC and top-1 rate of four rules:

* ``significant gain`` (the rule in use): a weight above 0 only when its gain over weight 0 is
  significant on the inner folds (paired patient bootstrap) in within-patient AUC, or in pooled
  AUC with within-patient AUC no lower; top-1 no lower;
* ``best-looking`` (the rule before): the best within-patient AUC plus top-1 among the weights no
  worse than 0 on both, on the inner folds;
* ``always 0`` (the CNN's order within each patient) and ``always 1`` (no gate).

Data: the shared 1,440 patients with real out-of-fold EfficientNet-B1 scores, in the clinical
setting (CNN score, age, sex, site) and the competition setting (+ image size), 5-fold
PatientKFold x 3 seeds, as ``benchmarks/ranking_real.py``.
Every rule scores the held-out patients with the same fold model; only the weight differs.

Run by hand (about 4 minutes on 2 cores)::

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
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_data import load_isic_oof

from dermctx.label_guard import LABEL_COLUMNS
from dermctx.metrics import paired_bootstrap, topk_rate, within_patient_auc
from dermctx.models.ranker import ContextRanker, _gate
from dermctx.splits import PatientKFold

RESULTS = Path(__file__).resolve().parent / "results"
RULES = ("significant gain", "best-looking", "always 0", "always 1")


def best_looking(scores: list[dict[str, float]]) -> float:
    """The rule before: best within-patient AUC + top-1 among weights no worse than 0 on both."""
    base = scores[0]
    ok = [r for r in scores if r["within_patient_auc"] >= base["within_patient_auc"] - 1e-12
          and r["top1"] >= base["top1"] - 1e-12]
    return float(max(ok, key=lambda r: (r["within_patient_auc"] + r["top1"], -r["weight"]))["weight"])


def compare(table: pd.DataFrame, make) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Each rule's held-out figures with the fold models of ``make()``; and the CNN's."""
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
            model = make().fit(X[~test], y[~test])
            frame, _, offset, codes = model._stages(X[test])
            correction = model.gbm_.decision_function(frame.assign(__offset__=offset)) - offset
            weights = {"significant gain": model.within_patient_weight_,
                       "best-looking": best_looking(model.gate_scores_), "always 0": 0.0, "always 1": 1.0}
            for rule, w in weights.items():
                z = offset + _gate(correction, codes, w)  # the ranker's own gating
                a, b = model.calibration_  # the rule's own calibration would differ; AUCs do not
                scores[rule][seed][test] = 1 / (1 + np.exp(-(a * z + b)))
                chosen[rule].append(float(w))
            print(f"seed {seed} fold {k}: weights {weights}", flush=True)
    cnn = table["cnn_score"].to_numpy()
    rows = []
    for rule in RULES:
        row: dict[str, object] = {"rule": rule, "weights": chosen[rule]}
        for metric in ("auc", "within_patient_auc"):
            diff = [paired_bootstrap(metric, y, scores[rule][s], cnn, pid, n_boot=1000, random_state=0) for s in seeds]
            est, lo, hi = np.mean([(d.estimate, d.low, d.high) for d in diff], axis=0)
            row[metric] = float(np.mean([d.estimate_1 for d in diff]))
            row[f"{metric}_diff_vs_cnn"] = [float(est), float(lo), float(hi)]
        row["top1"] = float(np.mean([topk_rate(y, scores[rule][s], pid, 1) for s in seeds]))
        rows.append(row)
    return rows, {"auc": float(roc_auc_score(y, cnn)), "within_patient_auc": float(within_patient_auc(y, cnn, pid).value),
                  "top1": float(topk_rate(y, cnn, pid, 1))}


def main() -> int:
    started = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg()
    table = load_isic_oof()
    y = table["target"].to_numpy()
    settings = {"clinical (CNN score, age, sex, site)": ContextRanker,
                "competition (+ image size)": lambda: ContextRanker(use_image_size=True)}
    md = ["# The within-patient gate's rule on real patients", "",
          "Command: `python benchmarks/gate_rules.py`", "", "RUN_LINE", "",
          f"{len(table):,} lesions, {table['patient_id'].nunique():,} patients, {int(y.sum())} melanomas (shared "
          "SIIM-ISIC 2020 out-of-fold EfficientNet-B1 scores), 5-fold PatientKFold x 3 seeds; every rule scores "
          "the held-out patients with the same fold model (only the weight differs; the pooled AUC uses the "
          "fold model's calibration); figures are means over the seeds, CIs of the difference to the CNN "
          "from 1,000 paired patient resamples (means of the seeds' bounds).", ""]
    report: dict[str, object] = {"command": "python benchmarks/gate_rules.py", "load_average_start": load}
    for name, make in settings.items():
        rows, cnn = compare(table, make)
        report[name] = {"cnn": cnn, "rules": rows}
        md += [f"## {name}", "",
               f"CNN alone: AUC {cnn['auc']:.4f}, within-patient AUC {cnn['within_patient_auc']:.4f}, "
               f"top-1 {cnn['top1']:.3f}.", "",
               "| rule | AUC | minus the CNN's | within-patient AUC | minus the CNN's | top-1 | weights (15 folds) |",
               "|---|---|---|---|---|---|---|"]
        for r in rows:
            d, e = r["auc_diff_vs_cnn"], r["within_patient_auc_diff_vs_cnn"]
            md.append(f"| {r['rule']} | {r['auc']:.4f} | {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] | "
                      f"{r['within_patient_auc']:.4f} | {e[0]:+.4f} [{e[1]:+.4f}, {e[2]:+.4f}] | {r['top1']:.3f} | "
                      f"{', '.join(f'{w:g}' for w in r['weights'])} |")
        md.append("")
    finished = dt.datetime.now(dt.timezone.utc)
    md[4] = (f"Run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, 2 cores, load average {load} at the start.")
    md += ["The rules were compared after the best-looking rule's results were known on these patients; the "
           "held-back patients are the real test."]
    report.update(started_utc=started.isoformat(timespec="seconds"), finished_utc=finished.isoformat(timespec="seconds"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gate_rules.md").write_text("\n".join(md) + "\n")
    (RESULTS / "gate_rules.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
