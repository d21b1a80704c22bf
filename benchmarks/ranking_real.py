"""ContextRanker against its baselines on the real SIIM-ISIC 2020 CNN scores (issue 3).

Data: the out-of-fold probabilities of a real EfficientNet-B1 (``oof_effnet_b1_dev.csv``, 23,299
lesions, 1,440 patients, 436 melanomas) joined with the ISIC 2020 metadata and image sizes; the
CNN's ``fold`` and ISIC's ``tfrecord`` columns are dropped (they leak the label).

Two settings, each with its own baselines, every model fitted out of fold by
:func:`dermctx.benchmark` (5-fold PatientKFold x 3 seeds, patient-bootstrap 95% CIs):

* clinical: CNN score, age, sex, site;
* competition: the same plus image width/height (an acquisition artefact of ISIC 2020).

Rows: CNN alone; LightGBM on the same inputs (the CNN logit as a feature); context GBM (LightGBM
plus patient-relative features of the logit, and of image size in the competition setting);
SetRanker on the same per-lesion inputs; ContextRanker (defaults; ``use_image_size=True`` in the
competition setting); ablations. Then paired-bootstrap differences of ContextRanker against the
better baseline (CNN alone or LightGBM), and the goals of the issue checked.

Also the synthetic check: ContextRanker with ``emb_*`` inputs on
:func:`dermctx.synthetic.make_ugly_duckling` against a per-lesion LightGBM of the same inputs.

Run by hand (about 30 min on 2 busy cores)::

    nice python benchmarks/ranking_real.py --n-boot 500   # what results/ holds
    nice python benchmarks/ranking_real.py --quick    # 1 seed, 200 bootstrap resamples (smoke)

Writes ``benchmarks/results/ranking_real.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_data import load_isic_oof

import dermctx
from dermctx.features import patient_context_features
from dermctx.metrics import paired_bootstrap
from dermctx.models.gbm import MetadataGBM
from dermctx.models.ranker import ContextRanker, _logit

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = {"auc": "auc", "pauc80": "partial_auc", "within_patient_auc": "within_patient_auc",
           "top1": "top1", "top3": "top3"}


class Columns(ClassifierMixin, BaseEstimator):
    """A baseline: ``estimator`` on the columns ``cols`` of a lesion table, optionally with the
    patient-context features of ``context_cols`` (computed within the rows it is given)."""

    def __init__(self, estimator=None, cols=(), context_cols=()):
        self.estimator = estimator
        self.cols = cols
        self.context_cols = context_cols

    def _x(self, X: pd.DataFrame) -> pd.DataFrame:
        frame = X[list(self.cols)].reset_index(drop=True)
        if self.context_cols:
            ctx = patient_context_features(X, list(self.context_cols), embedding_prefix=None)
            frame = pd.concat([frame, ctx.reset_index(drop=True)], axis=1)
        return frame

    def fit(self, X, y):
        self.estimator_ = clone(self.estimator).fit(self._x(X), np.asarray(y))
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X):
        return self.estimator_.predict_proba(self._x(X))


def _models(setting: str) -> dict[str, object]:
    from dermctx.models.set_transformer import SetRanker

    base = ["cnn_logit", "age", "sex", "site"]
    size = ["width", "height"] if setting == "competition" else []
    size_ctx = ["log_area", "width"] if size else []
    gbm = MetadataGBM()
    models: dict[str, object] = {
        "CNN alone": None,
        "LightGBM (same inputs)": Columns(gbm, base + size),
        "context GBM": Columns(gbm, base + size, ["cnn_logit", *size_ctx]),
        "SetRanker": SetRanker(embedding_prefix=None, features=["cnn_logit", "age", *size]),
        "ContextRanker": ContextRanker(use_image_size=bool(size)),
    }
    if setting == "clinical":
        models["ablation: ContextRanker without CNN-logit context"] = ContextRanker(score_context=False)
        models["ablation: LightGBM, no class weights"] = Columns(MetadataGBM(class_weight=None), base)
    else:
        models["ablation: ContextRanker, raw size only (no patient-relative size)"] = ContextRanker(
            extra_features=("width", "height"))
        models["ablation: ContextRanker without CNN-logit context"] = ContextRanker(
            use_image_size=True, score_context=False)
        models["ablation: binned logit (context GBM with size context, no offset)"] = Columns(
            gbm, base + size, ["width", "log_area"])
    return models


def _goal_checks(result, setting: str, n_boot: int) -> dict[str, object]:
    """ContextRanker against the better of CNN alone and LightGBM, paired over patients."""
    pred = result.predictions
    summary = result.summary()
    best = max(["CNN alone", "LightGBM (same inputs)"], key=lambda m: summary.loc[m, "auc"])
    out: dict[str, object] = {"best_baseline": best}
    for metric in ("auc", "top1"):
        name = {"auc": "auc", "top1": "topk_rate"}[metric]
        kw = {"k": 1} if metric == "top1" else {}
        diffs = []
        for _seed, rows in pred.groupby("seed"):
            r = paired_bootstrap(name, rows["target"], rows["ContextRanker"], rows[best],
                                 rows["patient_id"], n_boot=n_boot, seed=0, **kw)
            diffs.append((r.estimate, r.low, r.high))
        est, lo, hi = np.mean(diffs, axis=0)
        out[f"{metric}_diff_vs_best"] = {"estimate": est, "ci_low": lo, "ci_high": hi}
    cnn_top1 = summary.loc["CNN alone", "top1"]
    cr_top1 = summary.loc["ContextRanker", "top1"]
    d = out["auc_diff_vs_best"]
    if setting == "competition":
        out["goal: AUC >= best + 0.01"] = bool(d["estimate"] >= 0.01)
        out["stretch: AUC >= best + 0.015"] = bool(d["estimate"] >= 0.015)
    else:
        out["goal: AUC diff >= 0 and CI low >= -0.005"] = bool(d["estimate"] >= 0 and d["ci_low"] >= -0.005)
        out["stretch: AUC >= best + 0.01"] = bool(d["estimate"] >= 0.01)
    out["goal: top-1 >= CNN top-1"] = bool(cr_top1 >= cnn_top1)
    out["top1 (ContextRanker, CNN)"] = [float(cr_top1), float(cnn_top1)]
    return out


def _synthetic(seeds: list[int]) -> dict[str, object]:
    """Ugly-duckling check: embedding context vs a per-lesion model of the same inputs."""
    from dermctx.metrics import auc
    from dermctx.synthetic import make_ugly_duckling
    from dermctx.table import embedding_columns

    rows = []
    for seed in seeds:
        train = make_ugly_duckling(300, within_scale=0.9, random_state=100 + seed)
        test = make_ugly_duckling(300, within_scale=0.9, random_state=200 + seed)
        emb = embedding_columns(train)
        X = train.drop(columns=["target", "diagnosis"])
        cr = ContextRanker(score_col=None, random_state=seed).fit(X, train["target"])
        per = MetadataGBM(random_state=seed).fit(train[[*emb, "age", "sex", "site"]], train["target"])
        rows.append({
            "seed": seed,
            "ContextRanker (emb_*)": auc(test["target"], cr.predict_proba(test)[:, 1]),
            "per-lesion LightGBM (emb_*)": auc(
                test["target"], per.predict_proba(test[[*emb, "age", "sex", "site"]])[:, 1]),
        })
    return {"make_ugly_duckling": "300 train / 300 test patients, within_scale=0.9, dim=16",
            "per_seed": rows,
            "mean": {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}}


def _fit_time(table: pd.DataFrame) -> dict[str, float]:
    out = {}
    for name, model in (("clinical", ContextRanker()), ("competition", ContextRanker(use_image_size=True))):
        t0 = time.perf_counter()
        model.fit(table, table["target"])
        out[name] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 200 resamples (smoke run)")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 1000)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ranking_real")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [0, 1, 2]
    n_boot = args.n_boot or (200 if args.quick else 1000)

    table = load_isic_oof()
    table["cnn_logit"] = _logit(table["cnn_score"].to_numpy())
    table["log_area"] = np.log(table["width"] * table["height"])
    report = {"data": {"images": len(table), "patients": int(table["patient_id"].nunique()),
                       "melanomas": int(table["target"].sum())},
              "fit_seconds_full_data": _fit_time(table)}
    md = ["# ContextRanker on real SIIM-ISIC 2020 CNN scores", "",
          f"Command: `nice python benchmarks/ranking_real.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
          f"{len(table)} lesions, {table['patient_id'].nunique()} patients, "
          f"{int(table['target'].sum())} melanomas; out-of-fold EfficientNet-B1 scores. "
          f"{len(seeds)} seed(s) x 5-fold PatientKFold; {n_boot} patient-bootstrap resamples.", "",
          f"ContextRanker fit time on all {len(table)} lesions (default settings, 1 thread): "
          f"{report['fit_seconds_full_data']}", ""]
    for setting in ("clinical", "competition"):
        result = dermctx.benchmark(table, _models(setting), score_col="cnn_score", folds=5,
                                   seeds=seeds, n_boot=n_boot)
        goals = _goal_checks(result, setting, n_boot)
        report[setting] = {"benchmark": result.to_dict(), "goals": goals}
        md += [f"## {setting} setting", "", result.to_markdown(), "",
               f"ContextRanker vs the better baseline (**{goals['best_baseline']}**), paired "
               "bootstrap over patients, mean over seeds:", ""]
        for key, value in goals.items():
            if isinstance(value, dict):
                value = f"{value['estimate']:+.4f} [{value['ci_low']:+.4f}, {value['ci_high']:+.4f}]"
            md.append(f"- {key}: {value}")
        md.append("")
        print("\n".join(md[-12:]), flush=True)
    synth = _synthetic(seeds)
    report["synthetic"] = synth
    md += ["## synthetic ugly-duckling check", "", f"{synth['make_ugly_duckling']}; test AUC, mean over "
           f"{len(seeds)} seed(s): " + ", ".join(f"{k} {v:.3f}" for k, v in synth["mean"].items()), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
