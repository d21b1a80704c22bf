"""ROC and precision-recall curves as display objects, in the manner of scikit-learn's
:class:`~sklearn.metrics.RocCurveDisplay` and :class:`~sklearn.metrics.PrecisionRecallDisplay`.

What this field adds to scikit-learn's: with ``patient_id=``, a **patient-bootstrap 95% band**
around the curve (lesions of one patient resampled together) and the area with its
patient-bootstrap CI in the legend ("AUC 0.912 [0.888, 0.948]"); for the ROC, the **pAUC region**
(sensitivity above 0.8, the ISIC 2024 score) shaded on request. A curve whose figures rest on too
few melanomas (:data:`dermctx.metrics.MIN_MELANOMAS`) or whose bootstrap degenerates is drawn
without band or CI, and the legend says why.

Build one with :meth:`RocCurveDisplay.from_predictions` (labels, scores) or
:meth:`RocCurveDisplay.from_estimator` (a fitted dermctx estimator and a lesion table); both
draw, on ``ax`` or on a new figure, and return the display. Draw several models on one axes by
passing the first display's ``ax_``::

    from dermctx.display import RocCurveDisplay

    disp = RocCurveDisplay.from_predictions(y, cnn, patient_id=pid, name="CNN alone")
    RocCurveDisplay.from_estimator(ranker, test_table, ax=disp.ax_, plot_pauc=True)
    disp.figure_.savefig("roc.png")

The band is pointwise: at each false-positive rate of a grid of 101 (each recall, for
precision-recall), the central 95% of the resamples' sensitivities (precisions). It uses the
same resamples as the CI of the area (:func:`dermctx.metrics.patient_resamples`, the same
``random_state``). A resampled ROC is interpolated linearly between its points, as the
trapezoidal AUC is; a resampled precision-recall curve is read, at recall ``r``, at its highest
threshold whose recall is at least ``r`` (no interpolation), as the curve is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from dermctx import metrics as M
from dermctx.errors import DermctxError, MetricError
from dermctx.formatting import format_ci

__all__ = ["CurveBand", "PrecisionRecallDisplay", "RocCurveDisplay"]

#: Points of the grid a band is computed on (false-positive rate or recall from 0 to 1).
BAND_POINTS = 101


class CurveBand(NamedTuple):
    """A pointwise bootstrap band: at each ``x`` (false-positive rate or recall), the ``low``
    and ``high`` percentiles of the resampled curves' ``y`` (sensitivity or precision)."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float


class _Curves(NamedTuple):
    """Every curve-based figure of one model, computed from its true and false positive counts."""

    fpr: np.ndarray  # (T+1,) from the origin
    tpr: np.ndarray
    recall: np.ndarray  # (T,) increasing
    precision: np.ndarray
    thresholds: np.ndarray  # (T,) decreasing
    tp: np.ndarray  # (1, T) counts at each threshold
    fp: np.ndarray


def _check(y_true: Any, y_score: Any, patient_id: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    y = np.asarray(y_true)
    s = np.asarray(y_score)
    M.roc_curve(y, s)  # the metrics' own checks: 0/1 labels, finite scores, both classes
    if patient_id is not None and len(np.asarray(patient_id, dtype=object).reshape(-1)) != len(y):
        raise MetricError(f"patient_id has {len(np.asarray(patient_id))} values; expected "
                          f"{len(y)}, one per label")
    return y.astype(float).astype(int), s.astype(float), patient_id


def _counts(w: np.ndarray, y_sorted: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true and false positives at each threshold: (r, T) each, for weights (r, n)."""
    return np.cumsum(w * y_sorted, axis=1)[:, cut], np.cumsum(w * (1 - y_sorted), axis=1)[:, cut]


def _curves(y: np.ndarray, s: np.ndarray) -> _Curves:
    order, cut = M.roc_order(s)
    counts = _counts(np.ones((1, len(y))), y[order].astype(float), cut)
    tp, fp = counts[0][0], counts[1][0]
    return _Curves(fpr=np.r_[0.0, fp / fp[-1]], tpr=np.r_[0.0, tp / tp[-1]],
                   recall=tp / tp[-1], precision=tp / (tp + fp), thresholds=s[order][cut],
                   tp=counts[0], fp=counts[1])


def _average_precision(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Average precision of each row of weighted counts: sum over thresholds of the recall gained
    times the precision there (scikit-learn's definition, no interpolation)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        gained = np.diff(tp, axis=1, prepend=0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return (gained * precision).sum(axis=1) / tp[:, -1]


class _Bootstrap(NamedTuple):
    roc: CurveBand
    pr: CurveBand
    average_precision: M.BootstrapResult


def _bootstrap(y: np.ndarray, s: np.ndarray, patient_id: Any, *, n_boot: int,
               random_state: int | None, level: float, average_precision: float | None = None
               ) -> _Bootstrap:
    """The ROC band, or (with ``average_precision``, the estimate) the precision-recall band and
    the average precision's CI, on the resamples of :func:`dermctx.metrics.patient_resamples`."""
    pr = average_precision is not None
    order, cut = M.roc_order(s)
    y_sorted = y[order].astype(float)
    grid = np.linspace(0.0, 1.0, BAND_POINTS)
    rows_roc, rows_pr, aps = [], [], []
    for w in M.patient_resamples(patient_id, n_boot, random_state):
        tp, fp = _counts(w[:, order], y_sorted, cut)
        ok = (tp[:, -1] > 0) & (fp[:, -1] > 0)  # a resample without both classes has no curve
        tp, fp = tp[ok], fp[ok]
        if not pr:
            rows_roc += [np.interp(grid, np.r_[0.0, f / f[-1]], np.r_[0.0, t / t[-1]])
                         for t, f in zip(tp, fp, strict=True)]
            continue
        aps.append(_average_precision(tp, fp))
        for t, f in zip(tp, fp, strict=True):
            # at recall r: the highest threshold whose recall is at least r (r = 0: the first)
            at = np.searchsorted(t / t[-1], np.maximum(grid, 1e-12), side="left")
            rows_pr.append(t[at] / (t[at] + f[at]))
    ap = np.concatenate(aps) if aps else np.zeros(0)
    q = [(1 - level) / 2, (1 + level) / 2]

    def band(rows: list[np.ndarray]) -> CurveBand:
        if not rows:
            nan = np.full(len(grid), np.nan)
            return CurveBand(grid, nan, nan.copy(), level)
        lo, hi = np.quantile(np.vstack(rows), q, axis=0)
        return CurveBand(grid, lo, hi, level)

    lo, hi = np.quantile(ap, q) if len(ap) else (np.nan, np.nan)
    n_pat = int(np.unique(np.asarray(patient_id, dtype=object).astype(str)).size)
    ap_result = M.BootstrapResult("average_precision", float(average_precision or np.nan),
                                  float(lo), float(hi), level, int(n_boot), len(ap), n_pat)
    return _Bootstrap(band(rows_roc), band(rows_pr), ap_result)


def _interval(result: M.BootstrapResult) -> tuple[tuple[float, float] | None, str | None]:
    """A bootstrap result's CI, or None and why (:func:`dermctx.metrics.degenerate_ci`)."""
    why = M.degenerate_ci(result)
    return (None, why) if why else ((result.low, result.high), None)


def _uncertainty(metric: str, y: np.ndarray, s: np.ndarray, patient_id: Any, *, n_boot: int,
                 random_state: int | None, level: float, min_melanomas: int
                 ) -> tuple[tuple[float, float] | None, str | None]:
    """The CI of a registry metric, or None and why it is not shown."""
    if patient_id is None or n_boot == 0:
        return None, None
    why = M.too_few_melanomas(metric, y, patient_id, min_melanomas=min_melanomas)
    if why:
        return None, why
    return _interval(M.patient_bootstrap(metric, y, s, patient_id, n_boot=n_boot,
                                         random_state=random_state, level=level))


def _label(name: str | None, parts: list[tuple[str, float | None, tuple[float, float] | None]],
           missing_reason: str | None) -> str | None:
    """``"name: AUC 0.912 [0.888, 0.948]"``, a figure per line; ``(no CI: why)`` without CIs."""
    lines = []
    for what, value, ci in parts:
        if value is None or not np.isfinite(value):
            continue
        lo, hi = ci if ci is not None else (None, None)
        lines.append(f"{what} {format_ci(value, lo, hi, 3)}")
    if lines and missing_reason:
        lines[0] += f" (no CI: {missing_reason})"
    text = "\n".join(lines)
    if name:
        text = f"{name}: {text}" if text else name
    return text or None


def _axes(ax: Any) -> tuple[Any, Any]:
    """``(ax, figure)``: the given axes, or new ones from pyplot (a notebook shows them)."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax, ax.figure


def _scores_of(estimator: Any, X: Any, y: Any, patient_id: Any
               ) -> tuple[np.ndarray, np.ndarray, Any, str]:
    """Labels, melanoma scores, patient ids and a name for ``from_estimator``."""
    import pandas as pd

    from dermctx.benchmarking import melanoma_score
    from dermctx.label_guard import LABEL_COLUMNS

    if not isinstance(X, pd.DataFrame):
        raise DermctxError(f"from_estimator: X must be a lesion table (DataFrame), got "
                           f"{type(X).__name__}")
    if y is None:
        if "target" not in X.columns:
            raise DermctxError("from_estimator: the table has no 'target' column; pass y= "
                               "(1 = melanoma, 0 = not)")
        y = X["target"].to_numpy()
    if patient_id is None and "patient_id" in X.columns:
        patient_id = X["patient_id"].astype(str).to_numpy()
    features = X.drop(columns=[c for c in X.columns if str(c).lower() in LABEL_COLUMNS])
    name = type(estimator).__name__
    return np.asarray(y), melanoma_score(estimator, features.reset_index(drop=True), name), \
        patient_id, name


# --- ROC ------------------------------------------------------------------------------------


class RocCurveDisplay:
    """ROC curve, with a patient-bootstrap band and the AUC with its CI.

    Build it with :meth:`from_predictions` or :meth:`from_estimator`; the constructor only
    stores what it is given (as scikit-learn's does), and :meth:`plot` draws it.

    Parameters
    ----------
    fpr, tpr : ndarray
        False-positive rates (1 - specificity) and true-positive rates (sensitivity), from the
        origin (:func:`dermctx.metrics.roc_curve`).
    roc_auc : float, optional
        The AUC, shown in the legend.
    name : str, optional
        The model's name in the legend.
    roc_auc_ci : (float, float), optional
        The AUC's 95% CI.
    pauc, pauc_ci : float and (float, float), optional
        The pAUC (TPR > 0.8) and its CI, shown with ``plot_pauc=True``.
    band : CurveBand, optional
        Bootstrap band of the sensitivity at each false-positive rate.
    missing_reason : str, optional
        Why the CIs and the band are missing (too few melanomas, a degenerate bootstrap).

    Attributes
    ----------
    line_ : matplotlib Line2D
        The curve (after :meth:`plot`).
    band_ : matplotlib PolyCollection or None
        The band.
    pauc_ : matplotlib PolyCollection or None
        The shaded pAUC region.
    chance_level_ : matplotlib Line2D or None
        The diagonal.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    """

    def __init__(self, *, fpr: np.ndarray, tpr: np.ndarray, roc_auc: float | None = None,
                 name: str | None = None, roc_auc_ci: tuple[float, float] | None = None,
                 pauc: float | None = None, pauc_ci: tuple[float, float] | None = None,
                 band: CurveBand | None = None, missing_reason: str | None = None) -> None:
        self.fpr = fpr
        self.tpr = tpr
        self.roc_auc = roc_auc
        self.name = name
        self.roc_auc_ci = roc_auc_ci
        self.pauc = pauc
        self.pauc_ci = pauc_ci
        self.band = band
        self.missing_reason = missing_reason

    def __repr__(self) -> str:
        lo, hi = self.roc_auc_ci or (None, None)
        return (f"RocCurveDisplay(name={self.name!r}, AUC {format_ci(self.roc_auc, lo, hi, 3)}, "
                f"{len(self.fpr)} points, band={'yes' if self.band is not None else 'no'})")

    def plot(self, ax: Any = None, *, name: str | None = None,
             curve_kwargs: Mapping[str, Any] | None = None, plot_chance_level: bool = False,
             chance_level_kw: Mapping[str, Any] | None = None, plot_band: bool = True,
             plot_pauc: bool = False, despine: bool = False) -> RocCurveDisplay:
        """Draw the curve (and its band, the pAUC region, the chance diagonal) on ``ax``.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw on; default a new figure (``matplotlib.pyplot.subplots``).
        name : str, optional
            Legend name, instead of the display's ``name``.
        curve_kwargs : dict, optional
            Passed to ``ax.plot`` for the curve (``color``, ``lw``...). The band and the pAUC
            region take the curve's colour.
        plot_chance_level : bool
            Draw the diagonal of a random ranking (AUC 0.5).
        chance_level_kw : dict, optional
            Passed to ``ax.plot`` for the diagonal.
        plot_band : bool
            Draw the bootstrap band, when there is one.
        plot_pauc : bool
            Shade the pAUC region (between the curve and sensitivity 0.8, where the curve is
            above it: the ISIC 2024 partial AUC, at most 0.2), draw the line at 0.8 and add the
            pAUC with its CI to the legend.
        despine : bool
            Remove the top and right spines.

        Returns
        -------
        RocCurveDisplay
            ``self``, with ``ax_``, ``figure_``, ``line_``, ``band_``, ``pauc_`` and
            ``chance_level_`` set.
        """
        self.ax_, self.figure_ = _axes(ax)
        name = name if name is not None else self.name
        parts: list[tuple[str, float | None, tuple[float, float] | None]] = [
            ("AUC", self.roc_auc, self.roc_auc_ci)]
        if plot_pauc:
            parts.append((M.METRICS["pauc80"].label, self.pauc, self.pauc_ci))
        kw = {"lw": 1.4, "label": _label(name, parts, self.missing_reason), **(curve_kwargs or {})}
        (self.line_,) = self.ax_.plot(self.fpr, self.tpr, **kw)
        colour = self.line_.get_color()
        self.band_ = None
        if plot_band and self.band is not None and np.isfinite(self.band.low).all():
            self.band_ = self.ax_.fill_between(self.band.x, self.band.low, self.band.high,
                                               color=colour, alpha=0.15, lw=0)
        self.pauc_ = None
        if plot_pauc:
            min_tpr = float(M.METRICS["pauc80"].kwargs["min_tpr"])
            fpr, tpr = np.asarray(self.fpr, float), np.asarray(self.tpr, float)
            self.pauc_ = self.ax_.fill_between(fpr, min_tpr, tpr, where=tpr >= min_tpr,
                                               interpolate=True, color=colour, alpha=0.25, lw=0,
                                               hatch="///")
            self.ax_.axhline(min_tpr, color="0.6", lw=0.8, ls=":")
        self.chance_level_ = None
        if plot_chance_level:
            ckw = {"color": "0.6", "lw": 0.8, "ls": "--", "label": "chance level (AUC 0.5)",
                   **(chance_level_kw or {})}
            (self.chance_level_,) = self.ax_.plot([0, 1], [0, 1], **ckw)
        self.ax_.set(xlabel="1 - specificity (false-positive rate)",
                     ylabel="sensitivity (true-positive rate)", xlim=(-0.01, 1.01),
                     ylim=(-0.01, 1.01))
        if despine:
            for side in ("top", "right"):
                self.ax_.spines[side].set_visible(False)
        if kw.get("label") or (plot_chance_level and self.chance_level_ is not None):
            self.ax_.legend(loc="lower right", fontsize=8)
        return self

    @classmethod
    def from_predictions(cls, y_true: Any, y_score: Any, *, patient_id: Any = None,
                         n_boot: int = 1000, random_state: int | None = 0, level: float = 0.95,
                         min_melanomas: int = M.MIN_MELANOMAS, name: str | None = None,
                         ax: Any = None, **plot_kw: Any) -> RocCurveDisplay:
        """The ROC of labels and scores, drawn.

        Parameters
        ----------
        y_true : array-like of shape (n,)
            1 = melanoma, 0 = not.
        y_score : array-like of shape (n,)
            Scores, higher = more suspicious (probabilities or logits).
        patient_id : array-like of shape (n,), optional
            The patient of each lesion: with it, the band and the CIs of the AUC and the pAUC
            come from resampling patients. Without it, neither is drawn (lesions of a patient
            are not independent, so dermctx does not resample lesions).
        n_boot : int
            Patient-bootstrap resamples (0: no band, no CIs).
        random_state : int or None
            Seed of the resampling.
        level : float
            Coverage of the band and the CIs.
        min_melanomas : int
            No band nor CI below this many melanomas (:data:`dermctx.metrics.MIN_MELANOMAS`).
        name : str, optional
            Legend name.
        ax : matplotlib Axes, optional
            Axes to draw on (default a new figure).
        **plot_kw
            Passed to :meth:`plot` (``plot_pauc``, ``plot_chance_level``, ``plot_band``,
            ``curve_kwargs``, ``chance_level_kw``, ``despine``).

        Returns
        -------
        RocCurveDisplay
        """
        y, s, patient_id = _check(y_true, y_score, patient_id)
        curve = M.roc_curve(y, s)
        boot: dict[str, Any] = {"n_boot": n_boot, "random_state": random_state, "level": level,
                                "min_melanomas": min_melanomas}
        auc_ci, why = _uncertainty("auc", y, s, patient_id, **boot)
        pauc_ci, _ = _uncertainty("pauc80", y, s, patient_id, **boot)
        band = None
        if patient_id is not None and n_boot and why is None:
            band = _bootstrap(y, s, patient_id, n_boot=n_boot, random_state=random_state,
                              level=level).roc
        display = cls(fpr=curve.fpr, tpr=curve.tpr, roc_auc=M.auc(y, s), name=name,
                      roc_auc_ci=auc_ci, pauc=M.METRICS["pauc80"](y, s), pauc_ci=pauc_ci,
                      band=band, missing_reason=why)
        return display.plot(ax, **plot_kw)

    @classmethod
    def from_estimator(cls, estimator: Any, X: Any, y: Any = None, *, patient_id: Any = None,
                       name: str | None = None, **kw: Any) -> RocCurveDisplay:
        """The ROC of a fitted estimator on a lesion table, drawn.

        Parameters
        ----------
        estimator : fitted estimator
            A dermctx model (:class:`dermctx.ContextRanker`, :class:`dermctx.MetadataGBM`,
            :class:`dermctx.SetRanker`...) or any classifier with ``predict_proba`` or
            ``decision_function``; it scores the table's rows minus the label columns
            (:data:`dermctx.label_guard.LABEL_COLUMNS`), whole patients together.
        X : DataFrame
            A lesion table.
        y : array-like, optional
            Labels; default the table's ``target``.
        patient_id : array-like, optional
            Default the table's ``patient_id`` (so the band is drawn).
        name : str, optional
            Legend name; default the estimator's class name.
        **kw
            As :meth:`from_predictions` (``n_boot``, ``random_state``, ``ax``, ``plot_pauc``...).

        Returns
        -------
        RocCurveDisplay
        """
        y, s, patient_id, default = _scores_of(estimator, X, y, patient_id)
        return cls.from_predictions(y, s, patient_id=patient_id,
                                    name=name if name is not None else default, **kw)


# --- precision-recall -----------------------------------------------------------------------


class PrecisionRecallDisplay:
    """Precision-recall curve, with a patient-bootstrap band and the average precision's CI.

    Build it with :meth:`from_predictions` or :meth:`from_estimator`; :meth:`plot` draws it.

    Parameters
    ----------
    precision, recall : ndarray
        The curve, one point per distinct score, recall increasing (the highest threshold
        first). Drawn as steps: at recall ``r``, the precision of the highest threshold whose
        recall is at least ``r``.
    average_precision : float, optional
        Sum over thresholds of the recall gained times the precision (scikit-learn's
        definition), shown in the legend.
    name : str, optional
        The model's name in the legend.
    average_precision_ci : (float, float), optional
        Its 95% CI.
    prevalence : float, optional
        The melanoma share: the precision of a random ranking (the chance level).
    band : CurveBand, optional
        Bootstrap band of the precision at each recall.
    missing_reason : str, optional
        Why the CI and the band are missing.

    Attributes
    ----------
    line_, band_, chance_level_, ax_, figure_
        As :class:`RocCurveDisplay`'s, after :meth:`plot`.
    """

    def __init__(self, *, precision: np.ndarray, recall: np.ndarray,
                 average_precision: float | None = None, name: str | None = None,
                 average_precision_ci: tuple[float, float] | None = None,
                 prevalence: float | None = None, band: CurveBand | None = None,
                 missing_reason: str | None = None) -> None:
        self.precision = precision
        self.recall = recall
        self.average_precision = average_precision
        self.name = name
        self.average_precision_ci = average_precision_ci
        self.prevalence = prevalence
        self.band = band
        self.missing_reason = missing_reason

    def __repr__(self) -> str:
        lo, hi = self.average_precision_ci or (None, None)
        return (f"PrecisionRecallDisplay(name={self.name!r}, AP "
                f"{format_ci(self.average_precision, lo, hi, 3)}, {len(self.recall)} points, "
                f"band={'yes' if self.band is not None else 'no'})")

    def plot(self, ax: Any = None, *, name: str | None = None,
             curve_kwargs: Mapping[str, Any] | None = None, plot_chance_level: bool = False,
             chance_level_kw: Mapping[str, Any] | None = None, plot_band: bool = True,
             despine: bool = False) -> PrecisionRecallDisplay:
        """Draw the curve (and its band, the prevalence line) on ``ax``.

        Parameters are those of :meth:`RocCurveDisplay.plot` (without ``plot_pauc``); the chance
        level is the horizontal line at the prevalence.

        Returns
        -------
        PrecisionRecallDisplay
            ``self``, with ``ax_``, ``figure_``, ``line_``, ``band_`` and ``chance_level_`` set.
        """
        self.ax_, self.figure_ = _axes(ax)
        name = name if name is not None else self.name
        label = _label(name, [("AP", self.average_precision, self.average_precision_ci)],
                       self.missing_reason)
        kw = {"lw": 1.4, "label": label, **(curve_kwargs or {})}
        recall = np.r_[0.0, np.asarray(self.recall, float)]
        precision = np.r_[np.asarray(self.precision, float)[:1], self.precision]
        (self.line_,) = self.ax_.step(recall, precision, where="pre", **kw)
        self.band_ = None
        if plot_band and self.band is not None and np.isfinite(self.band.low).all():
            self.band_ = self.ax_.fill_between(self.band.x, self.band.low, self.band.high,
                                               color=self.line_.get_color(), alpha=0.15, lw=0,
                                               step="pre")
        self.chance_level_ = None
        if plot_chance_level and self.prevalence is not None:
            ckw = {"color": "0.6", "lw": 0.8, "ls": "--",
                   "label": f"chance level (prevalence {self.prevalence:.3f})",
                   **(chance_level_kw or {})}
            self.chance_level_ = self.ax_.axhline(self.prevalence, **ckw)
        self.ax_.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(-0.01, 1.01),
                     ylim=(-0.01, 1.01))
        if despine:
            for side in ("top", "right"):
                self.ax_.spines[side].set_visible(False)
        if kw.get("label") or self.chance_level_ is not None:
            self.ax_.legend(loc="upper right", fontsize=8)
        return self

    @classmethod
    def from_predictions(cls, y_true: Any, y_score: Any, *, patient_id: Any = None,
                         n_boot: int = 1000, random_state: int | None = 0, level: float = 0.95,
                         min_melanomas: int = M.MIN_MELANOMAS, name: str | None = None,
                         ax: Any = None, **plot_kw: Any) -> PrecisionRecallDisplay:
        """The precision-recall curve of labels and scores, drawn.

        Parameters are those of :meth:`RocCurveDisplay.from_predictions`; the CI is the average
        precision's (no CI below ``min_melanomas`` melanomas).

        Returns
        -------
        PrecisionRecallDisplay
        """
        y, s, patient_id = _check(y_true, y_score, patient_id)
        curve = _curves(y, s)
        ap = float(_average_precision(curve.tp, curve.fp)[0])
        ci, why, band = None, None, None
        if patient_id is not None and n_boot:
            why = M.too_few_melanomas("auc", y, min_melanomas=min_melanomas)  # counts melanomas
            if why is None:
                boot = _bootstrap(y, s, patient_id, n_boot=n_boot, random_state=random_state,
                                  level=level, average_precision=ap)
                ci, why = _interval(boot.average_precision)
                band = boot.pr if why is None else None
        display = cls(precision=curve.precision, recall=curve.recall, average_precision=ap,
                      name=name, average_precision_ci=ci, prevalence=float(np.mean(y)),
                      band=band, missing_reason=why)
        return display.plot(ax, **plot_kw)

    @classmethod
    def from_estimator(cls, estimator: Any, X: Any, y: Any = None, *, patient_id: Any = None,
                       name: str | None = None, **kw: Any) -> PrecisionRecallDisplay:
        """The precision-recall curve of a fitted estimator on a lesion table, drawn.

        Parameters are those of :meth:`RocCurveDisplay.from_estimator`.

        Returns
        -------
        PrecisionRecallDisplay
        """
        y, s, patient_id, default = _scores_of(estimator, X, y, patient_id)
        return cls.from_predictions(y, s, patient_id=patient_id,
                                    name=name if name is not None else default, **kw)
