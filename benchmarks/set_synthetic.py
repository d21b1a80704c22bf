"""Does SetRanker learn the "ugly duckling" sign where a single-lesion model cannot?

Run by hand (a few minutes on 2 cores)::

    nice python benchmarks/set_synthetic.py            # synthetic + real ISIC 2020 check
    nice python benchmarks/set_synthetic.py --no-real  # synthetic only

Writes ``benchmarks/results/set_synthetic.md`` and ``.json``.

1. Synthetic (:func:`dermctx.synthetic.make_ugly_duckling`): models are fitted on one set of
   patients and scored on new patients drawn from the same generator (3 seeds). Rows: SetRanker;
   the same network without set context (``context=False``); logistic regression and gradient
   boosting on the embedding; the distance to the patient's mean embedding (a hand-made context
   score that needs no training). Every figure on the held-out patients comes with a
   patient-bootstrap 95% CI; differences with a paired patient bootstrap.
2. A difficulty sweep over ``within_scale`` (how tightly a patient's benign lesions cluster).
3. Real SIIM-ISIC 2020 (when ``../shared/data`` is there): SetRanker on the scalar inputs of the
   *clinical* setting (CNN logit, age, sex, site), 5-fold PatientKFold out-of-fold, against the CNN
   alone, and its fit time on ~18.6k lesions. The issue's findings say scalar scores carry almost
   no ugly-duckling signal; this checks what the set model makes of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dermctx.metrics import METRICS as REGISTRY
from dermctx.metrics import paired_bootstrap, patient_bootstrap
from dermctx.models.set_transformer import SetRanker
from dermctx.synthetic import make_ugly_duckling
from dermctx.table import SITES, embedding_columns

RESULTS = Path(__file__).resolve().parent / "results"
# (display label, key) of the metrics reported, from dermctx.metrics.METRICS
METRICS = [(REGISTRY[k].label, k) for k in ("auc", "pauc80", "within_patient_auc", "top1")]
N_BOOT = 1000
GEN = dict(dim=32, lesions_per_patient=(1, 40), melanoma_rate=0.02, within_scale=1.0)


def centroid_distance(table: pd.DataFrame) -> np.ndarray:
    """Distance of each lesion's embedding to its patient's mean embedding (no training)."""
    emb = table[embedding_columns(table)].to_numpy(np.float64)
    centre = pd.DataFrame(emb).groupby(table["patient_id"].to_numpy()).transform("mean").to_numpy()
    return np.linalg.norm(emb - centre, axis=1)


def synthetic_scores(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[dict, dict]:
    """Held-out scores of every model, and fit seconds."""
    emb = embedding_columns(train)
    scores, seconds = {}, {}
    models = {
        "SetRanker": lambda: SetRanker(random_state=seed),
        "SetRanker(context=False)": lambda: SetRanker(context=False, random_state=seed),
    }
    for name, make in models.items():
        t = time.process_time()
        model = make().fit(train)
        seconds[name] = time.process_time() - t
        scores[name] = model.predict_proba(test)[:, 1]
    for name, model in (("logistic regression (per lesion)", LogisticRegression(max_iter=2000)),
                        ("gradient boosting (per lesion)", HistGradientBoostingClassifier(random_state=seed))):
        t = time.process_time()
        with threadpool_limits(1):  # OpenMP threads only fight each other on a shared 2-core box
            model.fit(train[emb], train["target"])
        seconds[name] = time.process_time() - t
        scores[name] = model.predict_proba(test[emb])[:, 1]
    scores["distance to patient mean (no training)"] = centroid_distance(test)
    seconds["distance to patient mean (no training)"] = 0.0
    return scores, seconds


def metric_row(y, s, pid) -> dict:
    row = {}
    for label, metric in METRICS:
        r = patient_bootstrap(metric, y, s, pid, n_boot=N_BOOT, random_state=0)
        row[label] = {"estimate": r.estimate, "low": r.low, "high": r.high}
    return row


def fmt(cell: dict) -> str:
    return f"{cell['estimate']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"


def real_check(shared: Path | None) -> dict | None:
    """SetRanker on scalar clinical inputs of the real ISIC 2020 OOF CNN scores."""
    from _real_data import SHARED, load_isic_oof

    from dermctx.splits import PatientKFold

    root = shared or SHARED
    if not (root / "isic2020" / "oof_effnet_b1_dev.csv").exists():
        return None
    table = load_isic_oof(root)
    p = table["cnn_score"].clip(1e-6, 1 - 1e-6)
    table["cnn_logit"] = np.log(p / (1 - p))
    table["male"] = table["sex"].map({"male": 1.0, "female": 0.0})
    features = ["cnn_logit", "age", "male"]
    for site in SITES:
        col = "site_" + site.replace("/", "_").replace(" ", "_")
        table[col] = (table["site"] == site).astype(float)
        features.append(col)
    y = table["target"].to_numpy()
    pid = table["patient_id"].to_numpy()
    variants = {
        "SetRanker (clinical inputs)": {},
        "SetRanker(context=False) (clinical inputs)": {"context": False},
        "SetRanker(pos_weight='balanced') (clinical inputs)": {"pos_weight": "balanced"},
    }
    oof = {name: np.zeros(len(table)) for name in variants}
    fit_seconds = []
    folds = list(PatientKFold(5, random_state=0).split(table))
    for train, test in tqdm(folds, desc="ISIC 2020 folds"):
        for name, kw in variants.items():
            model = SetRanker(embedding_prefix=None, features=features, random_state=0, **kw)
            t = time.process_time()
            model.fit(table.iloc[train])
            if not kw:
                fit_seconds.append(time.process_time() - t)
            oof[name][test] = model.predict_proba(table.iloc[test])[:, 1]
    scores = {"CNN alone": table["cnn_score"].to_numpy(), **oof}
    rows = {name: metric_row(y, s, pid) for name, s in scores.items()}
    diffs = {}
    for name in oof:
        d = paired_bootstrap("auc", y, oof[name], scores["CNN alone"], pid, n_boot=N_BOOT,
                             random_state=0)
        diffs[f"{name} - CNN alone"] = {"estimate": d.estimate, "low": d.low, "high": d.high}
    return {"n_lesions": len(table), "n_patients": int(table["patient_id"].nunique()),
            "n_melanomas": int(y.sum()), "rows": rows, "auc_differences": diffs,
            "fit_seconds_per_fold": fit_seconds, "train_lesions_per_fold": int(np.mean([len(f[0]) for f in folds]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-real", action="store_true", help="skip the real ISIC 2020 check")
    parser.add_argument("--patients", type=int, default=1000, help="patients per synthetic train/test set")
    args = parser.parse_args(argv)

    out: dict = {"generator": {**GEN, "n_patients": args.patients}, "n_boot": N_BOOT}

    # 1. synthetic, 3 seeds, held-out patients
    per_seed = []
    for seed in tqdm(range(3), desc="synthetic seeds"):
        train = make_ugly_duckling(args.patients, **GEN, random_state=100 + seed)
        test = make_ugly_duckling(args.patients, **GEN, random_state=200 + seed)
        test["patient_id"] = "T" + test["patient_id"]  # new patients
        scores, seconds = synthetic_scores(train, test, seed)
        y, pid = test["target"].to_numpy(), test["patient_id"].to_numpy()
        rows = {name: metric_row(y, s, pid) for name, s in scores.items()}
        diffs = {}
        for ref in ("SetRanker(context=False)", "distance to patient mean (no training)"):
            d = paired_bootstrap("auc", y, scores["SetRanker"], scores[ref], pid, n_boot=N_BOOT,
                                 random_state=0)
            diffs[f"SetRanker - {ref}"] = {"estimate": d.estimate, "low": d.low, "high": d.high}
        per_seed.append({"seed": seed, "n_train": len(train), "n_test": len(test),
                         "n_test_melanomas": int(y.sum()), "n_test_patients": int(test["patient_id"].nunique()),
                         "rows": rows, "auc_differences": diffs, "fit_seconds": seconds})
    out["synthetic"] = per_seed

    # 2. difficulty sweep (seed 0)
    sweep = []
    for within in tqdm((0.4, 0.7, 1.0, 1.4), desc="within_scale sweep"):
        gen = {**GEN, "within_scale": within}
        train = make_ugly_duckling(args.patients, **gen, random_state=300)
        test = make_ugly_duckling(args.patients, **gen, random_state=400)
        test["patient_id"] = "T" + test["patient_id"]
        y, pid = test["target"].to_numpy(), test["patient_id"].to_numpy()
        entry = {"within_scale": within}
        for name, s in (("SetRanker", SetRanker(random_state=0).fit(train).predict_proba(test)[:, 1]),
                        ("SetRanker(context=False)",
                         SetRanker(context=False, random_state=0).fit(train).predict_proba(test)[:, 1]),
                        ("distance to patient mean", centroid_distance(test))):
            r = patient_bootstrap("auc", y, s, pid, n_boot=N_BOOT, random_state=0)
            entry[name] = {"estimate": r.estimate, "low": r.low, "high": r.high}
        sweep.append(entry)
    out["sweep"] = sweep

    # 3. real data
    out["real"] = None if args.no_real else real_check(None)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "set_synthetic.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "set_synthetic.md").write_text(render(out))
    print(render(out))
    return 0


def render(out: dict) -> str:
    g = out["generator"]
    lines = [
        "# SetRanker on synthetic ugly-duckling patients",
        "",
        "Produced by `nice python benchmarks/set_synthetic.py` (CPU, `SetRanker` defaults unless named).",
        f"Generator: `make_ugly_duckling({g['n_patients']}, dim={g['dim']}, "
        f"lesions_per_patient={tuple(g['lesions_per_patient'])}, melanoma_rate={g['melanoma_rate']}, "
        f"within_scale={g['within_scale']})`; each model is fitted on one draw of patients and scored on "
        "a second, independent draw (new patients). 95% CIs from a patient bootstrap "
        f"({out['n_boot']} resamples) of the held-out patients; differences from a paired patient bootstrap.",
        "",
    ]
    for run in out["synthetic"]:
        lines += [f"## Seed {run['seed']}: {run['n_train']} training lesions; held out {run['n_test']} lesions, "
                  f"{run['n_test_patients']} patients, {run['n_test_melanomas']} melanomas", "",
                  "| model | " + " | ".join(m[0] for m in METRICS) + " | fit s (CPU) |",
                  "|---|" + "---|" * (len(METRICS) + 1)]
        for name, row in run["rows"].items():
            lines.append(f"| {name} | " + " | ".join(fmt(row[m[0]]) for m in METRICS)
                         + f" | {run['fit_seconds'][name]:.1f} |")
        lines.append("")
        for name, d in run["auc_differences"].items():
            lines.append(f"- AUC {name}: {fmt(d)}")
        lines.append("")
    aucs = {name: [r["rows"][name]["AUC"]["estimate"] for r in out["synthetic"]] for name in out["synthetic"][0]["rows"]}
    lines += ["## AUC over the 3 seeds (mean, min to max)", "", "| model | mean AUC | range |", "|---|---|---|"]
    for name, v in aucs.items():
        lines.append(f"| {name} | {np.mean(v):.3f} | {min(v):.3f} to {max(v):.3f} |")
    lines += ["", "## Difficulty: AUC as benign lesions spread more around the patient's centre",
              "(`within_scale`; centre_scale = 1; seed 0; 95% patient-bootstrap CIs)", "",
              "| within_scale | SetRanker | SetRanker(context=False) | distance to patient mean |", "|---|---|---|---|"]
    for e in out["sweep"]:
        lines.append(f"| {e['within_scale']} | {fmt(e['SetRanker'])} | {fmt(e['SetRanker(context=False)'])} | "
                     f"{fmt(e['distance to patient mean'])} |")
    real = out.get("real")
    lines += ["", "## Real SIIM-ISIC 2020: SetRanker on scalar clinical inputs", ""]
    if real is None:
        lines.append("Not run (no shared data, or `--no-real`).")
    else:
        lines += [f"{real['n_lesions']} lesions, {real['n_patients']} patients, {real['n_melanomas']} melanomas; "
                  "out-of-fold scores from 5-fold `PatientKFold(random_state=0)`, one seed. Inputs: CNN logit "
                  "(EfficientNet-B1 OOF), age, sex, site (one-hot); no image size.", "",
                  "| model | " + " | ".join(m[0] for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for name, row in real["rows"].items():
            lines.append(f"| {name} | " + " | ".join(fmt(row[m[0]]) for m in METRICS) + " |")
        lines.append("")
        for name, d in real["auc_differences"].items():
            lines.append(f"- AUC {name}: {fmt(d)}")
        fs = real["fit_seconds_per_fold"]
        lines.append(f"- SetRanker fit time on ~{real['train_lesions_per_fold']} lesions: "
                     f"{np.mean(fs):.1f} s CPU per fold (min {min(fs):.1f}, max {max(fs):.1f}; process time, "
                     "one torch thread; wall time was higher on the shared 2-core machine).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
