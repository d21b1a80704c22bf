"""ISIC 2020 loaders: the metadata CSVs, image paths, and the duplicate-pair CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermctx import (
    DermctxError,
    TableError,
    read_isic2020,
    read_isic_duplicates,
    read_table,
    write_isic_duplicates,
)
from dermctx.table import COLUMNS

HEADER = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"


def _csv(tmp_path, body: str, header: str = HEADER, name: str = "train.csv"):
    path = tmp_path / name
    path.write_text(header + body)
    return path


# --- real data ----------------------------------------------------------------------------------


def test_training_csv_counts(isic_dir):
    table = read_isic2020(isic_dir / "ISIC_2020_Training_GroundTruth.csv")
    assert len(table) == 33_126
    assert table["patient_id"].nunique() == 2_056
    assert int((table["target"] == 1).sum()) == 584
    assert list(table.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert (table["source"] == "isic2020").all()
    assert (table["lesion_id"] == table["image_id"]).all()  # v1 has no lesion ids
    assert set(table["site"].dropna()) <= {"torso", "lower extremity", "upper extremity",
                                           "head/neck", "palms/soles", "oral/genital"}
    assert table["site"].isna().sum() == 527
    assert table["sex"].isna().sum() == 65
    assert "benign_malignant" in table.columns
    assert (table.loc[table["target"] == 1, "benign_malignant"] == "malignant").all()


def test_v2_lesions(isic_dir):
    table = read_isic2020(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv")
    assert len(table) == 33_126
    assert table["lesion_id"].nunique() == 32_701
    assert (table["lesion_id"] != table["image_id"]).all()  # taken from the file, not defaulted


def test_sizes_variant_keeps_tfrecord(isic_dir):
    table = read_isic2020(isic_dir / "train_with_image_sizes.csv")
    assert len(table) == 33_126
    assert str(table["width"].dtype) == "Int64" and str(table["height"].dtype) == "Int64"
    assert {"tfrecord", "patient_code"} <= set(table.columns)
    assert int((table["tfrecord"] == -1).sum()) == 434
    first = table.iloc[0]
    assert (first["image_id"], first["width"], first["height"]) == ("ISIC_2637011", 6000, 4000)


def test_test_csv_has_no_target(isic_dir):
    table = read_isic2020(isic_dir / "test.csv")
    assert len(table) == 10_982
    assert table["target"].isna().all()
    assert table["diagnosis"].isna().all()


def test_real_image_dir(isic_dir, isic_images):
    table = read_isic2020(isic_dir / "ISIC_2020_Training_GroundTruth.csv", image_dir=isic_images)
    assert len(table) == 33_126  # nothing dropped
    found = table["image_error"].isna()
    manifest = pd.read_csv(isic_images / "manifest.csv")
    assert found.sum() == len(manifest) == 139
    assert set(table.loc[found, "image_id"]) == set(manifest["image_name"])
    assert table.loc[~found, "image_error"].str.contains("not found").all()


def test_read_table_dispatches_to_isic(isic_dir):
    path = isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv"
    pd.testing.assert_frame_equal(read_table(path), read_isic2020(path))


def test_real_duplicates(isic_dir):
    train = read_isic_duplicates(isic_dir / "ISIC_2020_Training_Duplicates.csv")
    assert len(train) == 425
    assert list(train.columns) == ["image_id_1", "image_id_2"]
    assert (train["image_id_1"] < train["image_id_2"]).all()
    challenge = read_isic_duplicates(isic_dir / "ISIC_2020_Challenge_Duplicates_train_test.csv")
    assert len(challenge) == 532
    assert challenge["partition"].value_counts().to_dict() == {"train": 425, "test": 107}


# --- synthetic ----------------------------------------------------------------------------------


def test_mapping_and_extra_columns(tmp_path):
    path = _csv(tmp_path, "ISIC_0000001,IP_0012,Male,45,posterior torso,nevus,benign,0\n"
                          "ISIC_0000002,IP_0012,,,,melanoma,malignant,1\n")
    table = read_isic2020(path)
    assert table["patient_id"].tolist() == ["IP_0012", "IP_0012"]  # a string, leading zeros kept
    assert table["sex"].tolist()[0] == "male" and pd.isna(table["sex"].iloc[1])
    assert table["age"].iloc[0] == 45.0 and np.isnan(table["age"].iloc[1])
    assert table["site"].iloc[0] == "torso"
    assert table["site_detail"].iloc[0] == "posterior torso"
    assert table["target"].tolist() == [0, 1]
    assert table["diagnosis"].tolist() == ["nevus", "melanoma"]
    assert table["benign_malignant"].tolist() == ["benign", "malignant"]


def test_missing_column_names_file_and_column(tmp_path):
    path = _csv(tmp_path, "ISIC_1,45\n", header="image_name,age_approx\n")
    with pytest.raises(TableError, match=r"train\.csv.*'patient_id'"):
        read_isic2020(path)


def test_nan_patient_id_names_row(tmp_path):
    path = _csv(tmp_path, "ISIC_1,IP_1,male,45,torso,nevus,benign,0\n"
                          "ISIC_2,,male,45,torso,nevus,benign,0\n")
    with pytest.raises(DermctxError, match=r"train\.csv.*'patient_id'.*row 1 \(image_id 'ISIC_2'\)"):
        read_isic2020(path)


def test_bad_target_and_missing_file(tmp_path):
    path = _csv(tmp_path, "ISIC_1,IP_1,male,45,torso,nevus,benign,2\n")
    with pytest.raises(TableError, match=r"'target'.*row 0"):
        read_isic2020(path)
    with pytest.raises(TableError, match="no such file"):
        read_isic2020(tmp_path / "absent.csv")


def test_image_dir_missing_and_escaping_paths_are_kept(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "ISIC_1.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8")  # exists, but outside the folder
    path = _csv(tmp_path, "ISIC_1,IP_1,male,45,torso,nevus,benign,0\n"
                          "ISIC_2,IP_1,male,45,torso,nevus,benign,0\n"
                          "../secret,IP_2,male,45,torso,nevus,benign,0\n"
                          "../../etc/passwd,IP_2,male,45,torso,nevus,benign,0\n"
                          "/etc/passwd,IP_3,male,45,torso,nevus,benign,0\n")
    table = read_isic2020(path, image_dir=images)
    assert len(table) == 5
    assert table["path"].iloc[0] == str(images / "ISIC_1.jpg")
    assert pd.isna(table["image_error"].iloc[0])
    assert "row 1" in table["image_error"].iloc[1] and "not found" in table["image_error"].iloc[1]
    for row in (2, 3, 4):
        message = table["image_error"].iloc[row]
        assert "escapes the image directory" in message
        assert str(path) in message and f"row {row}" in message
        assert pd.isna(table["path"].iloc[row])  # never points outside the folder


def test_image_dir_not_a_folder(tmp_path):
    path = _csv(tmp_path, "ISIC_1,IP_1,male,45,torso,nevus,benign,0\n")
    with pytest.raises(DermctxError, match="not a folder"):
        read_isic2020(path, image_dir=tmp_path / "nope")


def test_duplicates_round_trip(tmp_path):
    pairs = pd.DataFrame({"ISIC_id": ["ISIC_9", "ISIC_1"], "ISIC_id_paired": ["ISIC_2", "ISIC_3"],
                          "partition": ["test", "train"]})
    canonical = read_isic_duplicates(pairs)
    assert canonical[["image_id_1", "image_id_2"]].values.tolist() == [["ISIC_2", "ISIC_9"],
                                                                        ["ISIC_1", "ISIC_3"]]
    out = write_isic_duplicates(canonical, tmp_path / "c.csv", layout="challenge")
    assert out.read_text().splitlines()[0] == "ISIC_id,ISIC_id_paired,partition"
    pd.testing.assert_frame_equal(read_isic_duplicates(out), canonical)
    out = write_isic_duplicates(canonical, tmp_path / "t.csv")
    assert out.read_text().splitlines() == ["image_name_1,image_name_2", "ISIC_2,ISIC_9",
                                            "ISIC_1,ISIC_3"]
    pd.testing.assert_frame_equal(read_isic_duplicates(out), canonical[["image_id_1", "image_id_2"]])


def test_write_duplicates_errors(tmp_path):
    pairs = pd.DataFrame({"image_id_1": ["a"], "image_id_2": ["b"]})
    with pytest.raises(TableError, match="'partition'"):
        write_isic_duplicates(pairs, tmp_path / "x.csv", layout="challenge")
    with pytest.raises(TableError, match="unknown layout"):
        write_isic_duplicates(pairs, tmp_path / "x.csv", layout="other")  # type: ignore[arg-type]
    with pytest.raises(TableError, match="no such file"):
        read_isic_duplicates(tmp_path / "absent.csv")
