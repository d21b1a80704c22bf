"""The inputs of ``../shared/fieldcases`` (see its README), each as a test of its whole kind of fault.

The DICOM cases (``dicom_from_other_tools``, ``exif_orientation``) are in
``test_io_dicom_fieldcases.py``. Every test skips with a reason when ``../shared`` is absent.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import dermctx
from dermctx import DermctxWarning, TableError, read_table, validate_table
from dermctx.cli import main
from dermctx.cohort import S_LESIONS, S_SITE, cohort_counts
from dermctx.splits import PatientKFold

# --- placeholder patient ids --------------------------------------------------------------------


@pytest.fixture
def merged_csv(fieldcases):
    return fieldcases / "placeholder_patient_ids" / "isic2020_plus_external.csv"


def test_placeholder_patients_are_refused_naming_the_rows(merged_csv, capsys):
    with pytest.raises(TableError, match=r"placeholder values \['-1'\] .* rows 12 \(image_id "):
        read_table(merged_csv)
    assert main(["split", str(merged_csv), "--folds", "2"]) == 2
    assert "placeholder values ['-1']" in capsys.readouterr().err


def test_placeholder_patients_as_their_own_patients(merged_csv, tmp_path):
    raw = pd.read_csv(merged_csv, dtype={"patient_id": str})
    unknown = (raw["patient_id"] == "-1").to_numpy()
    table = read_table(merged_csv, unknown_patients="own")
    assert (table.loc[unknown, "patient_id"] == "unknown:" + table.loc[unknown, "image_id"]).all()
    assert table["patient_id"].nunique() == raw.loc[~unknown, "patient_id"].nunique() + unknown.sum()
    out = tmp_path / "folds.csv"
    assert main(["split", str(merged_csv), "--folds", "2", "--unknown-patients", "own", "--out", str(out)]) == 0
    folds = pd.read_csv(out).merge(raw[["image_name", "target"]], left_on="image_id", right_on="image_name")
    per_fold = folds.groupby("fold").agg(images=("image_id", "size"), melanomas=("target", "sum"))
    # the 12 unknown images (6 melanomas) are spread, not dealt to one fold as one "patient"
    assert per_fold["images"].tolist() == [12, 12]
    assert abs(per_fold["melanomas"].diff().iloc[-1]) <= 1


@pytest.mark.parametrize("placeholder", ["-1", "0", "-1.0", "unknown", "UNKNOWN", "None", "nan", "NA",
                                         "n/a", "null", " "])
def test_every_placeholder_spelling_is_an_unknown_patient(placeholder):
    table = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p1", placeholder, placeholder]})
    with pytest.raises(TableError, match=r"'patient_id' (holds placeholder values .*|is empty) at rows 1 \(image_id 'b'\), 2"):
        validate_table(table)
    with pytest.raises(TableError, match=r"'patient_id'"):
        next(PatientKFold(2).split(table))  # a splitter given the raw frame follows the same rule
    own = validate_table(table, unknown_patients="own")
    assert own["patient_id"].tolist() == ["p1", "unknown:b", "unknown:c"]


def test_placeholder_ids_in_numeric_columns(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "patient_id": [12, -1]})
    with pytest.raises(TableError, match=r"placeholder values \['-1'\]"):
        validate_table(frame)
    with pytest.raises(TableError, match=r"placeholder values"):
        validate_table(frame.assign(patient_id=[12.0, -1.0]))


# --- the archive's site column ------------------------------------------------------------------


def test_archive_site_column_is_read(fieldcases, capsys):
    path = fieldcases / "archive_site_column" / "isic2020_archive_style.csv"
    raw = pd.read_csv(path)
    table = read_table(path)
    assert table["site"].notna().all()
    assert table["site_detail"].tolist() == raw["anatom_site_general"].tolist()
    expected = raw["anatom_site_general"].replace({"anterior torso": "torso", "posterior torso": "torso",
                                                   "lateral torso": "torso"})
    assert table["site"].tolist() == expected.tolist()
    counts = cohort_counts(table, by=None)
    assert counts.loc[(S_SITE, "unknown"), ("Total", "value")] == 0
    assert main(["validate", str(path)]) == 0
    assert "read as SIIM-ISIC 2020" in capsys.readouterr().err


# --- PAD-UFES-20 and --image-dir ----------------------------------------------------------------


def test_pad_ufes20_dedup_with_and_without_images(fieldcases, tmp_path, capsys):
    folder = fieldcases / "pad_ufes20"
    out = tmp_path / "pairs.csv"
    # without images there are no pixels to compare: bad input (exit 2), and the fix is said
    assert main(["dedup", str(folder / "metadata.csv"), "--out", str(out), "--jobs", "1"]) == 2
    assert "give the folder of the images with --image-dir DIR" in capsys.readouterr().err
    assert main(["dedup", str(folder / "metadata.csv"), "--image-dir", str(folder / "images"),
                 "--out", str(out), "--jobs", "1"]) == 0
    err = capsys.readouterr().err
    assert "read as PAD-UFES-20 metadata" in err and "6 of 6 images hashed" in err


def test_image_dir_with_no_image_found_fails(fieldcases, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    path = fieldcases / "pad_ufes20" / "metadata.csv"
    assert main(["validate", str(path), "--image-dir", str(tmp_path / "empty")]) == 1
    assert "no image of the 6 rows was found" in capsys.readouterr().err


# --- lesion ids numbered per patient ------------------------------------------------------------


@pytest.fixture
def clinic_csv(fieldcases):
    return fieldcases / "lesion_ids_per_patient" / "clinic_export.csv"


def test_shared_lesion_ids_are_named(clinic_csv, capsys):
    with pytest.warns(DermctxWarning, match=r"lesion_id '1' is shared by 40 patients"):
        table = read_table(clinic_csv)
    # one rule: the split and the cohort table both read '1' as one lesion linking patients
    with pytest.warns(DermctxWarning, match=r"'1' is shared by 40 patients"):
        groups = dermctx.splits.patient_groups(table)
    assert len(np.unique(groups)) == 1
    # a cohort table cannot count a lesion under 40 patients consistently: refused, naming it
    with pytest.raises(TableError, match=r"'1' is shared by 40 patients.*per_patient"):
        cohort_counts(table, by=None)
    assert main(["split", str(clinic_csv), "--folds", "3"]) == 2
    err = capsys.readouterr().err
    assert "warning: " in err and "'1' is shared by 40 patients" in err and "--lesion-ids per-patient" in err
    for command in ("split", "describe"):  # the same warning from two steps is shown once
        main([command, str(clinic_csv)])
        err = capsys.readouterr().err
        assert err.count("warning: ") == err.count("is shared by 40 patients, ") == 1, err


def test_lesion_ids_per_patient(clinic_csv, tmp_path):
    raw = pd.read_csv(clinic_csv, dtype=str)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        table = read_table(clinic_csv, lesion_ids="per_patient")
    pairs = raw.groupby(["patient_id", "lesion_id"]).ngroups
    assert table["lesion_id"].nunique() == pairs
    assert table["lesion_id"].iloc[0] == f"{raw['patient_id'].iloc[0]}/{raw['lesion_id'].iloc[0]}"
    counts = cohort_counts(table, by=None)
    assert counts.loc[(S_LESIONS, "total"), ("Total", "value")] == pairs
    out = tmp_path / "folds.csv"
    assert main(["split", str(clinic_csv), "--folds", "3", "--lesion-ids", "per-patient",
                 "--out", str(out)]) == 0
    folds = pd.read_csv(out)
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    assert folds["fold"].value_counts().min() > 0


def test_placeholders_in_groups_and_in_scoring(merged_csv):
    raw = pd.read_csv(merged_csv, dtype=str)
    with pytest.raises(dermctx.DermctxError, match=r"groups holds placeholder values \['-1'\]"):
        next(PatientKFold(3).split(np.zeros((len(raw), 1)), raw["target"], groups=raw["patient_id"]))
    table = read_table(merged_csv, unknown_patients="own").assign(cnn_score=0.3)
    ranker = dermctx.ContextRanker(gbm=dermctx.MetadataGBM(n_estimators=5, min_child_samples=2), n_folds=2).fit(table, table["target"])
    scored = table.assign(patient_id=np.where(table["patient_id"].str.startswith("unknown:"), "-1",
                                              table["patient_id"]))
    scores, errors = ranker.rank(scored)
    assert len(scores) + len(errors) == len(table) and len(errors) == 12
    assert errors["message"].str.contains("placeholder").all()


def test_duplicate_pairs_that_name_no_image_are_warned(fieldcases):
    table = read_table(fieldcases / "archive_site_column" / "isic2020_archive_style.csv")
    pairs = pd.DataFrame({"image_id_1": table["image_id"] + ".jpg", "image_id_2": "ISIC_X.jpg"})
    with pytest.warns(DermctxWarning, match=r"none of the 8 duplicate pairs names an image of the table"):
        PatientKFold(2, duplicates=pairs).assign(table)
