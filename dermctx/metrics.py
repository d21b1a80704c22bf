"""Metrics for melanoma ranking, and patient-level bootstrap confidence intervals.

Every metric takes labels ``y`` (1 = melanoma, 0 = not) and scores ``s`` (higher = more
suspicious); the patient-aware ones also take ``patient_id``. Lesions of one patient are not
independent, so uncertainty comes from resampling *patients*: :func:`patient_bootstrap` and
:func:`paired_bootstrap`. The built-in metrics have vectorised bootstrap paths (each resample is a
vector of patient weights, never a copied table); any other callable works through a generic loop.

Core metrics: :func:`auc`, :func:`partial_auc` (the ISIC 2024 score), :func:`within_patient_auc`,
:func:`topk_rate`. Operating points: :func:`roc_curve`, :func:`sensitivity_at_specificity`,
:func:`specificity_at_sensitivity`. Multi-class: :func:`per_class_metrics`. Calibration:
:func:`brier_score`, :func:`expected_calibration_error`, :func:`reliability_curve`. Subgroups:
:func:`subgroup_table`. Figures too thin to show: :data:`MIN_MELANOMAS`,
:func:`too_few_melanomas`, :func:`degenerate_ci`.

:data:`METRICS` is the one registry of the metrics dermctx reports: each has one key (``"auc"``,
``"pauc80"``, ``"top1"``...), used in every result table, JSON file and report, one display label
(``"pAUC (TPR > 0.8)"``), its function with fixed settings (``pauc80`` is :func:`partial_auc` at
``min_tpr=0.8``) and whether higher is better.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from dermctx._deprecation import renamed_parameters
from dermctx.errors import DermctxError, MetricError

__all__ = [
    "AGE_BANDS",
    "METRICS",
    "MIN_MELANOMAS",
    "BootstrapResult",
    "Metric",
    "MetricError",
    "OperatingPoint",
    "PairedBootstrapResult",
    "RocCurve",
    "WithinPatientAUC",
    "age_band",
    "auc",
    "brier_score",
    "degenerate_ci",
    "expected_calibration_error",
    "paired_bootstrap",
    "partial_auc",
    "patient_bootstrap",
    "patient_resamples",
    "per_class_metrics",
    "reliability_curve",
    "roc_curve",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
    "subgroup_table",
    "too_few_melanomas",
    "topk_rate",
    "topk_sensitivity",
    "within_patient_auc",
]


# --- input checks ---------------------------------------------------------------------------


def _labels(y: Any, name: str = "y") -> np.ndarray:
    values = np.asarray(y)
    if values.ndim != 1:
        raise MetricError(f"{name} has shape {values.shape}; expected a 1-D array of 0/1 labels")
    try:
        out = values.astype(float)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name} must hold 0/1 labels, got dtype {values.dtype}") from exc
    bad = ~np.isin(out, (0.0, 1.0))
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise MetricError(
            f"{name} has values other than 0/1 at rows {rows} (e.g. {values[rows[0]]}); "
            "expected 1 (melanoma) or 0, no missing labels"
        )
    return out.astype(np.int8)


def _scores(s: Any, n: int, name: str = "s") -> np.ndarray:
    values = np.asarray(s)
    if values.ndim != 1 or len(values) != n:
        raise MetricError(f"{name} has shape {values.shape}; expected ({n},), one score per label")
    try:
        out = values.astype(float)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name} must hold numbers, got dtype {values.dtype}") from exc
    bad = ~np.isfinite(out)
    if bad.any():
        raise MetricError(
            f"{name} is NaN or infinite at rows {np.flatnonzero(bad)[:5].tolist()}; every lesion needs a score"
        )
    return out


def _patients(patient_id: Any, n: int) -> np.ndarray:
    """Patient ids as int codes 0..P-1 (order of first appearance)."""
    values = pd.Series(np.asarray(patient_id, dtype=object).reshape(-1))
    if len(values) != n:
        raise MetricError(f"patient_id has {len(values)} values; expected {n}, one per label")
    if n == 0:
        raise MetricError("no lesions: y, s and patient_id are empty")
    if values.isna().any():
        rows = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
        raise MetricError(f"patient_id is missing at rows {rows}; every lesion needs a patient")
    codes, _ = pd.factorize(values.astype(str))
    return codes


def _both_classes(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        only = "melanoma" if n_pos else "non-melanoma"
        raise MetricError(
            f"{what} is undefined: all {len(y)} lesions are {only}; both classes are needed"
        )


# --- core metrics ---------------------------------------------------------------------------


def auc(y: Any, s: Any) -> float:
    """Area under the ROC curve: the chance a random melanoma outscores a random other lesion.

    Ties count one half (the Mann-Whitney statistic; equal to the trapezoidal ROC area).

    Parameters
    ----------
    y : array-like of shape (n,)
        1 = melanoma, 0 = not.
    s : array-like of shape (n,)
        Scores, higher = more suspicious.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    MetricError
        When ``y`` holds one class only, or labels/scores are malformed.
    """
    y = _labels(y)
    s = _scores(s, len(y))
    _both_classes(y, "auc")
    return _auc(y, s)


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts
    return (before + (counts + 1) / 2.0)[inverse]


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    ranks = _average_ranks(s)  # ties count one half
    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def partial_auc(y: Any, s: Any, min_tpr: float = 0.80) -> float:
    """Partial AUC above a minimum sensitivity, exactly as the ISIC 2024 challenge scores it.

    The labels are flipped (``v = 1 - y``), the ROC of ``-s`` is taken, and its TPR is integrated
    over FPR in ``[0, 1 - min_tpr]`` with linear interpolation at the cut. In the original terms,
    this is the area under the ROC where melanoma sensitivity is at least ``min_tpr``.

    Returns
    -------
    float in [0, 1 - min_tpr] (0.2 for a perfect ranking at the default ``min_tpr=0.80``)
    """
    y = _labels(y)
    s = _scores(s, len(y))
    if not 0.0 <= float(min_tpr) < 1.0:
        raise MetricError(f"min_tpr={min_tpr!r}; expected a number in [0, 1)")
    _both_classes(y, "partial_auc")
    order, cut = roc_order(-s)
    weights = np.ones((1, len(y)))
    return float(_weighted_roc_area(1 - y[order], weights[:, order], cut, 1.0 - float(min_tpr))[0])


def roc_order(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by descending ``score`` (stable); ``cut`` marks the last position of each run of
    equal scores: the thresholds of a ROC or precision-recall curve."""
    order = np.argsort(-score, kind="mergesort")
    sorted_score = score[order]
    cut = np.r_[sorted_score[1:] != sorted_score[:-1], True]
    return order, cut


def _weighted_roc_area(v: np.ndarray, w: np.ndarray, cut: np.ndarray, max_fpr: float) -> np.ndarray:
    """ROC area up to ``max_fpr`` for each row of weights.

    ``v`` (n,) are the positive-class indicators in descending-score order, ``w`` (R, n) the
    lesion weights per resample in the same order, ``cut`` (n,) the ends of tied-score runs.
    The ROC through the tied-score points is integrated with the trapezoid rule and cut at
    ``max_fpr`` with linear interpolation (sklearn's ``roc_curve`` + ``auc``). Returns (R,),
    NaN where a row has no weight on one class.
    """
    tp = np.cumsum(w * v, axis=1)[:, cut]  # (R, T)
    fp = np.cumsum(w * (1 - v), axis=1)[:, cut]  # (R, T)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([np.zeros((len(w), 1)), tp / tp[:, -1:]], axis=1)  # (R, T+1)
        fpr = np.concatenate([np.zeros((len(w), 1)), fp / fp[:, -1:]], axis=1)
        area = _clipped_area(fpr[:, :-1], fpr[:, 1:], tpr[:, :-1], tpr[:, 1:], max_fpr)
    return np.where((tp[:, -1] > 0) & (fp[:, -1] > 0), area, np.nan)


def _clipped_area(
    x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, max_fpr: float
) -> np.ndarray:
    """Sum over segments (x0, y0) -> (x1, y1) of the trapezoid area left of ``max_fpr``.

    Arrays (R, T); a segment crossing ``max_fpr`` is cut there with linear interpolation.
    Returns (R,).
    """
    x1c = np.minimum(x1, max_fpr)
    frac = np.where(x1 > x0, (x1c - x0) / np.where(x1 > x0, x1 - x0, 1.0), 0.0)
    y1c = y0 + frac * (y1 - y0)
    return np.where(x0 < max_fpr, (x1c - x0) * (y0 + y1c) / 2, 0.0).sum(axis=1)


class WithinPatientAUC(NamedTuple):
    """Mean within-patient AUC and the number of patients it averages."""

    value: float
    n_patients: int

    def __repr__(self) -> str:
        return f"WithinPatientAUC({self.value:.4f} over {self.n_patients} patients)"


def _per_patient_auc(
    y: np.ndarray, s: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUC of each patient (NaN without both classes) and a mask of the patients that have one."""
    n_pat = int(codes.max()) + 1 if len(codes) else 0
    ranks = pd.Series(s).groupby(codes).rank(method="average").to_numpy()
    n_pos = np.bincount(codes, weights=y, minlength=n_pat)
    n_all = np.bincount(codes, minlength=n_pat).astype(float)
    n_neg = n_all - n_pos
    rank_pos = np.bincount(codes, weights=ranks * y, minlength=n_pat)
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where(valid, value, np.nan), valid


def within_patient_auc(y: Any, s: Any, patient_id: Any) -> WithinPatientAUC:
    """AUC within each patient, averaged (unweighted) over patients having both classes.

    It asks the "ugly duckling" question: among one patient's lesions, does the melanoma rank
    above that patient's other lesions?

    Returns
    -------
    WithinPatientAUC
        ``(value, n_patients)``; ``value`` is NaN when no patient has both classes.
    """
    y = _labels(y)
    s = _scores(s, len(y))
    codes = _patients(patient_id, len(y))
    value, valid = _per_patient_auc(y, s, codes)
    n = int(valid.sum())
    return WithinPatientAUC(float(value[valid].mean()) if n else float("nan"), n)


def _topk_credit(y: np.ndarray, s: np.ndarray, codes: np.ndarray, k: int, share: bool = False
                 ) -> np.ndarray:
    """Per patient, NaN without melanoma: the expected credit (0..1) of a melanoma among the top
    ``k``, or with ``share`` the expected share of the patient's melanomas among them."""
    n_pat = int(codes.max()) + 1 if len(codes) else 0
    credit = np.full(n_pat, np.nan)
    has_mel = np.bincount(codes, weights=y, minlength=n_pat) > 0
    rows = np.flatnonzero(has_mel[codes])
    if len(rows) == 0:
        return credit
    order = rows[np.lexsort((-s[rows], codes[rows]))]
    starts = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1]
    for lo, hi in zip(starts, np.r_[starts[1:], len(order)], strict=False):
        idx = order[lo:hi]
        ss, yy = s[idx], y[idx]
        if len(idx) <= k:
            credit[codes[idx[0]]] = 1.0
            continue
        t = ss[k - 1]  # k-th highest score
        above, tied = ss > t, ss == t
        m, r, hit = int(tied.sum()), k - int(above.sum()), int(yy[tied].sum())
        if share:  # r of the m tied lesions fill the top k at random: r * hit / m melanomas expected
            credit[codes[idx[0]]] = (yy[above].sum() + r * hit / m) / yy.sum()
        elif yy[above].any():
            credit[codes[idx[0]]] = 1.0
        else:  # P(at least one of `hit` melanomas among the r drawn)
            credit[codes[idx[0]]] = 1.0 - math.comb(m - hit, r) / math.comb(m, r)
    return credit


def topk_rate(y: Any, s: Any, patient_id: Any, k: int = 1) -> float:
    """Share of melanoma patients who have a melanoma among their ``k`` highest-scored lesions.

    Only patients with at least one melanoma count. When lesions tie at the ``k``-th place, the
    tied places are filled at random and the patient gets the expected credit (e.g. one melanoma
    tied with one benign lesion for the last place counts one half). A patient with ``k`` or fewer
    lesions always counts as a hit.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    MetricError
        When no patient has a melanoma, or ``k`` < 1.
    """
    return _topk_mean(y, s, patient_id, k, share=False, name="topk_rate")


def _topk_mean(y: Any, s: Any, patient_id: Any, k: int, *, share: bool, name: str) -> float:
    """The mean over melanoma patients of :func:`_topk_credit` (a hit or a share)."""
    y = _labels(y)
    s = _scores(s, len(y))
    codes = _patients(patient_id, len(y))
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise MetricError(f"{name}: k={k!r}; expected an int >= 1")
    credit = _topk_credit(y, s, codes, int(k), share=share)
    valid = ~np.isnan(credit)
    if not valid.any():
        raise MetricError(f"{name} is undefined: no patient has a melanoma")
    return float(credit[valid].mean())


def topk_sensitivity(y: Any, s: Any, patient_id: Any, k: int = 15) -> float:
    """Mean share of a patient's melanomas among their ``k`` highest-scored lesions.

    The ISIC 2024 secondary metric (top-15 retrieval sensitivity): for each patient with at
    least one melanoma, the fraction of their melanomas ranked in their top ``k``, averaged over
    those patients. Ties at the ``k``-th place count the expected share (random fill). A
    patient with ``k`` or fewer lesions scores 1.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    MetricError
        When no patient has a melanoma, or ``k`` < 1.
    """
    return _topk_mean(y, s, patient_id, k, share=True, name="topk_sensitivity")


# --- bootstrap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """A metric with its patient-bootstrap percentile CI.

    ``estimate`` is the metric on the data as given; ``low``/``high`` bound the central
    ``level`` share of the resampled values; ``n_valid`` resamples were defined (a resample
    without both classes is skipped).
    """

    metric: str
    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int
    n_patients: int

    def __repr__(self) -> str:
        return (
            f"{self.metric} = {self.estimate:.4f} ({self.level:.0%} CI {self.low:.4f} to {self.high:.4f}; "
            f"{self.n_patients} patients, {self.n_valid}/{self.n_boot} resamples)"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Difference ``metric(s1) - metric(s2)`` on the same lesions, with its patient-bootstrap CI.

    ``p_le_0`` is the share of resamples where the difference is <= 0 (a one-sided bootstrap
    p-value for "s1 is better").
    """

    metric: str
    estimate: float
    low: float
    high: float
    p_le_0: float
    estimate_1: float
    estimate_2: float
    level: float
    n_boot: int
    n_valid: int
    n_patients: int

    def __repr__(self) -> str:
        return (
            f"{self.metric}: {self.estimate_1:.4f} - {self.estimate_2:.4f} = {self.estimate:+.4f} "
            f"({self.level:.0%} CI {self.low:+.4f} to {self.high:+.4f}; P(diff <= 0) = {self.p_le_0:.3f}; "
            f"{self.n_patients} patients, {self.n_valid}/{self.n_boot} resamples)"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return dict(self.__dict__)


def _metric_name(metric: Any) -> str:
    if isinstance(metric, Metric):
        return metric.key
    return metric if isinstance(metric, str) else getattr(metric, "__name__", repr(metric))


def _resolve(metric: str | Callable[..., Any], kw: Mapping[str, Any] | None = None, *,
             stacklevel: int = 5) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function of ``metric`` (a key of :data:`METRICS`, a :class:`Metric` or a callable)
    and its keyword arguments: the metric's fixed settings merged with ``kw``. ``stacklevel``
    places the warning for a deprecated name, counted from here (1): 5 is the caller of a public
    function behind ``_prepare`` and the ``renamed_parameters`` wrapper."""
    kw = dict(kw or {})
    if isinstance(metric, str):
        if metric in METRICS:
            metric = METRICS[metric]
        elif metric in _FUNCTION_NAMES:
            _warn_function_name(metric, stacklevel)
            return _FUNCTION_NAMES[metric], kw
        else:
            raise MetricError(f"unknown metric {metric!r}; expected a callable or one of "
                              f"{list(METRICS)}")
    if isinstance(metric, Metric):
        if metric.func is None:
            raise MetricError(f"metric {metric.key!r} ({metric.label}) is computed by "
                              "dermctx.benchmark from its folds; it has no function of (y, s)")
        clash = sorted(k for k, v in metric.kwargs.items() if k in kw and kw[k] != v)
        if clash:
            fixed = ", ".join(f"{k}={metric.kwargs[k]!r}" for k in clash)
            raise MetricError(f"metric {metric.key!r} fixes {fixed}; pass the function "
                              f"dermctx.metrics.{metric.func.__name__} to choose {', '.join(clash)}")
        return metric.func, {**metric.kwargs, **kw}
    if callable(metric):
        return metric, kw
    raise MetricError(f"unknown metric {metric!r}; expected a callable or one of {list(METRICS)}")


def _value(result: Any) -> float:
    """A metric's number (``WithinPatientAUC`` and other tuples give their first field)."""
    if isinstance(result, tuple):
        result = result[0]
    return float(result)


def _takes_patient(func: Callable[..., Any]) -> bool:
    try:
        return "patient_id" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


#: Largest patients x distinct-melanoma-scores for the block form of the (partial) AUC bootstrap.
_BLOCK_LIMIT = 4_000_000


class _Vectorised:
    """Metric values for a batch of patient-weight vectors, for the built-in metrics.

    Built once per (metric, y, s, patient) with per-patient precomputation; ``__call__`` takes
    ``W`` (R, P) patient weights (resample counts) and returns (R,) metric values.
    """

    def __init__(
        self, func: Callable[..., Any], y: np.ndarray, s: np.ndarray, codes: np.ndarray, kw: dict
    ):
        n_pat = int(codes.max()) + 1
        if func is auc or func is partial_auc:
            # the AUC is the whole area of the label-flipped ROC, which partial_auc cuts
            self.max_fpr = 1.0 if func is auc else 1.0 - float(kw.get("min_tpr", 0.80))
            if n_pat * np.unique(s[y == 1]).size <= _BLOCK_LIMIT:
                self.kind, self.blocks = (
                    "blocks",
                    _melanoma_blocks(y, s, codes, n_pat),
                )  # 3 x (P, K)
                self.n_neg = np.bincount(codes, weights=1 - y, minlength=n_pat)  # (P,)
            else:  # weighted ROC over all lesions
                order, self.cut = roc_order(-s)
                self.kind, self.v, self.lesion_codes = "roc", (1 - y)[order], codes[order]
            return
        self.kind = "mean"  # a weighted mean of per-patient values: num / den
        if func is within_patient_auc:
            value, valid = _per_patient_auc(y, s, codes)
            self.num, self.den = np.where(valid, value, 0.0), valid.astype(float)
        elif func is topk_rate or func is topk_sensitivity:
            credit = _topk_credit(y, s, codes, int(kw.get("k", 1 if func is topk_rate else 15)),
                                  share=func is topk_sensitivity)
            valid = ~np.isnan(credit)
            self.num, self.den = np.where(valid, credit, 0.0), valid.astype(float)
        elif func is brier_score:
            self.num = np.bincount(codes, weights=(s - y) ** 2, minlength=n_pat)
            self.den = np.bincount(codes, minlength=n_pat).astype(float)
        else:
            raise KeyError(func)

    def __call__(self, W: np.ndarray) -> np.ndarray:
        if self.kind == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                den = W @ self.den
                return np.where(den > 0, (W @ self.num) / den, np.nan)
        if self.kind == "blocks":
            # the flipped ROC, one segment per melanoma block k (melanomas of one score u_k):
            # from (melanomas below u_k, others below u_k) to (+ melanomas at u_k, + others at u_k)
            count, below, tied = self.blocks
            a = W @ count  # (R, K) melanoma weight of each block
            b0 = W @ below  # (R, K) other lesions scoring below u_k
            b1 = b0 + W @ tied  # (R, K) ... at or below u_k
            f1 = np.cumsum(a, axis=1)
            total_mel, total_other = f1[:, -1:], (W @ self.n_neg)[:, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                area = _clipped_area(
                    (f1 - a) / total_mel,
                    f1 / total_mel,
                    b0 / total_other,
                    b1 / total_other,
                    self.max_fpr,
                )
            return np.where((total_mel[:, 0] > 0) & (total_other[:, 0] > 0), area, np.nan)
        out = np.empty(len(W))
        chunk = max(1, 2_000_000 // max(len(self.v), 1))  # bound memory: ~16 MB per array
        for lo in range(0, len(W), chunk):
            w = W[lo : lo + chunk][:, self.lesion_codes]  # (r, n) lesion weights
            out[lo : lo + chunk] = _weighted_roc_area(self.v, w, self.cut, self.max_fpr)
        return out


def _melanoma_blocks(
    y: np.ndarray, s: np.ndarray, codes: np.ndarray, n_pat: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient and melanoma block, the counts that fix the ROC of any patient resample.

    Blocks are the K distinct melanoma scores u_1 < ... < u_K. Returns three (P, K) arrays: the
    melanomas of patient q scoring u_k, and q's other lesions scoring below u_k and equal to u_k.
    """
    _, rank = np.unique(s, return_inverse=True)  # dense ranks: equal scores, equal ranks
    n_rank = int(rank.max()) + 1
    mel = y == 1
    block_rank, block = np.unique(rank[mel], return_inverse=True)  # (K,), block of each melanoma
    n_blocks = len(block_rank)
    count = np.bincount(codes[mel] * n_blocks + block, minlength=n_pat * n_blocks)
    keys = np.sort(codes[~mel].astype(np.int64) * n_rank + rank[~mel])  # by patient, then score
    start = np.searchsorted(keys, np.arange(n_pat, dtype=np.int64) * n_rank)  # (P,)
    query = np.arange(n_pat, dtype=np.int64)[:, None] * n_rank + block_rank[None, :]  # (P, K)
    lower = np.searchsorted(keys, query, side="left")
    upper = np.searchsorted(keys, query, side="right")
    return (
        count.reshape(n_pat, n_blocks).astype(float),
        (lower - start[:, None]).astype(float),
        (upper - lower).astype(float),
    )


_VECTORISED: set[Callable[..., Any]] = set()  # filled below, after the metrics are defined


class _Generic:
    """Metric values by calling ``func`` on each resample's rows (any callable metric)."""

    def __init__(
        self, func: Callable[..., Any], y: np.ndarray, s: np.ndarray, codes: np.ndarray, kw: dict
    ):
        self.func, self.y, self.s, self.kw = func, y, s, kw
        self.with_patient = _takes_patient(func)
        order = np.argsort(codes, kind="mergesort")
        bounds = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1, len(order)]
        self.rows = [order[a:b] for a, b in itertools.pairwise(bounds)]

    def __call__(self, W: np.ndarray) -> np.ndarray:
        out = np.full(len(W), np.nan)
        for r, weights in enumerate(W):
            drawn = np.repeat(np.arange(len(weights)), weights.astype(int))
            idx = np.concatenate([self.rows[p] for p in drawn])
            kw = dict(self.kw)
            if self.with_patient:  # a patient drawn twice counts as two patients
                kw["patient_id"] = np.repeat(
                    np.arange(len(drawn)), [len(self.rows[p]) for p in drawn]
                )
            try:
                out[r] = _value(self.func(self.y[idx], self.s[idx], **kw))
            except DermctxError:
                pass  # undefined on this resample (e.g. one class): skipped
        return out


def _evaluator(func: Callable[..., Any], y: np.ndarray, s: np.ndarray, codes: np.ndarray, kw: dict):
    if func in _VECTORISED:
        return _Vectorised(func, y, s, codes, kw)
    return _Generic(func, y, s, codes, kw)


def _prepare(metric: Any, kw: Mapping[str, Any], y: Any, s: Any, patient_id: Any, name: str = "s"):
    func, kw = _resolve(metric, kw)
    y = _labels(y)
    s = _scores(s, len(y), name)
    codes = _patients(patient_id, len(y))
    return func, kw, y, s, codes


def _estimate(
    func: Callable[..., Any], y: np.ndarray, s: np.ndarray, patient_id: Any, kw: dict
) -> float:
    kw = dict(kw)
    if _takes_patient(func):
        kw["patient_id"] = patient_id
    return _value(func(y, s, **kw))


def _patient_weights(n_pat: int, n_boot: int, random_state: int | None) -> Iterator[np.ndarray]:
    """The resamples of the bootstrap, in chunks: (r, n_pat) counts, how often each patient is
    drawn (a multinomial draw of ``n_pat`` patients with replacement), ``n_boot`` rows in all.

    Rows are drawn in chunks of about 4 million counts, so memory stays bounded; the chunking does
    not change the draws.
    """
    rng = np.random.default_rng(random_state)
    chunk = max(1, 4_000_000 // max(n_pat, 1))
    for lo in range(0, n_boot, chunk):
        size = min(chunk, n_boot - lo)
        yield rng.multinomial(n_pat, np.full(n_pat, 1.0 / n_pat), size=size).astype(float)


def _resample(
    evaluators: Sequence[Callable[[np.ndarray], np.ndarray]],
    n_pat: int,
    n_boot: int,
    random_state: int | None,
) -> list[np.ndarray]:
    """Each evaluator's (n_boot,) values on the same patient resamples (:func:`_patient_weights`)."""
    out = [np.empty(n_boot) for _ in evaluators]
    lo = 0
    for W in _patient_weights(n_pat, n_boot, random_state):  # (r, P)
        for values, evaluate in zip(out, evaluators, strict=True):
            values[lo : lo + len(W)] = evaluate(W)
        lo += len(W)
    return out


def patient_resamples(
    patient_id: Any, n_boot: int = 2000, random_state: int | None = 0, *,
    max_cells: int = 4_000_000,
) -> Iterator[np.ndarray]:
    """The patient resamples of :func:`patient_bootstrap`, as lesion weights.

    For a statistic the bootstrap has no fast path for (a curve, a band around it), computed
    from weighted counts: each resample is a row of weights, how often each lesion is drawn (the
    number of times its patient is drawn, all of a patient's lesions together).

    Parameters
    ----------
    patient_id : array-like of shape (n,)
        The patient of each lesion.
    n_boot : int
        Number of resamples.
    random_state : int or None
        Seed: with the same ``patient_id``, ``n_boot`` and ``random_state``, these are the
        resamples :func:`patient_bootstrap` and :func:`paired_bootstrap` draw, so a curve's band
        and the CI of its area rest on the same resamples.
    max_cells : int
        Largest chunk yielded (rows x lesions), to bound memory.

    Yields
    ------
    ndarray of shape (r, n)
        ``r`` resamples at a time (``n_boot`` rows in all), float counts >= 0.
    """
    _check_boot(n_boot, 0.95)
    codes = _patients(patient_id, len(np.asarray(patient_id, dtype=object).reshape(-1)))
    step = max(1, int(max_cells) // max(len(codes), 1))
    for W in _patient_weights(int(codes.max()) + 1, n_boot, random_state):
        for lo in range(0, len(W), step):
            yield W[lo : lo + step][:, codes]


def _check_boot(n_boot: int, level: float) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise MetricError(f"n_boot={n_boot!r}; expected an int >= 1")
    if not 0.0 < level < 1.0:
        raise MetricError(f"level={level!r}; expected a number in (0, 1), e.g. 0.95")


def _quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    ok = values[~np.isnan(values)]
    if len(ok) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@renamed_parameters(seed="random_state")
def patient_bootstrap(
    metric: str | Callable[..., Any],
    y: Any,
    s: Any,
    patient_id: Any,
    *,
    n_boot: int = 2000,
    random_state: int | None = 0,
    level: float = 0.95,
    **kw: Any,
) -> BootstrapResult:
    """A metric with a percentile CI from resampling patients (all of a patient's lesions together).

    Parameters
    ----------
    metric : callable or str
        ``metric(y, s, **kw)`` returning a number (or a tuple whose first field is one), e.g.
        :func:`auc`; a metric with a ``patient_id`` parameter gets the resampled patients, a
        patient drawn twice counting as two. A key of :data:`METRICS` (``"auc"``, ``"pauc80"``,
        ``"within_patient_auc"``, ``"top1"``, ...) picks a registered metric with its fixed
        settings (``"pauc80"`` is :func:`partial_auc` at ``min_tpr=0.8``). The functions
        :func:`auc`, :func:`partial_auc`, :func:`within_patient_auc`, :func:`topk_rate`,
        :func:`topk_sensitivity` and :func:`brier_score` are computed vectorised from patient
        weights (2000 resamples of ~20k lesions in about a second or two); others run one call
        per resample.
    y, s, patient_id : array-like of shape (n,)
        Labels (0/1), scores, patient ids.
    n_boot : int
        Number of resamples.
    random_state : int or None
        Seed of the resampling; the same seed gives the same CI. (``seed=`` is a deprecated
        alias.)
    level : float
        CI coverage, 0.95 for a 95% CI.
    **kw
        Passed to the metric (``min_tpr=`` for :func:`partial_auc`, ``k=`` for :func:`topk_rate`).

    Returns
    -------
    BootstrapResult
        ``estimate`` (on the data as given), ``low``, ``high``, and counts.
    """
    _check_boot(n_boot, level)
    func, kw, y, s, codes = _prepare(metric, kw, y, s, patient_id)
    estimate = _estimate(func, y, s, codes, kw)
    n_pat = int(codes.max()) + 1
    (values,) = _resample([_evaluator(func, y, s, codes, kw)], n_pat, n_boot, random_state)
    low, high = _quantiles(values, level)
    return BootstrapResult(
        metric=_metric_name(metric),
        estimate=estimate,
        low=low,
        high=high,
        level=level,
        n_boot=int(n_boot),
        n_valid=int((~np.isnan(values)).sum()),
        n_patients=n_pat,
    )


@renamed_parameters(seed="random_state")
def paired_bootstrap(
    metric: str | Callable[..., Any],
    y: Any,
    s1: Any,
    s2: Any,
    patient_id: Any,
    *,
    n_boot: int = 2000,
    random_state: int | None = 0,
    level: float = 0.95,
    **kw: Any,
) -> PairedBootstrapResult:
    """Difference ``metric(y, s1) - metric(y, s2)`` of two scores on the same lesions, with a CI.

    Both scores are evaluated on the same patient resamples, so the CI reflects the
    correlation between them (much narrower than two separate CIs would suggest). The
    parameters are those of :func:`patient_bootstrap` (``random_state`` seeds the resampling;
    ``seed=`` is a deprecated alias), with the two scores ``s1`` and ``s2``.

    Returns
    -------
    PairedBootstrapResult
        ``estimate`` (the difference), ``low``, ``high``, ``p_le_0`` (share of resamples with
        difference <= 0), ``estimate_1``, ``estimate_2`` and counts.
    """
    _check_boot(n_boot, level)
    func, kw, y, s1, codes = _prepare(metric, kw, y, s1, patient_id, "s1")
    s2 = _scores(s2, len(y), "s2")
    e1, e2 = _estimate(func, y, s1, codes, kw), _estimate(func, y, s2, codes, kw)
    n_pat = int(codes.max()) + 1
    v1, v2 = _resample(
        [_evaluator(func, y, s1, codes, kw), _evaluator(func, y, s2, codes, kw)],
        n_pat,
        n_boot,
        random_state,
    )
    diff = v1 - v2
    ok = diff[~np.isnan(diff)]
    low, high = _quantiles(diff, level)
    return PairedBootstrapResult(
        metric=_metric_name(metric),
        estimate=e1 - e2,
        low=low,
        high=high,
        p_le_0=float((ok <= 0).mean()) if len(ok) else float("nan"),
        estimate_1=e1,
        estimate_2=e2,
        level=level,
        n_boot=int(n_boot),
        n_valid=len(ok),
        n_patients=n_pat,
    )


# --- figures too thin to show ---------------------------------------------------------------

#: The fewest melanomas a ranking figure of dermctx's tables rests on (:func:`subgroup_table`,
#: :func:`dermctx.benchmark`, the report): below it the figure is shown as missing, with the
#: reason ("too few melanomas: 2; need >= 10"). Per-patient metrics count their patients instead
#: (:func:`too_few_melanomas`). Why 10: in simulated cohorts (``benchmarks/ci_min_melanomas.py``)
#: the 95% patient-bootstrap CI of the AUC covered the true AUC in about half the datasets with 2
#: melanomas, three quarters with 4-9 and 87% with 10-14 (93% from 50 on); below 10 the interval
#: is not worth printing.
MIN_MELANOMAS = 10

_MELANOMAS = "melanomas"
_MELANOMA_PATIENTS = "patients with a melanoma"
_BOTH_CLASS_PATIENTS = "patients with a melanoma and another lesion"


def _unit(metric: Any) -> str | None:
    """What the figures of ``metric`` rest on, counted against :data:`MIN_MELANOMAS` (None: no
    minimum, e.g. the Brier score or your own function)."""
    key = metric.key if isinstance(metric, Metric) else metric if isinstance(metric, str) else None
    if key == "fold_auc":
        return _MELANOMAS
    if isinstance(metric, str):
        if metric in METRICS:
            metric = METRICS[metric]
        elif metric in _FUNCTION_NAMES:
            metric = _FUNCTION_NAMES[metric]
        else:
            raise MetricError(f"unknown metric {metric!r}; expected a callable or one of "
                              f"{list(METRICS)}")
    func = metric.func if isinstance(metric, Metric) else metric
    units: dict[Any, str] = {auc: _MELANOMAS, partial_auc: _MELANOMAS,
                             within_patient_auc: _BOTH_CLASS_PATIENTS,
                             topk_rate: _MELANOMA_PATIENTS, topk_sensitivity: _MELANOMA_PATIENTS}
    return units.get(func)


def too_few_melanomas(
    metric: str | Callable[..., Any],
    y: Any,
    patient_id: Any = None,
    *,
    min_melanomas: int = MIN_MELANOMAS,
) -> str | None:
    """Why a figure of ``metric`` on these lesions is too thin to show, or None when it is not.

    A ranking metric needs at least ``min_melanomas`` of what it rests on: melanomas for the
    (partial, per-fold) AUC, patients with a melanoma for the top-k rates and the top-15
    sensitivity, patients with a melanoma and another lesion for the within-patient AUC (the only
    patients it averages over). Calibration metrics and your own functions have no minimum.

    Parameters
    ----------
    metric : str or callable
        A key of :data:`METRICS` (``"auc"``, ``"within_patient_auc"``, ...), a :class:`Metric`
        or a function of this module.
    y, patient_id : array-like of shape (n,)
        Labels, and patient ids (needed by the per-patient metrics).
    min_melanomas : int
        The minimum, :data:`MIN_MELANOMAS` by default.

    Returns
    -------
    str or None
        E.g. ``"too few melanomas: 2; need >= 10"`` or ``"too few patients with a melanoma and
        another lesion: 1; need >= 10"``.

    Examples
    --------
    >>> too_few_melanomas("auc", [0, 1, 0, 1, 0])
    'too few melanomas: 2; need >= 10'
    >>> too_few_melanomas("brier_score", [0, 1]) is None
    True
    """
    unit = _unit(metric)
    if unit is None:
        return None
    y = _labels(y)
    if unit == _MELANOMAS:
        n = int(y.sum())
    else:
        if patient_id is None:
            raise MetricError(f"too_few_melanomas: metric {_metric_name(metric)!r} counts "
                              "patients; pass patient_id")
        codes = _patients(patient_id, len(y))
        n_pat = int(codes.max()) + 1
        mel = np.bincount(codes, weights=y, minlength=n_pat)
        other = np.bincount(codes, minlength=n_pat) - mel
        n = int(((mel > 0) if unit == _MELANOMA_PATIENTS else (mel > 0) & (other > 0)).sum())
    return None if n >= min_melanomas else f"too few {unit}: {n}; need >= {min_melanomas}"


def degenerate_ci(result: BootstrapResult | PairedBootstrapResult) -> str | None:
    """Why the CI of a bootstrap result says nothing, or None when it is usable.

    A CI is degenerate when fewer than half the resamples define the metric (the interval would
    describe the lucky resamples only), or, for a single metric (:class:`BootstrapResult`), when
    it has zero width: every central resample gives the same value (a top-1 rate of 1.000 because
    each of a few patients has one lesion), which is no statement of uncertainty. A paired
    difference of zero width stays: two models that agree on every resample do not differ.

    Returns
    -------
    str or None
        E.g. ``"bootstrap degenerate: defined in 312 of 1000 resamples"`` or ``"bootstrap
        degenerate: 95% of resamples give 1.000"`` (the central 95%, all equal).
    """
    if result.n_valid < result.n_boot / 2:
        return f"bootstrap degenerate: defined in {result.n_valid} of {result.n_boot} resamples"
    if isinstance(result, BootstrapResult) and result.low == result.high:
        return f"bootstrap degenerate: {result.level:.0%} of resamples give {result.low:.3f}"
    return None


# --- operating points -----------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    """ROC curve: ``fpr``, ``tpr`` (shape (T+1,), starting at (0, 0)) at ``thresholds``.

    Point ``i`` is the rule "melanoma if score >= thresholds[i]"; ``thresholds[0]`` is ``+inf``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def __repr__(self) -> str:
        return (
            f"RocCurve({len(self.fpr)} points, AUC {float(np.trapezoid(self.tpr, self.fpr)):.4f})"
        )

    def to_frame(self) -> pd.DataFrame:
        """Columns ``threshold, fpr, tpr, specificity, sensitivity``."""
        return pd.DataFrame(
            {
                "threshold": self.thresholds,
                "fpr": self.fpr,
                "tpr": self.tpr,
                "specificity": 1.0 - self.fpr,
                "sensitivity": self.tpr,
            }
        )


def roc_curve(y: Any, s: Any) -> RocCurve:
    """The ROC curve, one point per distinct score (plus the origin).

    Returns
    -------
    RocCurve
        ``fpr``, ``tpr`` and ``thresholds``, each of shape (T+1,), T = number of distinct scores,
        thresholds decreasing.
    """
    y = _labels(y)
    s = _scores(s, len(y))
    _both_classes(y, "roc_curve")
    order, cut = roc_order(s)
    tp = np.cumsum(y[order])[cut]
    fp = np.cumsum(1 - y[order])[cut]
    return RocCurve(
        fpr=np.r_[0.0, fp / fp[-1]],
        tpr=np.r_[0.0, tp / tp[-1]],
        thresholds=np.r_[np.inf, s[order][cut]],
    )


class OperatingPoint(NamedTuple):
    """A threshold on the ROC curve: "melanoma if score >= threshold"."""

    sensitivity: float
    specificity: float
    threshold: float

    def __repr__(self) -> str:
        return (
            f"OperatingPoint(sensitivity={self.sensitivity:.4f}, specificity={self.specificity:.4f}, "
            f"threshold={self.threshold:.6g})"
        )


def _check_rate(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise MetricError(f"{name}={value!r}; expected a number in [0, 1]")
    return float(value)


def sensitivity_at_specificity(y: Any, s: Any, specificity: float = 0.90) -> OperatingPoint:
    """The highest sensitivity of a threshold whose specificity is at least ``specificity``.

    Only thresholds a user can apply count (points of :func:`roc_curve`, no interpolation
    between them), so the point reported is reachable and its specificity may exceed the target.
    """
    spec = _check_rate(specificity, "specificity")
    curve = roc_curve(y, s)
    ok = 1.0 - curve.fpr >= spec - 1e-12
    i = np.flatnonzero(ok)[np.argmax(curve.tpr[ok])]  # the origin always qualifies
    return OperatingPoint(
        float(curve.tpr[i]), float(1.0 - curve.fpr[i]), float(curve.thresholds[i])
    )


def specificity_at_sensitivity(y: Any, s: Any, sensitivity: float = 0.95) -> OperatingPoint:
    """The highest specificity of a threshold whose sensitivity is at least ``sensitivity``.

    Only thresholds of :func:`roc_curve` count (no interpolation); see
    :func:`sensitivity_at_specificity`. The result's first field is the sensitivity, which is what
    :func:`patient_bootstrap` reads from a tuple: to bootstrap the specificity, pass
    ``lambda y, s, **kw: specificity_at_sensitivity(y, s, **kw).specificity``.
    """
    sens = _check_rate(sensitivity, "sensitivity")
    curve = roc_curve(y, s)
    ok = curve.tpr >= sens - 1e-12
    i = np.flatnonzero(ok)[np.argmin(curve.fpr[ok])]  # the last point (tpr 1) always qualifies
    return OperatingPoint(
        float(curve.tpr[i]), float(1.0 - curve.fpr[i]), float(curve.thresholds[i])
    )


# --- multi-class ----------------------------------------------------------------------------


def per_class_metrics(
    y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None
) -> pd.DataFrame:
    """One-vs-rest precision, sensitivity, specificity and accuracy per class (as Ding et al.).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted class labels (e.g. HAM10000 ``dx`` codes). No missing values.
    labels : sequence, optional
        Classes to report, in this order; default the sorted union of both arrays.

    Returns
    -------
    DataFrame indexed by class
        ``n`` (true count), ``tp, fp, fn, tn``, ``precision`` TP/(TP+FP), ``sensitivity``
        TP/(TP+FN), ``specificity`` TN/(TN+FP), ``accuracy`` (TP+TN)/n_total; NaN where a
        denominator is zero.
    """
    t = pd.Series(np.asarray(y_true, dtype=object))
    p = pd.Series(np.asarray(y_pred, dtype=object))
    if len(t) != len(p):
        raise MetricError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.isna().any():
            raise MetricError(
                f"{name} is missing at rows {np.flatnonzero(v.isna().to_numpy())[:5].tolist()}"
            )
    if labels is None:
        labels = sorted(set(t) | set(p), key=str)
    rows = []
    total = len(t)
    for c in labels:
        tp = int(((t == c) & (p == c)).sum())
        fp = int(((t != c) & (p == c)).sum())
        fn = int(((t == c) & (p != c)).sum())
        tn = total - tp - fp - fn
        rows.append(
            {
                "class": c,
                "n": tp + fn,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "tn": tn,
                "precision": tp / (tp + fp) if tp + fp else np.nan,
                "sensitivity": tp / (tp + fn) if tp + fn else np.nan,
                "specificity": tn / (tn + fp) if tn + fp else np.nan,
                "accuracy": (tp + tn) / total if total else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("class")


# --- calibration ----------------------------------------------------------------------------


def _probabilities(p: Any, n: int) -> np.ndarray:
    p = _scores(p, n, "p")
    bad = (p < 0) | (p > 1)
    if bad.any():
        raise MetricError(
            f"p has values outside [0, 1] at rows {np.flatnonzero(bad)[:5].tolist()}; "
            "calibration needs probabilities, not logits or ranks"
        )
    return p


def brier_score(y: Any, p: Any) -> float:
    """Mean squared difference between the melanoma probability ``p`` and the label (lower is better)."""
    y = _labels(y)
    p = _probabilities(p, len(y))
    if len(y) == 0:
        raise MetricError("brier_score of no lesions is undefined")
    return float(np.mean((p - y) ** 2))


def reliability_curve(y: Any, p: Any, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability (calibration) curve data: observed melanoma rate per bin of predicted probability.

    Parameters
    ----------
    n_bins : int
        Number of bins.
    strategy : {"uniform", "quantile"}
        Equal-width bins on [0, 1], or bins holding equal numbers of lesions (useful when, as with
        melanoma, most probabilities are near 0).

    Returns
    -------
    DataFrame, one row per non-empty bin
        ``lower, upper`` (bin edges), ``n`` (lesions), ``mean_predicted``, ``observed_rate``,
        ``gap`` (observed - predicted). Plot ``observed_rate`` against ``mean_predicted``.
    """
    y = _labels(y)
    p = _probabilities(p, len(y))
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise MetricError(f"n_bins={n_bins!r}; expected an int >= 1")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        # interior cuts at the quantiles; [0, 1] always covered, even when every p is equal
        inner = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))[1:-1]
        edges = np.unique(np.r_[0.0, inner[(inner > 0.0) & (inner < 1.0)], 1.0])
    else:
        raise MetricError(f"strategy={strategy!r}; expected 'uniform' or 'quantile'")
    # bins are [lower, upper), the last one closed
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    n = np.bincount(b, minlength=len(edges) - 1)
    keep = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=len(edges) - 1) / n
        rate = np.bincount(b, weights=y, minlength=len(edges) - 1) / n
    return pd.DataFrame(
        {
            "lower": edges[:-1][keep],
            "upper": edges[1:][keep],
            "n": n[keep],
            "mean_predicted": mean_p[keep],
            "observed_rate": rate[keep],
            "gap": (rate - mean_p)[keep],
        }
    )


def expected_calibration_error(
    y: Any, p: Any, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """Expected calibration error: ``sum_b n_b / n * |observed_rate_b - mean_predicted_b|``.

    Bins as in :func:`reliability_curve`. 0 = perfectly calibrated (at that binning).
    """
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    if curve["n"].sum() == 0:
        raise MetricError("expected_calibration_error of no lesions is undefined")
    return float((curve["n"] * curve["gap"].abs()).sum() / curve["n"].sum())


# --- subgroups ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A metric of :data:`METRICS`: one key, one display label, its function and direction.

    Attributes
    ----------
    key : str
        The metric's name in every result table, JSON file and report (``"pauc80"``).
    label : str
        Its name in tables people read (``"pAUC (TPR > 0.8)"``).
    func : callable or None
        ``func(y, s, **kwargs)`` (with ``patient_id=`` when it takes one); None for
        ``fold_auc``, which :func:`dermctx.benchmark` computes from its folds.
    kwargs : mapping
        The settings that make ``func`` this metric (``{"min_tpr": 0.8}``).
    higher_is_better : bool
        The direction of improvement (False for the Brier score and the ECE).
    """

    key: str
    label: str
    func: Callable[..., Any] | None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True

    def __call__(self, y: Any, s: Any, patient_id: Any = None) -> Any:
        """The metric on labels ``y`` and scores ``s`` (and ``patient_id`` when it needs them)."""
        func, kw = _resolve(self)
        if _takes_patient(func):
            if patient_id is None:
                raise MetricError(f"metric {self.key!r} needs patient_id")
            kw["patient_id"] = patient_id
        return func(y, s, **kw)

    def __repr__(self) -> str:
        fixed = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        name = self.func.__name__ if self.func is not None else "dermctx.benchmark"
        return (f"Metric({self.key!r}, {self.label!r}: {name}({fixed}), "
                f"{'higher' if self.higher_is_better else 'lower'} is better)")


class _Registry(dict[str, "Metric"]):
    """``METRICS``: a dict key -> :class:`Metric` that still answers the function names of the
    old registry (``METRICS["partial_auc"]``) with the function, and a FutureWarning."""

    def __missing__(self, key: Any) -> Any:
        if key in _FUNCTION_NAMES:
            _warn_function_name(key, 2)
            return _FUNCTION_NAMES[key]
        raise KeyError(key)


#: The metrics dermctx reports, in report order: key -> :class:`Metric`. Each key is the metric's
#: one name in results (tables, ``metrics.json``, reports) and each label its one display name.
#: :func:`patient_bootstrap`, :func:`subgroup_table` and :func:`dermctx.benchmark` take the keys.
METRICS: dict[str, Metric] = _Registry({m.key: m for m in (
    Metric("auc", "AUC", auc),
    Metric("pauc80", "pAUC (TPR > 0.8)", partial_auc, {"min_tpr": 0.80}),
    Metric("within_patient_auc", "within-patient AUC", within_patient_auc),
    Metric("top1", "top-1 rate", topk_rate, {"k": 1}),
    Metric("top3", "top-3 rate", topk_rate, {"k": 3}),
    Metric("top15_sensitivity", "top-15 sensitivity", topk_sensitivity, {"k": 15}),
    Metric("fold_auc", "mean per-fold AUC", None),
    Metric("brier_score", "Brier score", brier_score, higher_is_better=False),
    Metric("expected_calibration_error", "ECE", expected_calibration_error,
           higher_is_better=False),
)})

# names of the old registry that are function names, not metric keys: still accepted, with a
# FutureWarning naming the key (a function name is not one metric: partial_auc at which min_tpr?)
_FUNCTION_NAMES: dict[str, Callable[..., Any]] = {
    "partial_auc": partial_auc, "topk_rate": topk_rate, "topk_sensitivity": topk_sensitivity,
}
_FUNCTION_KEYS = {"partial_auc": "'pauc80' (min_tpr=0.8)", "topk_rate": "'top1' or 'top3'",
                  "topk_sensitivity": "'top15_sensitivity'"}


def _warn_function_name(name: str, stacklevel: int) -> None:
    import warnings

    warnings.warn(
        f"the metric name {name!r} is deprecated, use the key {_FUNCTION_KEYS[name]} of "
        f"dermctx.metrics.METRICS, or pass the function dermctx.metrics.{name} itself",
        FutureWarning, stacklevel=stacklevel + 1)


_VECTORISED.update({auc, partial_auc, within_patient_auc, topk_rate, topk_sensitivity, brier_score})

#: Age bands of :func:`subgroup_table` (years, [lower, upper)).
AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 30, "<30"),
    (30, 45, "30-44"),
    (45, 60, "45-59"),
    (60, 75, "60-74"),
    (75, math.inf, "75+"),
)


def age_band(age: Any) -> pd.Series:
    """Age in years -> band label of :data:`AGE_BANDS`; missing -> ``"unknown"``."""
    age = pd.to_numeric(pd.Series(age), errors="coerce").to_numpy(float)
    out = np.full(len(age), "unknown", dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(age >= lo) & (age < hi)] = name
    return pd.Series(out)


def _cells(table: pd.DataFrame, by: Sequence[str], include_all: bool
           ) -> list[tuple[str, str, np.ndarray]]:
    """``(by, group, row mask)`` of every subgroup, in table order (see :func:`subgroup_table`)."""
    columns: dict[str, pd.Series] = {}
    for col in by:
        if col == "age_band" and col not in table.columns:
            if "age" not in table.columns:
                raise MetricError("subgroup_table: by='age_band' needs an 'age' column")
            columns[col] = age_band(table["age"].to_numpy())
        elif col not in table.columns:
            raise MetricError(f"subgroup_table: the table has no column {col!r} to group by")
        else:
            raw = table[col].astype(object).reset_index(drop=True)
            blank = raw.isna() | (raw.astype(str).str.strip() == "")
            columns[col] = raw.where(~blank, "unknown").astype(str)
    cells: list[tuple[str, str, np.ndarray]] = []
    if include_all:
        cells.append(("all", "all", np.ones(len(table), dtype=bool)))
    band_order = {name: i for i, (_, _, name) in enumerate(AGE_BANDS)}
    for col, values in columns.items():
        for group in sorted(
            values.unique(), key=lambda g: (g == "unknown", band_order.get(g, -1), g)
        ):
            cells.append((col, group, (values == group).to_numpy()))
    return cells


def _subgroup_figure(
    name: str, metric: tuple[Callable[..., Any], dict[str, Any]], unit_of: Any,
    y: np.ndarray, s: np.ndarray, pid: np.ndarray, ref: np.ndarray | None, *,
    min_melanomas: int, **boot: Any,
) -> dict[str, Any]:
    """One metric's columns of a :func:`subgroup_table` row (and its difference to ``ref``)."""
    func, kw = metric
    nan = float("nan")
    out: dict[str, Any] = {name: nan, f"{name}_low": nan, f"{name}_high": nan}
    diff = f"{name}_difference"
    if ref is not None:
        out.update({diff: nan, f"{diff}_low": nan, f"{diff}_high": nan})
    try:
        reason = too_few_melanomas(unit_of, y, pid, min_melanomas=min_melanomas)
        if reason is None:
            res = patient_bootstrap(func, y, s, pid, **boot, **kw)
            out[name] = res.estimate
            reason = degenerate_ci(res)
            if reason is None:
                out[f"{name}_low"], out[f"{name}_high"] = res.low, res.high
    except DermctxError as exc:  # undefined here (one class, no melanoma patient)
        reason = str(exc)
    out[f"{name}_missing_reason"] = reason or ""
    if ref is None:
        return out
    d_reason = reason if np.isnan(out[name]) else None
    if d_reason is None:
        try:
            d = paired_bootstrap(func, y, s, ref, pid, **boot, **kw)
            out[diff] = d.estimate
            d_reason = degenerate_ci(d)
            if d_reason is None:
                out[f"{diff}_low"], out[f"{diff}_high"] = d.low, d.high
        except DermctxError as exc:
            d_reason = str(exc)
    out[f"{diff}_missing_reason"] = d_reason or ""
    return out


@renamed_parameters(seed="random_state")
def subgroup_table(
    table: pd.DataFrame,
    score_col: str,
    by: Sequence[str] = ("sex", "age_band", "site", "source"),
    metrics: Sequence[str] | Mapping[str, Callable[..., Any]] = ("auc",),
    *,
    target_col: str = "target",
    patient_col: str = "patient_id",
    n_boot: int = 1000,
    random_state: int | None = 0,
    level: float = 0.95,
    include_all: bool = True,
    reference_col: str | None = None,
    min_melanomas: int = MIN_MELANOMAS,
) -> pd.DataFrame:
    """Every metric by subgroup, with image, patient and melanoma counts and patient-bootstrap CIs.

    Parameters
    ----------
    table : DataFrame
        A lesion table with ``target_col``, ``patient_col`` and ``score_col``.
    score_col : str
        The column of scores (probabilities for the calibration metrics).
    by : sequence of str
        Columns to split by. ``"age_band"`` is derived from ``age`` (:data:`AGE_BANDS`) unless
        the table has it. Missing values form an ``"unknown"`` subgroup: no row is dropped.
    metrics : sequence of names or mapping name -> callable
        Keys of :data:`METRICS` (each names its columns), or your own ``metric(y, s, **kw)``
        callables under the names you give them.
    n_boot : int
        Patient-bootstrap resamples of every CI.
    random_state : int or None
        Seed of the resampling (``seed=`` is a deprecated alias).
    level : float
        CI coverage.
    include_all : bool
        Add a first row ``by="all", group="all"`` with the whole table.
    reference_col : str, optional
        A second score column (the reference model): each metric then also gets its paired
        difference ``score_col`` minus ``reference_col`` within the subgroup
        (:func:`paired_bootstrap`, the same resamples for both).
    min_melanomas : int
        A ranking figure resting on fewer melanomas (or patients; see
        :func:`too_few_melanomas`) is missing, with the reason. Default :data:`MIN_MELANOMAS`.

    Returns
    -------
    DataFrame, one row per (by, group)
        ``by, group, n_images, n_patients, n_melanomas`` and per metric ``<m>``, ``<m>_low``,
        ``<m>_high`` and ``<m>_missing_reason``; with ``reference_col`` also
        ``<m>_difference``, ``<m>_difference_low``, ``<m>_difference_high`` and
        ``<m>_difference_missing_reason``. A figure that is undefined (an AUC without melanomas)
        or rests on too few melanomas is NaN, and so are a degenerate bootstrap's CI bounds
        (:func:`degenerate_ci`); ``*_missing_reason`` then says why (empty when all is shown).
    """
    if not isinstance(table, pd.DataFrame):
        raise MetricError(
            f"subgroup_table: expected a lesion table (DataFrame), got {type(table).__name__}"
        )
    for col in (score_col, target_col, patient_col, reference_col):
        if col is not None and col not in table.columns:
            raise MetricError(
                f"subgroup_table: the table has no column {col!r} (found {list(table.columns)[:20]})"
            )
    named = dict(metrics) if isinstance(metrics, Mapping) else {m: m for m in metrics}
    funcs = {}
    for name, m in named.items():  # a loop, not a comprehension: the warning's stack level
        funcs[name] = _resolve(m, stacklevel=4)
    cells = _cells(table, by, include_all)
    y = _labels(table[target_col].to_numpy(), target_col)
    s = _scores(table[score_col].to_numpy(), len(y), score_col)
    ref = None if reference_col is None else _scores(table[reference_col].to_numpy(), len(y),
                                                     reference_col)
    pid = table[patient_col].astype(str).to_numpy()
    boot = {"n_boot": n_boot, "random_state": random_state, "level": level}

    rows = []
    for col, group, mask in cells:
        row: dict[str, Any] = {
            "by": col,
            "group": group,
            "n_images": int(mask.sum()),
            "n_patients": int(pd.unique(pid[mask]).size),
            "n_melanomas": int(y[mask].sum()),
        }
        for name, metric in funcs.items():
            unit_of = named[name] if isinstance(named[name], (str, Metric)) else metric[0]
            row.update(_subgroup_figure(
                name, metric, unit_of, y[mask], s[mask], pid[mask],
                None if ref is None else ref[mask], min_melanomas=min_melanomas, **boot))
        rows.append(row)
    return pd.DataFrame(rows)
