"""Side-by-side, patient-grouped comparison of melanoma rankers: :func:`benchmark`.

Each model is cloned and fitted once per fold of a :class:`~dermctx.PatientKFold` split (one
split per seed), so every prediction is *out of fold*: it comes from a model that never saw that
patient (nor a lesion or duplicate image linked to them). The out-of-fold scores of all models are
then scored with the same metrics (:mod:`dermctx.metrics`) on the same patients, with
patient-bootstrap 95% confidence intervals and paired-bootstrap differences against a reference
model (by default the raw CNN score: "CNN alone").

Example
-------
>>> import dermctx
>>> table = dermctx.read_table("lesions.parquet")           # doctest: +SKIP
>>> result = dermctx.benchmark(
...     table, {"CNN alone": None, "ContextRanker": dermctx.ContextRanker()},
...     score_col="cnn_score", folds=5, seeds=(0, 1, 2))   # doctest: +SKIP
>>> print(result.to_markdown())                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from tqdm.auto import tqdm

from dermctx._deprecation import warn_renamed
from dermctx.errors import DermctxError, ModelError, TableError
from dermctx.formatting import format_ci, plural

# Columns never handed to an estimator as part of ``X``: the label and what is derived from it
# (a CNN's own ``fold`` column and the ISIC ``tfrecord`` split also leak the label, and so does
# HAM10000's ``dx_type``, how the diagnosis was made; they are removed too).
from dermctx.label_guard import LABEL_COLUMNS

# the metric registry, under a private name: this module's METRICS is the deprecated old one
from dermctx.metrics import METRICS as _METRICS

__all__ = [
    "BENCHMARK_METRICS",
    "LABEL_COLUMNS",
    "SCORE",
    "BenchmarkResult",
    "benchmark",
]

#: The model spec meaning "the raw ``score_col``, as it is" (also ``None``).
SCORE = "score"

#: The metrics :func:`benchmark` computes by default: keys of :data:`dermctx.metrics.METRICS`
#: (the one registry of keys, display labels and directions), in report order.
BENCHMARK_METRICS: tuple[str, ...] = (
    "auc", "pauc80", "within_patient_auc", "top1", "top3", "top15_sensitivity", "fold_auc",
)


def __getattr__(name: str) -> Any:
    # deprecated: the old registry of this module, {key: (label, higher is better)}
    if name == "METRICS":
        warn_renamed("dermctx.benchmarking", "METRICS",
                     "dermctx.metrics.METRICS (key -> Metric with .label and .higher_is_better; "
                     "the default keys are dermctx.benchmarking.BENCHMARK_METRICS)", kind="",
                     stacklevel=3)
        return {k: (_METRICS[k].label, _METRICS[k].higher_is_better) for k in BENCHMARK_METRICS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# table columns carried into the result for reports (subgroups, per-patient views)
_META_COLUMNS = (
    "image_id", "patient_id", "lesion_id", "age", "sex", "site", "diagnosis", "source", "path",
    "width", "height",
)


@dataclass
class BenchmarkResult:
    """What :func:`benchmark` measured.

    Attributes
    ----------
    predictions : DataFrame
        One row per (seed, image): ``image_id, patient_id, target, seed, fold`` and one column of
        out-of-fold scores per model (named as the model). Rows of one seed are in input order.
    metrics : DataFrame
        Tidy: ``model, metric, estimate, ci_low, ci_high, n_images, n_patients, n_melanomas,
        n_seeds``. ``estimate`` is the mean over seeds; the CI is a patient-bootstrap 95% interval
        of that mean (the same patients resampled for every seed).
    differences : DataFrame
        Tidy: ``model, reference, metric, difference, ci_low, ci_high`` (model minus reference,
        paired bootstrap over patients).
    per_seed : DataFrame
        ``model, seed, metric, value``: each seed's own figure.
    reference : str
        The model the differences are taken against.
    table : DataFrame
        The metadata columns of the input table (``image_id, patient_id, age, sex, site, ...``),
        in input order, for reports.
    config : dict
        The settings of the run (folds, seeds, n_boot, random_state, models, timings).
    """

    predictions: pd.DataFrame
    metrics: pd.DataFrame
    differences: pd.DataFrame
    per_seed: pd.DataFrame
    reference: str
    table: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Model names, in the order given."""
        return list(self.config.get("models", {}))

    def summary(self) -> pd.DataFrame:
        """Wide table: one row per model, ``estimate`` per metric (columns in
        :data:`dermctx.metrics.METRICS` order)."""
        wide = self.metrics.pivot(index="model", columns="metric", values="estimate")
        cols = [m for m in _METRICS if m in wide.columns]
        return wide.loc[self.models, cols]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: config, metrics, differences and per-seed figures."""

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            out = []
            for row in frame.to_dict(orient="records"):
                out.append({k: _json_value(v) for k, v in row.items()})
            return out

        return {
            "reference": self.reference,
            "config": {k: _json_value(v) for k, v in self.config.items()},
            "metrics": records(self.metrics),
            "differences": records(self.differences),
            "per_seed": records(self.per_seed),
        }

    def to_json(self, path: str | PathLike[str] | None = None) -> str:
        """The result as JSON (see :meth:`to_dict`); also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        return text

    def to_markdown(self, digits: int = 4) -> str:
        """The model table (estimate [95% CI] per metric) and the differences, as Markdown."""
        lines = []
        cols = [m for m in _METRICS if m in set(self.metrics["metric"])]
        lines.append("| model | " + " | ".join(_METRICS[m].label for m in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        by = self.metrics.set_index(["model", "metric"])
        for model in self.models:
            cells = []
            for m in cols:
                r = by.loc[(model, m)]
                cells.append(format_ci(r["estimate"], r["ci_low"], r["ci_high"], digits))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        if len(self.differences):
            lines.append("")
            lines.append(f"Paired-bootstrap differences against **{self.reference}** "
                         "(model minus reference, 95% CI):")
            lines.append("")
            lines.append("| model | " + " | ".join(_METRICS[m].label for m in cols) + " |")
            lines.append("|---|" + "---|" * len(cols))
            dby = self.differences.set_index(["model", "metric"])
            for model in [m for m in self.models if m != self.reference]:
                cells = []
                for m in cols:
                    if (model, m) in dby.index:
                        r = dby.loc[(model, m)]
                        cells.append(format_ci(r["difference"], r["ci_low"], r["ci_high"], digits,
                                             signed=True))
                    else:
                        cells.append("")
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
        c = self.config
        how = (f"out-of-fold predictions of {c.get('folds')}-fold PatientKFold, seeds "
               f"{list(c.get('seeds', []))}" if c.get("fitted_models") else "scores as given")
        lines.append("")
        lines.append(
            f"{plural(c.get('n_images'), 'image')}, {plural(c.get('n_patients'), 'patient')}, "
            f"{plural(c.get('n_melanomas'), 'melanoma')}; {how}; "
            f"{plural(c.get('n_boot'), 'patient-bootstrap resample')} (95% CIs)."
        )
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"BenchmarkResult(models={self.models}, reference={self.reference!r})\n" + \
            self.summary().round(4).to_string()


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if pd.isna(v):
        return None
    return str(v)


# --- out-of-fold predictions ------------------------------------------------------------------


def _positive_score(estimator: Any, X: pd.DataFrame, name: str) -> np.ndarray:
    """The melanoma score of ``estimator`` on ``X``: P(class 1), else decision_function."""
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(X))
        if proba.ndim == 2:
            classes = list(getattr(estimator, "classes_", range(proba.shape[1])))
            col = classes.index(1) if 1 in classes else proba.shape[1] - 1
            out = proba[:, col]
        else:
            out = proba
    elif hasattr(estimator, "decision_function"):
        out = np.asarray(estimator.decision_function(X))
    else:
        raise ModelError(
            f"model {name!r} ({type(estimator).__name__}) has neither predict_proba nor "
            "decision_function; expected a fitted scikit-learn style classifier"
        )
    out = np.asarray(out, dtype=float).reshape(-1)
    if len(out) != len(X):
        raise ModelError(f"model {name!r} returned {len(out)} scores for {len(X)} rows")
    return out


def _check_models(models: Mapping[str, Any], table: pd.DataFrame, score_col: str | None
                  ) -> dict[str, Any]:
    if not isinstance(models, Mapping) or len(models) == 0:
        raise DermctxError(
            "benchmark: models must be a non-empty mapping {name: estimator, None or 'score'}, "
            f"got {models!r}"
        )
    specs: dict[str, Any] = {}
    for name, spec in models.items():
        if not isinstance(name, str) or not name or name in _RESERVED:
            raise DermctxError(
                f"benchmark: model name {name!r} is not allowed; use a non-empty string other than "
                f"{sorted(_RESERVED)}"
            )
        if spec is None or (isinstance(spec, str) and spec == SCORE):
            if score_col is None:
                raise DermctxError(
                    f"benchmark: model {name!r} is the raw score, but score_col is None; pass "
                    "score_col= naming the column of CNN scores"
                )
            if score_col not in table.columns:
                raise TableError(
                    f"benchmark: model {name!r} is the raw score, but the table has no score "
                    f"column {score_col!r} (columns {list(table.columns)[:20]}); add it or pass "
                    "score_col= naming the column of CNN scores"
                )
            specs[name] = score_col
        elif isinstance(spec, str):
            if spec not in table.columns:
                raise TableError(
                    f"benchmark: model {name!r} names the column {spec!r}, which the table lacks "
                    f"(columns {list(table.columns)[:20]})"
                )
            specs[name] = spec
        elif hasattr(spec, "fit") and hasattr(spec, "get_params"):
            specs[name] = spec
        else:
            raise DermctxError(
                f"benchmark: model {name!r} is a {type(spec).__name__}; expected a scikit-learn "
                "style estimator, None, 'score' or the name of a score column"
            )
    return specs


_RESERVED = {"image_id", "patient_id", "target", "seed", "fold"}


def _raw_score(table: pd.DataFrame, col: str, name: str) -> np.ndarray:
    values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        from dermctx.table import describe_rows

        raise TableError(
            f"benchmark: score column {col!r} (model {name!r}) is missing or not a number at "
            f"{describe_rows(table, bad)}; expected a finite score on every row"
        )
    return values


def _oof_predictions(
    table: pd.DataFrame,
    specs: Mapping[str, Any],
    *,
    folds: int,
    seeds: Sequence[int],
    duplicates: pd.DataFrame | None,
    progress: bool,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Out-of-fold scores of every model, for every seed. Returns (predictions, fit seconds)."""
    from dermctx.splits import PatientKFold

    y = table["target"].to_numpy(dtype=int)
    X = table.drop(columns=[c for c in table.columns if str(c).lower() in LABEL_COLUMNS])
    fitted = {name: spec for name, spec in specs.items() if not isinstance(spec, str)}
    seconds = {name: 0.0 for name in fitted}
    frames = []
    bar = tqdm(total=len(seeds) * folds * max(len(fitted), 1), desc="benchmark: fitting",
               unit="fit", disable=not progress or not fitted, leave=False)
    for seed in seeds:
        cv = PatientKFold(folds, shuffle=True, random_state=int(seed), duplicates=duplicates)
        fold_of = cv.assign(table, y)
        out = pd.DataFrame({
            "image_id": table["image_id"].to_numpy(),
            "patient_id": table["patient_id"].to_numpy(),
            "target": y,
            "seed": int(seed),
            "fold": fold_of,
        })
        for name, spec in specs.items():
            if isinstance(spec, str):
                out[name] = _raw_score(table, spec, name)
                continue
            scores = np.full(len(table), np.nan)
            for k in range(folds):
                test = fold_of == k
                train = ~test
                if y[train].min() == y[train].max():
                    raise DermctxError(
                        f"benchmark: seed {seed}, fold {k}: the training patients have only one "
                        "class; use fewer folds or a table with more melanomas"
                    )
                t0 = time.perf_counter()
                est = clone(specs[name])
                # positional frames (a fresh RangeIndex): estimators need not handle odd indexes
                est.fit(X.iloc[np.flatnonzero(train)].reset_index(drop=True), y[train])
                X_test = X.iloc[np.flatnonzero(test)].reset_index(drop=True)
                scores[test] = _positive_score(est, X_test, name)
                seconds[name] += time.perf_counter() - t0
                bar.update(1)
            if not np.isfinite(scores).all():
                raise ModelError(
                    f"benchmark: model {name!r} gave {int((~np.isfinite(scores)).sum())} "
                    f"non-finite out-of-fold scores (seed {seed})"
                )
            out[name] = scores
        frames.append(out)
    bar.close()
    return pd.concat(frames, ignore_index=True), seconds


# --- metrics with patient-bootstrap CIs -------------------------------------------------------

class _FoldAUC:
    """Mean per-fold AUC, averaged over seeds, as a metric :func:`patient_bootstrap` can resample.

    The bootstrap hands a metric the labels and "scores" of the resampled rows. Here the "scores"
    are codes ``model * n + row`` (see :meth:`codes`), so the metric can look up, for the drawn
    rows, every seed's score and fold of that model. Folds with one class in a resample are
    skipped (the mean is over the folds where the AUC is defined); if none is, the resample is.
    """

    __name__ = "fold_auc"

    def __init__(self, scores: np.ndarray, folds: np.ndarray) -> None:
        self.scores = scores  # (M, S, n): model, seed, row
        self.folds = folds  # (S, n)

    def codes(self, model: int) -> np.ndarray:
        n = self.scores.shape[2]
        return (model * n + np.arange(n)).astype(float)

    def __call__(self, y: np.ndarray, s: np.ndarray) -> float:
        from dermctx.errors import MetricError
        from dermctx.metrics import auc

        n = self.scores.shape[2]
        code = s.astype(np.int64)
        model = int(code[0]) // n
        rows = code - model * n
        if rows.min() < 0 or rows.max() >= n:  # pragma: no cover - guards the encoding
            raise DermctxError("fold_auc: codes of two models mixed in one call")
        n_folds = int(self.folds.max()) + 1
        values = []
        for seed in range(self.scores.shape[1]):
            fold = self.folds[seed, rows]
            order = np.argsort(fold, kind="stable")  # rows grouped by fold: slices, not masks
            bounds = np.searchsorted(fold[order], np.arange(n_folds + 1))
            score = self.scores[model, seed, rows][order]
            label = y[order]
            per_fold = []
            for lo, hi in pairwise(bounds):
                try:
                    per_fold.append(auc(label[lo:hi], score[lo:hi]))
                except MetricError:
                    continue
            if per_fold:
                values.append(np.mean(per_fold))
        if not values:
            raise MetricError("fold_auc is undefined: no fold has both classes")
        return float(np.mean(values))


def _metric_tables(
    predictions: pd.DataFrame,
    model_names: Sequence[str],
    reference: str,
    seeds: Sequence[int],
    *,
    metric_names: Sequence[str],
    n_boot: int,
    random_state: int,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(metrics, differences, per_seed) tables; see :class:`BenchmarkResult`."""
    from dermctx import metrics as M

    by_seed = {s: predictions[predictions["seed"] == s] for s in seeds}
    first = by_seed[seeds[0]]
    y = first["target"].to_numpy(dtype=int)
    pid = first["patient_id"].to_numpy()
    n_pat = int(pd.unique(pid).size)
    common = {
        "n_images": len(first),
        "n_patients": n_pat,
        "n_melanomas": int(y.sum()),
        "n_seeds": len(seeds),
    }
    scores = np.stack([
        np.stack([by_seed[s][m].to_numpy(dtype=float) for s in seeds]) for m in model_names
    ])  # (M, S, n)
    folds = np.stack([by_seed[s]["fold"].to_numpy() for s in seeds])  # (S, n)
    fold_auc = _FoldAUC(scores, folds)
    ref = list(model_names).index(reference)

    jobs = (2 * len(model_names) - 1) * len(metric_names)
    bar = tqdm(total=jobs, desc="benchmark: bootstrap", unit="metric", disable=not progress,
               leave=False)
    rows, diffs, per_seed = [], [], []
    for name in metric_names:
        for i, model in enumerate(model_names):
            if name == "fold_auc":
                r = M.patient_bootstrap(fold_auc, y, fold_auc.codes(i), pid, n_boot=n_boot,
                                        random_state=random_state)
                est, lo, hi = r.estimate, r.low, r.high
                for j, s in enumerate(seeds):
                    per_seed.append({"model": model, "seed": s, "metric": name,
                                     "value": _FoldAUC(scores[:, j:j + 1], folds[j:j + 1])(
                                         y.astype(float), fold_auc.codes(i))})
            else:
                res = [M.patient_bootstrap(name, y, scores[i, j], pid, n_boot=n_boot,
                                           random_state=random_state) for j in range(len(seeds))]
                # every seed is resampled with the same patients (same seed, same patient order);
                # the seed-mean's interval is taken as the mean of the seeds' intervals
                est = float(np.mean([r.estimate for r in res]))
                lo = float(np.mean([r.low for r in res]))
                hi = float(np.mean([r.high for r in res]))
                per_seed += [{"model": model, "seed": s, "metric": name, "value": r.estimate}
                             for s, r in zip(seeds, res, strict=True)]
            rows.append({"model": model, "metric": name, "estimate": est, "ci_low": lo,
                         "ci_high": hi, **common})
            bar.update(1)
            if i == ref:
                continue
            if name == "fold_auc":
                d = M.paired_bootstrap(fold_auc, y, fold_auc.codes(i), fold_auc.codes(ref), pid,
                                       n_boot=n_boot, random_state=random_state)
                dest, dlo, dhi, p = d.estimate, d.low, d.high, d.p_le_0
            else:
                ds = [M.paired_bootstrap(name, y, scores[i, j], scores[ref, j], pid,
                                         n_boot=n_boot, random_state=random_state)
                      for j in range(len(seeds))]
                dest = float(np.mean([d.estimate for d in ds]))
                dlo = float(np.mean([d.low for d in ds]))
                dhi = float(np.mean([d.high for d in ds]))
                p = float(np.mean([d.p_le_0 for d in ds]))
            diffs.append({"model": model, "reference": reference, "metric": name,
                          "difference": dest, "ci_low": dlo, "ci_high": dhi, "p_le_0": p})
            bar.update(1)
    bar.close()

    def in_order(frame: pd.DataFrame) -> pd.DataFrame:  # models as given, then registry order
        key = frame["model"].map({m: i for i, m in enumerate(model_names)}) * len(_METRICS) + \
            frame["metric"].map({m: i for i, m in enumerate(_METRICS)})
        return frame.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)

    metrics = in_order(pd.DataFrame(rows))
    differences = in_order(pd.DataFrame(
        diffs, columns=["model", "reference", "metric", "difference", "ci_low", "ci_high", "p_le_0"]))
    return metrics, differences, in_order(pd.DataFrame(per_seed))


def benchmark(
    table: pd.DataFrame,
    models: Mapping[str, Any],
    *,
    score_col: str | None = None,
    folds: int = 5,
    seeds: Sequence[int] = (0,),
    n_boot: int = 2000,
    random_state: int = 0,
    duplicates: pd.DataFrame | None = None,
    reference: str | None = None,
    metrics: Sequence[str] = BENCHMARK_METRICS,
    progress: bool = True,
) -> BenchmarkResult:
    """Compare melanoma rankers side by side on out-of-fold, patient-grouped predictions.

    Parameters
    ----------
    table : DataFrame
        A labelled lesion table (``image_id``, ``patient_id``, ``target`` and whatever inputs the
        models read, e.g. ``cnn_score``, age, sex, site, ``emb_*``). Checked with
        :func:`dermctx.validate_table`.
    models : mapping of str to estimator, None or str
        ``{name: spec}``, in the order to report. An estimator (anything with ``fit`` and
        ``predict_proba`` or ``decision_function``, e.g. :class:`dermctx.ContextRanker`) is cloned
        and fitted on the training patients of each fold: ``fit(X, y)`` with ``X`` the table's
        rows minus :data:`LABEL_COLUMNS`. ``None`` or ``"score"`` means the raw ``score_col``
        as it is ("CNN alone"); any other string names a column of ready-made scores.
    score_col : str, optional
        The column of raw CNN scores (probabilities or logits; only their order matters for
        ranking metrics).
    folds : int
        Folds of :class:`dermctx.PatientKFold` (patients, lesions and duplicate groups kept
        whole, melanomas balanced).
    seeds : sequence of int
        The repetitions of the cross-validation: each is the ``random_state`` of one
        :class:`dermctx.PatientKFold` split, and every figure is the mean over the repetitions
        (the ``seed`` column of ``.predictions``, ``.per_seed``). Not the bootstrap's seed: that
        is ``random_state``.
    n_boot : int
        Patient-bootstrap resamples for every CI.
    random_state : int
        Seed of the bootstrap resampling (the same for every repetition).
    duplicates : DataFrame, optional
        Duplicate image pairs, passed to :class:`dermctx.PatientKFold` (pairs linking two patient
        ids keep them in one fold).
    reference : str, optional
        The model differences are taken against; default: the first raw-score model, else the
        first model.
    metrics : sequence of str
        Keys of :data:`dermctx.metrics.METRICS` to compute, reported in the registry's order
        (default :data:`BENCHMARK_METRICS`: the ranking metrics). Leave out ``"fold_auc"`` when
        the scores do not come from fitted folds (ready-made score columns): its bootstrap is the
        slowest. ``"brier_score"`` and ``"expected_calibration_error"`` need probabilities.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    BenchmarkResult
        ``.predictions`` (out-of-fold scores per seed), ``.metrics`` (by default AUC, pAUC (TPR >
        0.8), within-patient AUC, top-1 and top-3 rates, top-15 sensitivity and mean per-fold AUC,
        with 95% CIs), ``.differences`` (paired bootstrap against ``reference``), ``.to_json()``,
        ``.to_markdown()``.

    Notes
    -----
    Pooled out-of-fold AUC ranks lesions scored by different fold models against each other, so
    it penalises a model whose calibration drifts between folds; the mean per-fold AUC does not.
    Both are reported. For several seeds, each seed's CI uses the same patient resamples and the
    interval reported is the mean of the seeds' intervals (the mean per-fold AUC is resampled
    exactly, all seeds at once).
    """
    from dermctx.table import validate_table

    t0 = time.perf_counter()
    table = validate_table(table, labelled=True, name="benchmark table").reset_index(drop=True)
    specs = _check_models(models, table, score_col)
    seeds = [int(s) for s in (seeds if isinstance(seeds, Sequence) else [seeds])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise DermctxError(f"benchmark: seeds must be distinct integers, got {seeds!r}")
    if reference is None:
        raw = [name for name, spec in specs.items() if isinstance(spec, str)]
        reference = raw[0] if raw else next(iter(specs))
    elif reference not in specs:
        raise DermctxError(f"benchmark: reference {reference!r} is not one of the models {list(specs)}")
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown or not metrics:
        raise DermctxError(f"benchmark: unknown metric(s) {unknown}; expected some of the keys "
                           f"{list(_METRICS)} of dermctx.metrics.METRICS")
    metric_names = [m for m in _METRICS if m in metrics]
    if table["target"].nunique() < 2:
        raise TableError("benchmark: the table needs both melanomas (target 1) and other lesions")

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*only .* melanoma.*for .* folds")
        predictions, seconds = _oof_predictions(
            table, specs, folds=folds, seeds=seeds, duplicates=duplicates, progress=progress)
    metrics, differences, per_seed = _metric_tables(
        predictions, list(specs), reference, seeds, metric_names=metric_names, n_boot=n_boot,
        random_state=random_state, progress=progress)
    config = {
        "models": {name: (f"column {spec!r}" if isinstance(spec, str) else repr(spec))
                   for name, spec in specs.items()},
        "fitted_models": [name for name, spec in specs.items() if not isinstance(spec, str)],
        "score_col": score_col,
        "folds": int(folds),
        "seeds": seeds,
        "metrics": metric_names,
        "n_boot": int(n_boot),
        "random_state": int(random_state),
        "n_images": len(table),
        "n_patients": int(table["patient_id"].nunique()),
        "n_melanomas": int(table["target"].sum()),
        "fit_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    meta = table[[c for c in _META_COLUMNS if c in table.columns]].copy()
    meta["target"] = table["target"].to_numpy()
    return BenchmarkResult(predictions=predictions, metrics=metrics, differences=differences,
                           per_seed=per_seed, reference=reference, table=meta, config=config)
