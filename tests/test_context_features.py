"""Patient context for any per-lesion measurement: features, outlier scores, the within-patient
gate, per-source contributions and worded explanations of ContextRanker."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dermctx.errors import DermctxWarning, LeakageError, ModelError, TableError
from dermctx.features import _loo_median, patient_context_features, patient_outlier_features
from dermctx.metrics import within_patient_auc
from dermctx.models.explanation import ISIC2024_LABELS
from dermctx.models.folder import write_manifest
from dermctx.models.gbm import ROUND_STEP, MetadataGBM
from dermctx.models.ranker import (
    CORRECTION_GBM,
    GATE_LEVEL,
    GATE_WEIGHTS,
    WHOLE_MODEL_GBM,
    ContextRanker,
)
from dermctx.synthetic import make_tbp_patients

FAST = {"gbm": MetadataGBM(n_estimators=60, min_child_samples=20), "n_folds": 3}
COLS = ["size_mm", "colour", "border", "hue"]


def _measured(n_patients: int = 150, seed: int = 0) -> pd.DataFrame:
    """Patients with their own phenotype (a shift of all their lesions); a melanoma is larger than
    its own patient's other lesions, but not than the population's (the shift hides it)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(6, 25, n_patients)
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    n = len(pid)
    shift = np.repeat(rng.normal(0, 1.5, (n_patients, len(COLS))), sizes, axis=0)
    x = shift + rng.normal(0, 0.5, (n, len(COLS)))
    y = (rng.uniform(size=n) < 0.06).astype(int)
    x[y == 1, 0] += 1.6  # the melanoma is 3.2 within-patient SD larger than its siblings
    frame = pd.DataFrame(x, columns=COLS)
    frame.loc[rng.uniform(size=n) < 0.03, "hue"] = np.nan
    return pd.concat([pd.DataFrame({
        "image_id": [f"L{i:05d}" for i in range(n)],
        "patient_id": pid,
        "age": rng.uniform(20, 85, n).round(),
        "sex": rng.choice(["male", "female"], n),
        "site": rng.choice(["torso", "lower extremity", "upper extremity"], n),
        "target": y,
    }), frame], axis=1)


@pytest.fixture(scope="module")
def measured() -> pd.DataFrame:
    return _measured()


@pytest.fixture(scope="module")
def ranker(measured) -> ContextRanker:
    return ContextRanker(score_col=None, context_features=COLS, **FAST).fit(measured, measured["target"])


def test_loo_median_equals_the_median_of_the_other_lesions():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(1, 12))
        x = rng.normal(size=n).round(1)
        x[rng.uniform(size=n) < 0.2] = np.nan
        codes = rng.integers(0, 3, n)
        got = _loo_median(x, codes)
        for i in range(n):
            others = [x[j] for j in range(n) if j != i and codes[j] == codes[i] and not np.isnan(x[j])]
            want = np.median(others) if others and not np.isnan(x[i]) else np.nan
            assert (np.isnan(want) and np.isnan(got[i])) or got[i] == pytest.approx(want)


def test_median_stats_on_request():
    t = pd.DataFrame({"patient_id": ["a"] * 4 + ["b"], "v": [1.0, 2.0, 10.0, 3.0, 5.0]})
    f = patient_context_features(t, ["v"], by_site=False, stats=("med_diff", "med_ratio"))
    assert list(f.columns) == ["patient__count", "v__med_diff", "v__med_ratio"]
    assert f["v__med_diff"].tolist() == [1.0 - 3.0, 2.0 - 3.0, 10.0 - 2.0, 3.0 - 2.0, 0.0]
    assert f["v__med_ratio"].iloc[2] == pytest.approx(5.0) and f["v__med_ratio"].iloc[4] == 1.0


def test_outlier_features_find_the_odd_lesion_whatever_the_row_order():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.2, (12, 3)) + np.array([5.0, -3.0, 1.0])  # one patient's phenotype
    x[7] += np.array([1.5, 0.0, -1.5])
    x[3, 1] = np.nan  # a missing value is filled from the patient's median, not the population
    t = pd.DataFrame(x, columns=["a", "b", "c"]).assign(patient_id="p", image_id=[f"i{k}" for k in range(12)])
    f = patient_outlier_features(t, {"shape": ["a", "b", "c"]})
    assert list(f.columns) == ["shape__centroid_dist", "shape__centroid_dist_rank", "shape__knn_dist", "shape__lof"]
    assert f["shape__centroid_dist"].idxmax() == 7 and f["shape__lof"].idxmax() == 7
    assert f["shape__centroid_dist_rank"].iloc[7] == 1.0
    assert f["shape__centroid_dist"].iloc[3] < f["shape__centroid_dist"].iloc[7] / 3
    perm = rng.permutation(12)
    g = patient_outlier_features(t.iloc[perm], {"shape": ["a", "b", "c"]}, exact_max=5)
    h = patient_outlier_features(t, {"shape": ["a", "b", "c"]}, exact_max=5)
    pd.testing.assert_frame_equal(g.sort_index(), h)  # the reference sample is drawn by id


def test_context_features_beat_raw_values_and_outlier_group_is_used(ranker, measured):
    test = _measured(100, seed=5)
    p = ranker.predict_proba(test)[:, 1]
    wp = within_patient_auc(test["target"], p, test["patient_id"]).value
    raw = ContextRanker(score_col=None, extra_features=COLS, **FAST).fit(measured, measured["target"])
    wp_raw = within_patient_auc(test["target"], raw.predict_proba(test)[:, 1], test["patient_id"]).value
    assert wp > 0.85 and wp > wp_raw + 0.05
    names = set(ranker.gbm_.feature_names_in_)
    assert {"size_mm__z", "size_mm__med_diff", "size_mm__site_z", "context__lof"} <= names
    assert ranker.outlier_groups_ == {"context": sorted(COLS)}


def test_auto_picks_measurements_not_identity_metadata_or_labels(measured):
    t = measured.assign(lesion_id=np.arange(len(measured)), mel_thick_mm=np.nan, constant=1.0,
                        note="x", fold=0)
    r = ContextRanker(score_col=None, context_features="auto", outlier_groups={}, **FAST).fit(t, t["target"])
    assert r.context_features_ == sorted(COLS)
    assert ContextRanker().set_params(context_features="auto").get_params()["context_features"] == "auto"
    leaky = t.assign(size_copy=np.where(t["target"] == 1, t["size_mm"], np.nan))  # given on melanomas only
    with pytest.raises(LeakageError, match="size_copy"):
        ContextRanker(score_col=None, context_features="auto", **FAST).fit(leaky, leaky["target"])
    # a label column with its blanks filled in: 0 on every benign lesion and on some melanomas (unknown),
    # a thickness, a sign or a copy of the target on the others
    rng = np.random.default_rng(0)
    known = (t["target"] == 1) & (rng.uniform(size=len(t)) < 0.7)
    for filled in (np.where(t["target"] == 1, rng.uniform(0.2, 3.0, len(t)), 0.0),
                   np.where(t["target"] == 1, rng.choice([-1.0, 1.0], len(t)), 0.0),
                   np.where(known, rng.uniform(0.2, 3.0, len(t)), 0.0),
                   np.where(known, 1.0, 0.0)):
        for features in ("auto", [*COLS, "thickness"]):
            with pytest.raises(LeakageError, match=r"'thickness' differs from its most common value \(0.0\) "
                                                   r"on \d+ rows, all with label 1"):
                ContextRanker(score_col=None, context_features=features, **FAST).fit(t.assign(thickness=filled),
                                                                                   t["target"])
    # ... but not a sparse column whose few non-zero rows happen to be all benign (as likely as not
    # at this prevalence: a ReLU embedding dimension), nor a benign-only measurement on a few rows
    benign = np.flatnonzero(t["target"].to_numpy() == 0)
    sparse = np.zeros(len(t))
    sparse[rng.choice(benign, 15, replace=False)] = rng.uniform(0.1, 2.0, 15)
    share = (t["target"] == 0).mean()
    assert share ** 15 > 1e-6  # chance, not a leak
    r = ContextRanker(score_col=None, context_features=[*COLS, "sparse"], **FAST).fit(t.assign(sparse=sparse),
                                                                                     t["target"])
    assert "sparse" in r.context_features_


def test_contributions_sum_to_the_score_and_explanation_names_the_planted_deviation(ranker):
    test = _measured(60, seed=9)
    contrib = ranker.feature_contributions(test)
    assert {"baseline", "size_mm", "colour", "context", "patient"} <= set(contrib.columns)
    np.testing.assert_allclose(contrib.sum(axis=1), ranker.decision_function(test), atol=1e-9)
    # on average the planted feature drives the melanomas' scores up, the others do not
    mel = test["target"].to_numpy() == 1
    assert contrib.loc[mel, "size_mm"].mean() > 0.3 > abs(contrib.loc[mel, "colour"].mean())
    pid = test.loc[mel, "patient_id"].iloc[0]
    out = ranker.score_patient(test[test["patient_id"] == pid])
    words = out.loc[out["image_id"].isin(test.loc[mel, "image_id"]), "explanation"].iloc[0]
    assert "raises: size_mm higher than" in words and "SD from their mean" in words
    scores, _ = ranker.rank(test, explain=True)
    assert scores["explanation"].str.len().gt(0).all() and len(scores) == len(test)


def test_gate_zero_keeps_the_cnn_order_within_each_patient(measured):
    t = measured.assign(cnn_score=1 / (1 + np.exp(-(measured["size_mm"] - measured["colour"]))))
    r = ContextRanker(context_features=COLS, within_patient=0.0, **FAST).fit(t, t["target"])
    s = r.decision_function(t)
    for _, rows in t.assign(s=s).groupby("patient_id"):
        order_model = np.argsort(-rows["s"].to_numpy(), kind="stable")
        order_cnn = np.argsort(-rows["cnn_score"].to_numpy(), kind="stable")
        assert (order_model == order_cnn).all()
    auto = ContextRanker(context_features=COLS, **FAST).fit(t, t["target"])
    assert auto.within_patient_weight_ in GATE_WEIGHTS
    assert [g["weight"] for g in auto.gate_scores_] == list(GATE_WEIGHTS)
    base = auto.gate_scores_[0]
    chosen = next(g for g in auto.gate_scores_ if g["weight"] == auto.within_patient_weight_)
    assert chosen["within_patient_auc"] >= base["within_patient_auc"] and chosen["top1"] >= base["top1"]
    # the CNN score here orders each patient's lesions by size - colour; the correction adds the
    # patient-relative size, a real within-patient signal: the gate lets it in, on evidence
    assert auto.within_patient_weight_ > 0
    assert chosen["p_no_gain"] <= GATE_LEVEL / (len(GATE_WEIGHTS) - 1)
    assert all(g["level"] == GATE_LEVEL / (len(GATE_WEIGHTS) - 1) for g in auto.gate_scores_)
    assert chosen["passed"] and auto.gate_scores_[0]["passed"]
    with pytest.raises(ModelError, match="within_patient"):
        ContextRanker(within_patient=2, **FAST).fit(t, t["target"])


def test_gate_keeps_the_cnn_order_when_the_correction_only_adds_noise(measured):
    # the CNN score already holds the within-patient signal; the context columns are noise: the
    # inner folds may show a small gain for some weight, but not a significant one
    rng = np.random.default_rng(7)
    t = measured.copy()
    within = t["size_mm"] - t.groupby("patient_id")["size_mm"].transform("mean")
    t["cnn_score"] = 1 / (1 + np.exp(-(3 * within - 3)))
    t[COLS] = rng.normal(size=(len(t), len(COLS)))
    r = ContextRanker(context_features=COLS, **FAST).fit(t, t["target"])
    assert r.within_patient_weight_ == 0.0
    assert not any(g["passed"] for g in r.gate_scores_[1:])
    assert all(min(g["p_no_gain"], g["p_no_auc_gain"]) > g["level"] or g["top1"] < r.gate_scores_[0]["top1"]
               or g["within_patient_auc"] < r.gate_scores_[0]["within_patient_auc"] for g in r.gate_scores_[1:])


def test_without_an_offset_the_correction_is_the_whole_model(ranker, measured):
    # no CNN, set or lesion model and no gbm given: the whole-model settings, rounds chosen on the
    # inner folds; with a CNN score the correction keeps its fixed small step
    whole = ContextRanker(score_col=None, context_features=COLS, n_folds=3).fit(measured, measured["target"])
    assert whole.gbm_.reg_lambda == WHOLE_MODEL_GBM["reg_lambda"]
    assert ROUND_STEP <= whole.gbm_.n_rounds_ <= WHOLE_MODEL_GBM["n_estimators"]
    assert whole.gbm_.booster_.current_iteration() == whole.gbm_.n_rounds_
    t = measured.assign(cnn_score=0.05 + 0.01 * (measured["size_mm"] > 0))
    fixed = ContextRanker(context_features=COLS, n_folds=3).fit(t, t["target"])
    assert fixed.gbm_.n_rounds_ == CORRECTION_GBM["n_estimators"] and fixed.gbm_.reg_lambda == CORRECTION_GBM["reg_lambda"]
    assert ranker.gbm_.n_rounds_ == FAST["gbm"].n_estimators  # a gbm given is used as it is


def test_auto_refuses_a_mostly_numeric_column_with_text_cells(measured):
    # a '-' or a decimal comma in one cell must not make "auto" skip the measurement quietly
    t = measured.copy()
    t["size_mm"] = t["size_mm"].round(3).astype(str)
    t.loc[7, "size_mm"] = "-"
    with pytest.raises(TableError, match="'size_mm' is mostly numbers but 1 cell"):
        ContextRanker(score_col=None, context_features="auto", **FAST).fit(t, t["target"])
    comma = measured.assign(size_mm=measured["size_mm"].round(2).astype(str).str.replace(".", ",", regex=False))
    with pytest.raises(TableError, match="'size_mm' holds numbers written with decimal commas"):
        ContextRanker(score_col=None, context_features="auto", **FAST).fit(comma, comma["target"])
    ok = measured.assign(note=["seen twice"] * len(measured))  # a text column is not a measurement,
    ok["Unnamed: 0"] = np.arange(len(ok))  # nor a row index pandas wrote out
    r = ContextRanker(score_col=None, context_features="auto", **FAST).fit(ok, ok["target"])
    assert "note" not in r.context_features_ and "Unnamed: 0" not in r.context_features_
    assert "size_mm" in r.context_features_


def test_same_scores_for_shuffled_training_rows(measured):
    shuffled = measured.sample(frac=1.0, random_state=4)
    a = ContextRanker(score_col=None, context_features=COLS, **FAST).fit(measured, measured["target"])
    b = ContextRanker(score_col=None, context_features=COLS, **FAST).fit(shuffled, shuffled["target"])
    test = _measured(40, seed=3)
    np.testing.assert_allclose(a.decision_function(test), b.decision_function(test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.oof_proba_, b.oof_proba_[np.argsort(shuffled.index)], atol=1e-9)


def test_neither_the_list_order_nor_the_column_order_changes_the_model(measured):
    test = _measured(40, seed=3)
    reversed_table = measured[measured.columns[::-1]]
    fitted = [ContextRanker(score_col=None, context_features=cols, **FAST).fit(X, X["target"])
              for cols, X in ((COLS, measured), (COLS[::-1], measured), (COLS, reversed_table))]
    assert fitted[0].context_features_ == fitted[1].context_features_ == fitted[2].context_features_ == sorted(COLS)
    for other in fitted[1:]:
        np.testing.assert_array_equal(fitted[0].decision_function(test), other.decision_function(test))
    auto = [ContextRanker(score_col=None, context_features="auto", **FAST).fit(X, X["target"])
            for X in (measured, reversed_table)]
    assert auto[0].context_features_ == auto[1].context_features_
    np.testing.assert_array_equal(auto[0].decision_function(test), auto[1].decision_function(test))


def test_the_order_of_extra_features_and_outlier_groups_does_not_change_the_model(measured):
    test = _measured(40, seed=3)
    settings = [({"extra_features": COLS[:2], "outlier_groups": {"a": COLS[:2], "b": COLS[2:]}}),
                ({"extra_features": COLS[1::-1], "outlier_groups": {"b": COLS[:1:-1], "a": COLS[1::-1]}})]
    fitted = [ContextRanker(score_col=None, context_features=COLS[2:], **FAST, **kw).fit(measured, measured["target"])
              for kw in settings]
    assert fitted[0].outlier_groups_ == fitted[1].outlier_groups_ == {"a": sorted(COLS[:2]), "b": sorted(COLS[2:])}
    np.testing.assert_array_equal(fitted[0].decision_function(test), fitted[1].decision_function(test))


def test_declared_columns_listed_twice_missing_or_naming_identity_are_refused(measured):
    y = measured["target"]
    with pytest.raises(TableError, match=r"lists \['size_mm'\] more than once"):
        ContextRanker(score_col=None, context_features=["size_mm", "size_mm", "hue"], **FAST).fit(measured, y)
    with pytest.raises(TableError, match=r"identity column.*patient_id"):
        ContextRanker(score_col=None, context_features=["size_mm", "patient_id"], **FAST).fit(measured, y)
    with pytest.raises(TableError, match="did you mean 'colour' for 'color'"):
        ContextRanker(score_col=None, context_features=["size_mm", "color"], **FAST).fit(measured, y)
    with pytest.raises(TableError, match=r"'site' holds text \(e.g. .*extra_features"):
        ContextRanker(score_col=None, context_features=["size_mm", "site"], **FAST).fit(measured, y)
    numbered = measured.assign(**{"5": measured["hue"]}).rename(columns={"5": 5})
    with pytest.raises(TableError, match=r"column name\(s\) \[5\] are not text"):
        ContextRanker(score_col=None, context_features=["size_mm", 5], **FAST).fit(numbered, y)
    # a row number under any name, a constant, a column also listed as an extra feature
    extra = measured.assign(n=np.arange(1, len(measured) + 1), row_index=0.5, scanner=3.0)
    with pytest.raises(TableError, match="column 'n' numbers the rows"):
        ContextRanker(score_col=None, context_features=["size_mm", "n"], **FAST).fit(extra, y)
    with pytest.raises(TableError, match="column 'row_index' numbers the rows"):
        ContextRanker(score_col=None, context_features=["size_mm", "row_index"], **FAST).fit(extra, y)
    with pytest.raises(TableError, match="column 'flag' holds True/False"):
        ContextRanker(score_col=None, context_features=["size_mm", "flag"], **FAST).fit(
            extra.assign(flag=extra["size_mm"] > 0), y)
    with pytest.raises(TableError, match=r"column 'scanner' holds one value \(3\.0\)"):
        ContextRanker(score_col=None, context_features=["size_mm", "scanner"], **FAST).fit(extra, y)
    with pytest.raises(TableError, match=r"\['hue'\] listed in both context_features and extra_features"):
        ContextRanker(score_col=None, context_features=["size_mm", "hue"], extra_features=["hue"],
                      **FAST).fit(extra, y)
    auto = ContextRanker(score_col=None, context_features="auto", **FAST)
    assert auto._context_columns(extra) == sorted(COLS)  # 'auto' passes them over
    # the same as text, a patient id as a number, and extra features that would be misread
    codes = pd.factorize(measured["patient_id"])[0] + 1000
    more = measured.assign(n_text=[str(i) for i in range(len(measured))], pid_num=codes,
                           skin=codes / 7.0,  # a patient-level measurement: allowed
                           counted=measured["size_mm"].round(2).astype(str).where(measured.index % 50 != 3, "-"),
                           as_text=measured["size_mm"].round(2).astype(str))
    for cols, why in ((["size_mm", "n_text"], "column 'n_text' numbers the rows"),
                      (["size_mm", "pid_num"], "column 'pid_num' holds one value per patient")):
        with pytest.raises(TableError, match=why):
            ContextRanker(score_col=None, context_features=cols, **FAST).fit(more, y)
    picked = auto._context_columns(more.drop(columns=["counted", "as_text"]))
    assert "pid_num" not in picked and "skin" in picked
    more = more.assign(comma=measured["size_mm"].round(2).astype(str).str.replace(".", ","),
                       unit=measured["size_mm"].round(2).abs().astype(str) + " mm2")
    for col, why in (("counted", r"mostly numbers but \d+ cell\(s\) are not \(first: '-'"),
                     ("as_text", "holds numbers written as text"), ("pid_num", "names the patient"),
                     ("comma", "decimal commas"), ("unit", "numbers written with units")):
        with pytest.raises(TableError, match=f"extra_features column '{col}' .*{why}"):
            ContextRanker(score_col=None, context_features=["size_mm"], extra_features=[col], **FAST).fit(more, y)


def test_stacked_set_model_reads_context_features(measured, one_torch_thread):
    r = ContextRanker(score_col=None, context_features=COLS, use_set_model=True,
                      set_model_params={"max_epochs": 3}, **FAST).fit(measured, measured["target"])
    assert list(r.set_model_.feature_names_in_) == sorted(COLS) and r.offset_coef_[2] != 0
    assert "set_model" in r.feature_contributions(measured.iloc[:30]).columns


def test_save_load_keeps_context_and_refuses_wrong_types(ranker, measured, tmp_path):
    ranker.save(tmp_path / "m")
    back = ContextRanker.load(tmp_path / "m")
    assert back.context_features_ == sorted(COLS) and back.outlier_groups_ == {"context": sorted(COLS)}
    np.testing.assert_allclose(back.decision_function(measured), ranker.decision_function(measured))
    meta_path = tmp_path / "m" / "context_ranker.json"
    meta = json.loads(meta_path.read_text())
    meta["context_features"] = "size_mm"
    meta_path.write_text(json.dumps(meta))
    write_manifest(tmp_path / "m", ["context_ranker.json", "gbm.txt"], "ContextRanker")
    with pytest.raises(ModelError, match="context_features"):
        ContextRanker.load(tmp_path / "m")


def test_score_patient_names_the_planted_deviation_of_generated_patients():
    """ISIC 2024-style generated patients with a strong phenotype: the explanation of a held-out
    outlier melanoma names its planted measurement (or the family of measurements correlated with
    it, worded by the member that deviates most), on the planted side."""
    from dermctx.synthetic import make_tbp_patients

    kw = {"phenotype_share": 0.6, "deviation_sd": 2.0, "lesions_per_patient": (10, 40), "melanoma_rate": 0.03}
    train = make_tbp_patients(200, random_state=0, **kw)
    cols = [c for c in train.columns if c.startswith("tbp_lv_") or c == "clin_size_long_diam_mm"]
    hidden = ["target", "planted_feature", "planted_direction"]
    model = ContextRanker(score_col=None, context_features=cols, **FAST).fit(
        train.drop(columns=hidden), train["target"])
    family = {c: set(f) for f in model.feature_families_ for c in f}
    test = make_tbp_patients(30, random_state=1, **kw)
    direct = in_family = total = 0
    for _, lesions in test.groupby("patient_id"):
        if not lesions["target"].any():
            continue
        words = model.score_patient(lesions.drop(columns=hidden)).set_index("image_id")["explanation"]
        for _, mel in lesions[lesions["target"] == 1].iterrows():
            text = words[mel["image_id"]].split(" | lowers:")[0]
            side = "higher" if mel["planted_direction"] > 0 else "lower"
            total += 1
            direct += f"{mel['planted_feature']} {side} than" in text
            in_family += any(f"{c} " in text for c in family.get(mel["planted_feature"], {mel["planted_feature"]}))
    assert total >= 15
    assert direct / total >= 0.25 and in_family / total >= 0.7, (direct, in_family, total)


def test_not_numbers_in_measurements_are_error_rows_and_cnn_terms_are_centred(ranker, measured):
    bad = measured.iloc[:40].copy()
    bad["size_mm"] = bad["size_mm"].astype(object)
    bad.loc[bad.index[2], "size_mm"] = pd.Timestamp("2020-01-01")  # a date is not a size
    bad.loc[bad.index[3], "size_mm"] = True
    _, errors = ranker.rank(bad)
    assert list(errors["row"]) == [2, 3] and all("size_mm" in m for m in errors["message"])
    t = measured.assign(cnn_score=1 / (1 + np.exp(-measured["size_mm"])))
    r = ContextRanker(context_features=COLS, **FAST).fit(t, t["target"])
    cnn = r.feature_contributions(t)["cnn_score"]
    assert abs(cnn.mean()) < 1e-9  # against an average training lesion, not against 50%
    assert (cnn > 0).mean() > 0.3


def test_folder_without_manifest_or_digests_is_refused(ranker, tmp_path):
    ranker.save(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").unlink()
    with pytest.raises(ModelError, match=r"no manifest\.json and no SHA-256"):
        ContextRanker.load(tmp_path / "m")
    ranker.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "context_ranker.json").read_text())
    meta["gbm"]["columns"] = meta["gbm"]["columns"][::-1]  # re-signed edit: columns swapped
    (tmp_path / "r" / "context_ranker.json").write_text(json.dumps(meta))
    write_manifest(tmp_path / "r", ["context_ranker.json", "gbm.txt"], "ContextRanker")
    with pytest.raises(ModelError, match="do not match"):
        ContextRanker.load(tmp_path / "r")


def test_lesion_model_stands_in_for_a_missing_cnn(ranker, measured, tmp_path):
    # no CNN score: a per-lesion GBM's out-of-fold logit is the offset, and the gate orders by it
    staged = ContextRanker(score_col=None, context_features=COLS, lesion_model=True, **FAST).fit(
        measured, measured["target"])
    assert staged.lesion_model_ is not None and staged.offset_coef_[1] > 0
    assert list(staged.lesion_model_.feature_names_in_) == ["age", "sex", "site", *sorted(COLS)]
    assert [g["weight"] for g in staged.gate_scores_] == list(GATE_WEIGHTS)
    test = _measured(40, seed=5)
    np.testing.assert_allclose(staged.feature_contributions(test).sum(axis=1), staged.decision_function(test),
                               atol=1e-9)
    staged.save(tmp_path / "m")
    back = ContextRanker.load(tmp_path / "m")
    assert back.lesion_model_ is not None and (tmp_path / "m" / "lesion_model.txt").is_file()
    np.testing.assert_allclose(back.decision_function(test), staged.decision_function(test), atol=1e-12)
    # the default: no lesion model, the correction alone orders the lesions
    assert ranker.lesion_model_ is None and ranker.within_patient_weight_ == 1.0 and ranker.offset_coef_[1] == 0
    t = measured.assign(cnn_score=0.1)
    assert ContextRanker(context_features=COLS, **FAST).fit(t, t["target"]).lesion_model_ is None
    with pytest.raises(TableError, match="lesion_model=True needs score_col=None"):
        ContextRanker(context_features=COLS, lesion_model=True, **FAST).fit(t, t["target"])
    with pytest.raises(ModelError, match="lesion_model='auto'"):
        ContextRanker(score_col=None, context_features=COLS, lesion_model="auto", **FAST).fit(
            measured, measured["target"])


def test_fit_warns_when_a_declared_input_is_missing_on_every_row(measured):
    from dermctx.errors import DermctxWarning

    t = measured.assign(age=np.nan, sex=None, site=None)
    with pytest.warns(DermctxWarning, match=r"\['age', 'sex', 'site'\] are missing on all.*always read"):
        ContextRanker(score_col=None, context_features=COLS, **FAST).fit(t, t["target"])


def test_score_patient_above_max_loo_leaves_out_the_most_atypical_lesions(ranker, monkeypatch):
    import warnings

    # the leave-one-out mechanics, whatever the size of the effects (these are below 0.1 pp)
    monkeypatch.setattr("dermctx.models.ranker.MIN_LOO_CHANGE", 0.0)

    rng = np.random.default_rng(7)
    n = 60
    big = pd.DataFrame({"image_id": [f"B{i:03d}" for i in range(n)], "patient_id": "BIG", "age": 50.0,
                        "sex": "female", "site": "torso", **{c: rng.normal(0, 0.5, n) for c in COLS}})
    big["hue"] = np.nan  # a measurement missing on every lesion of the patient
    big.loc[7, "size_mm"] += 4.0  # one clear outlier
    # no numeric RuntimeWarning; the one warning says the fitted measurement is missing on every lesion
    with pytest.warns(DermctxWarning, match=r"\['hue'\] are missing on all") as caught:
        warnings.filterwarnings("error", category=RuntimeWarning)
        out = ranker.score_patient(big, max_loo=10)
        exact = ranker.score_patient(big.iloc[:10], max_loo=10)
    assert {type(w.message) for w in caught} == {DermctxWarning}
    assert len(out) == n and sorted(out["rank"]) == list(range(1, n + 1))
    left_out = set(ranker._most_atypical(big, 10))
    assert 7 in left_out and len(left_out) == 10
    named = set(out["raised_by"].dropna()) | set(out["lowered_by"].dropna())
    assert named and named <= {big["image_id"].iloc[i] for i in left_out}
    assert len(exact) == 10 and exact["raised_by"].notna().any()


def test_explanations_in_a_clinicians_words(ranker, measured):
    # labels word the columns; the ISIC 2024 measurements have plain words built in
    one = measured[measured["patient_id"] == measured.loc[measured["target"] == 1, "patient_id"].iloc[0]]
    plain = ranker.score_patient(one)
    worded = ranker.score_patient(one, labels={"size_mm": "diameter (mm)"})
    mel = one.loc[one["target"] == 1, "image_id"].iloc[0]
    text = worded.set_index("image_id").loc[mel, "explanation"]
    assert "diameter (mm) higher than" in text and "size_mm" not in text
    assert plain.set_index("image_id").loc[mel, "explanation"] == text.replace("diameter (mm)", "size_mm")
    scores, _ = ranker.rank(one, explain=True, labels={"size_mm": "diameter (mm)"})
    assert scores["explanation"].str.contains("diameter \\(mm\\)").any()
    with pytest.raises(TableError, match="labels"):
        ranker.explain(one, labels="clinic")
    tbp = make_tbp_patients(30, random_state=0)
    cols = [c for c in tbp.columns if c.startswith("tbp_lv_")][:5]
    model = ContextRanker(score_col=None, context_features=cols, **FAST).fit(
        tbp.drop(columns=["planted_feature", "planted_direction"]), tbp["target"])
    words = " ".join(model.explain(tbp.drop(columns=["planted_feature", "planted_direction"]), labels="isic2024"))
    assert "tbp_lv_" not in words and any(ISIC2024_LABELS[c] in words for c in cols)


def test_a_worded_deviation_never_contradicts_its_count():
    # above 4 of the 5 others but below their mean (one large sibling): the count, without an SD
    # of the other sign; a plain case keeps its SD
    from dermctx.models.explanation import ExplanationContext, _phrase, _standing

    x = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 10.0, 5.0, 1.0, 2.0])
    codes = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    others_mean = (x[1:6].sum()) / 5
    z = np.array([(1.0 - others_mean) / np.std(x[1:6])] + [0.0] * 5 + [2.5, -1.0, -0.5])
    ctx = ExplanationContext(codes=codes, values={"x": x}, z={"x": z})
    standing = {"x": _standing(x, codes)}
    skewed = _phrase("x", 0, ctx, standing)
    assert skewed == "x higher than 4 of the patient's 5 other lesions"
    assert _phrase("x", 6, ctx, standing) == "x higher than 2 of the patient's 2 other lesions (+2.5 SD from their mean)"


def test_a_text_cell_in_a_numeric_extra_feature_is_that_rows_error_at_scoring(measured):
    t = measured.assign(uv=np.random.default_rng(0).uniform(0, 10, len(measured)))
    r = ContextRanker(score_col=None, context_features=COLS, extra_features=["uv"], **FAST).fit(t, t["target"])
    new = _measured(20, seed=5).assign(uv=2.0).astype({"uv": object})
    new.loc[new.index[[3, 7]], "uv"] = "-"
    scores, errors = r.rank(new)
    assert errors["row"].tolist() == [3, 7] and "column 'uv' is '-'" in errors["message"].iloc[0]
    assert len(scores) == len(new) - 2


def test_families_hold_only_measurements_correlated_pairwise():
    """A chain a~b, b~c with a and c barely related is not one family (single linkage made it one)."""
    from dermctx.models.ranker import FAMILY_CORRELATION, _families

    rng = np.random.default_rng(0)
    a = rng.standard_normal(5000)
    c = 0.3 * a + np.sqrt(1 - 0.3**2) * rng.standard_normal(5000)
    b = a + c  # correlated about 0.8 with each, while a and c are correlated 0.3
    d = a + 0.3 * rng.standard_normal(5000)  # a close correlate of a
    frame = pd.DataFrame({"a": a, "b": b, "c": c, "d": d, "e": rng.standard_normal(5000)})
    corr = frame.rank().corr().abs()
    assert corr.loc["a", "b"] >= FAMILY_CORRELATION and corr.loc["b", "c"] >= FAMILY_CORRELATION
    families = _families(frame, random_state=0)
    assert ["a", "d"] in families or ["d", "a"] in families
    for family in families:
        pairs = corr.loc[family, family].to_numpy()
        assert pairs.min() >= FAMILY_CORRELATION, (family, pairs)
    assert not any({"a", "c"} <= set(f) for f in families)


def test_a_typical_measurement_is_worded_by_its_value_not_as_a_deviation():
    """A lesion in the middle of its patient's others contributes through its value: worded as
    typical for the patient, never as 'lower than 19 of 37' next to 'raises'."""
    from dermctx.models.explanation import ExplanationContext, _phrase, _standing

    x = np.array([3.2, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0])
    codes = np.zeros(len(x), dtype=int)
    others = x[1:]
    z = np.array([(3.2 - others.mean()) / others.std()] + [0.0] * 7)
    ctx = ExplanationContext(codes=codes, values={"x": x}, z={"x": z}, names={"x": "border irregularity"})
    assert abs(z[0]) < 0.5
    assert _phrase("x", 0, ctx, {"x": _standing(x, codes)}) == \
        "border irregularity 3.2, typical for this patient (lower than 4 of 7)"
