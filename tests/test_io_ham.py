"""HAM10000 loader: lesion groups, the patient-id proxy, site mapping."""

from __future__ import annotations

import pandas as pd
import pytest

from dermctx import TableError, read_ham10000, read_table, validate_table
from dermctx.table import has_patient_context

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization\n"


def _csv(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_text(header + body)
    return path


def test_real_counts(ham_dir):
    table = read_ham10000(ham_dir / "HAM10000_metadata.csv")
    assert len(table) == 10_015
    assert table["lesion_id"].nunique() == 7_470
    assert (table["patient_id"] == table["lesion_id"]).all()
    assert int(table["target"].sum()) == int((table["diagnosis"] == "mel").sum()) == 1_113
    assert set(table["diagnosis"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert set(table["dx_type"]) == {"histo", "follow_up", "consensus", "confocal"}
    assert table["site_detail"].nunique() == 15
    assert table["sex"].isna().sum() == 57  # "unknown" -> missing
    assert table["site"].isna().sum() == 234  # "unknown" localization
    assert table.loc[table["site_detail"] == "acral", "site"].eq("palms/soles").all()
    assert (table["source"] == "ham10000").all()
    assert table.attrs["patient_context"] is False
    assert not has_patient_context(table)


def test_read_table_dispatches_to_ham(ham_dir):
    table = read_table(ham_dir / "HAM10000_metadata.csv")
    assert len(table) == 10_015 and not has_patient_context(table)


def test_mapping(tmp_path):
    path = _csv(tmp_path, "HAM_1,ISIC_1,mel,histo,50.0,unknown,hand\n"
                          "HAM_1,ISIC_2,MEL,histo,50.0,female,hand\n"
                          "HAM_2,ISIC_3,nv,follow_up,,male,back\n")
    table = read_ham10000(path)
    assert table["target"].tolist() == [1, 1, 0]
    assert table["diagnosis"].tolist() == ["mel", "mel", "nv"]
    assert pd.isna(table["sex"].iloc[0]) and table["sex"].iloc[1] == "female"
    assert table["site"].tolist() == ["upper extremity", "upper extremity", "torso"]
    assert table["site_detail"].tolist() == ["hand", "hand", "back"]
    assert table["patient_id"].tolist() == ["HAM_1", "HAM_1", "HAM_2"]


def test_proxy_detectable_without_attrs(tmp_path):
    table = read_ham10000(_csv(tmp_path, "HAM_1,ISIC_1,nv,histo,50,male,back\n"))
    out = tmp_path / "canonical.csv"
    table.to_csv(out, index=False)
    again = read_table(out)  # attrs are gone after a CSV round trip; source is not
    assert again.attrs.get("patient_context") is None
    assert not has_patient_context(again)
    mixed = pd.concat([again, validate_table(pd.DataFrame({"image_id": ["x"], "patient_id": ["p"]}))])
    assert not has_patient_context(mixed)
    assert has_patient_context(validate_table(pd.DataFrame({"image_id": ["x"], "patient_id": ["p"]})))


def test_bad_dx_names_rows(tmp_path):
    path = _csv(tmp_path, "HAM_1,ISIC_1,nv,histo,50,male,back\nHAM_2,ISIC_2,melanoma,histo,50,male,back\n")
    with pytest.raises(TableError, match=r"'dx'.*'melanoma'.*row 1 \(image_id 'ISIC_2'\)"):
        read_ham10000(path)


def test_missing_column_and_blank_lesion(tmp_path):
    with pytest.raises(TableError, match=r"HAM10000_metadata\.csv.*\['dx'\]"):
        read_ham10000(_csv(tmp_path, "HAM_1,ISIC_1\n", header="lesion_id,image_id\n"))
    with pytest.raises(TableError, match=r"'lesion_id' is empty at row 0 \(image_id 'ISIC_1'\)"):
        read_ham10000(_csv(tmp_path, ",ISIC_1,nv,histo,50,male,back\n"))


def test_image_dir(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    (images / "ISIC_1.jpg").write_bytes(b"")
    table = read_ham10000(_csv(tmp_path, "HAM_1,ISIC_1,nv,histo,50,male,back\n"
                                         "HAM_1,ISIC_2,nv,histo,50,male,back\n"), image_dir=images)
    assert table["path"].iloc[0] == str(images / "ISIC_1.jpg")
    assert pd.isna(table["image_error"].iloc[0])
    assert "not found" in table["image_error"].iloc[1]
    assert table.attrs["patient_context"] is False
