"""PatientKFold and check_leakage: no patient, lesion or duplicate group on both sides, ever."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from dermctx import DermctxError, LeakageError, PatientKFold, check_leakage
from dermctx.splits import patient_groups


def _table(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, n_patients)
    pid = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    n = len(pid)
    return pd.DataFrame(
        {
            "image_id": [f"I{i:04d}" for i in range(n)],
            "patient_id": pid,
            "lesion_id": [f"L{i:04d}" for i in range(n)],
            "target": (rng.random(n) < 0.2).astype(int),
            "source": "isic2020",
        }
    )


# --- groups -------------------------------------------------------------------------------------


def test_groups_merge_patients_linked_by_lesions_and_duplicates():
    table = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e", "f"],
            "patient_id": ["P1", "P1", "P2", "P3", "P4", "P5"],
            "lesion_id": ["L1", "L2", "L3", "L3", "L4", None],  # L3 links P2 and P3
        }
    )
    dup = pd.DataFrame({"image_name_1": ["e"], "image_name_2": ["a"]})  # links P4 to P1
    assert patient_groups(table).tolist() == [0, 0, 1, 1, 2, 3]
    assert patient_groups(table, duplicates=dup).tolist() == [0, 0, 1, 1, 0, 2]
    # ISIC train/test layout; pairs naming images not in the table are ignored
    dup2 = pd.DataFrame({"ISIC_id": ["f", "zz"], "ISIC_id_paired": ["c", "a"], "partition": "test"})
    assert patient_groups(table, duplicates=dup2).tolist() == [0, 0, 1, 1, 2, 1]


# --- PatientKFold -------------------------------------------------------------------------------


def test_split_covers_every_row_once_and_is_deterministic():
    table = _table()
    cv = PatientKFold(4, random_state=0)
    folds = list(cv.split(table))
    assert len(folds) == cv.get_n_splits() == 4
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(table)))
    for tr, te in folds:
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(table)
        assert not set(table["patient_id"].iloc[tr]) & set(table["patient_id"].iloc[te])
    again = [te.tolist() for _, te in PatientKFold(4, random_state=0).split(table)]
    assert again == [te.tolist() for _, te in folds]
    other = [te.tolist() for _, te in PatientKFold(4, random_state=1).split(table)]
    assert other != again


def test_split_balances_melanomas():
    table = _table(n_patients=200, seed=1)
    fold = PatientKFold(5, random_state=0).assign(table)
    per_fold = np.bincount(fold, weights=table["target"], minlength=5)
    assert per_fold.max() - per_fold.min() <= 2
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 9  # at most one patient's worth (<= 9 images) apart


def test_arrays_with_groups_and_sklearn_cross_val_score():
    table = _table()
    X = np.random.default_rng(0).normal(size=(len(table), 3))
    y = table["target"].to_numpy()
    scores = cross_val_score(
        LogisticRegression(),
        X,
        y,
        groups=table["patient_id"],
        cv=PatientKFold(3, random_state=0),
        scoring="roc_auc",
    )
    assert scores.shape == (3,)
    for tr, te in PatientKFold(3, random_state=0).split(X, y, groups=table["patient_id"]):
        assert not set(table["patient_id"].iloc[tr]) & set(table["patient_id"].iloc[te])


def test_errors_name_the_problem():
    table = _table(n_patients=3)
    with pytest.raises(DermctxError, match="n_splits=5 is more than the 3 patient groups"):
        list(PatientKFold(5, random_state=0).split(table))
    with pytest.raises(DermctxError, match="n_splits must be an int >= 2"):
        list(PatientKFold(1).split(table))
    with pytest.raises(DermctxError, match="pass groups="):
        list(PatientKFold(2).split(np.zeros((4, 2))))
    with pytest.raises(DermctxError, match="random_state has no effect"):
        list(PatientKFold(2, shuffle=False, random_state=0).split(table))
    bad = table.copy()
    bad.loc[1, "patient_id"] = None
    with pytest.raises(DermctxError, match="'patient_id' is empty at row 1"):
        list(PatientKFold(2).split(bad))
    bad = _table()
    bad.loc[2, "target"] = 3
    with pytest.raises(
        DermctxError, match="column 'target' has values other than 0/1 at rows \\[2\\]"
    ):
        list(PatientKFold(2).split(bad))
    good = _table()
    with pytest.raises(DermctxError, match=r"y has values other than 0/1 at rows \[0\]"):
        list(PatientKFold(2).split(good, y=["mel"] + [0] * (len(good) - 1)))


def test_warns_without_patient_context_and_when_melanomas_are_scarce():
    table = _table()
    table["source"] = "ham10000"
    with pytest.warns(UserWarning, match="no real patient ids"):
        list(PatientKFold(3, random_state=0).split(table))
    table = _table()
    table["target"] = 0
    table.loc[0, "target"] = 1
    with pytest.warns(UserWarning, match="only 1 melanoma"):
        list(PatientKFold(3, random_state=0).split(table))


def test_unlabelled_table_splits_by_size():
    table = _table().drop(columns="target")
    fold = PatientKFold(3, random_state=0).assign(table)
    assert set(fold) == {0, 1, 2}


# --- property: random tables whose lesions and duplicates cross patients --------------------------


@st.composite
def tangled_tables(draw):
    n = draw(st.integers(min_value=6, max_value=60))
    n_pat = draw(st.integers(min_value=3, max_value=n))
    patient = draw(st.lists(st.integers(0, n_pat - 1), min_size=n, max_size=n))
    # lesion ids drawn independently of patients: a lesion may cross patients
    lesion = draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
    target = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=n // 2))
    table = pd.DataFrame(
        {
            "image_id": [f"I{i}" for i in range(n)],
            "patient_id": [f"P{p}" for p in patient],
            "lesion_id": [f"L{v}" for v in lesion],
            "target": target,
        }
    )
    dup = pd.DataFrame(
        {"image_id_1": [f"I{a}" for a, _ in pairs], "image_id_2": [f"I{b}" for _, b in pairs]},
        dtype=object,
    )
    return table, dup, draw(st.integers(0, 2**16))


@pytest.mark.filterwarnings("ignore:PatientKFold. only")
@pytest.mark.filterwarnings("ignore::dermctx.errors.DermctxWarning")  # lesions cross patients on purpose
@settings(max_examples=80, deadline=None)
@given(tangled_tables(), st.integers(2, 4))
def test_property_no_leak_on_tangled_tables(case, k):
    table, dup, seed = case
    n_groups = patient_groups(table, duplicates=dup).max() + 1
    if n_groups < k:
        with pytest.raises(DermctxError, match="more than the"):
            list(PatientKFold(k, random_state=seed, duplicates=dup).split(table))
        return
    seen = np.zeros(len(table), dtype=int)
    for tr, te in PatientKFold(k, random_state=seed, duplicates=dup).split(table):
        seen[te] += 1
        check_leakage(table.iloc[tr], table.iloc[te], duplicates=dup)  # raises on any leak
    assert (seen == 1).all()


# --- check_leakage ------------------------------------------------------------------------------


def test_check_leakage_names_shared_patients_lesions_and_pairs():
    train = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "patient_id": ["P1", "P2", "P3"],
            "lesion_id": ["L1", "L2", "L3"],
        }
    )
    test = pd.DataFrame(
        {
            "image_id": ["d", "e", "f"],
            "patient_id": ["P1", "P4", "P5"],
            "lesion_id": ["L9", "L2", "L8"],
        }
    )
    dup = pd.DataFrame({"image_name_1": ["f", "b"], "image_name_2": ["c", "e"]})
    with pytest.raises(LeakageError) as err:
        check_leakage(train, test, duplicates=dup)
    message = str(err.value)
    assert "1 patients (P1)" in message
    assert "1 lesions (L2)" in message
    assert "2 duplicate pairs (b~e, c~f)" in message
    clean = check_leakage(train.iloc[1:], test.iloc[2:].assign(lesion_id="L8"))
    assert (clean.n_train, clean.n_test, clean.train_patients, clean.test_patients) == (2, 1, 2, 1)
    with pytest.raises(LeakageError, match="duplicate pairs"):
        check_leakage(train.iloc[1:], test.iloc[2:], duplicates=dup)


# --- real data ----------------------------------------------------------------------------------


def _isic(path):
    return pd.read_csv(path).rename(columns={"image_name": "image_id"})


def test_isic2020_folds_balance_melanoma_rate(isic_dir):
    table = _isic(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv")
    dup = pd.read_csv(isic_dir / "ISIC_2020_Challenge_Duplicates_train_test.csv")
    start = time.perf_counter()
    cv = PatientKFold(5, random_state=0, duplicates=dup)
    folds = list(cv.split(table))
    assert time.perf_counter() - start < 3
    overall = table["target"].mean()
    for tr, te in folds:
        rate = table["target"].iloc[te].mean()
        assert abs(rate / overall - 1) < 0.15
        check_leakage(table.iloc[tr], table.iloc[te], duplicates=dup)


def test_isic2020_test_set_duplicates_linking_two_patients_stay_together(isic_dir):
    table = _isic(isic_dir / "test.csv")
    dup = pd.read_csv(isic_dir / "ISIC_2020_Challenge_Duplicates_train_test.csv")
    dup = dup[dup["partition"] == "test"]
    pid = table.set_index("image_id")["patient_id"]
    crossing = dup[
        pid.reindex(dup["ISIC_id"]).to_numpy() != pid.reindex(dup["ISIC_id_paired"]).to_numpy()
    ]
    assert len(crossing) == 10  # the README's count: ten pairs link two patient ids
    groups = patient_groups(table, duplicates=dup)
    assert groups.max() + 1 < table["patient_id"].nunique()  # linked patients merged
    for seed in range(3):
        fold = pd.Series(
            PatientKFold(5, random_state=seed, duplicates=dup).assign(table),
            index=table["image_id"],
        )
        assert (
            fold[crossing["ISIC_id"]].to_numpy() == fold[crossing["ISIC_id_paired"]].to_numpy()
        ).all()
    # without duplicates=, a patient split cannot see the link: some of the ten pairs get split
    split_pairs = 0
    for seed in range(3):
        fold = pd.Series(PatientKFold(5, random_state=seed).assign(table), index=table["image_id"])
        split_pairs += int(
            (
                fold[crossing["ISIC_id"]].to_numpy() != fold[crossing["ISIC_id_paired"]].to_numpy()
            ).sum()
        )
    assert split_pairs > 0


# --- command line -------------------------------------------------------------------------------

def test_cli_split_writes_one_fold_per_image(tmp_path, capsys):
    from dermctx.cli import main

    table = _table(n_patients=12)
    table.to_csv(tmp_path / "table.csv", index=False)
    pd.DataFrame({"image_name_1": ["I0000"], "image_name_2": [table["image_id"].iloc[-1]]}).to_csv(
        tmp_path / "dup.csv", index=False
    )
    out = tmp_path / "folds.csv"
    code = main(["split", str(tmp_path / "table.csv"), "--folds", "3", "--duplicates",
                 str(tmp_path / "dup.csv"), "--out", str(out)])
    assert code == 0
    folds = pd.read_csv(out, dtype={"image_id": str, "patient_id": str})
    assert folds["image_id"].tolist() == table["image_id"].tolist()
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    # the duplicate pair links the first and the last patient: same fold
    assert folds["fold"].iloc[0] == folds["fold"].iloc[-1]
    assert "fold 2:" in capsys.readouterr().err
    assert main(["split", str(tmp_path / "table.csv"), "--folds", "50"]) == 2


def test_folds_do_not_depend_on_row_order():
    rng = np.random.default_rng(7)
    n = 400
    table = pd.DataFrame({
        "image_id": [f"I{i:04d}" for i in range(n)],
        "patient_id": [f"P{p:03d}" for p in rng.integers(0, 80, n)],
        "target": (rng.random(n) < 0.1).astype(int),
    })
    folds = PatientKFold(5, random_state=3).assign(table)
    order = rng.permutation(n)
    shuffled = table.iloc[order].reset_index(drop=True)
    folds_shuffled = PatientKFold(5, random_state=3).assign(shuffled)
    by_image = dict(zip(table["image_id"], folds, strict=True))
    assert [by_image[i] for i in shuffled["image_id"]] == list(folds_shuffled)


def test_check_fold_leakage_sees_patients_and_duplicate_pairs_across_folds():
    from dermctx.errors import LeakageError
    from dermctx.splits import check_fold_leakage

    t = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "patient_id": ["P1", "P1", "P2", "P3"]})
    check_fold_leakage(t, [0, 0, 1, 1])  # each patient whole: nothing to say
    with pytest.raises(LeakageError, match=r"1 patient group.*'P1'"):
        check_fold_leakage(t, [0, 1, 1, 1])
    pairs = pd.DataFrame({"image_id_1": ["c"], "image_id_2": ["d"]})  # P2 and P3 share an image
    with pytest.raises(LeakageError, match="more than one fold"):
        check_fold_leakage(t, [0, 0, 1, 2], duplicates=pairs)
