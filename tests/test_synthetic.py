"""make_tbp_patients: calibration, marginals, the planted deviation, the null, the label guard."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dermctx
from dermctx.errors import DermctxError, DermctxWarning, LeakageError
from dermctx.label_guard import LABEL_COLUMNS
from dermctx.synthetic import (
    PLANT_GROUPS,
    TBP_COLUMNS,
    TBP_DERIVED,
    load_tbp_calibration,
    make_tbp_patients,
    tbp_forward,
)
from dermctx.table import SEXES, SITES

ROOT = Path(__file__).resolve().parents[1]
CAL = load_tbp_calibration()
PRIMARY = [c for c in TBP_COLUMNS if c not in TBP_DERIVED]


@pytest.fixture(scope="module")
def outlier() -> pd.DataFrame:
    return make_tbp_patients(1500, random_state=3)  # about 85,000 lesions, 850 melanomas


@pytest.fixture(scope="module")
def null() -> pd.DataFrame:
    return make_tbp_patients(1500, mode="null", random_state=3)


def _transformed(table: pd.DataFrame, cols: list[str]) -> np.ndarray:
    return np.column_stack([tbp_forward(table[c].to_numpy(float), CAL["transforms"][c]) for c in cols])


def _icc(values: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """One-way ANOVA intraclass correlation of each column (balanced-size approximation)."""
    frame = pd.DataFrame(values).assign(p=patient)
    n_g = frame.groupby("p").size().to_numpy(float)
    means = frame.groupby("p").mean().to_numpy()
    k, n = len(n_g), len(frame)
    msb = (n_g[:, None] * (means - values.mean(axis=0)) ** 2).sum(axis=0) / (k - 1)
    msw = ((values - frame.groupby("p").transform("mean").to_numpy()) ** 2).sum(axis=0) / (n - k)
    n0 = (n - (n_g**2).sum() / n) / (k - 1)
    between = (msb - msw) / n0
    return between / (between + msw)


def test_calibration_file_is_what_the_script_derives(shared_data):
    csv = shared_data / "isic2024" / "isic2024_train_subset_1954.csv"
    if not csv.exists():
        pytest.skip(f"real data not available: {csv} is missing")
    spec = importlib.util.spec_from_file_location("make_tbp_calibration",
                                                  ROOT / "benchmarks" / "make_tbp_calibration.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    derived = script.derive(csv)
    stored = (ROOT / "dermctx" / "data" / "tbp_calibration.json").read_text(encoding="utf-8")
    assert script.dumps(derived) == stored
    assert derived["classes"]["benign"]["n"] == 977 and derived["classes"]["malignant"]["n"] == 393
    assert derived["columns"] == list(TBP_COLUMNS) and len(TBP_COLUMNS) == 33


def test_calibration_is_small_and_complete():
    path = ROOT / "dermctx" / "data" / "tbp_calibration.json"
    assert path.stat().st_size < 100_000
    assert "tbp_lv_dnn_lesion_confidence" not in CAL["columns"]  # label-derived in ISIC 2024
    share = np.asarray(CAL["phenotype_share"]["share"])
    assert share.shape == (33,) and np.all((share >= 0) & (share <= 0.9))
    for name in ("benign", "melanoma", "malignant"):
        corr = np.asarray(CAL["classes"][name]["corr"])
        assert corr.shape == (33, 33) and np.allclose(np.diag(corr), 1.0)
        assert np.linalg.eigvalsh(corr).min() > -1e-3  # positive semi-definite up to rounding


def test_benign_marginals_match_the_calibration(outlier):
    ben = outlier[outlier["target"] == 0]
    x = _transformed(ben, PRIMARY)
    index = [CAL["columns"].index(c) for c in PRIMARY]
    offsets = {s: np.asarray(o)[index] for s, o in CAL["site_offset"].items()}
    site_offset = np.vstack([offsets[s] for s in ben["site_detail"].fillna(CAL["sites"][0])])
    known = ben["site_detail"].notna().to_numpy()
    mean = (x - site_offset)[known].mean(axis=0)
    sd = (x - site_offset)[known].std(axis=0)
    cal_mean = np.asarray(CAL["classes"]["benign"]["mean"])[index]
    cal_sd = np.asarray(CAL["classes"]["benign"]["sd"])[index]
    np.testing.assert_array_less(np.abs(mean - cal_mean) / cal_sd, 0.08)
    np.testing.assert_allclose(sd, cal_sd, rtol=0.1)
    # every value within the real range of its column (the derived columns are recomputed)
    for c in PRIMARY:
        lo, hi = CAL["range"][c]
        assert outlier[c].min() >= lo and outlier[c].max() <= hi, c
    np.testing.assert_allclose(outlier["tbp_lv_C"], np.hypot(outlier["tbp_lv_A"], outlier["tbp_lv_B"]))
    np.testing.assert_allclose(outlier["tbp_lv_deltaL"], outlier["tbp_lv_L"] - outlier["tbp_lv_Lext"])
    assert (outlier["tbp_lv_deltaL"] < 0).all()  # lesions are darker than the skin, as in the data
    assert set(np.unique(outlier["tbp_lv_symm_2axis_angle"] % 5)) == {0.0}


def test_benign_lesions_share_their_patients_phenotype(outlier):
    ben = outlier[outlier["target"] == 0]
    cols = ["tbp_lv_Lext", "tbp_lv_areaMM2", "tbp_lv_x"]
    icc = _icc(_transformed(ben, cols), ben["patient_id"].to_numpy())
    share = np.asarray(CAL["phenotype_share"]["share"])[[CAL["columns"].index(c) for c in cols]]
    # skin lightness is shared within a patient (~0.46), lesion size less (~0.16), left/right not
    np.testing.assert_allclose(icc, share, atol=0.07)
    assert icc[0] > 0.3 and icc[2] < 0.05


def test_planted_deviation_is_recorded_and_visible(outlier):
    mel = outlier[outlier["target"] == 1]
    ben = outlier[outlier["target"] == 0]
    assert len(mel) > 500
    plantable = {c for group in PLANT_GROUPS.values() for c in group}
    assert set(mel["planted_feature"]) <= plantable and (mel["planted_feature"] != "").all()
    assert set(mel["planted_direction"]) <= {-1, 1}
    assert (ben["planted_feature"] == "").all() and (ben["planted_direction"] == 0).all()
    assert mel["planted_feature"].nunique() >= 8  # deviations spread over several features
    # the planted feature deviates from the patient's own benign median in the recorded direction
    hits = []
    for feature, rows in mel.groupby("planted_feature"):
        median = ben.groupby("patient_id")[feature].median()
        hits.append(np.sign(rows[feature] - rows["patient_id"].map(median)) == rows["planted_direction"])
    share = pd.concat(hits).mean()
    assert share > 0.85, share
    # size is planted upwards and hue downwards, as melanomas differ from benign lesions in the data
    assert (mel.loc[mel["planted_feature"] == "tbp_lv_areaMM2", "planted_direction"] == 1).all()
    assert (mel.loc[mel["planted_feature"] == "tbp_lv_deltaL", "planted_direction"] == -1).all()


def test_planting_nothing_leaves_benign_draws():
    table = make_tbp_patients(300, deviation_sd=0.0, melanoma_rate=0.05, random_state=1)
    mel = table[table["target"] == 1]
    assert len(mel) > 100 and (mel["planted_feature"] == "").all() and (mel["planted_direction"] == 0).all()
    ben = table[table["target"] == 0]
    size = np.log(table["tbp_lv_areaMM2"])
    assert abs(size[mel.index].mean() - size[ben.index].mean()) < 0.15


def test_null_mode_has_no_patient_relative_signal(outlier, null):
    assert (null["planted_feature"] == "").all() and (null["planted_direction"] == 0).all()
    ben = null[null["target"] == 0]
    icc = _icc(_transformed(ben, PRIMARY), ben["patient_id"].to_numpy())
    assert np.abs(icc).max() < 0.03  # benign means do not vary between patients beyond noise
    # a melanoma's skin colour follows its own patient's skin in the outlier mode, not in the null
    corr = {}
    for name, table in (("outlier", outlier), ("null", null)):
        mel = table[table["target"] == 1]
        skin = table[table["target"] == 0].groupby("patient_id")["tbp_lv_Lext"].mean()
        corr[name] = np.corrcoef(mel["tbp_lv_Lext"], mel["patient_id"].map(skin))[0, 1]
    assert corr["outlier"] > 0.4 and abs(corr["null"]) < 0.12, corr
    # per-lesion signal only: melanomas are larger and more irregular in colour than benign lesions
    mel = null[null["target"] == 1]
    for col in ("tbp_lv_areaMM2", "tbp_lv_color_std_mean", "tbp_lv_norm_color"):
        assert mel[col].median() > ben[col].median(), col


def test_lesion_and_melanoma_counts(outlier):
    per = outlier.groupby("patient_id").agg(n=("target", "size"), mel=("target", "sum"))
    assert per["n"].between(5, 300).all() and 30 <= per["n"].median() <= 50
    assert per["mel"].max() <= 5 and (per["mel"] <= per["n"] // 2).all()
    assert 0.5 < (per["mel"] == 0).mean() < 0.85
    assert abs(outlier["target"].mean() - 0.01) < 0.002
    fixed = make_tbp_patients(20, lesions_per_patient=12, random_state=0)
    assert (fixed.groupby("patient_id").size() == 12).all()
    ranged = make_tbp_patients(50, lesions_per_patient=(8, 10), random_state=0)
    assert ranged.groupby("patient_id").size().between(8, 10).all()


def test_table_is_valid_and_vocabularies_canonical():
    table = make_tbp_patients(300, random_state=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        valid = dermctx.validate_table(table, labelled=True, name="synthetic")
    assert len(valid) == len(table)
    assert set(table["site"].dropna()) <= set(SITES) and set(table["sex"].dropna()) <= set(SEXES)
    assert table[list(TBP_COLUMNS)].dtypes.eq(np.float64).all()
    assert table["image_id"].is_unique and set(table["target"]) == {0, 1}
    assert {"image_id", "patient_id", "lesion_id", "target", "age", "sex", "site"} <= set(table.columns)
    # missing values as in the real benign rows: a few ages, sexes and sites, no tbp_lv_* values
    assert table[list(TBP_COLUMNS)].notna().all().all()
    assert table["site"].isna().any() and table["sex"].isna().any()
    assert table["site"].isna().mean() < 0.05


def test_same_seed_same_table_and_seeds_do_not_collide():
    a = make_tbp_patients(40, random_state=7)
    pd.testing.assert_frame_equal(a, make_tbp_patients(40, random_state=7))
    b = make_tbp_patients(40, random_state=8)
    assert not set(a["patient_id"]) & set(b["patient_id"])
    assert not np.allclose(a["tbp_lv_A"].to_numpy()[:100], b["tbp_lv_A"].to_numpy()[:100])
    n1 = make_tbp_patients(40, mode="null", random_state=7)
    pd.testing.assert_frame_equal(n1, make_tbp_patients(40, mode="null", random_state=7))


def test_planted_columns_are_refused_as_inputs():
    assert "planted_feature" in LABEL_COLUMNS and "planted_direction" in LABEL_COLUMNS
    table = make_tbp_patients(60, melanoma_rate=0.05, random_state=0)
    ranker = dermctx.ContextRanker(score_col=None, context_features=["planted_direction"])
    with pytest.raises(LeakageError, match="planted_direction"):
        ranker.fit(table, table["target"])
    ranker = dermctx.ContextRanker(score_col=None, context_features=["tbp_lv_areaMM2"],
                                   extra_features=["planted_feature"])
    with pytest.raises(LeakageError, match="planted_feature"):
        ranker.fit(table, table["target"])


def test_bad_arguments_are_refused():
    with pytest.raises(DermctxError, match="phenotype"):
        make_tbp_patients(10, mode="null", phenotype_share=0.3)
    with pytest.raises(DermctxError, match="mode"):
        make_tbp_patients(10, mode="outliers")  # type: ignore[arg-type]
    with pytest.raises(DermctxError, match="lesions_per_patient"):
        make_tbp_patients(10, lesions_per_patient=(0, 3))
    with pytest.raises(DermctxError, match="melanoma_rate"):
        make_tbp_patients(10, melanoma_rate=0.7)
    with pytest.raises(DermctxError, match="deviation_sd"):
        make_tbp_patients(10, deviation_sd=-1.0)
    with pytest.raises(DermctxError, match="n_patients"):
        make_tbp_patients(0)


def test_phenotype_share_and_malignant_options():
    shared = make_tbp_patients(400, phenotype_share=0.8, random_state=2)
    ben = shared[shared["target"] == 0]
    icc = _icc(_transformed(ben, ["tbp_lv_areaMM2"]), ben["patient_id"].to_numpy())
    assert icc[0] > 0.7
    everything = make_tbp_patients(400, mode="null", malignant="all", random_state=2)
    mel = everything[everything["target"] == 1]
    # ISIC 2024's malignant rows are 40% basal cell carcinomas, many on the head and neck
    assert (mel["site"] == "head/neck").mean() > 0.1


def test_oracle_log_odds_rank_better_than_a_model_fitted_on_the_same_rows():
    """``oracle=True`` adds the generator's own log odds without changing the draw; they rank lesions,
    within each patient and pooled, better than a per-lesion model fitted on these very rows (in
    sample, so the model is flattered), and they are refused as an input."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    plain = make_tbp_patients(600, melanoma_rate=0.03, random_state=5)
    table = make_tbp_patients(600, melanoma_rate=0.03, random_state=5, oracle=True)
    pd.testing.assert_frame_equal(plain, table.drop(columns="oracle_log_odds"))
    y, pid, oracle = table["target"], table["patient_id"], table["oracle_log_odds"]
    assert np.isfinite(oracle).all()
    x = _transformed(table, PRIMARY)
    fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y).decision_function(x)
    assert dermctx.metrics.auc(y, oracle) > dermctx.metrics.auc(y, fitted) + 0.01
    assert (dermctx.metrics.within_patient_auc(y, oracle, pid).value
            > dermctx.metrics.within_patient_auc(y, fitted, pid).value + 0.01)
    assert "oracle_log_odds" in LABEL_COLUMNS
    ranker = dermctx.ContextRanker(score_col=None, context_features=["tbp_lv_areaMM2"],
                                   extra_features=["oracle_log_odds"])
    with pytest.raises(LeakageError, match="oracle_log_odds"):
        ranker.fit(table, y)


def test_oracle_without_a_planted_deviation_knows_only_the_patient_and_the_site():
    table = make_tbp_patients(200, deviation_sd=0.0, melanoma_rate=0.05, random_state=1, oracle=True)
    assert (table.groupby(["patient_id", "site_detail"])["oracle_log_odds"].nunique() == 1).all()
    null = make_tbp_patients(300, mode="null", melanoma_rate=0.05, random_state=1, oracle=True)
    # the null's melanomas come from another Gaussian: its log likelihood ratio separates them
    assert dermctx.metrics.auc(null["target"], null["oracle_log_odds"]) > 0.95


def test_a_draw_without_melanomas_is_warned_about():
    with pytest.warns(DermctxWarning, match="no melanoma was drawn"):
        table = make_tbp_patients(50, lesions_per_patient=1, random_state=0)
    assert table["target"].sum() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        make_tbp_patients(50, melanoma_rate=0.0, random_state=0)  # asked for none: nothing to say


def test_a_column_that_alone_separates_the_labels_is_warned_about():
    """The oracle renamed, or a CNN's in-sample scores, order the training labels almost perfectly:
    warned about by name (the name check cannot see a renamed column); real measurements are not."""
    table = make_tbp_patients(300, mode="null", melanoma_rate=0.05, random_state=1, oracle=True)
    renamed = table.rename(columns={"oracle_log_odds": "risk_index"})
    ranker = dermctx.ContextRanker(score_col=None, context_features=["tbp_lv_areaMM2"],
                                   extra_features=["risk_index"], n_folds=3)
    with pytest.warns(DermctxWarning, match=r"'risk_index' \(AUC 0\.99"):
        ranker.fit(renamed.drop(columns=["planted_feature", "planted_direction"]), renamed["target"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        dermctx.MetadataGBM(n_estimators=20).fit(table[list(PRIMARY)], table["target"])


def test_real_measurements_and_out_of_fold_cnn_scores_are_not_near_perfect(shared_data):
    from dermctx.label_guard import check_feature_columns

    rows = pd.read_csv(shared_data / "isic2024" / "isic2024_train_subset_1954.csv", low_memory=False)
    rows = rows[rows["tbp_lv_areaMM2"].notna()]
    cols = [c for c in TBP_COLUMNS if c in rows.columns]
    oof = pd.read_csv(shared_data / "isic2020" / "oof_effnet_b1_dev.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        check_feature_columns(rows, rows["target"].to_numpy(), cols, who="test")
        score = [c for c in oof.columns if c not in ("image_name", "image_id", "patient_id", "target", "fold")]
        check_feature_columns(oof, oof["target"].to_numpy(), score, who="test")


def test_every_leaking_column_is_named_in_one_refusal():
    table = make_tbp_patients(200, melanoma_rate=0.1, random_state=2)
    cols = ["tbp_lv_areaMM2", "tbp_lv_norm_color", "tbp_lv_deltaB"]
    appended = table["target"].to_numpy() == 1
    appended[np.flatnonzero(appended)[::2]] = False  # half the melanomas came without measurements
    table.loc[appended, cols] = np.nan
    with pytest.raises(LeakageError, match=r"'tbp_lv_areaMM2' is missing on .*2 more column\(s\) leak too: "
                                           r"\['tbp_lv_norm_color', 'tbp_lv_deltaB'\]"):
        dermctx.MetadataGBM(n_estimators=10).fit(table[cols], table["target"])
