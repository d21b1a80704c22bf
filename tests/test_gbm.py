"""Tests of dermctx.models.gbm.MetadataGBM: the scikit-learn contract and lesion-table behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from dermctx.errors import ModelError
from dermctx.models.gbm import ROUND_STEP, MetadataGBM

# LightGBM counts rows (min_data_in_leaf, bagging), so a weight of 2 is not the same as a row
# repeated twice; every other check of scikit-learn's suite applies and must pass.
_EXPECTED_FAIL = {
    "check_sample_weight_equivalence_on_dense_data": "LightGBM leaf sizes count rows, not weight"
}


@parametrize_with_checks(
    [MetadataGBM(n_estimators=10, min_child_samples=2)],
    expected_failed_checks=lambda est: _EXPECTED_FAIL,
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def _lesions(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "age": rng.uniform(20, 90, n),
            "sex": rng.choice(["male", "female", None], n),
            "site": rng.choice(["torso", "head/neck", "lower extremity"], n),
            "cnn_logit": rng.normal(-3, 1.5, n),
        }
    )
    logit = X["cnn_logit"] + 2.0 * (X["site"] == "head/neck") + 0.03 * (X["age"] - 50)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def test_categorical_site_is_learned_and_unseen_category_is_missing():
    X, y = _lesions()
    m = MetadataGBM(n_estimators=60, random_state=0).fit(X.drop(columns="cnn_logit"), y)
    assert set(m.categories_) == {"sex", "site"}
    assert m.categories_["site"] == ["head/neck", "lower extremity", "torso"]
    assert list(m.feature_names_in_) == ["age", "sex", "site"]
    imp = dict(zip(m.feature_names_in_, m.feature_importances_, strict=False))
    assert imp["site"] > imp["sex"]
    new = pd.DataFrame({"age": [50.0, 50.0], "sex": ["male", "male"], "site": ["oral/genital", None]})
    p = m.predict_proba(new)
    assert p.shape == (2, 2) and p[0, 1] == pytest.approx(p[1, 1])  # unseen == missing


def test_boosting_from_offset_keeps_resolution_and_excludes_offset_column():
    X, y = _lesions(800)
    m = MetadataGBM(n_estimators=30, init_score_col="cnn_logit", class_weight=None).fit(X, y)
    assert "cnn_logit" not in m.feature_names_in_
    d = m.decision_function(X)
    # no binning of the offset: rows with the same metadata keep the CNN's ordering exactly
    same = (X["sex"] == "male") & (X["site"] == "torso")
    tree_part = d - X["cnn_logit"].to_numpy()
    assert len(np.unique(d[same])) == same.sum()
    assert roc_auc_score(y, d) >= roc_auc_score(y, X["cnn_logit"]) - 0.01
    assert np.std(tree_part) > 0
    with pytest.raises(ModelError, match="cnn_logit"):
        m.decision_function(X.drop(columns="cnn_logit"))


def test_deterministic_and_balanced_weights_shift_probabilities():
    X, y = _lesions()
    a = MetadataGBM(n_estimators=40, random_state=3).fit(X, y).predict_proba(X)
    b = MetadataGBM(n_estimators=40, random_state=3).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    raw = MetadataGBM(n_estimators=40, class_weight=None).fit(X, y).predict_proba(X)[:, 1]
    assert a[:, 1].mean() > raw.mean()  # balanced weights raise the rare class
    assert raw.mean() == pytest.approx(y.mean(), abs=0.05)


def test_works_in_cross_val_score_and_names_missing_columns():
    X, y = _lesions()
    scores = cross_val_score(MetadataGBM(n_estimators=30), X, y, cv=3, scoring="roc_auc")
    assert scores.mean() > 0.6
    m = MetadataGBM(n_estimators=5).fit(X, y)
    with pytest.raises(ModelError, match="'age'"):
        m.predict_proba(X.drop(columns="age"))
    with pytest.raises(ModelError, match="'balanced'"):
        MetadataGBM(class_weight="equal").fit(X, y)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_fit_out_of_fold_equals_a_clone_per_fold_when_bins_agree(class_weight):
    # integer features whose every value occurs in every fold: the shared bins are each fold's own
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({"a": rng.integers(0, 8, n), "b": rng.integers(0, 5, n)}).astype(float)
    y = (X["a"] + rng.normal(0, 2, n) > 5).astype(int).to_numpy()
    X["off"] = rng.normal(-1, 0.5, n)
    folds = [(np.setdiff1d(np.arange(n), te), te) for te in np.array_split(rng.permutation(n), 3)]
    params = dict(n_estimators=30, min_child_samples=10, class_weight=class_weight, init_score_col="off")
    gbm = MetadataGBM(**params)
    oof = gbm.fit_out_of_fold(X, y, folds)
    for tr, te in folds:
        one = MetadataGBM(**params).fit(X.iloc[tr], y[tr])
        np.testing.assert_allclose(oof[te], one.decision_function(X.iloc[te]), atol=1e-9)
    np.testing.assert_allclose(gbm.decision_function(X), MetadataGBM(**params).fit(X, y).decision_function(X),
                               atol=1e-9)


def test_choose_rounds_stops_where_the_pooled_loss_stops_improving():
    # rounds chosen on the folds: many for a real signal, few for noise; the out-of-fold logits
    # and the final model are those of a fixed fit with the chosen count
    rng = np.random.default_rng(3)
    n = 3000
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(2 * X["a"] - 3)))).astype(int).to_numpy()
    folds = [(np.setdiff1d(np.arange(n), te), te) for te in np.array_split(rng.permutation(n), 4)]
    params = dict(n_estimators=600, learning_rate=0.02, min_child_samples=20, class_weight=None)
    gbm = MetadataGBM(**params)
    oof = gbm.fit_out_of_fold(X, y, folds, choose_rounds=True)
    rounds = gbm.n_rounds_
    assert rounds % ROUND_STEP == 0 and 4 * ROUND_STEP <= rounds <= 600
    assert gbm.booster_.current_iteration() == rounds and gbm.n_estimators == 600  # the parameter stays
    fixed = MetadataGBM(**{**params, "n_estimators": rounds})
    np.testing.assert_allclose(oof, fixed.fit_out_of_fold(X, y, folds), atol=1e-9)
    np.testing.assert_allclose(gbm.decision_function(X), fixed.decision_function(X), atol=1e-9)
    noise = MetadataGBM(**params)
    noise.fit_out_of_fold(X, rng.permutation(y), folds, choose_rounds=True)
    assert noise.n_rounds_ < rounds
    assert MetadataGBM.from_state(*gbm.to_state()).n_rounds_ == rounds


def test_fit_out_of_fold_refuses_a_row_held_out_twice_and_leaves_unheld_rows_missing():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=200)})
    y = (X["a"] > 0).astype(int).to_numpy()
    idx = np.arange(200)
    oof = MetadataGBM(n_estimators=5).fit_out_of_fold(X, y, [(idx[100:], idx[:100])])
    assert np.isfinite(oof[:100]).all() and np.isnan(oof[100:]).all()
    with pytest.raises(ModelError, match="two folds"):
        MetadataGBM(n_estimators=5).fit_out_of_fold(X, y, [(idx[100:], idx[:100]), (idx[50:], idx[:50])])
