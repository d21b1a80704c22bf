"""Tests of dermctx.models.ranker.ContextRanker: the contract users rely on (small synthetic data)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from dermctx import metrics as M
from dermctx.errors import DermctxWarning, LeakageError, ModelError, TableError
from dermctx.models.folder import write_manifest
from dermctx.models.gbm import MetadataGBM
from dermctx.models.ranker import CORRECTION_GBM, ContextRanker

FAST = {"gbm": MetadataGBM(n_estimators=40, min_child_samples=20), "n_folds": 3}


def _clinic(n_patients: int = 120, seed: int = 0) -> pd.DataFrame:
    """Lesion table with a CNN score, metadata and image sizes.

    A melanoma is photographed at a size unlike its patient's other images (but common globally),
    so only the patient-relative size features can find it.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 12, n_patients)
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    n = len(pid)
    y = (rng.uniform(size=n) < 0.08).astype(int)
    logit = -3.0 + 1.5 * y + rng.normal(size=n)
    choices = np.array([6000, 1872, 4288])
    base = np.repeat(rng.integers(0, 3, n_patients), sizes)
    other = (base + rng.integers(1, 3, n)) % 3
    width = choices[np.where(y == 1, other, base)].astype(float)
    return pd.DataFrame({
        "image_id": [f"ISIC_{i:05d}" for i in range(n)],
        "patient_id": pid,
        "age": rng.uniform(20, 85, n).round(),
        "sex": rng.choice(["male", "female"], n),
        "site": rng.choice(["torso", "head/neck", "lower extremity", None], n),
        "cnn_score": 1 / (1 + np.exp(-logit)),
        "width": width,
        "height": (width * 2 / 3).round(),
        "diagnosis": np.where(y == 1, "melanoma", "nevus"),
        "target": y,
    })


@pytest.fixture(scope="module")
def clinic() -> pd.DataFrame:
    return _clinic()


@pytest.fixture(scope="module")
def fitted(clinic) -> ContextRanker:
    return ContextRanker(**FAST).fit(clinic, clinic["target"])


def test_predict_proba_in_input_order_and_calibrated(fitted, clinic):
    p = fitted.predict_proba(clinic)
    assert p.shape == (len(clinic), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    perm = np.random.default_rng(1).permutation(len(clinic))
    p_perm = fitted.predict_proba(clinic.iloc[perm])
    np.testing.assert_allclose(p_perm[:, 1], p[perm, 1], rtol=1e-10)
    assert p[:, 1].mean() == pytest.approx(clinic["target"].mean(), abs=0.03)
    assert len(fitted.oof_proba_) == len(clinic)


def test_reads_only_declared_inputs(fitted, clinic):
    assert list(fitted.feature_names_in_) == ["patient_id", "cnn_score", "age", "sex", "site"]
    # label-derived and undeclared columns in the table change nothing
    shuffled = clinic.assign(target=0, diagnosis="x", width=1.0, fold=3)
    np.testing.assert_array_equal(fitted.predict_proba(shuffled), fitted.predict_proba(clinic))
    with pytest.raises(TableError, match="'age'"):
        fitted.predict_proba(clinic.drop(columns="age"))


@pytest.mark.parametrize("col", ["diagnosis", "target", "fold", "tfrecord", "benign_malignant"])
def test_refuses_label_derived_inputs(clinic, col):
    table = clinic.assign(fold=0, tfrecord=1, benign_malignant="benign")
    with pytest.raises(LeakageError, match=col):
        ContextRanker(extra_features=[col], **FAST).fit(table, clinic["target"])
    with pytest.raises(LeakageError, match=col):
        ContextRanker(score_col=col, **FAST).fit(table, clinic["target"])


def test_image_size_only_when_asked(clinic):
    ranker = ContextRanker(use_image_size=True, **FAST).fit(clinic, clinic["target"])
    assert {"width", "height"} <= set(ranker.feature_names_in_)
    assert any(c.startswith("width__") or c.startswith("area__") for c in ranker.gbm_.feature_names_in_)
    p_size = ranker.predict_proba(clinic)[:, 1]
    p_plain = ContextRanker(**FAST).fit(clinic, clinic["target"]).predict_proba(clinic)[:, 1]
    # the planted size artefact is found only when image size is allowed in
    assert roc_auc_score(clinic["target"], p_size) > roc_auc_score(clinic["target"], p_plain) + 0.05
    with pytest.raises(TableError, match="width"):
        ContextRanker(use_image_size=True, **FAST).fit(clinic.drop(columns="width"), clinic["target"])


def test_save_load_round_trip_identical(fitted, clinic, tmp_path):
    fitted.save(tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["context_ranker.json", "gbm.txt", "manifest.json"]
    loaded = ContextRanker.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(clinic), fitted.predict_proba(clinic))
    def settings(r):  # every setting, the correction's (gbm__*) by value
        return {k: v for k, v in r.get_params(deep=True).items() if k != "gbm"}

    assert settings(loaded) == {**settings(fitted), "extra_features": [], "context_features": []}
    meta = json.loads((tmp_path / "model" / "context_ranker.json").read_text())
    meta["format"] = "pickle"
    (tmp_path / "model" / "context_ranker.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"context_ranker\.json: damaged or changed"):
        ContextRanker.load(tmp_path / "model")
    write_manifest(tmp_path / "model", ["context_ranker.json", "gbm.txt"], "ContextRanker")
    with pytest.raises(ModelError, match=r"not a dermctx\.ContextRanker"):
        ContextRanker.load(tmp_path / "model")
    with pytest.raises(ModelError, match="missing"):
        ContextRanker.load(tmp_path / "nothing")


def test_rank_accounts_for_every_row(fitted, clinic):
    bad = clinic.copy()
    bad.loc[3, "cnn_score"] = np.nan
    bad.loc[7, "cnn_score"] = -0.5
    bad.loc[9, "patient_id"] = " "
    with pytest.warns(DermctxWarning, match="lost lesions to the errors table.*ranked among themselves"):
        scores, errors = fitted.rank(bad)
    assert len(scores) + len(errors) == len(bad)
    assert list(errors["row"]) == [3, 7, 9]
    assert list(errors["image_id"]) == ["ISIC_00003", "ISIC_00007", "ISIC_00009"]
    assert "cnn_score" in errors["message"][1]
    assert list(scores["image_id"]) == [i for k, i in enumerate(clinic["image_id"]) if k not in (3, 7, 9)]
    first = scores[scores.patient_id == "P000"]
    assert first.loc[first.score.idxmax(), "patient_rank"] == 1
    with pytest.raises(TableError, match="rank\\(\\)"):
        fitted.predict_proba(bad)


def test_rank_lists_metadata_outside_the_vocabulary(fitted, clinic):
    bad = clinic.copy()
    bad["age"] = bad["age"].astype(object)
    bad.loc[2, "age"] = "abc"
    bad.loc[4, "age"] = 150
    bad.loc[5, "sex"] = "robot"
    bad.loc[6, "site"] = "elbow"
    bad.loc[8, "sex"] = None  # missing is allowed
    scores, errors = fitted.rank(bad)
    assert list(errors["row"]) == [2, 4, 5, 6]
    assert [m.split("'")[1] for m in errors["message"]] == ["age", "age", "sex", "site"]
    assert len(scores) + len(errors) == len(bad)


def test_score_patient_sorted_with_explanation(clinic):
    ranker = ContextRanker(use_image_size=True, **FAST).fit(clinic, clinic["target"])
    one = clinic[clinic.patient_id == clinic.patient_id[clinic.target == 1].iloc[0]]
    out = ranker.score_patient(one)
    assert list(out.columns) == ["image_id", "score", "rank", "raised_by", "raised_by_change",
                                 "lowered_by", "lowered_by_change", "explanation"]
    assert (np.diff(out["score"]) <= 0).all() and list(out["rank"]) == list(range(1, len(one) + 1))
    full = ranker.predict_proba(one)[:, 1]
    np.testing.assert_allclose(out.set_index("image_id").loc[one.image_id, "score"], full)
    # the explanation is a real leave-one-out change: check one entry by hand
    row = out.iloc[0]
    if row["raised_by"] is not None:
        rest = one[one.image_id != row["raised_by"]]
        without = ranker.predict_proba(rest)[:, 1][list(rest.image_id).index(row["image_id"])]
        assert row["score"] - without == pytest.approx(row["raised_by_change"])
    assert (out["raised_by_change"] >= 0).all() and (out["lowered_by_change"] <= 0).all()
    from dermctx.models.ranker import MIN_LOO_CHANGE  # a lesion is named only for a real effect

    for side in ("raised_by", "lowered_by"):
        named = out[side].notna()
        assert (named == (out[f"{side}_change"] != 0)).all()
        assert (out.loc[named, f"{side}_change"].abs() > MIN_LOO_CHANGE).all()
    # a melanoma photographed at another size than the patient's other image: that other image
    # is what raises its score (alone, nothing marks it as odd)
    pair = pd.concat([one[one.target == 0].iloc[:1], one[one.target == 1].iloc[:1]])
    expl = ranker.score_patient(pair).set_index("image_id")
    mel, other = pair.image_id.iloc[1], pair.image_id.iloc[0]
    assert expl.loc[mel, "raised_by"] == other and expl.loc[mel, "raised_by_change"] > 0.01
    single = ranker.score_patient(one.iloc[:1])
    assert single["raised_by"].isna().all() and single["rank"].tolist() == [1]
    with pytest.raises(TableError, match="one patient"):
        ranker.score_patient(clinic.iloc[:40])


def test_clone_deterministic_and_beats_nothing_worse_than_cnn(clinic):
    test = _clinic(80, seed=5)
    a = clone(ContextRanker(**FAST)).fit(clinic, clinic["target"]).predict_proba(test)
    b = ContextRanker(**FAST).fit(clinic, clinic["target"]).predict_proba(test)
    np.testing.assert_array_equal(a, b)
    assert roc_auc_score(test.target, a[:, 1]) > 0.75


def test_unfitted_and_bad_labels(clinic):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ContextRanker().predict_proba(clinic)
    with pytest.raises(TableError, match="one class"):
        ContextRanker(**FAST).fit(clinic, np.zeros(len(clinic)))
    with pytest.raises(LeakageError, match="'cnn_score' takes two values that are exactly the two classes"):
        ContextRanker(**FAST).fit(clinic.assign(cnn_score=clinic.target.astype(float)), clinic.target)
    with pytest.raises(TableError, match="neither"):
        ContextRanker(**FAST).fit(clinic.drop(columns="cnn_score"), clinic.target)


@pytest.mark.slow
def test_fits_the_shared_isic_lesions_in_under_a_minute(isic_dir):
    import time

    from dermctx.io.isic import read_isic2020

    oof = pd.read_csv(isic_dir / "oof_effnet_b1_dev.csv")
    meta = read_isic2020(isic_dir / "train_with_image_sizes.csv")
    table = meta.merge(oof.rename(columns={"image_name": "image_id", "pred": "cnn_score"})
                       [["image_id", "cnn_score"]], on="image_id")
    assert len(table) == 23_299
    t0 = time.perf_counter()
    ranker = ContextRanker(use_image_size=True).fit(table, table["target"])
    assert time.perf_counter() - t0 < 60
    assert roc_auc_score(table["target"], ranker.oof_proba_) > roc_auc_score(table["target"], table["cnn_score"])


def test_embeddings_give_the_ugly_duckling_gain():
    from dermctx.synthetic import make_ugly_duckling

    train = make_ugly_duckling(150, dim=8, random_state=0)
    test = make_ugly_duckling(100, dim=8, random_state=1)
    ranker = ContextRanker(score_col=None, **FAST).fit(train.drop(columns="target"), train["target"])
    assert "emb__lof" in ranker.gbm_.feature_names_in_
    assert roc_auc_score(test["target"], ranker.predict_proba(test)[:, 1]) > 0.9
    # the same GBM on the embeddings lesion by lesion cannot see it
    from dermctx.models.gbm import MetadataGBM

    emb = [c for c in train.columns if c.startswith("emb_")]
    per = MetadataGBM(n_estimators=40).fit(train[emb], train["target"])
    assert roc_auc_score(test["target"], per.predict_proba(test[emb])[:, 1]) < 0.65


def test_stacked_set_model_saves_with_safetensors(tmp_path):
    from dermctx.synthetic import make_ugly_duckling

    train = make_ugly_duckling(40, dim=4, lesions_per_patient=(3, 6), melanoma_rate=0.2, random_state=0)
    fast = {**FAST, "n_folds": 2}
    set_params = {"max_epochs": 1, "early_stopping": False, "d_model": 8}
    ranker = ContextRanker(score_col=None, use_set_model=True, set_model_params=set_params,
                           **fast).fit(train, train["target"])
    assert ranker.set_model_ is not None and ranker.offset_coef_[2] != 0
    ranker.save(tmp_path)
    # the set model's files carry SetRanker's own names, as SetRanker.save writes them
    assert (tmp_path / "set_ranker.safetensors").is_file() and (tmp_path / "set_ranker.json").is_file()
    assert not (tmp_path / "set_model.safetensors").exists()
    listed = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert {"set_ranker.safetensors", "set_ranker.json"} <= set(listed)
    loaded = ContextRanker.load(tmp_path)
    np.testing.assert_allclose(loaded.predict_proba(train), ranker.predict_proba(train), rtol=1e-6)

    # a folder saved before the rename (set_model.*, listed in its manifest) still loads
    old = tmp_path / "old"
    old.mkdir()
    for name in ("context_ranker.json", "gbm.txt"):
        (old / name).write_bytes((tmp_path / name).read_bytes())
    for new_name, old_name in (("set_ranker.safetensors", "set_model.safetensors"),
                               ("set_ranker.json", "set_model.json")):
        (old / old_name).write_bytes((tmp_path / new_name).read_bytes())
    write_manifest(old, ["context_ranker.json", "gbm.txt", "set_model.safetensors", "set_model.json"],
                   "ContextRanker")
    again = ContextRanker.load(old)
    np.testing.assert_allclose(again.predict_proba(train), ranker.predict_proba(train), rtol=1e-6)
    # a manifest that lists no set model's files is refused by name
    write_manifest(old, ["context_ranker.json", "gbm.txt"], "ContextRanker")
    with pytest.raises(ModelError, match=r"has a set model, but no set_ranker\.safetensors"):
        ContextRanker.load(old)


def test_cli_fit_and_score(clinic, tmp_path):
    from dermctx.cli import main

    clinic.drop(columns="diagnosis").to_csv(tmp_path / "train.csv", index=False)
    new = clinic.drop(columns=["diagnosis", "target"]).copy()
    new.loc[4, "cnn_score"] = np.nan
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--use-image-size"]) == 0
    assert main(["score", str(tmp_path / "new.csv"), "--model", str(tmp_path / "m"),
                 "--out", str(tmp_path / "scores.csv")]) == 1  # row 4 has no CNN score
    scores = pd.read_csv(tmp_path / "scores.csv")
    errors = pd.read_csv(tmp_path / "scores.errors.csv")
    assert len(scores) + len(errors) == len(new) and errors["row"].tolist() == [4]
    expected = ContextRanker.load(tmp_path / "m").rank(new)[0]
    np.testing.assert_allclose(scores["score"], expected["score"], rtol=1e-9)
    assert main(["score", str(tmp_path / "new.csv"), "--model", str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("check_name", [
    "check_no_attributes_set_in_init", "check_parameters_default_constructible",
    "check_get_params_invariance", "check_set_params",
])
def test_sklearn_checks_that_apply_to_a_table_estimator(check_name):
    # the other checks feed plain arrays; a ContextRanker needs a lesion table with patient_id
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check_name)("ContextRanker", ContextRanker())


def test_scores_do_not_depend_on_the_other_patients_in_the_batch(fitted, tmp_path):
    # context comes from the patient's own lesions: scoring patients one at a time, a subset, or
    # all together must give each lesion the same score (the z floor is fixed at fit)
    test = _clinic(40, seed=1)
    full = fitted.predict_proba(test)[:, 1]
    one_by_one = np.concatenate(
        [fitted.predict_proba(g)[:, 1] for _, g in test.groupby("patient_id", sort=False)]
    )
    np.testing.assert_allclose(one_by_one, full, rtol=0, atol=1e-12)
    first = test[test.patient_id == "P000"]
    alone = fitted.score_patient(first).set_index("image_id").loc[first.image_id, "score"]
    np.testing.assert_allclose(alone.to_numpy(), full[: len(first)], rtol=0, atol=1e-12)
    fitted.save(tmp_path / "m")
    loaded = ContextRanker.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(first)[:, 1], full[: len(first)])


def test_inner_folds_keep_a_lesion_whole_across_patient_ids(clinic):
    # lesion L1 was filed under two patient ids: the inner out-of-fold folds must not split it
    table = clinic.assign(lesion_id=[f"L{i}" for i in range(len(clinic))])
    pids = table["patient_id"].unique()
    table.loc[table.patient_id == pids[0], "lesion_id"] = "L1"
    table.loc[table.patient_id == pids[1], "lesion_id"] = "L1"
    ranker = ContextRanker(**FAST)
    for train, test in ranker._folds(table, table["target"].to_numpy()):
        on_test = set(table["lesion_id"].iloc[test])
        assert not on_test & set(table["lesion_id"].iloc[train])


def _phenotype_patients(n_patients: int, seed: int, *, outlier: bool) -> pd.DataFrame:
    """Each patient's lesions share a phenotype (a patient-level shift of the measurement); a
    melanoma is an outlier against its own patient's lesions (or, for the null, is not)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        base = rng.normal(0, 3)
        n = int(rng.integers(4, 12))
        mel = rng.random() < 0.4
        for j in range(n):
            is_mel = mel and j == 0
            x = base + rng.normal(0, 0.4) + (2.0 if is_mel and outlier else 0.0)
            rows.append({"image_id": f"{seed}_{p}_{j}", "patient_id": f"P{seed}_{p}", "area": x,
                         "target": int(is_mel), "age": 50.0, "sex": None, "site": None})
    return pd.DataFrame(rows)


def test_context_features_find_the_patient_relative_outlier():
    from dermctx.models.gbm import MetadataGBM

    train, test = _phenotype_patients(300, 1, outlier=True), _phenotype_patients(150, 2, outlier=True)
    ranker = ContextRanker(score_col=None, embedding_prefix=None, context_features=["area"],
                           gbm=MetadataGBM(**{**CORRECTION_GBM, "min_child_samples": 20})).fit(train, train["target"])
    context = ranker.predict_proba(test)[:, 1]
    raw = MetadataGBM(min_child_samples=20).fit(train[["area"]], train["target"]).predict_proba(test[["area"]])[:, 1]
    y, pid = test["target"], test["patient_id"]
    wp_context, wp_raw = M.within_patient_auc(y, context, pid).value, M.within_patient_auc(y, raw, pid).value
    assert wp_context > wp_raw + 0.2, (wp_context, wp_raw)
    assert M.auc(y, context) > M.auc(y, raw) + 0.1, (M.auc(y, context), M.auc(y, raw))
    with pytest.raises(LeakageError, match="'diagnosis'"):
        ContextRanker(context_features=["diagnosis"]).fit(train.assign(cnn_score=0.5, diagnosis="x"), train["target"])
    bad = test.assign(area=test["area"].astype(object))
    bad.loc[3, "area"] = "big"
    scores, errors = ranker.rank(bad)
    assert len(scores) == len(test) - 1 and "'area' is 'big'" in errors["message"].iloc[0]


def test_empty_tables(clinic):
    with pytest.raises(TableError, match="X has no rows"):
        ContextRanker(**FAST).fit(clinic.iloc[:0], clinic["target"].iloc[:0])
    ranker = ContextRanker(**FAST).fit(clinic, clinic["target"])
    assert ranker.predict_proba(clinic.iloc[:0]).shape == (0, 2)
    scores, errors = ranker.rank(clinic.iloc[:0])
    assert len(scores) == len(errors) == 0


def test_damaged_model_files_are_refused_before_parsing(clinic, tmp_path):
    ranker = ContextRanker(**FAST).fit(clinic, clinic["target"])
    ranker.save(tmp_path / "m")
    ContextRanker.load(tmp_path / "m")  # intact: loads
    text = (tmp_path / "m" / "gbm.txt").read_bytes()
    (tmp_path / "m" / "gbm.txt").write_bytes(text[: len(text) // 2])  # truncated
    with pytest.raises(ModelError, match=r"gbm\.txt: damaged or changed"):
        ContextRanker.load(tmp_path / "m")
    (tmp_path / "m" / "gbm.txt").write_bytes(text.replace(b"=", b"+", 1))  # one byte flipped
    with pytest.raises(ModelError, match="SHA-256 differs"):
        ContextRanker.load(tmp_path / "m")
    (tmp_path / "m" / "gbm.txt").unlink()
    with pytest.raises(ModelError, match=r"gbm\.txt: missing"):
        ContextRanker.load(tmp_path / "m")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("params.score_col", "target", "label"),  # an edited score column cannot read the label
    ("feature_names_in", ["patient_id", "cnn_score", "diagnosis"], "label"),
    ("offset_coef", [0.0, 1.0], "offset_coef"),
    ("calibration", ["a", 1], "calibration"),
    ("uses_cnn", "yes", "uses_cnn"),
    ("emb_cols", "emb_", "emb_cols"),
    ("within_patient_weight", 3.0, "within_patient_weight"),
    ("context_scales", {"cnn_logit": None}, "cnn_logit"),
    ("gbm.columns", "age", "columns"),
    ("params.n_trees", 5, "unknown setting"),
    ("feature_names_in", ["cnn_score"], "patient_id"),
])
def test_edited_model_json_is_refused_by_name(clinic, tmp_path, key, value, message):
    """A value of the wrong type, length or meaning, even with a re-signed manifest (an edit, not
    damage), is refused naming the key, never loaded into a model that scores from it."""
    ContextRanker(**FAST).fit(clinic, clinic["target"]).save(tmp_path / "m")
    path = tmp_path / "m" / "context_ranker.json"
    meta = json.loads(path.read_text())
    *outer, last = key.split(".")
    node = meta
    for k in outer:
        node = node[k]
    node[last] = value
    path.write_text(json.dumps(meta))
    write_manifest(tmp_path / "m", ["context_ranker.json", "gbm.txt"], "ContextRanker")
    with pytest.raises(ModelError, match=message):
        ContextRanker.load(tmp_path / "m")


def test_label_derived_is_a_deprecated_alias_of_label_columns():
    import dermctx.models.ranker as ranker_module
    from dermctx.label_guard import LABEL_COLUMNS

    with pytest.warns(FutureWarning, match="LABEL_DERIVED is deprecated, use "
                                           "dermctx.label_guard.LABEL_COLUMNS"):
        old = ranker_module.LABEL_DERIVED
    assert old == frozenset(LABEL_COLUMNS)
    assert "LABEL_DERIVED" not in ranker_module.__all__


def test_gbm_is_the_one_source_of_the_correction_settings(clinic, tmp_path):
    import warnings

    r = ContextRanker(gbm=MetadataGBM(n_estimators=25, num_leaves=5, class_weight="balanced"), n_folds=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        r.fit(clinic, clinic["target"])
    p = r.gbm_.get_params()
    assert (p["n_estimators"], p["num_leaves"], p["class_weight"]) == (25, 5, None)  # the ranker calibrates
    assert r.gbm_.booster_.num_trees() == 25
    r.save(tmp_path / "m")
    back = ContextRanker.load(tmp_path / "m")
    assert back.gbm.get_params()["n_estimators"] == 25
    np.testing.assert_allclose(back.decision_function(clinic), r.decision_function(clinic))
    with pytest.warns(FutureWarning, match="n_estimators=, num_leaves= deprecated"):
        old = ContextRanker(n_estimators=25, num_leaves=5, n_folds=3).fit(clinic, clinic["target"])
    same = ContextRanker(gbm=MetadataGBM(**{**CORRECTION_GBM, "n_estimators": 25, "num_leaves": 5}), n_folds=3)
    np.testing.assert_allclose(old.decision_function(clinic), same.fit(clinic, clinic["target"]).decision_function(clinic))
    assert ContextRanker().get_params()["gbm"] is None
    with pytest.raises(ModelError, match="expected a MetadataGBM"):
        ContextRanker(gbm={"n_estimators": 3}).fit(clinic, clinic["target"])


def test_cnn_scores_that_look_like_percentages_are_refused_as_a_column(fitted, clinic):
    # values above 1 but none above 100: the values below 1 would be misread, so no row is scored
    pct = clinic.assign(cnn_score=clinic["cnn_score"] * 100)
    for call in (lambda: fitted.rank(pct), lambda: fitted.predict_proba(pct),
                 lambda: ContextRanker().fit(pct, pct["target"])):
        with pytest.raises(TableError, match=r"looks like percentages.*divide the column by 100"):
            call()
    # a value above 100 is not a percentage, and a lone value above 1 is a typo: those rows alone are errors
    for value in (250.0, 2.0):
        odd = clinic.copy()
        odd.loc[2, "cnn_score"] = value
        scores, errors = fitted.rank(odd)
        assert list(errors["row"]) == [2] and len(scores) == len(odd) - 1
    assert "a percentage? divide the column by 100" in errors["message"][0]


def test_fit_refuses_labels_whose_index_disagrees_with_the_table(clinic):
    shuffled = clinic.sample(frac=1.0, random_state=0)
    with pytest.raises(TableError, match="index differs from X's"):
        ContextRanker().fit(shuffled, clinic["target"])
    a = ContextRanker().fit(shuffled, shuffled["target"])  # aligned: fine, and the same model
    b = ContextRanker().fit(shuffled, clinic["target"].reindex(shuffled.index))
    np.testing.assert_allclose(a.decision_function(clinic), b.decision_function(clinic), atol=1e-12)


def test_scoring_warns_when_a_fitted_input_is_missing_on_every_row(clinic):
    cols = ["size_mm"]
    t = clinic.assign(size_mm=np.random.default_rng(0).normal(5, 1, len(clinic)))
    model = ContextRanker(context_features=cols, gbm=MetadataGBM(n_estimators=20, min_child_samples=20),
                          n_folds=3).fit(t, t["target"])
    with pytest.warns(DermctxWarning, match=r"\['size_mm'\] are missing on all"):
        model.rank(t.assign(size_mm=np.nan))
    one = t[t["patient_id"] == t["patient_id"].iloc[0]]
    with pytest.warns(DermctxWarning, match=r"\['size_mm'\] are missing on all"):
        model.score_patient(one.assign(size_mm=np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        model.rank(t.assign(age=np.nan))  # metadata is often unknown: no warning


def test_column_names_lightgbm_refuses_are_kept_as_given(clinic, tmp_path):
    # JSON characters in a name ("Area [mm2]", "diameter, mm") are renamed for LightGBM only
    rng = np.random.default_rng(1)
    t = clinic.assign(**{"Area [mm2]": rng.normal(10, 2, len(clinic)), "diameter, mm": rng.normal(4, 1, len(clinic))})
    model = ContextRanker(context_features=["Area [mm2]", "diameter, mm"],
                          gbm=MetadataGBM(n_estimators=20, min_child_samples=20), n_folds=3).fit(t, t["target"])
    contrib = model.feature_contributions(t)
    assert {"Area [mm2]", "diameter, mm"} <= set(contrib.columns)
    model.save(tmp_path / "m")
    np.testing.assert_allclose(ContextRanker.load(tmp_path / "m").decision_function(t), model.decision_function(t),
                               atol=1e-12)
    two = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a b", "a_b"])
    gbm = MetadataGBM(n_estimators=5, min_child_samples=5).fit(two, rng.integers(0, 2, 60))
    assert list(MetadataGBM.from_state(*gbm.to_state()).feature_names_in_) == ["a b", "a_b"]


def test_several_images_of_one_lesion_are_flagged(fitted, clinic):
    # each image counts as a lesion of the patient's context: a second image of a lesion would be
    # its closest neighbour, so the user is told
    twice = pd.concat([clinic, clinic.iloc[[0]].assign(image_id="ISIC_copy")], ignore_index=True)
    twice["lesion_id"] = [f"L{i}" for i in range(len(clinic))] + ["L0"]
    with pytest.warns(DermctxWarning, match="1 lesion of the table has several images.*'L0'"):
        fitted.rank(twice)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        fitted.rank(clinic.assign(lesion_id=[f"L{i}" for i in range(len(clinic))]))


def test_a_copied_row_is_one_error_not_a_lost_lesion_or_a_second_image(fitted, clinic):
    copy = pd.concat([clinic, clinic.iloc[[0]]], ignore_index=True).assign(
        lesion_id=[f"L{i}" for i in range(len(clinic))] + ["L0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        scores, errors = fitted.rank(copy)
    assert list(errors["row"]) == [len(clinic)] and len(scores) == len(clinic)
    bad = clinic.copy()
    bad.loc[[3, 40], "cnn_score"] = np.nan  # two patients lose a lesion: both named
    with pytest.warns(DermctxWarning, match=r"2 patients lost lesions.*'P\d+' \(1 of \d+\), 'P\d+' \(1 of"):
        fitted.rank(bad)
