"""The lesion table: validate_table's normalisation and its error messages, read_table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermctx import DermctxError, TableError, read_table, validate_table
from dermctx.table import (
    COLUMNS,
    describe_rows,
    embedding_column_names,
    embedding_columns,
    has_patient_context,
    normalise_sex,
    normalise_site,
)


def _table(**overrides) -> pd.DataFrame:
    base = {
        "image_id": ["a", "b", "c"],
        "patient_id": ["p1", "p1", "p2"],
        "age": [45, np.nan, 70],
        "sex": ["Male", "female", None],
        "site": ["Torso", None, "head/neck"],
        "target": [0, 1, 0],
        "extra": [1.5, 2.5, 3.5],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_normalises_and_keeps_extra_columns():
    raw = _table()
    table = validate_table(raw)
    assert list(table.columns) == [*COLUMNS, "extra"]
    assert table["lesion_id"].tolist() == ["a", "b", "c"]  # defaults to image_id
    assert table["sex"].tolist()[:2] == ["male", "female"] and pd.isna(table["sex"].iloc[2])
    assert table["site"].iloc[0] == "torso" and pd.isna(table["site"].iloc[1])
    assert table["target"].dtype == np.int64 and table["target"].tolist() == [0, 1, 0]
    assert table["age"].dtype == np.float64
    assert (table["source"] == "table").all()
    assert table["extra"].tolist() == [1.5, 2.5, 3.5]
    assert raw["sex"].tolist()[0] == "Male"  # the input is not changed


def test_ids_become_stripped_strings_and_blank_lesion_defaults():
    table = validate_table(_table(image_id=[1, 2, 3], patient_id=[" p1", "p1", 7],
                                  lesion_id=["L1", None, " "]))
    assert table["image_id"].tolist() == ["1", "2", "3"]
    assert table["patient_id"].tolist() == ["p1", "p1", "7"]
    assert table["lesion_id"].tolist() == ["L1", "2", "3"]


def test_missing_targets_are_float():
    table = validate_table(_table(target=[0, None, 1]))
    assert table["target"].dtype == np.float64 and np.isnan(table["target"].iloc[1])
    with pytest.raises(TableError, match=r"'target' is missing at row 1 \(image_id 'b'\)"):
        validate_table(_table(target=[0, None, 1]), labelled=True)


@pytest.mark.parametrize(
    ("overrides", "drop", "match"),
    [
        ({}, "patient_id", r"missing column\(s\) \['patient_id'\]"),
        ({}, "image_id", r"missing column\(s\) \['image_id'\]"),
        ({"patient_id": ["p1", None, "p2"]}, None, r"'patient_id' is empty at row 1 \(image_id 'b'\)"),
        ({"patient_id": ["p1", "  ", "p2"]}, None, r"'patient_id' is empty at row 1"),
        ({"image_id": ["a", None, "c"]}, None, r"'image_id' is empty at row 1"),
        ({"image_id": ["a", "b", "a"]}, None, r"'image_id' has duplicate values at rows 0 \(image_id 'a'\), 2"),
        ({"target": [0, 2, 1]}, None, r"'target' has values other than 0/1 at row 1 .*\[2\]"),
        ({"target": [0, "yes", 1]}, None, r"'target' has values other than 0/1 at row 1"),
        ({"sex": ["male", "x", None]}, None, r"'sex' has unknown values \['x'\] at row 1.*male"),
        ({"age": [45, 130, 1]}, None, r"'age' .*outside \[0, 120\].* row 1"),
        ({"age": [45, "old", 1]}, None, r"'age' .*not numbers at row 1"),
        ({"age": [-1, 45, 1]}, None, r"'age' .* row 0"),
        ({"site": ["torso", "elbow", None]}, None, r"'site' has unknown values \['elbow'\] at row 1.*normalise_site"),
    ],
)
def test_errors_name_column_and_rows(overrides, drop, match):
    table = _table(**overrides)
    if drop:
        table = table.drop(columns=[drop])
    with pytest.raises(TableError, match=match) as info:
        validate_table(table, name="lesions.csv")
    assert str(info.value).startswith("lesions.csv: ")
    assert isinstance(info.value, DermctxError) and isinstance(info.value, ValueError)


def test_not_a_dataframe():
    with pytest.raises(TableError, match="expected a pandas DataFrame, got list"):
        validate_table([1, 2])  # type: ignore[arg-type]


def test_describe_rows_limits():
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)]})
    text = describe_rows(table, np.ones(8, bool), limit=2)
    assert text == "rows 0 (image_id 'i0'), 1 (image_id 'i1') and 6 more"
    assert describe_rows(table, np.eye(8, dtype=bool)[3]) == "row 3 (image_id 'i3')"


def test_normalise_site_and_sex():
    site, detail = normalise_site(pd.Series(["back", "Acral", "foot", "unknown", None, "elbow"]))
    assert site.tolist()[:3] == ["torso", "palms/soles", "lower extremity"]
    assert pd.isna(site.iloc[3]) and pd.isna(site.iloc[4])
    assert site.iloc[5] == "elbow"  # unknown terms are kept so that validate_table names them
    assert detail.tolist()[:4] == ["back", "Acral", "foot", "unknown"] and pd.isna(detail.iloc[4])
    sex = normalise_sex(pd.Series(["MALE", " female ", "unknown", np.nan]))
    assert sex.tolist()[:2] == ["male", "female"] and sex.iloc[2:].isna().all()


def test_embedding_columns():
    names = embedding_column_names(3)
    assert names == ["emb_0000", "emb_0001", "emb_0002"]
    frame = pd.DataFrame(np.zeros((1, 4)), columns=["x", *names])
    assert embedding_columns(frame) == names
    assert embedding_columns(frame, prefix="z_") == []


def test_has_patient_context():
    table = validate_table(_table())
    assert has_patient_context(table)
    table.attrs["patient_context"] = False
    assert not has_patient_context(table)
    assert not has_patient_context(validate_table(_table(source=["isic2020", "ham10000", None])))


def test_read_table_csv_parquet_and_errors(tmp_path):
    table = validate_table(_table(patient_id=["007", "007", "010"]))
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    again = read_table(csv)
    assert again["patient_id"].tolist() == ["007", "007", "010"]  # ids stay strings
    pd.testing.assert_frame_equal(again[list(COLUMNS)].astype(object),
                                  table[list(COLUMNS)].astype(object), check_dtype=False)
    pq = tmp_path / "t.parquet"
    table.to_parquet(pq, index=False)
    assert read_table(pq)["image_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(TableError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(TableError, match=r"unknown table format '\.xlsx'"):
        read_table(tmp_path / "t.xlsx")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,age\nx,3\n")
    with pytest.raises(TableError, match=r"bad\.csv: missing column\(s\) \['patient_id'\]"):
        read_table(bad)


def test_the_tables_own_label_columns_have_their_own_name():
    import dermctx.table as table_module
    from dermctx.label_guard import LABEL_COLUMNS

    assert set(table_module.TABLE_LABEL_COLUMNS) <= set(LABEL_COLUMNS)  # one source's share
    with pytest.warns(FutureWarning, match="dermctx.table: LABEL_COLUMNS is deprecated, use "
                                           "dermctx.table.TABLE_LABEL_COLUMNS"):
        old = table_module.LABEL_COLUMNS
    assert old == table_module.TABLE_LABEL_COLUMNS


def test_bad_ids_keep_leaves_unidentifiable_rows_for_the_scorer():
    t = pd.DataFrame({"image_id": ["a", "b", "b", "", "e"], "patient_id": ["P1", "", "P2", "P2", "-1"]})
    with pytest.raises(TableError, match="column 'image_id' is empty at row 3"):
        validate_table(t)
    kept = validate_table(t, bad_ids="keep")
    assert kept["patient_id"].tolist() == ["P1", None, "P2", "P2", "-1"]
    assert kept["image_id"].tolist() == ["a", "b", "b", "", "e"]
    with pytest.raises(TableError, match="bad_ids='drop'"):
        validate_table(t, bad_ids="drop")


def test_whole_number_ids_stored_as_floats_are_the_numbers():
    """A patient id column with a gap is read by pandas as floats (123.0): the id is '123', as in
    a scores file or a CSV read as text; a real decimal stays as written."""
    from dermctx.table import stripped_ids

    table = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": [123.0, 7.0, 1.5], "target": [0, 1, 0]})
    assert validate_table(table, labelled=True)["patient_id"].tolist() == ["123", "7", "1.5"]
    gap = pd.DataFrame({"image_id": ["a", "b"], "patient_id": [123.0, np.nan]})
    read = stripped_ids(gap)["patient_id"]
    assert read.iloc[0] == "123" and pd.isna(read.iloc[1])
