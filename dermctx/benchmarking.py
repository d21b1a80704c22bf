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
from dermctx.errors import DermctxError, MetricError, ModelError, TableError
from dermctx.formatting import format_ci, plural

# Columns never handed to an estimator as part of ``X``: the label and what is derived from it
# (a CNN's own ``fold`` column and the ISIC ``tfrecord`` split also leak the label, and so does
# HAM10000's ``dx_type``, how the diagnosis was made; they are removed too).
from dermctx.label_guard import LABEL_COLUMNS

# the metric registry, under a private name: this module's METRICS is the deprecated old one
from dermctx.metrics import METRICS as _METRICS
from dermctx.metrics import MIN_MELANOMAS as _MIN_MELANOMAS

__all__ = [
    "BENCHMARK_METRICS",
    "LABEL_COLUMNS",
    "SCORE",
    "BenchmarkResult",
    "benchmark",
    "melanoma_score",
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
        Tidy: ``model, metric, estimate, ci_low, ci_high, missing_reason, n_images, n_patients,
        n_melanomas, n_seeds``. ``estimate`` is the mean over seeds; the CI is a
        patient-bootstrap 95% interval of that mean (the same patients resampled for every seed).
        A figure resting on too few melanomas is NaN, and a degenerate bootstrap's CI bounds are
        NaN; ``missing_reason`` says why (:func:`dermctx.metrics.too_few_melanomas`,
        :func:`dermctx.metrics.degenerate_ci`), empty when all is shown.
    differences : DataFrame
        Tidy: ``model, reference, metric, difference, ci_low, ci_high, p_le_0, missing_reason``
        (model minus reference, paired bootstrap over patients).
    per_seed : DataFrame
        ``model, seed, metric, value``: each seed's own figure.
    reference : str
        The model the differences are taken against.
    table : DataFrame
        The metadata columns of the input table (``image_id, patient_id, age, sex, site, ...``),
        in input order, for reports.
    config : dict
        The settings of the run (folds, seeds, n_boot, random_state, min_melanomas, models,
        timings).

    ``print(result)`` shows the tables as aligned text, a notebook as an HTML table
    (``_repr_html_``); :meth:`to_markdown` and :meth:`to_json` write them.
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
                out.append({k: json_value(v) for k, v in row.items()})
            return out

        return {
            "reference": self.reference,
            "config": {k: json_value(v) for k, v in self.config.items()},
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
        """The model table (estimate [95% CI] per metric) and the differences, as Markdown.

        A missing figure reads ``n/a`` and a figure without its CI ``(no CI)``; the reasons are
        listed under the tables.
        """
        cols = self._metric_keys()
        lines = ["| model | " + " | ".join(_METRICS[m].label for m in cols) + " |",
                 "|---|" + "---|" * len(cols)]
        for model in self.models:
            cells = [_cell(self._row(self.metrics, model, m), digits) for m in cols]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        if len(self.differences):
            lines += ["", f"Paired-bootstrap differences against **{self.reference}** "
                      "(model minus reference, 95% CI):", "",
                      "| model | " + " | ".join(_METRICS[m].label for m in cols) + " |",
                      "|---|" + "---|" * len(cols)]
            for model in self._others():
                cells = [_cell(self._row(self.differences, model, m), digits, signed=True)
                         for m in cols]
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines += ["", self._describe_run() + "."]
        notes = self._notes()
        if notes:
            lines += ["", *[f"- {n}" for n in notes]]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        """The model table and the differences as aligned text: a metric per line, a model per
        column, estimates with their 95% CIs."""
        cols = self._metric_keys()
        labels = [_METRICS[m].label for m in cols]
        lines = [f"BenchmarkResult: {self._describe_run()}", ""]
        columns = [[model, *[_cell(self._row(self.metrics, model, m), 3) for m in cols]]
                   for model in self.models]
        lines += _aligned(["", *labels], columns)
        others = self._others()
        if others and len(self.differences):
            lines += ["", f"Difference against {self.reference} (model minus reference, paired "
                      "patient bootstrap, 95% CI):", ""]
            columns = [[f"{model} - {self.reference}",
                        *[_cell(self._row(self.differences, model, m), 3, signed=True)
                          for m in cols]] for model in others]
            lines += _aligned(["", *labels], columns)
        notes = self._notes()
        if notes:
            lines += ["", *notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.config
        return (f"BenchmarkResult(models={self.models}, reference={self.reference!r}, "
                f"n_patients={c.get('n_patients')}, n_melanomas={c.get('n_melanomas')})")

    def _repr_html_(self) -> str:
        """A compact HTML table for notebooks: one row per model, then one per difference
        against the reference (green / red where the CI is wholly on the better / worse side)."""
        from html import escape

        cols = self._metric_keys()
        cell = "padding:2px 8px;text-align:right;white-space:nowrap;vertical-align:top"
        head = "".join(f'<th style="{cell}">{escape(_METRICS[m].label)}</th>' for m in cols)
        body = []
        for model in self.models:
            tds = "".join(f'<td style="{cell}">{_cell_html(self._row(self.metrics, model, m))}'
                          "</td>" for m in cols)
            body.append(f'<tr><th style="{cell};text-align:left">{escape(model)}</th>{tds}</tr>')
        others = self._others()
        if others and len(self.differences):
            body.append(f'<tr><td colspan="{len(cols) + 1}" style="padding:6px 8px 2px;'
                        'text-align:left;font-style:italic">difference against '
                        f"{escape(self.reference)} (model minus reference, paired patient "
                        "bootstrap)</td></tr>")
            for model in others:
                tds = "".join(
                    f'<td style="{cell}">'
                    f"{_cell_html(self._row(self.differences, model, m), _METRICS[m])}</td>"
                    for m in cols)
                body.append(f'<tr><th style="{cell};text-align:left">{escape(model)} &minus; '
                            f"{escape(self.reference)}</th>{tds}</tr>")
        notes = "".join(f"<br>{escape(n)}" for n in self._notes())
        return (f'<div><table><thead><tr><th style="{cell}"></th>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>"
                f'<div style="font-size:smaller">{escape(self._describe_run())}; 95% CIs '
                f"under the estimates.{notes}</div></div>")

    # -- helpers of the renderings -------------------------------------------------------------
    def _metric_keys(self) -> list[str]:
        return [m for m in _METRICS if m in set(self.metrics["metric"])]

    def _others(self) -> list[str]:
        return [m for m in self.models if m != self.reference]

    @staticmethod
    def _row(frame: pd.DataFrame, model: str, metric: str) -> dict[str, Any] | None:
        hit = frame[(frame["model"] == model) & (frame["metric"] == metric)]
        return None if hit.empty else hit.iloc[0].to_dict()

    def _describe_run(self) -> str:
        c = self.config
        split = (f"{c.get('folds')} given folds" if c.get("folds_given")
                 else f"{c.get('folds')}-fold PatientKFold, seeds {list(c.get('seeds', []))}")
        how = f"out-of-fold predictions of {split}" if c.get("fitted_models") else "scores as given"
        return (f"{plural(c.get('n_images'), 'image')}, {plural(c.get('n_patients'), 'patient')}, "
                f"{plural(c.get('n_melanomas'), 'melanoma')}; {how}; "
                f"{plural(c.get('n_boot'), 'patient-bootstrap resample')} (95% CIs)")

    def _notes(self) -> list[str]:
        """One line per reason a figure or CI is missing, naming the metrics (and the models,
        when not all are concerned): ``"n/a (too few melanomas: 8; need >= 10): AUC"``."""
        found: dict[tuple[str, str], dict[str, list[str]]] = {}
        for frame, value in ((self.metrics, "estimate"), (self.differences, "difference")):
            if "missing_reason" not in frame.columns:
                continue
            for r in frame.to_dict(orient="records"):
                if not str(r["missing_reason"] or ""):
                    continue
                what = "n/a" if not np.isfinite(r[value]) else "no CI"
                who = r["model"] if value == "estimate" else f"{r['model']} - {r['reference']}"
                by_metric = found.setdefault((what, r["missing_reason"]), {})
                by_metric.setdefault(r["metric"], []).append(who)
        lines = []
        for (what, reason), by_metric in found.items():
            parts = [_METRICS[m].label if set(self.models) <= set(who)  # every model
                     else f"{_METRICS[m].label} of {', '.join(who)}" for m, who in by_metric.items()]
            lines.append(f"{what} ({reason}): {'; '.join(parts)}")
        return lines


def _cell(row: dict[str, Any] | None, digits: int, signed: bool = False) -> str:
    """An estimate with its CI as text; ``n/a`` when missing, ``(no CI)`` without its CI."""
    if row is None:
        return ""
    est = row["estimate"] if "estimate" in row else row["difference"]
    text = format_ci(est, row["ci_low"], row["ci_high"], digits, signed=signed)
    if text != "n/a" and str(row.get("missing_reason") or ""):
        text += " (no CI)"
    return text


def _cell_html(row: dict[str, Any] | None, metric: Any = None) -> str:
    """:func:`_cell` as HTML: the CI under the estimate in smaller type, the reason of a missing
    figure as its tooltip; with ``metric`` (a difference) green or red when the CI excludes 0."""
    from html import escape

    text = _cell(row, 3, signed=metric is not None)
    value, _, ci = text.partition(" ")
    out = escape(value) + (f'<br><span style="font-size:smaller;opacity:.75">{escape(ci)}</span>'
                           if ci else "")
    if row is not None and str(row.get("missing_reason") or ""):
        out = f'<span title="{escape(str(row["missing_reason"]))}">{out}</span>'
    if metric is not None and row is not None and np.isfinite(row["ci_low"]):
        better = row["ci_low"] > 0 if metric.higher_is_better else row["ci_high"] < 0
        worse = row["ci_high"] < 0 if metric.higher_is_better else row["ci_low"] > 0
        if better or worse:
            out = f'<span style="color:{"#0a7a2f" if better else "#b3261e"}">{out}</span>'
    return out


def _aligned(header: list[str], columns: list[list[str]]) -> list[str]:
    """Text lines of a table given as ``header`` (the first column: row names) and
    ``columns[j] = [title, cell, cell, ...]``: names left-aligned, cells right-aligned."""
    width0 = max(len(h) for h in header)
    widths = [max(len(c) for c in col) for col in columns]
    lines = []
    for i, name in enumerate(header):
        cells = [col[i].rjust(w) for col, w in zip(columns, widths, strict=True)]
        lines.append("  ".join([name.ljust(width0), *cells]).rstrip())
    return lines


def json_value(v: Any) -> Any:
    """``v`` as plain JSON data: numpy scalars as Python numbers, non-finite floats and missing values as None."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, Mapping):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [json_value(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if pd.isna(v):
        return None
    return str(v)


# --- out-of-fold predictions ------------------------------------------------------------------


def melanoma_score(estimator: Any, X: pd.DataFrame, name: str | None = None) -> np.ndarray:
    """The melanoma score of a fitted ``estimator`` on the rows of ``X``, shape (n,).

    The probability of class 1 (``predict_proba``), else ``decision_function``: the score
    :func:`benchmark` ranks by and :mod:`dermctx.display` draws. ``name`` names the model in
    errors (default the estimator's class name).

    Raises
    ------
    ModelError
        When the estimator has neither method, or returns a score per row of another length.
    """
    name = name if name is not None else type(estimator).__name__
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
    folds: int | np.ndarray,
    seeds: Sequence[int],
    duplicates: pd.DataFrame | None,
    progress: bool,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Out-of-fold scores of every model, for every seed. Returns (predictions, fit seconds).

    ``folds``: a fold count for :class:`PatientKFold`, or each row's fold (0..K-1, one seed).
    """
    from dermctx.splits import PatientKFold

    y = table["target"].to_numpy(dtype=int)
    X = table.drop(columns=[c for c in table.columns if str(c).lower() in LABEL_COLUMNS])
    fitted = {name: spec for name, spec in specs.items() if not isinstance(spec, str)}
    seconds = {name: 0.0 for name in fitted}
    frames = []
    given = not isinstance(folds, (int, np.integer))
    n_folds = int(np.max(folds)) + 1 if given else int(folds)
    bar = tqdm(total=len(seeds) * n_folds * max(len(fitted), 1), desc="benchmark: fitting",
               unit="fit", disable=not progress or not fitted, leave=False)
    for seed in seeds:
        if given:
            fold_of = np.asarray(folds)
        else:
            fold_of = PatientKFold(n_folds, shuffle=True, random_state=int(seed), duplicates=duplicates).assign(table, y)
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
            for k in range(n_folds):
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
                scores[test] = melanoma_score(est, X_test, name)
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


def _given_folds(table: pd.DataFrame, folds: Any, seeds: Sequence[int], duplicates: pd.DataFrame | None
                 ) -> tuple[int | np.ndarray, int]:
    """``folds`` as a fold count, or as checked per-row fold codes 0..K-1; and K."""
    from dermctx.splits import check_fold_leakage

    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        return int(folds), int(folds)
    if isinstance(folds, str):
        if folds not in table.columns:
            raise TableError(f"benchmark: folds={folds!r} is not a column of the table")
        labels = table[folds]
    else:
        labels = pd.Series(np.asarray(folds, dtype=object))
        if labels.ndim != 1 or len(labels) != len(table):
            raise TableError(f"benchmark: folds has {len(labels)} labels; expected one per row ({len(table)})")
    if labels.isna().any():
        rows = np.flatnonzero(labels.isna().to_numpy())[:5].tolist()
        raise TableError(f"benchmark: the given folds are missing at rows {rows}; every row needs a fold")
    if len(seeds) != 1:
        raise DermctxError(f"benchmark: given folds make one split; seeds={list(seeds)} would repeat "
                           "it unchanged: give one seed")
    codes, uniques = pd.factorize(labels.astype(str), sort=True)
    if len(uniques) < 2:
        raise TableError("benchmark: the given folds have one fold; need at least 2")
    check_fold_leakage(table, codes, duplicates=duplicates, name="benchmark: the given folds")
    return codes, len(uniques)


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


def _seed_figures(
    name: str, i: int, ref: int | None, y: np.ndarray, pid: np.ndarray, scores: np.ndarray,
    fold_auc: _FoldAUC, folds: np.ndarray, *, n_boot: int, random_state: int,
) -> tuple[dict[str, Any], list[float], dict[str, Any] | None]:
    """Model ``i``'s figure of metric ``name`` (mean over seeds, CI, missing reason), its value per
    seed, and its paired difference to model ``ref`` (None for the reference itself)."""
    from dermctx import metrics as M

    boot = {"n_boot": n_boot, "random_state": random_state}
    n_seeds = scores.shape[1]
    if name == "fold_auc":  # all seeds at once, resampled exactly
        res = [M.patient_bootstrap(fold_auc, y, fold_auc.codes(i), pid, **boot)]
        seed_values = [_FoldAUC(scores[:, j:j + 1], folds[j:j + 1])(y.astype(float),
                                                                      fold_auc.codes(i))
                       for j in range(n_seeds)]
    else:
        # every seed is resampled with the same patients (same seed, same patient order); the
        # seed-mean's interval is taken as the mean of the seeds' intervals
        res = [M.patient_bootstrap(name, y, scores[i, j], pid, **boot) for j in range(n_seeds)]
        seed_values = [r.estimate for r in res]
    reason = next((why for why in map(M.degenerate_ci, res) if why), None)
    figure = _figure(float(np.mean([r.estimate for r in res])),
                     float(np.mean([r.low for r in res])), float(np.mean([r.high for r in res])),
                     reason)
    if ref is None:
        return figure, seed_values, None
    if name == "fold_auc":
        ds = [M.paired_bootstrap(fold_auc, y, fold_auc.codes(i), fold_auc.codes(ref), pid, **boot)]
    else:
        ds = [M.paired_bootstrap(name, y, scores[i, j], scores[ref, j], pid, **boot)
              for j in range(n_seeds)]
    d_reason = next((why for why in map(M.degenerate_ci, ds) if why), None)
    diff = _figure(float(np.mean([d.estimate for d in ds])), float(np.mean([d.low for d in ds])),
                   float(np.mean([d.high for d in ds])), d_reason)
    diff["difference"] = diff.pop("estimate")
    diff["p_le_0"] = float(np.mean([d.p_le_0 for d in ds]))
    return figure, seed_values, diff


def _figure(estimate: float, low: float, high: float, reason: str | None,
            *, missing: bool = False) -> dict[str, Any]:
    """A table row's figure: the estimate and CI, NaN where ``reason`` says they are missing
    (the whole figure with ``missing``, else only the CI)."""
    nan = float("nan")
    if missing:
        estimate = nan
    if reason:
        low = high = nan
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "missing_reason": reason or ""}


def _metric_tables(
    predictions: pd.DataFrame,
    model_names: Sequence[str],
    reference: str,
    seeds: Sequence[int],
    *,
    metric_names: Sequence[str],
    n_boot: int,
    random_state: int,
    min_melanomas: int,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(metrics, differences, per_seed) tables; see :class:`BenchmarkResult`."""
    from dermctx import metrics as M

    by_seed = {s: predictions[predictions["seed"] == s] for s in seeds}
    first = by_seed[seeds[0]]
    y = first["target"].to_numpy(dtype=int)
    pid = first["patient_id"].to_numpy()
    common = {
        "n_images": len(first),
        "n_patients": int(pd.unique(pid).size),
        "n_melanomas": int(y.sum()),
        "n_seeds": len(seeds),
    }
    scores = np.stack([
        np.stack([by_seed[s][m].to_numpy(dtype=float) for s in seeds]) for m in model_names
    ])  # (M, S, n)
    folds = np.stack([by_seed[s]["fold"].to_numpy() for s in seeds])  # (S, n)
    fold_auc = _FoldAUC(scores, folds)
    ref = list(model_names).index(reference)

    bar = tqdm(total=len(model_names) * len(metric_names), desc="benchmark: bootstrap",
               unit="metric", disable=not progress, leave=False)
    rows, diffs, per_seed = [], [], []
    for name in metric_names:
        thin = M.too_few_melanomas(name, y, pid, min_melanomas=min_melanomas)
        for i, model in enumerate(model_names):
            diff: dict[str, Any] | None
            if thin:  # not computed: a figure from so few melanomas is not shown
                figure = _figure(np.nan, np.nan, np.nan, thin, missing=True)
                seed_values = [np.nan] * len(seeds)
                diff = None if i == ref else {**_figure(np.nan, np.nan, np.nan, thin, missing=True),
                                               "p_le_0": np.nan}
            else:
                try:
                    figure, seed_values, diff = _seed_figures(
                        name, i, None if i == ref else ref, y, pid, scores, fold_auc, folds,
                        n_boot=n_boot, random_state=random_state)
                except MetricError as exc:  # undefined on these lesions
                    figure = _figure(np.nan, np.nan, np.nan, str(exc), missing=True)
                    seed_values = [np.nan] * len(seeds)
                    diff = None if i == ref else {
                        **_figure(np.nan, np.nan, np.nan, str(exc), missing=True), "p_le_0": np.nan}
            rows.append({"model": model, "metric": name, **figure, **common})
            per_seed += [{"model": model, "seed": s, "metric": name, "value": v}
                         for s, v in zip(seeds, seed_values, strict=True)]
            if diff is not None:
                if "estimate" in diff:
                    diff["difference"] = diff.pop("estimate")
                diffs.append({"model": model, "reference": reference, "metric": name, **diff})
            bar.update(1)
    bar.close()

    def in_order(frame: pd.DataFrame) -> pd.DataFrame:  # models as given, then registry order
        key = frame["model"].map({m: i for i, m in enumerate(model_names)}) * len(_METRICS) + \
            frame["metric"].map({m: i for i, m in enumerate(_METRICS)})
        return frame.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)

    metrics = in_order(pd.DataFrame(rows))
    differences = in_order(pd.DataFrame(
        diffs, columns=["model", "reference", "metric", "difference", "ci_low", "ci_high", "p_le_0",
                        "missing_reason"]))
    return metrics, differences, in_order(pd.DataFrame(per_seed))


def benchmark(
    table: pd.DataFrame,
    models: Mapping[str, Any],
    *,
    score_col: str | None = None,
    folds: int | str | Sequence[Any] = 5,
    seeds: Sequence[int] = (0,),
    n_boot: int = 2000,
    random_state: int = 0,
    duplicates: pd.DataFrame | None = None,
    reference: str | None = None,
    metrics: Sequence[str] = BENCHMARK_METRICS,
    min_melanomas: int = _MIN_MELANOMAS,
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
    folds : int, str or array-like
        A number of folds of :class:`dermctx.PatientKFold` (patients, lesions and duplicate
        groups kept whole, melanomas balanced); or folds made before (e.g. by ``dermctx split``):
        a column of ``table`` or one label per row. Given folds are checked: a patient, lesion or
        duplicate pair on both sides of a fold is a :class:`~dermctx.LeakageError`; they make one
        split, so ``seeds`` must then be one seed.
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
    min_melanomas : int
        A ranking figure resting on fewer melanomas (patients, for the per-patient metrics; see
        :func:`dermctx.metrics.too_few_melanomas`) is not computed: its row is NaN, with the
        reason in ``missing_reason``. Default :data:`dermctx.metrics.MIN_MELANOMAS` (10).
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
        fold_arg, n_folds = _given_folds(table, folds, seeds, duplicates)
        predictions, seconds = _oof_predictions(
            table, specs, folds=fold_arg, seeds=seeds, duplicates=duplicates, progress=progress)
    metrics, differences, per_seed = _metric_tables(
        predictions, list(specs), reference, seeds, metric_names=metric_names, n_boot=n_boot,
        random_state=random_state, min_melanomas=int(min_melanomas), progress=progress)
    config = {
        "models": {name: (f"column {spec!r}" if isinstance(spec, str) else repr(spec))
                   for name, spec in specs.items()},
        "fitted_models": [name for name, spec in specs.items() if not isinstance(spec, str)],
        "score_col": score_col,
        "folds": n_folds,
        "folds_given": not isinstance(fold_arg, int),
        "seeds": seeds,
        "metrics": metric_names,
        "n_boot": int(n_boot),
        "random_state": int(random_state),
        "min_melanomas": int(min_melanomas),
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
