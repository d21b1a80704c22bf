"""The input-shift check: a measurement scored on another scale than the model was fitted on warns,
naming the column; unchanged held-out patients do not."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from dermctx.errors import DermctxWarning, ModelError
from dermctx.input_shift import InputDistribution
from dermctx.models.gbm import MetadataGBM
from dermctx.models.ranker import ContextRanker
from dermctx.synthetic import make_tbp_patients

FAST = {"gbm": MetadataGBM(n_estimators=40, min_child_samples=20), "n_folds": 3}
COLS = ["tbp_lv_areaMM2", "tbp_lv_deltaB", "tbp_lv_eccentricity", "tbp_lv_nevi_confidence"]


@pytest.fixture(scope="module")
def fitted() -> tuple[ContextRanker, pd.DataFrame]:
    train = make_tbp_patients(150, random_state=0)
    held_out = make_tbp_patients(12, random_state=1)
    ranker = ContextRanker(score_col=None, context_features=COLS, **FAST).fit(train, train["target"])
    return ranker, held_out


def _shift_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "Another unit, scale or method" in str(w.message)]


def test_a_column_on_another_scale_warns_and_unchanged_patients_do_not(fitted, tmp_path):
    ranker, held_out = fitted
    assert {c: d["scale"] for c, d in ranker.input_distribution_.columns.items()} == {
        "age": "linear", "tbp_lv_areaMM2": "log", "tbp_lv_deltaB": "linear", "tbp_lv_eccentricity": "logit",
        "tbp_lv_nevi_confidence": "linear"}  # positive, but left-skewed: log would not help
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranker.rank(held_out)
        for _, one in held_out.groupby("patient_id"):  # each patient alone, as a clinic scores
            ranker.score_patient(one)
    assert _shift_warnings(caught) == []
    one = held_out[held_out["patient_id"] == held_out["patient_id"].iloc[0]]
    cm = one.assign(tbp_lv_areaMM2=one["tbp_lv_areaMM2"] * 100)  # mm² sent as... another unit
    with pytest.warns(DermctxWarning, match=r"column 'tbp_lv_areaMM2': 1 patient of 1 here has a median far"):
        ranker.score_patient(cm)
    percent = held_out.assign(tbp_lv_eccentricity=held_out["tbp_lv_eccentricity"] * 100)
    with pytest.warns(DermctxWarning, match=r"column 'tbp_lv_eccentricity'.*outside \[0, 1\]") as caught:
        scores, errors = ranker.rank(percent)
    assert len(scores) == len(held_out) and len(errors) == 0  # warned, still scored
    assert len(_shift_warnings(caught)) == 1 and "tbp_lv_areaMM2" not in _shift_warnings(caught)[0]
    # the check survives save and load; a folder saved before it existed loads without it
    ranker.save(tmp_path / "m")
    loaded = ContextRanker.load(tmp_path / "m")
    with pytest.warns(DermctxWarning, match="tbp_lv_areaMM2"):
        loaded.decision_function(cm)
    meta = json.loads((tmp_path / "m" / "context_ranker.json").read_text())
    meta["input_distribution"]["tbp_lv_deltaB"]["values"][3] = -1e9  # not non-decreasing
    (tmp_path / "m" / "context_ranker.json").write_text(json.dumps(meta))
    from dermctx.models.folder import write_manifest

    write_manifest(tmp_path / "m", ["context_ranker.json", "gbm.txt"], "ContextRanker")
    with pytest.raises(ModelError, match=r"input_distribution: column 'tbp_lv_deltaB'"):
        ContextRanker.load(tmp_path / "m")
    del meta["input_distribution"]
    (tmp_path / "m" / "context_ranker.json").write_text(json.dumps(meta))
    write_manifest(tmp_path / "m", ["context_ranker.json", "gbm.txt"], "ContextRanker")
    older = ContextRanker.load(tmp_path / "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_scores = older.decision_function(cm)
    assert _shift_warnings(caught) == []  # nothing to compare with
    with pytest.warns(DermctxWarning, match="tbp_lv_areaMM2"):
        np.testing.assert_allclose(old_scores, loaded.decision_function(cm))


def test_patients_are_compared_with_patients_of_their_size_and_rows_refused_are_not_read():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 40, 200)
    pid = np.repeat([f"P{i}" for i in range(200)], sizes)
    phenotype = np.repeat(rng.normal(0, 0.3, 200), sizes)
    train = pd.DataFrame({"patient_id": pid, "a": np.exp(1 + phenotype + rng.normal(0, 1, len(pid)))})
    dist = InputDistribution.fit(train, ["a"])
    # one lesion at the far tail of the training lesions is no shift; a 30-lesion patient whose
    # median sits there is
    tail = float(np.quantile(train["a"], 0.995))
    assert dist.check(pd.DataFrame({"patient_id": ["X"], "a": [tail]})) == []
    big = pd.DataFrame({"patient_id": "Y", "a": tail * np.exp(rng.normal(0, 0.3, 30))})
    assert dist.check(big) and "1 patient of 1" in dist.check(big)[0]
    # a batch of many patients with the column multiplied by 5: the KS rule
    batch = train.assign(a=train["a"] * 5)
    assert any("Kolmogorov-Smirnov" in m for m in dist.check(batch))
    assert dist.check(train) == []
    # state round trip, and malformed states refused with the column named
    again = InputDistribution.from_state(json.loads(json.dumps(dist.to_state())))
    assert again.check(batch) == dist.check(batch)
    bad = dist.to_state()
    bad["a"]["scale"] = "cubic"
    with pytest.raises(ValueError, match="column 'a'"):
        InputDistribution.from_state(bad)
    # too few training patients: the column is not checked
    assert InputDistribution.fit(train[train["patient_id"].isin(["P1", "P2"])], ["a"]).columns == {}


def test_rank_reads_the_shift_of_the_rows_it_scores_only(fitted):
    ranker, held_out = fitted
    bad = held_out.copy()
    bad.loc[bad.index[0], "patient_id"] = ""  # refused: an error row, whatever its values
    bad.loc[bad.index[0], "tbp_lv_areaMM2"] = 1e9
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores, errors = ranker.rank(bad)
    assert len(scores) == len(bad) - 1
    assert len(errors) == 1 and _shift_warnings(caught) == []


def test_age_in_decades_warns(fitted):
    ranker, held_out = fitted
    assert "age" in ranker.input_distribution_.columns
    with pytest.warns(DermctxWarning, match="column 'age'"):
        ranker.rank(held_out.assign(age=held_out["age"] / 10))


def test_embeddings_on_another_scale_warn_through_their_length(tmp_path):
    from dermctx.synthetic import make_ugly_duckling

    train = make_ugly_duckling(150, dim=8, random_state=0)
    test = make_ugly_duckling(60, dim=8, random_state=1)
    ranker = ContextRanker(score_col=None, **FAST).fit(train.drop(columns="target"), train["target"])
    assert "length of emb_*" in ranker.input_distribution_.columns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranker.rank(test)
    assert _shift_warnings(caught) == []
    emb = [c for c in test.columns if c.startswith("emb_")]
    scaled = test.assign(**{c: test[c] * 10 for c in emb})  # another backbone's scale
    with pytest.warns(DermctxWarning, match=r"column 'length of emb_\*'"):
        ranker.rank(scaled)
    ranker.save(tmp_path / "m")  # saved and loaded with the model
    with pytest.warns(DermctxWarning, match=r"column 'length of emb_\*'"):
        ContextRanker.load(tmp_path / "m").rank(scaled)
