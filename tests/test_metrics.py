"""dermctx.metrics against hand-worked values, the ISIC 2024 reference code, and its bootstraps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from dermctx import DermctxError
from dermctx import metrics as M


def isic2024_pauc(y, s, min_tpr=0.80):
    """The ISIC 2024 challenge's scoring code (kaggle isic-2024 metric), verbatim in substance."""
    v_gt = abs(np.asarray(y) - 1)
    v_pred = -1.0 * np.asarray(s)
    max_fpr = abs(1 - min_tpr)
    fpr, tpr, _ = sk_roc_curve(v_gt, v_pred, sample_weight=None)
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr = np.append(fpr[:stop], max_fpr)
    return sk_auc(fpr, tpr)


# --- hand-worked values -------------------------------------------------------------------------


def test_auc_hand_worked_with_and_without_ties():
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(3 / 4)
    # the tie between the melanoma at 0.5 and the benign lesion at 0.5 counts one half
    assert M.auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(3.5 / 4)
    assert M.auc([1, 0], [0.3, 0.3]) == pytest.approx(0.5)


def test_partial_auc_hand_worked_with_a_tie_at_the_cut():
    # melanomas (y=1) and benign lesions; flipped, the ROC runs over benign lesions in rising s:
    # s=0.1 benign -> (fpr 0, tpr .25); s=0.2 melanoma tied with a benign -> diagonal to (.2, .5)
    y = [1, 1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.2, 0.3, 0.95]
    assert M.partial_auc(y, s) == pytest.approx(0.2 * (0.25 + 0.5) / 2)  # 0.075
    # cut at fpr 0.1 in the middle of the diagonal: tpr interpolated to 0.375
    assert M.partial_auc(y, s, min_tpr=0.9) == pytest.approx(0.1 * (0.25 + 0.375) / 2)
    assert M.partial_auc(y, s) == pytest.approx(isic2024_pauc(y, s))


def test_partial_auc_range():
    y = np.r_[np.ones(5), np.zeros(20)]
    assert M.partial_auc(y, y) == pytest.approx(0.2)  # perfect
    assert M.partial_auc(y, -y) == pytest.approx(0.0)  # reversed


def test_within_patient_auc_hand_worked():
    y = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    s = [0.9, 0.5, 0.95, 0.3, 0.3, 0.1, 0.2, 0.5, 0.1, 0.2, 0.6]
    p = ["A", "A", "A", "B", "B", "C", "C", "D", "D", "D", "D"]
    # A: 1/2; B: a tie, 1/2; C: no melanoma, left out; D: 2/3
    value, n = M.within_patient_auc(y, s, p)
    assert n == 3
    assert value == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)


def test_topk_rate_hand_worked_with_fractional_credit_for_ties():
    y = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    s = [0.9, 0.5, 0.95, 0.5, 0.5, 0.1, 0.3, 0.3, 0.4, 0.4, 0.4, 0.9]
    p = ["A"] * 3 + ["B"] * 3 + ["C"] * 2 + ["D"] * 4
    # k=1: A misses (0.95 is benign); B ties 1 melanoma + 1 benign for the top place: 1/2;
    #      D's top lesion is benign: 0. C has no melanoma.
    assert M.topk_rate(y, s, p, k=1) == pytest.approx((0 + 0.5 + 0) / 3)
    # k=2: A hits; B's top two are the tied pair: 1; D: one benign above, then 1 place among
    #      3 tied lesions holding 1 melanoma: 1 - C(2,1)/C(3,1) = 1/3
    assert M.topk_rate(y, s, p, k=2) == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert M.topk_rate(y, s, p, k=10) == 1.0  # fewer lesions than k: always a hit


def test_operating_points_hand_worked():
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert M.sensitivity_at_specificity(y, s, 1.0) == (0.75, 1.0, 0.7)
    assert M.sensitivity_at_specificity(y, s, 0.75) == (1.0, 0.75, 0.4)
    assert M.specificity_at_sensitivity(y, s, 1.0) == (1.0, 0.75, 0.4)
    assert M.specificity_at_sensitivity(y, s, 0.5) == (0.5, 1.0, 0.8)
    curve = M.roc_curve(y, s)
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1 and np.isinf(curve.thresholds[0])
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(M.auc(y, s))
    assert list(curve.to_frame().columns) == [
        "threshold",
        "fpr",
        "tpr",
        "specificity",
        "sensitivity",
    ]


def test_roc_curve_has_one_point_per_distinct_score():
    curve = M.roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(curve.tpr, [0, 0.5, 1, 1])


def test_per_class_metrics_hand_worked():
    t = ["a", "a", "b", "c", "c", "c"]
    p = ["a", "b", "b", "c", "c", "a"]
    table = M.per_class_metrics(t, p)
    assert list(table.index) == ["a", "b", "c"]
    np.testing.assert_allclose(table["precision"], [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(table["sensitivity"], [1 / 2, 1, 2 / 3])
    np.testing.assert_allclose(table["specificity"], [3 / 4, 4 / 5, 1])
    np.testing.assert_allclose(table["accuracy"], [4 / 6, 5 / 6, 5 / 6])
    assert table["n"].tolist() == [2, 1, 3]
    # a class never predicted and never true gets NaN where a denominator is zero
    assert np.isnan(M.per_class_metrics(t, p, labels=["a", "z"]).loc["z", "precision"])


def test_brier_and_ece_hand_worked():
    assert M.brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)
    y, p = [0, 0, 1, 1], [0.1, 0.2, 0.7, 1.0]
    # two bins: [0, .5) mean .15 observed 0; [.5, 1] mean .85 observed 1
    assert M.expected_calibration_error(y, p, n_bins=2) == pytest.approx((2 * 0.15 + 2 * 0.15) / 4)
    curve = M.reliability_curve(y, p, n_bins=2)
    assert curve["n"].tolist() == [2, 2]
    np.testing.assert_allclose(curve["mean_predicted"], [0.15, 0.85])
    np.testing.assert_allclose(curve["observed_rate"], [0.0, 1.0])
    q = M.reliability_curve(
        np.r_[np.zeros(90), np.ones(10)], np.linspace(0, 1, 100), n_bins=4, strategy="quantile"
    )
    assert q["n"].tolist() == [25, 25, 25, 25]


# --- agreement with references ------------------------------------------------------------------

scored = st.integers(min_value=2, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < len(v)),
        st.lists(st.integers(0, 4), min_size=n, max_size=n),  # few values: many ties
    )
)


@settings(max_examples=60, deadline=None)
@given(scored)
def test_auc_and_partial_auc_match_references_on_tied_scores(data):
    y, s = np.array(data[0]), np.array(data[1], dtype=float)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s))
    for min_tpr in (0.8, 0.5, 0.1):
        assert M.partial_auc(y, s, min_tpr) == pytest.approx(
            isic2024_pauc(y, s, min_tpr), abs=1e-12
        )
    assert M.partial_auc(y, s, 0.0) == pytest.approx(M.auc(y, s))  # the whole curve


# --- errors -------------------------------------------------------------------------------------


def test_bad_input_raises_naming_what_is_wrong():
    with pytest.raises(DermctxError, match="all 3 lesions are non-melanoma"):
        M.auc([0, 0, 0], [1, 2, 3])
    with pytest.raises(DermctxError, match=r"values other than 0/1 at rows \[1\]"):
        M.auc([0, 2, 1], [1, 2, 3])
    with pytest.raises(DermctxError, match=r"NaN or infinite at rows \[2\]"):
        M.auc([0, 1, 1], [1, 2, np.nan])
    with pytest.raises(DermctxError, match="shape"):
        M.auc([0, 1], [1, 2, 3])
    with pytest.raises(DermctxError, match="no patient has a melanoma"):
        M.topk_rate([0, 0], [1, 2], ["a", "b"])
    with pytest.raises(DermctxError, match="outside"):
        M.brier_score([0, 1], [0.5, 2.0])
    with pytest.raises(DermctxError, match=r"patient_id is missing at rows \[1\]"):
        M.within_patient_auc([0, 1], [1, 2], ["a", None])
    with pytest.raises(DermctxError, match="no lesions"):
        M.patient_bootstrap(M.topk_rate, [], [], [])
    with pytest.raises(DermctxError, match="unknown metric"):
        M.patient_bootstrap("accuracy", [0, 1], [1, 2], ["a", "b"])


# --- bootstraps ---------------------------------------------------------------------------------


def _cohort(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, n_patients)
    pid = np.repeat([f"P{i}" for i in range(n_patients)], sizes)
    frailty = np.repeat(rng.normal(size=n_patients), sizes)
    y = (rng.random(len(pid)) < 0.15).astype(int)
    s = 1 / (1 + np.exp(-(1.5 * y + frailty + rng.normal(size=len(pid)) - 2)))
    return y, s, pid


@pytest.mark.parametrize(
    ("metric", "kw"),
    [
        (M.auc, {}),
        (M.partial_auc, {"min_tpr": 0.8}),
        (M.within_patient_auc, {}),
        (M.topk_rate, {"k": 2}),
        (M.brier_score, {}),
    ],
)
@pytest.mark.parametrize("decimals", [None, 1])
def test_vectorised_bootstrap_equals_the_generic_loop(metric, kw, decimals):
    y, s, pid = _cohort()
    if decimals is not None:
        s = np.round(s, decimals)  # many ties, within and across patients and classes
    fast = M.patient_bootstrap(metric, y, s, pid, n_boot=200, random_state=3, **kw)

    if metric in (M.within_patient_auc, M.topk_rate):

        def wrapped(y, s, patient_id, **kw):
            return metric(y, s, patient_id, **kw)
    else:

        def wrapped(y, s, **kw):
            return metric(y, s, **kw)

    slow = M.patient_bootstrap(wrapped, y, s, pid, n_boot=200, random_state=3, **kw)
    assert fast.estimate == pytest.approx(slow.estimate)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=1e-12)
    assert fast.n_valid == slow.n_valid


@pytest.mark.parametrize("metric", [M.auc, M.partial_auc])
def test_large_input_fallback_gives_the_same_ci(metric, monkeypatch):
    y, s, pid = _cohort()
    s = np.round(s, 1)
    blocks = M.patient_bootstrap(metric, y, s, pid, n_boot=100, random_state=2)
    monkeypatch.setattr(M, "_BLOCK_LIMIT", 0)  # weighted ROCs over all lesions instead
    lesions = M.patient_bootstrap(metric, y, s, pid, n_boot=100, random_state=2)
    assert (blocks.low, blocks.high) == pytest.approx((lesions.low, lesions.high), abs=1e-12)


def test_bootstrap_is_deterministic_for_a_seed_and_brackets_the_estimate():
    y, s, pid = _cohort()
    a = M.patient_bootstrap("auc", y, s, pid, n_boot=300, random_state=7)
    b = M.patient_bootstrap(M.auc, y, s, pid, n_boot=300, random_state=7)
    c = M.patient_bootstrap(M.auc, y, s, pid, n_boot=300, random_state=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < a.estimate < a.high
    assert a.estimate == pytest.approx(M.auc(y, s))
    assert a.n_patients == 60 and a.n_boot == 300
    assert "95% CI" in repr(a)
    narrow = M.patient_bootstrap(M.auc, y, s, pid, n_boot=300, random_state=7, level=0.5)
    assert a.low < narrow.low < narrow.high < a.high


def test_paired_bootstrap_difference_and_share():
    y, s, pid = _cohort()
    rng = np.random.default_rng(1)
    worse = s + rng.normal(scale=0.3, size=len(s))
    res = M.paired_bootstrap(M.auc, y, s, worse, pid, n_boot=300, random_state=0)
    assert res.estimate == pytest.approx(M.auc(y, s) - M.auc(y, worse))
    assert res.low < res.estimate < res.high
    assert res.p_le_0 < 0.05
    same = M.paired_bootstrap(M.auc, y, s, s, pid, n_boot=50, random_state=0)
    assert same.estimate == 0 and same.low == 0 and same.high == 0 and same.p_le_0 == 1.0
    again = M.paired_bootstrap(M.auc, y, s, worse, pid, n_boot=300, random_state=0)
    assert (again.low, again.high, again.p_le_0) == (res.low, res.high, res.p_le_0)


def test_bootstrap_skips_undefined_resamples():
    # one melanoma patient among 10: many resamples have no melanoma at all
    y = np.r_[1, 0, np.zeros(18)]
    s = np.arange(20.0)
    pid = np.repeat(np.arange(10), 2)
    res = M.patient_bootstrap(M.auc, y, s, pid, n_boot=200, random_state=0)
    assert 0 < res.n_valid < 200


def test_subgroup_table_keeps_missing_values_as_unknown():
    y, s, pid = _cohort(n_patients=80)
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "patient_id": pid,
            "target": y,
            "score": s,
            "sex": rng.choice(["male", "female", None], len(y)),
            "age": rng.choice([20.0, 50.0, 80.0, np.nan], len(y)),
            "source": "isic2020",
        }
    )
    out = M.subgroup_table(
        table, "score", by=["sex", "age_band", "source"], metrics=["auc", "brier_score"], n_boot=50
    )
    assert out.iloc[0][["by", "group", "n_images"]].tolist() == ["all", "all", len(y)]
    for col in ("sex", "age_band"):
        part = out[out["by"] == col]
        assert part["n_images"].sum() == len(y)  # nothing dropped
        assert part["group"].iloc[-1] == "unknown"
    assert out.loc[out["by"] == "age_band", "group"].tolist() == ["<30", "45-59", "75+", "unknown"]
    assert {"auc", "auc_low", "auc_high", "brier_score", "n_patients", "n_melanomas"} <= set(
        out.columns
    )
    male = (table["sex"] == "male").to_numpy()
    row = out[(out["by"] == "sex") & (out["group"] == "male")].iloc[0]
    assert row["n_patients"] == table.loc[male, "patient_id"].nunique()
    assert row["auc"] == pytest.approx(M.auc(y[male], s[male]))


def test_subgroup_table_gives_nan_where_a_metric_is_undefined():
    table = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "target": [0, 0, 1, 0],
            "score": [0.1, 0.2, 0.9, 0.3],
            "site": ["torso", "torso", "head/neck", "head/neck"],
        }
    )
    out = M.subgroup_table(table, "score", by=["site"], n_boot=20, include_all=False)
    torso = out[out["group"] == "torso"].iloc[0]
    assert torso["n_melanomas"] == 0 and np.isnan(torso["auc"])


def test_real_oof_scores_bootstrap_fast_and_sane(isic_dir):
    import time

    oof = pd.read_csv(isic_dir / "oof_effnet_b1_dev.csv")
    y, s, pid = oof["target"].to_numpy(), oof["pred"].to_numpy(), oof["patient_id"].to_numpy()
    start = time.perf_counter()
    res = M.patient_bootstrap(M.auc, y, s, pid, n_boot=500, random_state=0)
    assert time.perf_counter() - start < 10
    assert res.estimate == pytest.approx(roc_auc_score(y, s))
    assert 0.85 < res.low < res.estimate < res.high < 0.95
    assert res.n_patients == 1440


def test_quantile_bins_with_equal_probabilities():
    # every lesion at p = 0.3 (a constant model): one bin, ECE = |0.5 - 0.3|
    y, p = np.array([0, 1, 0, 1]), np.full(4, 0.3)
    curve = M.reliability_curve(y, p, strategy="quantile")
    assert list(curve["n"]) == [4]
    assert M.expected_calibration_error(y, p, strategy="quantile") == pytest.approx(0.2)
    assert M.expected_calibration_error(y, p, strategy="uniform") == pytest.approx(0.2)


def test_topk_sensitivity_counts_the_share_of_each_patients_melanomas():
    from dermctx.metrics import patient_bootstrap, topk_sensitivity

    y = [1, 0, 0, 1, 0, 1, 0]
    s = [0.9, 0.8, 0.1, 0.05, 0.3, 0.2, 0.5]
    p = ["a"] * 5 + ["b"] * 2
    assert topk_sensitivity(y, s, p, k=2) == pytest.approx((1 / 2 + 1) / 2)  # b has <= k lesions
    assert topk_sensitivity(y, s, p, k=1) == pytest.approx((1 / 2 + 0) / 2)
    # a tie at the k-th place: one melanoma and one benign lesion share the last slot
    assert topk_sensitivity([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], ["a"] * 4, k=2) == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(DermctxError, match="no patient has a melanoma"):
        topk_sensitivity([0, 0], [0.1, 0.2], ["a", "b"], k=1)
    # the bootstrap's vectorised path agrees with the function on every resample's estimate
    rng = np.random.default_rng(0)
    yy, ss, pp = rng.random(300) < 0.2, rng.random(300), rng.integers(0, 20, 300).astype(str)
    res = patient_bootstrap("top15_sensitivity", yy.astype(int), ss, pp, n_boot=200, random_state=0)
    assert res.estimate == pytest.approx(topk_sensitivity(yy.astype(int), ss, pp))
    assert res.low <= res.estimate <= res.high


# --- the metric registry and the deprecated names --------------------------------------------


def test_the_registry_has_one_key_and_one_label_per_metric():
    assert list(M.METRICS)[:7] == ["auc", "pauc80", "within_patient_auc", "top1", "top3",
                                   "top15_sensitivity", "fold_auc"]
    labels = [m.label for m in M.METRICS.values()]
    assert len(set(labels)) == len(labels)  # no display name shared by two keys
    assert all(key == m.key for key, m in M.METRICS.items())
    assert M.METRICS["pauc80"].label == "pAUC (TPR > 0.8)"
    assert not M.METRICS["brier_score"].higher_is_better and M.METRICS["auc"].higher_is_better
    y, s, pid = _cohort()
    assert M.METRICS["pauc80"](y, s) == M.partial_auc(y, s, min_tpr=0.8)
    assert M.METRICS["top3"](y, s, pid) == M.topk_rate(y, s, pid, k=3)
    # a key picks the metric with its settings; the result carries the key
    res = M.patient_bootstrap("pauc80", y, s, pid, n_boot=50)
    assert res.metric == "pauc80" and res.estimate == pytest.approx(M.partial_auc(y, s))
    with pytest.raises(DermctxError, match=r"'pauc80' fixes min_tpr=0\.8"):
        M.patient_bootstrap("pauc80", y, s, pid, n_boot=50, min_tpr=0.9)
    with pytest.raises(DermctxError, match=r"computed by dermctx\.benchmark"):
        M.patient_bootstrap("fold_auc", y, s, pid, n_boot=50)
    with pytest.raises(DermctxError, match="unknown metric 'nope'"):
        M.patient_bootstrap("nope", y, s, pid, n_boot=50)


def test_seed_is_a_deprecated_alias_of_random_state():
    y, s, pid = _cohort()
    new = M.patient_bootstrap("auc", y, s, pid, n_boot=100, random_state=3)
    with pytest.warns(FutureWarning, match="seed= is deprecated, use random_state=") as record:
        old = M.patient_bootstrap("auc", y, s, pid, n_boot=100, seed=3)
    assert record[0].filename == __file__  # the warning points at the caller
    assert (old.low, old.high) == (new.low, new.high)
    with pytest.warns(FutureWarning, match="seed= is deprecated"):
        d = M.paired_bootstrap("auc", y, s, s[::-1], pid, n_boot=100, seed=3)
    assert d == M.paired_bootstrap("auc", y, s, s[::-1], pid, n_boot=100, random_state=3)
    table = pd.DataFrame({"patient_id": pid, "target": y, "score": s, "sex": "male"})
    with pytest.warns(FutureWarning, match="subgroup_table: seed= is deprecated"):
        a = M.subgroup_table(table, "score", by=["sex"], n_boot=20, seed=4)
    pd.testing.assert_frame_equal(a, M.subgroup_table(table, "score", by=["sex"], n_boot=20,
                                                      random_state=4))
    with pytest.raises(TypeError, match="both seed= and random_state="):
        M.patient_bootstrap("auc", y, s, pid, seed=1, random_state=1)


def test_function_names_as_metric_names_are_deprecated():
    y, s, pid = _cohort()
    with pytest.warns(FutureWarning, match="'partial_auc' is deprecated, use the key 'pauc80'"):
        old = M.patient_bootstrap("partial_auc", y, s, pid, n_boot=50)
    assert old.estimate == M.patient_bootstrap("pauc80", y, s, pid, n_boot=50).estimate
    with pytest.warns(FutureWarning, match="'topk_rate' is deprecated"):
        assert M.METRICS["topk_rate"] is M.topk_rate  # the old registry's value: the function
    table = pd.DataFrame({"patient_id": pid, "target": y, "score": s})
    with pytest.warns(FutureWarning, match="'topk_sensitivity' is deprecated") as record:
        M.subgroup_table(table, "score", by=[], metrics=["topk_sensitivity"], n_boot=20)
    assert len(record) == 1 and record[0].filename == __file__


# --- figures too thin to show -----------------------------------------------------------------


def test_too_few_melanomas_counts_what_each_metric_rests_on():
    # patient a: a melanoma and a nevus; b: a lone melanoma; c: two nevi
    y = [1, 0, 1, 0, 0]
    pid = ["a", "a", "b", "c", "c"]
    assert M.MIN_MELANOMAS == 10
    assert M.too_few_melanomas("auc", y, pid) == "too few melanomas: 2; need >= 10"
    assert M.too_few_melanomas("pauc80", y) == "too few melanomas: 2; need >= 10"
    assert M.too_few_melanomas("top1", y, pid) == "too few patients with a melanoma: 2; need >= 10"
    assert M.too_few_melanomas(M.topk_sensitivity, y, pid, min_melanomas=2) is None
    assert M.too_few_melanomas("within_patient_auc", y, pid, min_melanomas=2) == (
        "too few patients with a melanoma and another lesion: 1; need >= 2")
    assert M.too_few_melanomas("fold_auc", y, min_melanomas=2) is None
    # calibration and your own functions have no minimum
    assert M.too_few_melanomas("brier_score", y) is None
    assert M.too_few_melanomas(lambda y, s: 0.0, y) is None
    with pytest.raises(DermctxError, match="pass patient_id"):
        M.too_few_melanomas("top1", y)
    with pytest.raises(DermctxError, match="unknown metric"):
        M.too_few_melanomas("nope", y)


def test_degenerate_ci():
    common = {"metric": "top1", "level": 0.95, "n_boot": 100, "n_patients": 12}
    assert M.degenerate_ci(M.BootstrapResult(estimate=1.0, low=1.0, high=1.0, n_valid=100,
                                             **common)) == (
        "bootstrap degenerate: 95% of resamples give 1.000")
    assert M.degenerate_ci(M.BootstrapResult(estimate=0.8, low=0.6, high=0.9, n_valid=40,
                                             **common)) == (
        "bootstrap degenerate: defined in 40 of 100 resamples")
    assert M.degenerate_ci(M.BootstrapResult(estimate=0.8, low=0.6, high=0.9, n_valid=60,
                                             **common)) is None
    # two models that agree on every resample do not differ: a zero-width difference stays
    paired = M.PairedBootstrapResult(estimate=0.0, low=0.0, high=0.0, p_le_0=1.0, estimate_1=1.0,
                                     estimate_2=1.0, n_valid=100, **common)
    assert M.degenerate_ci(paired) is None


def test_patient_resamples_are_the_resamples_of_patient_bootstrap():
    y, s, pid = _cohort()
    values = []
    for w in M.patient_resamples(pid, n_boot=120, random_state=5, max_cells=5_000):
        assert w.shape[1] == len(y) and w.shape[0] <= max(1, 5_000 // len(y))
        for row in w:  # each lesion as often as its patient was drawn
            idx = np.repeat(np.arange(len(y)), row.astype(int))
            values.append(M.auc(y[idx], s[idx]) if 0 < y[idx].sum() < len(idx) else np.nan)
    assert len(values) == 120
    boot = M.patient_bootstrap("auc", y, s, pid, n_boot=120, random_state=5)
    low, high = np.quantile(np.array(values)[~np.isnan(values)], [0.025, 0.975])
    assert (low, high) == pytest.approx((boot.low, boot.high))


def test_subgroup_table_shows_too_few_melanomas_as_missing_with_the_reason():
    # the case: a subgroup with 2 melanomas printed within-patient AUC 0.000 [0.000, 0.000]
    y, s, pid = _cohort(n_patients=200)
    site = np.where(np.isin(pid, np.unique(pid)[:150]), "torso", "head/neck")
    mel_head = np.flatnonzero((site == "head/neck") & (y == 1))
    y = y.copy()
    y[mel_head[2:]] = 0  # two melanomas left at head/neck
    table = pd.DataFrame({"patient_id": pid, "target": y, "score": s, "site": site})
    out = M.subgroup_table(table, "score", by=["site"], metrics=["auc", "within_patient_auc"],
                           n_boot=50)
    head = out[out["group"] == "head/neck"].iloc[0]
    assert head["n_melanomas"] == 2
    for m in ("auc", "within_patient_auc"):
        assert np.isnan(head[m]) and np.isnan(head[f"{m}_low"]) and np.isnan(head[f"{m}_high"])
    assert head["auc_missing_reason"] == "too few melanomas: 2; need >= 10"
    assert head["within_patient_auc_missing_reason"].startswith(
        "too few patients with a melanoma and another lesion:")
    whole = out[out["group"] == "all"].iloc[0]
    assert whole["auc"] == pytest.approx(M.auc(y, s)) and whole["auc_missing_reason"] == ""
    # the minimum is a parameter: with 2 allowed, the figure is back
    low = M.subgroup_table(table, "score", by=["site"], metrics=["auc"], n_boot=50,
                           include_all=False, min_melanomas=2)
    assert np.isfinite(low.loc[low["group"] == "head/neck", "auc"].iloc[0])


def test_subgroup_table_differences_against_a_reference_column():
    y, s, pid = _cohort(n_patients=120)
    rng = np.random.default_rng(3)
    ref = np.clip(s + rng.normal(scale=0.2, size=len(s)), 0, 1)
    sex = np.where(np.isin(pid, np.unique(pid)[::2]), "male", "female")
    table = pd.DataFrame({"patient_id": pid, "target": y, "score": s, "ref": ref, "sex": sex})
    out = M.subgroup_table(table, "score", by=["sex"], metrics=["auc", "top1"], n_boot=100,
                           random_state=2, reference_col="ref")
    assert {"auc_difference", "auc_difference_low", "auc_difference_high",
            "auc_difference_missing_reason", "top1_difference"} <= set(out.columns)
    for row in out.to_dict(orient="records"):
        mask = np.ones(len(y), bool) if row["group"] == "all" else sex == row["group"]
        d = M.paired_bootstrap("auc", y[mask], s[mask], ref[mask], pid[mask], n_boot=100,
                               random_state=2)
        assert row["auc_difference"] == pytest.approx(d.estimate)
        assert (row["auc_difference_low"], row["auc_difference_high"]) == pytest.approx(
            (d.low, d.high))
    assert "auc_difference" not in M.subgroup_table(table, "score", by=["sex"], n_boot=20).columns
    with pytest.raises(DermctxError, match="no column 'nope'"):
        M.subgroup_table(table, "score", by=["sex"], n_boot=20, reference_col="nope")


def test_too_few_melanomas_docstring_examples():
    import doctest

    globs = {"too_few_melanomas": M.too_few_melanomas}
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(M.too_few_melanomas, globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries == 2
