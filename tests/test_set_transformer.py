"""SetTransformer (module) and SetRanker (estimator), and the synthetic ugly-duckling generator."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_score

from dermctx.errors import DermctxError, ModelError, TableError
from dermctx.models.set_transformer import SetRanker, SetTransformer, SetTransformerConfig
from dermctx.synthetic import make_ugly_duckling


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread is as fast and does not fight the other test processes for cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the module -------------------------------------------------------------------------------


def _model(**kw) -> SetTransformer:
    torch.manual_seed(0)
    cfg = dict(d_in=5, d_model=16, n_heads=4, n_inducing=3, n_blocks=2, dropout=0.0)
    return SetTransformer(SetTransformerConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("n_inducing", [0, 3])
def test_forward_shape_and_padded_logits_are_zero(n_inducing):
    model = _model(n_inducing=n_inducing)
    x = torch.randn(3, 7, 5)  # (B, N, D)
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [2], [5]])  # (B, N)
    logits = model(x, mask)
    assert logits.shape == (3, 7)
    assert torch.all(logits[~mask] == 0)
    assert torch.all(logits[mask] != 0)


@pytest.mark.parametrize("n_inducing", [0, 3])
def test_one_lesion_and_all_padding_sets_give_finite_values_and_gradients(n_inducing):
    model = _model(n_inducing=n_inducing).train()
    x = torch.randn(3, 4, 5)
    x[2] = float("nan")  # padding may hold anything
    x[1, 1:] = float("inf")
    mask = torch.tensor([[True, True, True, True], [True, False, False, False], [False] * 4])
    logits = model(x, mask)
    assert torch.isfinite(logits).all()
    assert torch.all(logits[2] == 0)
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("n_inducing", [0, 3])
def test_permuting_lesions_permutes_logits(n_inducing):
    model = _model(n_inducing=n_inducing)
    x = torch.randn(2, 9, 5)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    perm = torch.tensor([4, 0, 5, 2, 1, 3, 6, 7, 8])  # keeps set 1's padding at the end
    out = model(x, mask)
    out_perm = model(x[:, perm], mask[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)


def test_adding_padded_slots_does_not_change_real_logits():
    model = _model()
    x = torch.randn(2, 5, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    x_pad = torch.cat([x, 100 * torch.randn(2, 6, 5)], dim=1)  # (B, 11, D): loud garbage
    mask_pad = torch.cat([mask, torch.zeros(2, 6, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(x_pad, mask_pad)[:, :5], model(x, mask), atol=1e-5, rtol=1e-5)


def test_context_changes_a_lesion_score_only_with_context():
    x = torch.randn(1, 6, 5)
    x2 = x.clone()
    x2[0, 5] += 3.0  # change another lesion of the same patient
    for context, changes in ((True, True), (False, False)):
        model = _model(context=context)
        delta = (model(x)[0, 0] - model(x2)[0, 0]).abs().item()
        assert (delta > 1e-4) is changes


def test_config_is_keyword_only_and_validated():
    with pytest.raises(TypeError):
        SetTransformerConfig(5)  # type: ignore[misc]
    with pytest.raises(ModelError, match="n_heads=3 must divide d_model=16"):
        SetTransformerConfig(d_in=5, d_model=16, n_heads=3)
    with pytest.raises(ModelError):
        SetTransformerConfig(d_in=5, dropout=1.5)


# --- the estimator ----------------------------------------------------------------------------

FAST = dict(d_model=16, n_inducing=4, max_epochs=15, n_iter_no_change=4)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    train = make_ugly_duckling(300, dim=8, lesions_per_patient=(4, 20), random_state=1)
    test = make_ugly_duckling(200, dim=8, lesions_per_patient=(4, 20), random_state=2)
    return train, test


@pytest.fixture(scope="module")
def fitted(data) -> SetRanker:
    return SetRanker(**FAST, random_state=0).fit(data[0])


def test_set_ranker_learns_the_ugly_duckling_sign_a_per_lesion_model_cannot(data, fitted):
    train, test = data
    emb = [c for c in train.columns if c.startswith("emb_")]
    auc_set = roc_auc_score(test["target"], fitted.predict_proba(test)[:, 1])
    per_lesion = SetRanker(**FAST, context=False, random_state=0).fit(train)
    auc_lesion = roc_auc_score(test["target"], per_lesion.predict_proba(test)[:, 1])
    logistic = LogisticRegression().fit(train[emb], train["target"])
    auc_logistic = roc_auc_score(test["target"], logistic.predict_proba(test[emb])[:, 1])
    assert auc_set >= 0.9
    assert abs(auc_lesion - 0.5) < 0.1
    assert abs(auc_logistic - 0.5) < 0.1


def test_predict_proba_shape_sums_and_input_order(data, fitted):
    test = data[1].iloc[:400]
    proba = fitted.predict_proba(test)
    assert proba.shape == (400, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    perm = np.random.default_rng(0).permutation(len(test))
    np.testing.assert_allclose(fitted.predict_proba(test.iloc[perm]), proba[perm], atol=1e-6)
    assert set(fitted.predict(test)) <= {0, 1}
    np.testing.assert_allclose(1 / (1 + np.exp(-fitted.decision_function(test))), proba[:, 1])


def test_probabilities_are_on_the_base_rate_scale_with_or_without_pos_weight(data, fitted):
    # "balanced" inflates the raw logit by log(pos_weight_); decision_function shifts it back
    train, test = data
    rate = test["target"].mean()
    balanced = SetRanker(**FAST, pos_weight="balanced").fit(train)
    n_pos = train["target"].sum()
    assert balanced.pos_weight_ == pytest.approx((len(train) - n_pos) / n_pos)
    assert fitted.pos_weight_ == 1.0
    for model in (fitted, balanced):
        mean_p = model.predict_proba(test)[:, 1].mean()
        assert rate / 3 < mean_p < 3 * rate


def test_a_lesion_is_scored_within_its_patient_rows(data, fitted):
    test = data[1]
    one = test[test["patient_id"] == test["patient_id"].iloc[0]]
    alone = fitted.decision_function(one)
    within = fitted.decision_function(test)[: len(one)]
    np.testing.assert_allclose(alone, within, atol=1e-5)


def test_fit_is_deterministic_and_leaves_global_rng_alone(data):
    train, test = data[0].iloc[:1500], data[1].iloc[:300]
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    a = SetRanker(**{**FAST, "max_epochs": 3}, random_state=7).fit(train).decision_function(test)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    b = SetRanker(**{**FAST, "max_epochs": 3}, random_state=7).fit(train).decision_function(test)
    c = SetRanker(**{**FAST, "max_epochs": 3}, random_state=8).fit(train).decision_function(test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    SetRanker(**{**FAST, "max_epochs": 1}, n_jobs=2).fit(train.iloc[:200])
    assert torch.get_num_threads() == threads  # n_jobs is set only inside fit


def test_n_threads_is_a_deprecated_alias_of_n_jobs(fitted):
    with pytest.warns(FutureWarning, match="SetRanker: n_threads= is deprecated, use n_jobs=") as rec:
        old = SetRanker(n_threads=2)
    assert rec[0].filename == __file__
    assert old.n_jobs == 2 and "n_threads" not in old.get_params()
    assert clone(old).get_params() == SetRanker(n_jobs=2).get_params()
    with pytest.warns(FutureWarning, match="n_threads= is deprecated"):
        assert old.set_params(n_threads=3).n_jobs == 3
    with pytest.warns(FutureWarning, match="n_threads is deprecated, use n_jobs"):
        assert old.n_threads == 3
    with pytest.raises(TypeError, match="both n_threads= and n_jobs="):
        SetRanker(n_threads=2, n_jobs=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_thread'"):
        SetRanker(n_thread=2)
    # a model saved before the rename loads without a warning
    tensors, meta = fitted.to_state()
    params = {k: v for k, v in meta["params"].items() if k != "n_jobs"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        again = SetRanker.from_state(tensors, {**meta, "params": {**params, "n_threads": 1}})
    assert again.get_params() == fitted.get_params()


def test_sklearn_contract_clone_params_and_cross_validation(data):
    est = SetRanker(**FAST, random_state=3)
    params = est.get_params()
    assert params["d_model"] == 16 and params["random_state"] == 3
    twin = clone(est)
    assert twin.get_params() == params and not hasattr(twin, "model_")
    twin.set_params(max_epochs=2)
    assert twin.max_epochs == 2 and est.max_epochs == 15
    with pytest.raises(NotFittedError):
        est.predict_proba(data[1])
    train = data[0].iloc[:1500]
    scores = cross_val_score(
        twin, train, train["target"], groups=train["patient_id"], cv=GroupKFold(2), scoring="roc_auc"
    )
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_extra_features_missing_values_and_large_sets(data):
    train, test = data[0].iloc[:1500].copy(), data[1].iloc[:300].copy()
    rng = np.random.default_rng(0)
    for frame in (train, test):
        frame["noise"] = rng.normal(size=len(frame))
        frame.loc[frame.index[::7], "noise"] = np.nan
        frame.loc[frame.index[::5], "emb_0001"] = np.nan
    est = SetRanker(**{**FAST, "max_epochs": 2}, features=["noise", "age"], max_set_size=6).fit(train)
    assert list(est.feature_names_in_[-2:]) == ["noise", "age"]
    assert est.n_features_in_ == 10
    names = list(est.feature_names_in_)
    assert sorted(est.missing_indicator_) == [names.index("emb_0001"), names.index("noise")]
    np.testing.assert_allclose(est.median_[names.index("noise")], np.nanmedian(train["noise"]))
    proba = est.predict_proba(test)
    assert np.isfinite(proba).all() and proba.shape == (300, 2)
    np.testing.assert_array_equal(proba, est.predict_proba(test))  # large-set split is fixed


def test_state_round_trip_and_save_load(tmp_path, data, fitted):
    test = data[1].iloc[:300]
    tensors, meta = fitted.to_state()
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)
    again = SetRanker.from_state(tensors, meta)
    np.testing.assert_allclose(again.predict_proba(test), fitted.predict_proba(test), atol=1e-7)
    assert again.get_params() == fitted.get_params()
    fitted.save(tmp_path / "m")
    loaded = SetRanker.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(test), fitted.predict_proba(test), atol=1e-7)
    with pytest.raises(ModelError, match="format"):
        SetRanker.from_state(tensors, {**meta, "format": "other"})
    with pytest.raises(ModelError, match="missing set_ranker"):
        SetRanker.load(tmp_path)
    weights = tmp_path / "m" / "set_ranker.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # truncated: refused before safetensors parses it
    with pytest.raises(ModelError, match=r"set_ranker\.safetensors: damaged or changed"):
        SetRanker.load(tmp_path / "m")
    bad = {**meta, "feature_names_in": ["target", *meta["feature_names_in"][1:]]}
    with pytest.raises(ModelError, match="label"):
        SetRanker.from_state(tensors, bad)
    with pytest.raises(ModelError, match="standardisation"):
        SetRanker.from_state({**tensors, "mean": tensors["mean"][:-1]}, meta)


def test_bad_input_raises_dermctx_errors_naming_the_problem(data, fitted):
    train = data[0].iloc[:200].copy()
    bad = train.copy()
    bad["patient_id"] = bad["patient_id"].astype(object)
    bad.iloc[3, bad.columns.get_loc("patient_id")] = None
    with pytest.raises(TableError, match=r"patient_id.*row 3 \(image_id 'syn1-I0000003'\)"):
        SetRanker().fit(bad)
    with pytest.raises(TableError, match="patient_id"):
        fitted.predict_proba(train.drop(columns="patient_id"))
    with pytest.raises(TableError, match="'sex' is not numeric"):
        SetRanker(features=["sex"]).fit(train)
    with pytest.raises(TableError, match="'nope' is not in the table"):
        SetRanker(features=["nope"]).fit(train)
    with pytest.raises(TableError, match="no feature columns"):
        SetRanker(embedding_prefix="zzz_").fit(train)
    with pytest.raises(TableError, match="lacks the feature column"):
        fitted.predict_proba(train.drop(columns="emb_0003"))
    with pytest.raises(ModelError, match="one class"):
        SetRanker().fit(train, np.zeros(len(train)))
    with pytest.raises(ModelError, match="0/1"):
        SetRanker().fit(train, np.full(len(train), 2))
    with pytest.raises(TableError, match="DataFrame"):
        SetRanker().fit(train.to_numpy(), train["target"])
    inf = train.copy()
    inf.loc[inf.index[5], "emb_0002"] = np.inf
    with pytest.raises(TableError, match="'emb_0002' is infinite at row 5"):
        SetRanker().fit(inf)
    with pytest.raises(ModelError, match="random_state must be an int"):
        SetRanker(random_state=None).fit(train)  # type: ignore[arg-type]
    assert issubclass(TableError, DermctxError)


def test_one_lesion_patients_fit_and_score():
    table = make_ugly_duckling(120, lesions_per_patient=1, dim=3, melanoma_rate=0.3, random_state=0)
    table.loc[table.index[::3], "target"] = 1  # one-lesion patients keep their benign lesion
    est = SetRanker(**{**FAST, "max_epochs": 2}).fit(table)
    proba = est.predict_proba(table)
    assert proba.shape == (120, 2) and np.isfinite(proba).all()


# --- the synthetic generator ------------------------------------------------------------------


def test_make_ugly_duckling_table_shape_and_determinism():
    a = make_ugly_duckling(20, lesions_per_patient=5, dim=4, random_state=3)
    assert len(a) == 100 and a["patient_id"].nunique() == 20
    assert [c for c in a.columns if c.startswith("emb_")] == ["emb_0000", "emb_0001", "emb_0002", "emb_0003"]
    assert a["emb_0000"].dtype == np.float32
    assert set(a["target"]) <= {0, 1} and a["image_id"].is_unique
    pd.testing.assert_frame_equal(a, make_ugly_duckling(20, lesions_per_patient=5, dim=4, random_state=3))
    # every patient keeps a benign lesion, even at a high melanoma rate
    b = make_ugly_duckling(50, lesions_per_patient=(1, 3), melanoma_rate=0.9, random_state=0)
    assert (b.groupby("patient_id")["target"].min() == 0).all()
    for kwargs in ({"lesions_per_patient": (5, 2)}, {"melanoma_rate": 1.0}, {"dim": 0}):
        with pytest.raises(DermctxError):
            make_ugly_duckling(5, **kwargs)


def test_melanomas_are_outliers_within_patient_but_not_globally():
    t = make_ugly_duckling(2000, dim=6, lesions_per_patient=(5, 15), melanoma_rate=0.1, random_state=0)
    emb = t[[c for c in t.columns if c.startswith("emb_")]].to_numpy(float)
    mel = t["target"].to_numpy() == 1
    # the same marginal: per-dimension spread and the norm do not separate the classes
    np.testing.assert_allclose(emb[mel].std(0), emb[~mel].std(0), rtol=0.08)
    norm = np.linalg.norm(emb, axis=1)
    assert abs(roc_auc_score(mel, norm) - 0.5) < 0.03
    # within patient: melanomas lie far from the patient's mean
    centre = pd.DataFrame(emb).groupby(t["patient_id"].to_numpy()).transform("mean").to_numpy()
    dist = np.linalg.norm(emb - centre, axis=1)
    assert roc_auc_score(mel, dist) > 0.95


def test_split_of_a_large_patient_does_not_depend_on_the_other_patients():
    # sets above max_set_size are split at random when scored: the split must be seeded per
    # patient, so a patient scored alone gets the scores it gets in a batch
    table = make_ugly_duckling(30, lesions_per_patient=(12, 20), dim=4, melanoma_rate=0.2,
                               random_state=0)
    m = SetRanker(max_set_size=5, max_epochs=1, d_model=16, n_heads=2, n_inducing=2, n_blocks=1,
                  early_stopping=False, random_state=0).fit(table, table["target"])
    last = table["patient_id"].iloc[-1]
    both = m.decision_function(table)[(table["patient_id"] == last).to_numpy()]
    alone = m.decision_function(table[table["patient_id"] == last])
    np.testing.assert_allclose(alone, both, rtol=0, atol=1e-5)


def test_label_columns_are_refused_as_features():
    from dermctx import LeakageError
    from dermctx.synthetic import make_ugly_duckling

    table = make_ugly_duckling(20, dim=4, random_state=0)
    with pytest.raises(LeakageError, match="target"):
        SetRanker(features=["target"]).fit(table, table["target"])
