"""Tests of dermctx.features.patient_context_features: hand-worked values, small sets, LOO."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import LocalOutlierFactor

from dermctx.errors import TableError
from dermctx.features import patient_context_features


def _table() -> pd.DataFrame:
    # patient A: 4 lesions, patient B: 1 lesion, patient C: 2 lesions with equal values
    return pd.DataFrame(
        {
            "patient_id": ["A", "A", "A", "A", "B", "C", "C"],
            "site": ["torso", "torso", "head/neck", None, "torso", "torso", "torso"],
            "x": [1.0, 2.0, 3.0, 10.0, 5.0, 4.0, 4.0],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )


def test_hand_worked_values_and_index():
    t = _table()
    f = patient_context_features(t, ["x"], z_floor=0.0)
    assert list(f.index) == list(t.index)
    # lesion 13 (x=10): others 1,2,3 -> mean 2, var (1+0+1)/3
    assert f.loc[13, "x__diff"] == pytest.approx(8.0)
    assert f.loc[13, "x__z"] == pytest.approx(8.0 / np.sqrt(2.0 / 3.0))
    assert f.loc[13, "x__ratio"] == pytest.approx(5.0)
    assert f.loc[13, "x__rank"] == pytest.approx(1.0)
    assert f.loc[10, "x__rank"] == pytest.approx(0.0)
    assert f.loc[11, "x__rank"] == pytest.approx(1 / 3)
    # lesion 10 (x=1): others 2,3,10 -> mean 5
    assert f.loc[10, "x__diff"] == pytest.approx(-4.0)
    assert f.loc[10, "x__ratio"] == pytest.approx(0.2)
    np.testing.assert_allclose(f["patient__count"], [4, 4, 4, 4, 1, 2, 2])
    # site: lesions 10 and 11 share torso; 12 is alone at head/neck; 13 has no site
    assert f.loc[10, "x__site_diff"] == pytest.approx(-1.0)
    assert f.loc[11, "x__site_diff"] == pytest.approx(1.0)
    assert f.loc[12, "x__site_diff"] == 0.0 and f.loc[13, "x__site_diff"] == 0.0
    np.testing.assert_allclose(f["patient__site_count"], [2, 2, 1, 1, 1, 2, 2])


def test_one_lesion_and_equal_values_are_defined():
    f = patient_context_features(_table(), ["x"], z_floor=0.0)
    b = f.loc[14]
    assert (b["x__diff"], b["x__z"], b["x__rank"], b["x__ratio"], b["x__same"]) == (0, 0, 0.5, 1, 1)
    assert b["patient__count"] == 1
    c = f.loc[[15, 16]]
    np.testing.assert_allclose(c["x__diff"], 0.0)
    np.testing.assert_allclose(c["x__z"], 0.0)  # zero std of others, no floor: defined as 0
    np.testing.assert_allclose(c["x__rank"], 0.5)  # a tie: averaged ranks
    np.testing.assert_allclose(c["x__same"], 1.0)
    assert not f.isna().any().any()


def test_z_floor_keeps_z_finite_and_signed():
    t = pd.DataFrame({"patient_id": ["P", "P", "Q", "Q"], "x": [0.0, 5.0, 1.0, 1.0]})
    f = patient_context_features(t, ["x"], by_site=False, z_floor=0.5)
    floor = 0.5 * np.std([0.0, 5.0, 1.0, 1.0])
    assert f["x__z"].iloc[1] == pytest.approx(5.0 / floor)
    assert f["x__z"].iloc[0] == pytest.approx(-5.0 / floor)


def test_leave_one_out_matches_brute_force():
    rng = np.random.default_rng(1)
    n = 60
    t = pd.DataFrame({"patient_id": rng.integers(0, 7, n).astype(str), "x": rng.normal(size=n)})
    f = patient_context_features(t, ["x"], by_site=False, z_floor=0.0)
    for i in range(n):
        others = t.loc[(t.patient_id == t.patient_id[i]) & (t.index != i), "x"].to_numpy()
        if len(others) == 0:
            continue
        assert f["x__diff"][i] == pytest.approx(t.x[i] - others.mean())
        expect_z = (t.x[i] - others.mean()) / others.std() if others.std() > 0 else 0.0
        assert f["x__z"][i] == pytest.approx(expect_z)


def test_missing_value_gives_nan_and_is_left_out_of_others():
    t = pd.DataFrame({"patient_id": ["A"] * 3, "x": [1.0, np.nan, 3.0]})
    f = patient_context_features(t, ["x"], by_site=False)
    assert np.isnan(f["x__diff"][1]) and np.isnan(f["x__rank"][1])
    assert f["x__diff"][0] == pytest.approx(-2.0)
    assert f["x__rank"][2] == pytest.approx(1.0)


def test_same_fraction_flags_odd_image_size():
    t = pd.DataFrame({"patient_id": ["A"] * 4, "width": [6000, 6000, 6000, 1872]})
    f = patient_context_features(t, ["width"], by_site=False)
    np.testing.assert_allclose(f["width__same"], [2 / 3, 2 / 3, 2 / 3, 0.0])


def test_embedding_outlier_scores():
    rng = np.random.default_rng(0)
    emb = rng.normal(scale=0.1, size=(12, 4))
    emb[5] += 3.0  # the ugly duckling of patient A
    t = pd.DataFrame({"patient_id": ["A"] * 8 + ["B"] * 3 + ["C"]})
    for j in range(4):
        t[f"emb_{j:04d}"] = emb[:, j].astype(np.float32)
    f = patient_context_features(t, by_site=False, n_neighbors=3)
    a = f.iloc[:8]
    assert a["emb__centroid_dist"].idxmax() == 5 and a["emb__lof"].idxmax() == 5
    assert a["emb__centroid_dist_rank"][5] == 1.0
    centroid = np.delete(emb[:8], 5, axis=0).mean(axis=0)
    assert f["emb__centroid_dist"][5] == pytest.approx(np.linalg.norm(emb[5] - centroid), rel=1e-5)
    # one-lesion patient C: defined values
    assert tuple(f.iloc[11][["emb__centroid_dist", "emb__knn_dist", "emb__lof"]]) == (0, 0, 1)
    # exact LOF equals scikit-learn's on a set below the cap
    ref = -LocalOutlierFactor(n_neighbors=3).fit(emb[:8]).negative_outlier_factor_
    np.testing.assert_allclose(a["emb__lof"], ref, rtol=1e-4)


def test_sampled_outlier_scores_above_cap_still_find_outlier():
    rng = np.random.default_rng(0)
    emb = rng.normal(scale=0.1, size=(80, 3))
    emb[17] += 2.0
    t = pd.DataFrame(emb, columns=["emb_0000", "emb_0001", "emb_0002"])
    t["patient_id"] = "A"
    f = patient_context_features(t, by_site=False, exact_max=20)
    assert f["emb__lof"].idxmax() == 17 and f["emb__knn_dist"].idxmax() == 17
    assert np.isfinite(f.to_numpy()).all()


def test_errors_name_the_column():
    with pytest.raises(TableError, match="'nope'"):
        patient_context_features(_table(), ["nope"])
    with pytest.raises(TableError, match="'site'"):
        patient_context_features(_table().drop(columns="site"), ["x"])
    bad = _table().assign(x=["a"] * 7)
    with pytest.raises(TableError, match="'x' must be numeric"):
        patient_context_features(bad, ["x"])


def test_scales_make_a_patients_features_independent_of_other_patients():
    from dermctx.features import context_scales

    rng = np.random.default_rng(3)
    table = pd.DataFrame({
        "patient_id": np.repeat(["a", "b", "c"], [4, 5, 6]),
        "site": rng.choice(["torso", "head/neck"], 15),
        "x": rng.normal(size=15) * np.repeat([1.0, 10.0, 0.1], [4, 5, 6]),
    })
    scales = context_scales(table, ["x"])
    assert scales["x"] == pytest.approx(float(np.std(table["x"])))
    both = patient_context_features(table, ["x"], scales=scales)
    alone = patient_context_features(table[table.patient_id == "a"], ["x"], scales=scales)
    pd.testing.assert_frame_equal(alone, both[table.patient_id == "a"])
    # without fixed scales the z floor comes from the batch, so the values differ
    batch = patient_context_features(table[table.patient_id == "a"], ["x"])
    assert not np.allclose(batch["x__z"], both.loc[table.patient_id == "a", "x__z"])


def test_large_patient_sample_does_not_depend_on_the_other_patients():
    # above exact_max the kNN/LOF reference sample is random: it must be seeded per patient, so
    # scoring a patient alone or after other large patients gives the same features
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(60, 4)), columns=[f"emb_{i:04d}" for i in range(4)])
    table.insert(0, "patient_id", np.repeat(["a", "b"], 30))
    table.insert(1, "site", "torso")
    both = patient_context_features(table, exact_max=10, random_state=1)
    alone = patient_context_features(table[table.patient_id == "b"], exact_max=10, random_state=1)
    pd.testing.assert_frame_equal(alone, both[table.patient_id == "b"])


def test_an_extreme_value_changes_no_other_patients_features():
    # given the fitted scales, a lesion's features depend on its own patient's lesions only, even
    # next to a value of 1e20 (the batch's values must not share a centre or a running sum)
    rng = np.random.default_rng(2)
    n = 80
    t = pd.DataFrame({"patient_id": np.repeat(list("ABCD"), n // 4), "site": rng.choice(["torso", "head/neck"], n),
                      "x": rng.normal(5, 1, n)})
    scales = {"x": 1.0}
    clean = patient_context_features(t, ["x"], scales=scales)
    for value in (1e20, 1e300):
        odd = t.copy()
        odd.loc[0, "x"] = value  # patient A
        f = patient_context_features(odd, ["x"], scales=scales)
        others = (t["patient_id"] != "A").to_numpy()
        pd.testing.assert_frame_equal(f[others], clean[others], rtol=1e-12)
