"""ContextRanker against its baselines on the real SIIM-ISIC 2020 CNN scores (issue 3).

Data: the out-of-fold probabilities of a real EfficientNet-B1 (``oof_effnet_b1_dev.csv``, 23,299
lesions, 1,440 patients, 436 melanomas) joined with the ISIC 2020 metadata and image sizes; the
CNN's ``fold`` and ISIC's ``tfrecord`` columns are dropped (they leak the label).

Two settings, each with its own baselines, every model fitted out of fold by
:func:`dermctx.benchmark` (5-fold PatientKFold x 3 seeds, patient-bootstrap 95% CIs):

* clinical: CNN score, age, sex, site;
* competition: the same plus image width/height (an acquisition artefact of ISIC 2020).

Rows: CNN alone; LightGBM on the same inputs (the CNN logit as a feature, MetadataGBM defaults);
the same LightGBM tuned by nested CV (:class:`TunedGBM`: hyperparameters chosen inside each outer
training fold by inner 3-fold PatientKFold AUC over a 10-config grid, refitted on the whole outer
training fold, Platt-calibrated); context GBM (LightGBM plus patient-relative features of the
logit, and of image size in the competition setting); SetRanker on the same per-lesion inputs;
ContextRanker (defaults; ``use_image_size=True`` in the competition setting); ablations. Then
paired-bootstrap differences of ContextRanker against the best baseline (CNN alone, LightGBM or
LightGBM tuned), the goals of the issue checked, and the same check against the better of CNN
alone and untuned LightGBM only (the comparison before the tuned baseline existed).

Also the synthetic check: ContextRanker with ``emb_*`` inputs on
:func:`dermctx.synthetic.make_ugly_duckling` against a per-lesion LightGBM of the same inputs.

Run by hand (12-30 min on 2 busy cores, by load)::

    nice python benchmarks/ranking_real.py --n-boot 500   # what results/ holds
    nice python benchmarks/ranking_real.py --quick    # 1 seed, 200 bootstrap resamples (smoke)
    nice python benchmarks/ranking_real.py --goal-only --n-boot 500   # goal rows only (~7 min)

Writes ``benchmarks/results/ranking_real.md`` and ``.json`` (``ranking_real_goal.*`` with
``--goal-only``), with the command, the date and the load average of the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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
from dermctx.splits import PatientKFold

RESULTS = Path(__file__).resolve().parent / "results"
TUNED = "LightGBM, tuned (nested CV)"


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


# The grid of TunedGBM: MetadataGBM's defaults, then one or two changes at a time (tree size,
# learning rate x rounds, leaf size, L2, feature fraction, class weights). Ties go to the first.
GRID: tuple[dict[str, object], ...] = (
    {},
    {"num_leaves": 4, "n_estimators": 300},
    {"num_leaves": 31, "min_child_samples": 100},
    {"learning_rate": 0.01, "n_estimators": 600},
    {"learning_rate": 0.1, "n_estimators": 100},
    {"min_child_samples": 200, "reg_lambda": 10.0},
    {"colsample_bytree": 0.5},
    {"class_weight": None},
    {"class_weight": None, "num_leaves": 7, "learning_rate": 0.02, "n_estimators": 400},
    {"num_leaves": 7, "learning_rate": 0.02, "n_estimators": 400, "min_child_samples": 100,
     "reg_lambda": 10.0, "colsample_bytree": 0.6},
)

# Every TunedGBM.fit appends (chosen grid index, inner AUCs) here, so the script can report what
# nested CV picked; dermctx.benchmark clones and discards the fitted estimators.
CHOICES: list[dict[str, object]] = []


class TunedGBM(ClassifierMixin, BaseEstimator):
    """LightGBM on ``cols`` with hyperparameters chosen by inner patient-grouped CV (nested CV).

    ``fit`` scores every config of ``grid`` (MetadataGBM keyword overrides) by the mean AUC over
    the ``inner_folds`` folds of a :class:`~dermctx.PatientKFold` of the training rows (mean of
    per-fold AUCs, so calibration drift between inner folds costs nothing), then refits the best
    config on all training rows. Ties go to the earlier config (the grid starts at the defaults).

    The output is Platt-calibrated on the chosen config's inner out-of-fold logits, as
    ContextRanker's is: configs with and without class weights give logits on different scales,
    and without calibration outer folds that chose differently would not be comparable in a
    pooled AUC.

    Attributes
    ----------
    best_index_ : int
        Position of the chosen config in ``grid``.
    best_params_ : dict
        The chosen MetadataGBM overrides.
    cv_auc_ : ndarray, shape (len(grid),)
        Mean inner AUC of each config.
    estimator_ : MetadataGBM
        The refitted model.
    platt_ : tuple of float
        ``(a, b)``: probability = sigmoid(a * logit + b).
    """

    def __init__(self, cols=(), grid=GRID, inner_folds=3, random_state=0):
        self.cols = cols
        self.grid = grid
        self.inner_folds = inner_folds
        self.random_state = random_state

    def _gbm(self, params) -> MetadataGBM:
        return MetadataGBM(**{"random_state": self.random_state, "n_jobs": 1, **params})

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        from dermctx.metrics import auc

        y = np.asarray(y, dtype=int)
        frame = X[list(self.cols)].reset_index(drop=True)
        cv = PatientKFold(self.inner_folds, shuffle=True, random_state=self.random_state)
        splits = list(cv.split(X.reset_index(drop=True), y))
        scores = np.zeros((len(self.grid), len(splits)))
        oof = np.zeros((len(self.grid), len(y)))  # inner out-of-fold logits of each config
        for i, params in enumerate(self.grid):
            for j, (tr, va) in enumerate(splits):
                gbm = self._gbm(params).fit(frame.iloc[tr], y[tr])
                oof[i, va] = gbm.decision_function(frame.iloc[va])
                scores[i, j] = auc(y[va], oof[i, va])
        self.cv_auc_ = scores.mean(axis=1)
        self.best_index_ = int(np.argmax(self.cv_auc_))
        self.best_params_ = dict(self.grid[self.best_index_])
        platt = LogisticRegression(C=1e6).fit(oof[self.best_index_][:, None], y)
        self.platt_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        self.estimator_ = self._gbm(self.best_params_).fit(frame, y)
        self.classes_ = self.estimator_.classes_
        CHOICES.append({"best_index": self.best_index_, "cv_auc": self.cv_auc_.round(4).tolist()})
        return self

    def predict_proba(self, X):
        a, b = self.platt_
        z = a * self.estimator_.decision_function(X[list(self.cols)].reset_index(drop=True)) + b
        p = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1.0 - p, p])


def _models(setting: str, *, goal_only: bool = False) -> dict[str, object]:
    from dermctx.models.set_transformer import SetRanker

    base = ["cnn_logit", "age", "sex", "site"]
    size = ["width", "height"] if setting == "competition" else []
    size_ctx = ["log_area", "width"] if size else []
    gbm = MetadataGBM()
    if goal_only:
        return {"CNN alone": None,
                "LightGBM (same inputs)": Columns(gbm, base + size),
                TUNED: TunedGBM(base + size),
                "ContextRanker": ContextRanker(use_image_size=bool(size))}
    models: dict[str, object] = {
        "CNN alone": None,
        "LightGBM (same inputs)": Columns(gbm, base + size),
        TUNED: TunedGBM(base + size),
        "context GBM": Columns(gbm, base + size, ["cnn_logit", *size_ctx]),
        "SetRanker": SetRanker(embedding_prefix=None, features=["cnn_logit", "age", *size]),
        "ContextRanker": ContextRanker(use_image_size=bool(size)),
    }
    models["ablation: ContextRanker without the within-patient gate"] = ContextRanker(
        use_image_size=bool(size), within_patient=1.0)
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


def _goal_checks(result, setting: str, n_boot: int, baselines: list[str]) -> dict[str, object]:
    """ContextRanker against the best (pooled AUC) of ``baselines``, paired over patients."""
    pred = result.predictions
    summary = result.summary()
    best = max(baselines, key=lambda m: summary.loc[m, "auc"])
    out: dict[str, object] = {"baselines": list(baselines), "best_baseline": best}
    for metric in ("auc", "top1"):  # keys of dermctx.metrics.METRICS
        diffs = []
        for _seed, rows in pred.groupby("seed"):
            r = paired_bootstrap(metric, rows["target"], rows["ContextRanker"], rows[best],
                                 rows["patient_id"], n_boot=n_boot, random_state=0)
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
    cnn_wp = summary.loc["CNN alone", "within_patient_auc"]
    cr_wp = summary.loc["ContextRanker", "within_patient_auc"]
    out["goal: within-patient AUC >= CNN's"] = bool(cr_wp >= cnn_wp)
    out["within-patient AUC (ContextRanker, CNN)"] = [float(cr_wp), float(cnn_wp)]
    return out


def _goal_lines(goals: dict[str, object]) -> list[str]:
    lines = []
    for key, value in goals.items():
        if key == "baselines":
            continue
        if isinstance(value, dict):
            value = f"{value['estimate']:+.4f} [{value['ci_low']:+.4f}, {value['ci_high']:+.4f}]"
        lines.append(f"- {key}: {value}")
    return lines


def _choices_summary(choices: list[dict[str, object]]) -> dict[str, object]:
    """How often nested CV picked each grid config, and the mean inner AUC of each."""
    picked = np.bincount([c["best_index"] for c in choices], minlength=len(GRID))
    mean_auc = np.mean([c["cv_auc"] for c in choices], axis=0)
    return {"outer_fits": len(choices),
            "configs": [{"index": i, "params": GRID[i], "times_chosen": int(picked[i]),
                         "mean_inner_auc": round(float(mean_auc[i]), 4)} for i in range(len(GRID))]}


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
    parser.add_argument("--goal-only", action="store_true",
                        help="only the rows the goals need: CNN alone, LightGBM, LightGBM tuned, "
                             "ContextRanker (no ablations, SetRanker, context GBM or synthetic check)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output stem (default results/ranking_real, or results/ranking_real_goal "
                             "with --goal-only)")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [0, 1, 2]
    n_boot = args.n_boot or (200 if args.quick else 1000)
    out_stem = args.out or RESULTS / ("ranking_real_goal" if args.goal_only else "ranking_real")
    command = f"python benchmarks/ranking_real.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()

    table = load_isic_oof()
    table["cnn_logit"] = _logit(table["cnn_score"].to_numpy())
    table["log_area"] = np.log(table["width"] * table["height"])
    report = {"command": command, "started_utc": started.isoformat(timespec="seconds"),
              "load_average_start": load_start,
              "data": {"images": len(table), "patients": int(table["patient_id"].nunique()),
                       "melanomas": int(table["target"].sum())},
              "fit_seconds_full_data": _fit_time(table)}
    body: list[str] = []
    for setting in ("clinical", "competition"):
        CHOICES.clear()
        result = dermctx.benchmark(table, _models(setting, goal_only=args.goal_only),
                                   score_col="cnn_score", folds=5, seeds=seeds, n_boot=n_boot)
        goals = _goal_checks(result, setting, n_boot, ["CNN alone", "LightGBM (same inputs)", TUNED])
        old = _goal_checks(result, setting, n_boot, ["CNN alone", "LightGBM (same inputs)"])
        tuning = _choices_summary(CHOICES)
        report[setting] = {"benchmark": result.to_dict(), "goals": goals,
                           "goals_vs_untuned_baselines": old, "tuned_gbm_choices": tuning}
        body += [f"## {setting} setting", "", result.to_markdown(), "",
                 f"ContextRanker vs the best of CNN alone, LightGBM and LightGBM tuned "
                 f"(**{goals['best_baseline']}**), paired bootstrap over patients, mean over seeds:", "",
                 *_goal_lines(goals), "",
                 f"For comparison, against the better of CNN alone and the untuned LightGBM only "
                 f"(**{old['best_baseline']}**; the check before the tuned baseline existed):", "",
                 *_goal_lines(old), "",
                 f"Nested CV of {TUNED!r}: config chosen in each of the {tuning['outer_fits']} outer "
                 "training folds (inner 3-fold PatientKFold, mean per-fold AUC):", "",
                 "| config (changes to MetadataGBM defaults) | times chosen | mean inner AUC |",
                 "|---|---|---|",
                 *[f"| {c['params'] or 'defaults'} | {c['times_chosen']} | {c['mean_inner_auc']:.4f} |"
                   for c in tuning["configs"]], ""]
        print("\n".join(body[-40:]), flush=True)
    if not args.goal_only:
        synth = _synthetic(seeds)
        report["synthetic"] = synth
        body += ["## synthetic ugly-duckling check", "", f"{synth['make_ugly_duckling']}; test AUC, mean over "
                 f"{len(seeds)} seed(s): " + ", ".join(f"{k} {v:.3f}" for k, v in synth["mean"].items()), ""]
    finished = dt.datetime.now(dt.timezone.utc)
    report["finished_utc"] = finished.isoformat(timespec="seconds")
    report["load_average_end"] = os.getloadavg()
    load = lambda la: ", ".join(f"{x:.2f}" for x in la)  # noqa: E731
    md = ["# ContextRanker on real SIIM-ISIC 2020 CNN scores", "",
          f"Command: `{command}`", "",
          f"Run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC on a shared 2-core machine; load average "
          f"(1, 5, 15 min) {load(load_start)} at the start, {load(report['load_average_end'])} at the end.", "",
          f"{len(table)} lesions, {table['patient_id'].nunique()} patients, "
          f"{int(table['target'].sum())} melanomas; out-of-fold EfficientNet-B1 scores. "
          f"{len(seeds)} seed(s) x 5-fold PatientKFold; {n_boot} patient-bootstrap resamples.", "",
          f"ContextRanker fit time on all {len(table)} lesions (default settings, 1 thread): "
          f"{report['fit_seconds_full_data']}", "",
          f"{TUNED!r}: LightGBM on the same inputs as 'LightGBM (same inputs)', hyperparameters chosen "
          f"inside each outer training fold from {len(GRID)} configs by inner 3-fold PatientKFold AUC, "
          "then refitted on the whole outer training fold.", "", *body]
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    out_stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {out_stem.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
