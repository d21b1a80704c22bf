"""ROC and precision-recall display objects (dermctx.display), drawn on Agg axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import average_precision_score, roc_auc_score

from dermctx import DermctxError
from dermctx import metrics as M
from dermctx.display import PrecisionRecallDisplay, RocCurveDisplay


def _axes():
    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _cohort(n_patients: int = 80, seed: int = 0):
    """Patients of 2-9 lesions; a melanoma in every other one; a noisy score."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 10, n_patients)
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    y = np.zeros(len(pid), dtype=int)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    y[starts[::2]] = 1
    s = 1 / (1 + np.exp(-(2.0 * y + rng.normal(size=len(y)) - 2)))
    return y, s, pid


def test_roc_display_holds_the_curve_auc_ci_and_band():
    y, s, pid = _cohort()
    ax = _axes()
    disp = RocCurveDisplay.from_predictions(y, s, patient_id=pid, n_boot=300, random_state=3,
                                            name="CNN alone", ax=ax)
    curve = M.roc_curve(y, s)
    np.testing.assert_array_equal(disp.fpr, curve.fpr)
    np.testing.assert_array_equal(disp.tpr, curve.tpr)
    assert disp.roc_auc == pytest.approx(roc_auc_score(y, s))
    # the CI is patient_bootstrap's, on the same resamples as the band
    boot = M.patient_bootstrap("auc", y, s, pid, n_boot=300, random_state=3)
    assert disp.roc_auc_ci == pytest.approx((boot.low, boot.high))
    assert disp.pauc == pytest.approx(M.partial_auc(y, s, min_tpr=0.8))
    assert disp.pauc_ci is not None and disp.missing_reason is None
    band = disp.band
    assert band is not None and len(band.x) == 101 and band.level == 0.95
    assert (band.low <= band.high + 1e-12).all()
    # the curve runs inside its band (up to the grid's resolution)
    inside = np.interp(band.x, curve.fpr, curve.tpr)
    assert np.mean((inside >= band.low - 1e-9) & (inside <= band.high + 1e-9)) > 0.95
    # scikit-learn's attributes, and the artists
    assert disp.ax_ is ax and disp.figure_ is ax.figure
    np.testing.assert_array_equal(disp.line_.get_xdata(), curve.fpr)
    assert disp.band_ is not None and disp.pauc_ is None and disp.chance_level_ is None
    label = disp.line_.get_label()
    assert label == f"CNN alone: AUC {roc_auc_score(y, s):.3f} [{boot.low:.3f}, {boot.high:.3f}]"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [label]
    assert "CNN alone" in repr(disp) and "band=yes" in repr(disp)
    # drawn again elsewhere, from what the display holds
    other = _axes()
    assert disp.plot(other, name="again", plot_band=False) is disp
    assert disp.ax_ is other and disp.band_ is None and disp.line_.get_label().startswith("again:")


def test_roc_display_shades_the_pauc_region_and_adds_models_on_one_axes():
    y, s, pid = _cohort()
    s2 = np.clip(s + np.random.default_rng(1).normal(scale=0.1, size=len(s)), 0, 1)
    first = RocCurveDisplay.from_predictions(y, s, patient_id=pid, n_boot=100, name="a",
                                             ax=_axes(), plot_pauc=True)
    second = RocCurveDisplay.from_predictions(y, s2, patient_id=pid, n_boot=100, name="b",
                                              ax=first.ax_, plot_chance_level=True)
    assert second.ax_ is first.ax_ and len(first.ax_.get_legend().get_texts()) == 3
    assert first.line_.get_color() != second.line_.get_color()
    # the shaded region lies between sensitivity 0.8 and the curve
    verts = np.vstack([p.vertices for p in first.pauc_.get_paths()])
    assert verts[:, 1].min() == pytest.approx(0.8)
    curve = M.roc_curve(y, s)
    above = curve.tpr >= 0.8
    assert verts[:, 0].min() == pytest.approx(curve.fpr[above].min(), abs=0.02)
    assert "pAUC (TPR > 0.8)" in first.line_.get_label()
    assert "pAUC" not in second.line_.get_label()
    np.testing.assert_array_equal(second.chance_level_.get_xydata(), [[0, 0], [1, 1]])


def test_precision_recall_display_matches_scikit_learn():
    y, s, pid = _cohort()
    disp = PrecisionRecallDisplay.from_predictions(y, s, patient_id=pid, n_boot=200,
                                                   random_state=0, ax=_axes(),
                                                   plot_chance_level=True)
    assert disp.average_precision == pytest.approx(average_precision_score(y, s))
    lo, hi = disp.average_precision_ci
    assert lo < disp.average_precision < hi
    assert np.all(np.diff(disp.recall) >= 0) and disp.recall[-1] == 1.0
    assert disp.prevalence == pytest.approx(y.mean())
    assert disp.chance_level_.get_ydata()[0] == pytest.approx(y.mean())
    assert disp.band is not None and (disp.band.low <= disp.band.high).all()
    # a tie of scores is one point: the curve has a point per distinct score
    assert len(disp.recall) == len(np.unique(s))


def test_without_patients_or_with_too_few_melanomas_no_band_and_no_ci():
    y, s, pid = _cohort()
    plain = RocCurveDisplay.from_predictions(y, s, ax=_axes())  # no patient ids: no resampling
    assert plain.band is None and plain.roc_auc_ci is None and plain.band_ is None
    assert plain.line_.get_label() == f"AUC {roc_auc_score(y, s):.3f}"
    few = np.isin(pid, np.unique(pid)[:10])  # 5 melanomas
    assert y[few].sum() == 5
    disp = RocCurveDisplay.from_predictions(y[few], s[few], patient_id=pid[few], n_boot=50,
                                            name="m", ax=_axes())
    assert disp.band is None and disp.roc_auc_ci is None
    assert disp.missing_reason == "too few melanomas: 5; need >= 10"
    assert disp.line_.get_label().endswith("(no CI: too few melanomas: 5; need >= 10)")
    pr = PrecisionRecallDisplay.from_predictions(y[few], s[few], patient_id=pid[few], n_boot=50,
                                                 ax=_axes())
    assert pr.band is None and pr.average_precision_ci is None and "too few" in pr.missing_reason
    # the minimum is a parameter
    ok = RocCurveDisplay.from_predictions(y[few], s[few], patient_id=pid[few], n_boot=50,
                                          min_melanomas=5, ax=_axes())
    assert ok.band is not None and ok.roc_auc_ci is not None


class ScoreOnly(ClassifierMixin, BaseEstimator):
    """Scores each lesion by its ``cnn_score``; fails if a label column reaches it."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        assert "target" not in X.columns and "diagnosis" not in X.columns
        p = X["cnn_score"].to_numpy(float)
        return np.c_[1 - p, p]


def test_from_estimator_reads_a_lesion_table():
    y, s, pid = _cohort()
    table = pd.DataFrame({"image_id": [f"I{i}" for i in range(len(y))], "patient_id": pid,
                          "target": y, "diagnosis": np.where(y == 1, "melanoma", "nevus"),
                          "cnn_score": s})
    model = ScoreOnly().fit(table, y)
    roc = RocCurveDisplay.from_estimator(model, table, n_boot=50, ax=_axes())
    assert roc.name == "ScoreOnly" and roc.roc_auc == pytest.approx(roc_auc_score(y, s))
    assert roc.band is not None  # patient ids come from the table
    pr = PrecisionRecallDisplay.from_estimator(model, table, n_boot=0, name="cnn", ax=_axes())
    assert pr.name == "cnn" and pr.band is None
    assert pr.average_precision == pytest.approx(average_precision_score(y, s))
    with pytest.raises(DermctxError, match="no 'target' column"):
        RocCurveDisplay.from_estimator(model, table.drop(columns="target"), ax=_axes())
    with pytest.raises(DermctxError, match="DataFrame"):
        RocCurveDisplay.from_estimator(model, s, ax=_axes())


def test_bad_input_is_refused():
    y, s, pid = _cohort()
    with pytest.raises(DermctxError, match="both classes"):
        RocCurveDisplay.from_predictions(np.zeros(5), np.arange(5.0), ax=_axes())
    with pytest.raises(DermctxError, match="patient_id has 3 values"):
        PrecisionRecallDisplay.from_predictions(y, s, patient_id=pid[:3], ax=_axes())
    with pytest.raises(DermctxError, match="NaN"):
        RocCurveDisplay.from_predictions(y, np.r_[np.nan, s[1:]], ax=_axes())


def test_a_new_figure_comes_from_pyplot_when_no_axes_is_given():
    import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg

    y, s, _ = _cohort()
    disp = RocCurveDisplay.from_predictions(y, s, n_boot=0)
    try:
        assert disp.figure_.number in plt.get_fignums() and disp.ax_ in disp.figure_.axes
    finally:
        plt.close(disp.figure_)
