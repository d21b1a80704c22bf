"""Bad input never escapes as a stray exception: generated and committed bad files, cells, columns,
DICOM headers and arguments raise a documented ``DermctxError`` naming what is wrong, and batch
functions lose no row. The long run is ``benchmarks/fuzz_inputs.py``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import dermctx
from dermctx import DermctxError, ImageError, TableError
from dermctx.cli import main
from dermctx.io.dicom import write_dicom
from dermctx.io.registry import SOURCES
from dermctx.io.source import read_source
from dermctx.table import refuse_duplicate_columns, to_numbers

BAD = Path(__file__).parent / "data" / "bad"
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ISIC_HEADER = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
               "target", "width", "height"]
ISIC_ROWS = [["ISIC_0000001", "IP_1", "male", "45", "torso", "0", "6000", "4000"],
             ["ISIC_0000002", "IP_1", "female", "50", "head/neck", "1", "640", "480"],
             ["ISIC_0000003", "IP_2", "", "", "", "0", "1024", "768"]]

#: Cell text that has broken parsers: numbers out of range or almost numbers, missing words,
#: control characters, non-ASCII digits.
NASTY = ["", " ", "nan", "inf", "-inf", "1e400", "-1e400", "45.5", "-3", "99999999999999999999999",
         "18446744073709551616", "0x1F", "1_000", "１２", "True", "[1, 2]", "{}", "\x00", "😀", "1,5",
         "007", "-1", "unknown", "300", "NaT", "\u202e", "é", "a" * 500]
cell_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=12))

#: Python objects a DataFrame cell may hold that a CSV never does.
cell_object = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    # signalling NaN decimals are left out: pandas itself raises on them (pd.isna)
    st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan()),
    st.datetimes(), st.complex_numbers(max_magnitude=10),
    st.sampled_from([pd.NA, pd.NaT, np.nan, pd.Timestamp("2020-01-01"), pd.Timedelta("1D"),
                     np.array([1, 2]), dt.date(2020, 1, 1), np.int64(2**63 - 1), frozenset({1})]),
)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    frame = pd.DataFrame(rows, columns=header)
    return frame.to_csv(index=False).encode("utf-8")


def _read_or_refuse(path: Path, n_rows: int | None, **kwargs) -> pd.DataFrame | None:
    """read_table: a table of every row, or a TableError/ImageError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = dermctx.read_table(path, **kwargs)
    except (TableError, ImageError) as exc:
        assert str(path) in str(exc) or path.name in str(exc), str(exc)
        assert "\n" not in str(exc), "messages are one line"
        return None
    if n_rows is not None:
        assert len(table) == n_rows
    return table


# --- committed bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, match",
    [
        ("ragged_row.csv", r"cannot be read .*ParserError: .*Expected 8 fields in line 4, saw 10"),
        ("latin1_body.csv", r"byte \d+ is not UTF-8 .*save the file as UTF-8"),
        ("utf16.csv", r"byte 0 is not UTF-8"),
        ("unclosed_quote.csv", r"cannot be read .*EOF inside string"),
        ("empty.csv", r"the file is empty \(expected a header line\)"),
        ("duplicate_columns.csv", r"column name\(s\) \['site'\] appear more than once"),
        ("not_gzip.csv.gz", r"cannot be read .*BadGzipFile"),
        ("truncated.csv.gz", r"cannot be read .*(EOFError|error)"),
        ("corrupt.parquet", r"cannot be read .*ArrowInvalid"),
        ("truncated.parquet", r"cannot be read .*ArrowInvalid"),
        ("duplicate_columns.parquet", r"column name\(s\) \['site'\] appear more than once"),
        ("binary_id.parquet", r"column 'image_id' holds bytes that are not UTF-8 text at row 1"),
        ("age_as_dates.parquet", r"column 'age' has values outside \[0, 120\] or not numbers at row 0"),
        ("width_45_5.csv", r"column 'width' has values \[45.5\] at row 1 \(image_id 'ISIC_0000002'\); expected whole numbers"),
        ("width_1e400.csv", r"column 'width' has values \[inf\] at row 0 \(image_id 'ISIC_0000001'\)"),
        ("width_too_big.csv", r"column 'width' has values \[99999999999999999999999\] at row 0 .*below 2\*\*63"),
        ("age_300.csv", r"column 'age' has values outside \[0, 120\] .* at row 0 \(image_id 'ISIC_0000001'\)"),
        ("one_hot_text.csv", r"one-hot columns .* at row 0 \(image_id 'ISIC_0000001'\) are not a single 1"),
    ],
)
def test_committed_bad_tables_raise_table_errors_naming_the_file(name, match):
    path = BAD / name
    with pytest.raises(TableError, match=match) as info:
        dermctx.read_table(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_one_hot_row_with_every_class_blank_is_unlabelled():
    # pandas 3 raises on idxmax over an all-missing row; such a row is an unlabelled image
    table = dermctx.read_table(BAD / "one_hot_blank_row.csv")
    assert table["target"].iloc[0] == 1 and np.isnan(table["target"].iloc[1])
    assert table["diagnosis"].iloc[0] == "MEL" and table["diagnosis"].iloc[1] is None


@pytest.mark.parametrize("name", ["corrupt.parquet", "not_gzip.csv.gz", "ragged_row.csv", "latin1_body.csv"])
def test_every_reader_wraps_unreadable_files(name):
    path = BAD / name
    for read in (lambda p: read_source(SOURCES[1], p), dermctx.read_isic_duplicates, dermctx.read_isic2020,
                 dermctx.read_ham10000, lambda p: dermctx.read_table(p, source="isic2019")):
        with pytest.raises(TableError, match="cannot be read") as info:
            read(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "name, match",
    [
        ("age_300Y.dcm", r"PatientAge '300Y' is 300 years; expected years in \[0, 120\]"),
        ("age_text.dcm", r"PatientAge 'ABCY'; expected a DICOM age such as '045Y'"),
        ("sex_X.dcm", r"PatientSex 'X'; expected 'M', 'F'"),
        ("truncated.dcm", r"(cannot read|cannot decode|unreadable|holds no image)"),
        ("not_dicom.dcm", r"(not a DICOM file|cannot read|holds no image)"),
    ],
)
def test_committed_bad_dicom_files_raise_image_errors(name, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid AS value
        with pytest.raises(ImageError, match=match) as info:
            dermctx.read_dicom(BAD / name)
    assert str(BAD / name) in str(info.value)


def test_read_dicom_dir_keeps_going_past_every_bad_file(tmp_path):
    names = ["age_300Y.dcm", "sex_X.dcm", "age_text.dcm", "no_patient_id.dcm", "truncated.dcm",
             "not_dicom.dcm", "empty.csv"]
    for name in names:
        (tmp_path / name).write_bytes((BAD / name).read_bytes())
    good = pydicom.dcmread(BAD / "age_300Y.dcm")
    good.PatientAge, good.SOPInstanceUID = "045Y", "1.2.3.4"
    good.private_block(0x0011, "dermctx")[0x01].value = "ISIC_good"
    good.save_as(tmp_path / "good.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, errors = dermctx.read_dicom_dir(tmp_path)
    assert table["image_id"].tolist() == ["ISIC_good"] and table["age"].iloc[0] == 45
    assert len(table) + len(errors) == len(names) + 1  # rows in = rows out + errors
    by_file = dict(zip(errors["path"].map(lambda p: Path(p).name), errors["message"], strict=True))
    assert "PatientAge '300Y' is 300 years" in by_file["age_300Y.dcm"]
    assert "PatientSex 'X'" in by_file["sex_X.dcm"]
    assert "PatientID is empty" in by_file["no_patient_id.dcm"]
    assert sorted(errors["row"]) == sorted(set(errors["row"]))  # one error row per bad file


# --- generated table files ---------------------------------------------------------------------------


@FUZZ
@given(rows=st.lists(st.lists(cell_text, min_size=8, max_size=8), min_size=1, max_size=4),
       column=st.sampled_from(ISIC_HEADER))
def test_isic_csv_with_bad_cells_reads_every_row_or_names_the_problem(rows, column):
    rows = [[*ISIC_ROWS[i % 3][:1], *r[1:]] if i < 3 else r for i, r in enumerate(rows)]
    header = list(ISIC_HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "isic.csv"
        path.write_bytes(_csv(header, rows))
        table = _read_or_refuse(path, len(rows))
    if table is not None:  # what was read is in the table's vocabulary
        assert table["age"].dropna().between(0, 120).all()
        assert set(table["target"].dropna()) <= {0, 1}
        assert table["width"].dtype == "Int64" and (table["width"].dropna() >= 0).all()


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".csv.gz", ".parquet", ".txt"]),
       where=st.floats(0, 1), mode=st.sampled_from(["insert", "replace", "truncate", "gzip"]))
def test_damaged_table_bytes_raise_only_table_errors(data, suffix, where, mode):
    good = _csv(ISIC_HEADER, ISIC_ROWS)
    if suffix == ".parquet":
        buf = io.BytesIO()
        pd.DataFrame(ISIC_ROWS, columns=ISIC_HEADER).to_parquet(buf)
        good = buf.getvalue()
    cut = int(where * len(good))
    content = {"insert": good[:cut] + data + good[cut:], "replace": data,
               "truncate": good[:cut], "gzip": gzip.compress(good[:cut] + data)}[mode]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        path.write_bytes(content)
        _read_or_refuse(path, None)


@FUZZ
@given(arrow_type=st.sampled_from(["timestamp", "duration", "binary", "list", "struct", "bool",
                                   "decimal", "uint64", "float16", "null", "dictionary"]),
       column=st.sampled_from(["image_id", "patient_id", "age", "sex", "site", "target", "width", "lesion_id"]))
def test_parquet_columns_of_the_wrong_type_are_an_error_or_missing(arrow_type, column):
    n = 3
    arrays = {"image_id": pa.array(["a", "b", "c"]), "patient_id": pa.array(["p1", "p1", "p2"]),
              "age": pa.array([45.0, None, 70.0]), "sex": pa.array(["male", "female", None]),
              "site": pa.array(["torso", None, "head/neck"]), "target": pa.array([0, 1, 0]),
              "width": pa.array([640, 640, None], pa.int64()), "lesion_id": pa.array(["l1", "l2", "l3"])}
    arrays[column] = {
        "timestamp": pa.array([dt.datetime(2020, 1, 1)] * n, pa.timestamp("ns")),
        "duration": pa.array([dt.timedelta(days=1)] * n, pa.duration("s")),
        "binary": pa.array([b"\xff\x00", b"x", b"y"], pa.binary()),
        "list": pa.array([[1, 2]] * n, pa.list_(pa.int64())),
        "struct": pa.array([{"a": 1}] * n),
        "bool": pa.array([True, False, True]),
        "decimal": pa.array([decimal.Decimal("1.5")] * n, pa.decimal128(10, 2)),
        "uint64": pa.array([2**64 - 1] * n, pa.uint64()),
        "float16": pa.array(np.full(n, 1.5, np.float16), pa.float16()),
        "null": pa.nulls(n),
        "dictionary": pa.array(["x", "y", "x"]).dictionary_encode(),
    }[arrow_type]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.parquet"
        pq.write_table(pa.table(arrays), path)
        table = _read_or_refuse(path, n)
    if table is not None and column in ("age", "target", "width"):
        values = pd.to_numeric(table[column], errors="coerce")
        assert values.isna().equals(table[column].isna())  # numbers or missing, nothing else


# --- DataFrames -----------------------------------------------------------------------------------


def _canonical() -> pd.DataFrame:
    return pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p1", "p1", "p2"],
                         "age": [45.0, 50.0, np.nan], "sex": ["male", "female", None],
                         "site": ["torso", "head/neck", None], "target": [0, 1, 0],
                         "width": [640, 640, 480], "cnn_score": [0.1, 0.9, 0.3]})


@FUZZ
@given(cells=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(list(_canonical().columns)), cell_object),
                      min_size=1, max_size=4))
def test_validate_table_with_odd_objects_raises_table_errors_only(cells):
    frame = _canonical().astype(object)
    for row, col, value in cells:
        frame.at[row, col] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            table = dermctx.validate_table(frame)
        except TableError as exc:
            assert "\n" not in str(exc)
            return
        assert len(table) == len(frame)
        assert table["age"].dtype == float and table["age"].dropna().between(0, 120).all()
        assert set(table["target"].dropna()) <= {0, 1}
        assert table["image_id"].map(type).eq(str).all() and table["patient_id"].map(type).eq(str).all()
        # read_table on the same frame agrees, or refuses bytes cells that are not UTF-8 text
        try:
            assert dermctx.read_table(frame)["image_id"].tolist() == table["image_id"].tolist()
        except TableError as exc:
            assert "holds bytes that are not UTF-8 text" in str(exc)


@FUZZ
@given(values=st.lists(cell_object, min_size=1, max_size=6), booleans=st.booleans())
def test_to_numbers_never_raises_and_flags_what_is_not_a_finite_number(values, booleans):
    series = pd.Series(values, dtype=object)
    numbers, bad = to_numbers(series, booleans=booleans)
    assert numbers.dtype == float and len(numbers) == len(series) and bad.shape == (len(series),)
    assert np.isfinite(numbers[~np.isnan(numbers)]).all() or bad[np.isinf(numbers)].all()
    for v, n, b in zip(values, numbers, bad, strict=True):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(float(v)):
            assert n == float(v) and not b
        if isinstance(v, (list, dict, dt.datetime, complex)) or (isinstance(v, bytes) and v.strip()):
            assert np.isnan(n) and b


@FUZZ
@given(names=st.lists(st.sampled_from(["image_id", "patient_id", "site", "age", "path", "cnn_score"]),
                      min_size=3, max_size=7).filter(lambda n: len(set(n)) < len(n)))
def test_duplicate_column_names_are_refused_at_every_table_entry_point(names):
    frame = pd.DataFrame([["x"] * len(names)], columns=names)
    dup = sorted({n for n in names if names.count(n) > 1})
    entry_points = {
        "read_table": lambda f: dermctx.read_table(f),
        "validate_table": lambda f: dermctx.validate_table(f),
        "read_source": lambda f: read_source(SOURCES[0], f),
        "find_duplicates": lambda f: dermctx.find_duplicates(f, progress=False),
        "Embedder.embed": lambda f: dermctx.Embedder("resnet18", pretrained=False).embed(f, progress=False),
        "as_pairs": lambda f: dermctx.read_isic_duplicates(f),
        "PatientKFold.split": lambda f: list(dermctx.PatientKFold(2).split(f)),
        "check_leakage": lambda f: dermctx.check_leakage(f, f),
        "cohort_table": lambda f: dermctx.cohort_table(f),
        "refuse_duplicate_columns": lambda f: refuse_duplicate_columns(f, "who"),
    }
    for name, call in entry_points.items():
        with pytest.raises(TableError, match=r"column name\(s\) .* appear more than once") as info:
            call(frame)
        assert str(dup) in str(info.value), name


def test_several_levels_of_column_names_are_refused():
    frame = _canonical()
    frame.columns = pd.MultiIndex.from_arrays([list(frame.columns), ["x"] * frame.shape[1]])
    for call in (dermctx.validate_table, dermctx.read_table):
        with pytest.raises(TableError, match=r"2 levels of names"):
            call(frame)


# --- DICOM headers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_seed(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("dcm")
    jpeg = folder / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    row = {"image_id": "ISIC_1", "patient_id": "IP_1", "age": 45, "sex": "male", "site": "torso"}
    return write_dicom(jpeg, row, folder / "a.dcm").read_bytes()


def _edited(seed: bytes, **values) -> bytes:
    """The DICOM ``seed`` with header values replaced (pydicom warns about invalid ones)."""
    ds = pydicom.dcmread(io.BytesIO(seed))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, value in values.items():
            setattr(ds, key, value)
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@FUZZ
@given(headers=st.lists(st.fixed_dictionaries({
    "PatientAge": st.one_of(st.sampled_from(["045Y", "300Y", "121Y", "-01Y", "999D", "1441M", "ABCY",
                                             "", "045", "nanY", "infY", "1e9Y", "006M"]),
                            st.text(alphabet="0123456789YMWD-. e", max_size=5)),
    "PatientSex": st.sampled_from(["M", "F", "O", "", "X", "male", "m", "U"]),
    "BodyPartExamined": st.sampled_from(["", "TORSO", "XYZ", "anterior torso", "PALM"]),
    "PatientID": st.sampled_from(["IP_1", "IP_2", "", "-1", "unknown"]),
}), min_size=1, max_size=4), flip=st.booleans())
def test_dicom_headers_out_of_range_are_errors_per_file(dicom_seed, headers, flip):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, values in enumerate(headers):
            data = _edited(dicom_seed, SOPInstanceUID=f"1.2.3.{i}", **values)
            if flip and i == 0:
                data = data[: len(data) * 2 // 3]
            (folder / f"f{i}.dcm").write_bytes(data)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, meta = dermctx.read_dicom(folder / f"f{i}.dcm", id_from="stem")
            except ImageError as exc:
                assert f"f{i}.dcm" in str(exc)
            else:  # a header that is read is in the table's vocabulary
                assert np.isnan(meta["age"]) or 0 <= meta["age"] <= 120
                assert meta["sex"] in ("male", "female", None)
                assert meta["site"] in (*dermctx.table.SITES, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table, errors = dermctx.read_dicom_dir(folder, id_from="stem")
    assert len(table) + len(errors) == len(headers)  # no file lost, none raised for the folder
    assert table["age"].dropna().between(0, 120).all()


def test_a_site_code_of_dermctx_scheme_outside_the_sites_is_an_error_for_that_file(dicom_seed, tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "elbow", "99DERMCTX", "elbow"
    (tmp_path / "bad.dcm").write_bytes(_edited(dicom_seed, AnatomicRegionSequence=[item]))
    (tmp_path / "good.dcm").write_bytes(dicom_seed)
    with pytest.raises(ImageError, match=r"bad\.dcm: AnatomicRegionSequence code 'elbow' in scheme 99DERMCTX"):
        dermctx.read_dicom(tmp_path / "bad.dcm")
    item.CodingSchemeDesignator = "SCT"  # another scheme: an unknown term is a missing site
    (tmp_path / "bad.dcm").write_bytes(_edited(dicom_seed, AnatomicRegionSequence=[item]))
    _, meta = dermctx.read_dicom(tmp_path / "bad.dcm")
    assert meta["site"] is None and meta["site_detail"] == "elbow"
    table, errors = dermctx.read_dicom_dir(tmp_path, id_from="stem")
    assert len(table) + len(errors) == 2


# --- arguments -------------------------------------------------------------------------------------


def _image_table(folder: Path) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        path = folder / f"i{i}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (folder / "bad.png").write_bytes(b"\x89PNG broken")
    paths += [str(folder / "bad.png"), None]
    return pd.DataFrame({"image_id": [f"I{i}" for i in range(5)], "path": paths,
                         "emb_0000": [0.1, 0.2, "x", np.nan, 0.5], "emb_0001": [1.0, 1.0, 1.0, 1.0, 0.0]})


odd_argument = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True),
                         st.text(max_size=3), st.just([0.1]))


@FUZZ
@given(arguments=st.dictionaries(st.sampled_from(["threshold", "search_radius", "bands", "embedding_threshold",
                                                  "embedding_prefix", "images", "near", "n_jobs"]),
                                 odd_argument, max_size=3))
def test_find_duplicates_refuses_bad_arguments_by_name_and_loses_no_row(arguments):
    with tempfile.TemporaryDirectory() as tmp:
        table = _image_table(Path(tmp))
        try:
            pairs, errors = dermctx.find_duplicates(table, progress=False, **arguments)
        except DermctxError as exc:
            message = str(exc)
            assert any(f"{name}=" in message for name in arguments) or "images=False" in message, message
            return
    if arguments.get("images", True) is True:
        image_stages = errors["stage"].isin(["path", "decode", "pixels"]).sum()
        assert pairs.attrs["n_images"] + image_stages == len(table)
    assert set(errors["row"]) <= set(range(len(table)))


@pytest.mark.parametrize(
    "arguments, match",
    [({"bands": "x"}, r"bands='x': expected 'auto' or an integer between 2 and 8"),
     ({"threshold": "x"}, r"threshold='x': expected a fraction of bits in \[0, 1\]"),
     ({"search_radius": 2.5}, r"search_radius=2.5: expected an integer"),
     ({"n_jobs": 0}, r"n_jobs=0: expected None or a positive number of threads"),
     ({"embedding_threshold": "x"}, r"embedding_threshold='x'"),
     ({"near": "no"}, r"near='no': expected True or False")],
)
def test_find_duplicates_names_the_bad_argument(tmp_path, arguments, match):
    with pytest.raises(DermctxError, match=match):
        dermctx.find_duplicates(_image_table(tmp_path), **arguments)


# --- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "describe", "split", "dedup", "fit", "score"])
@pytest.mark.parametrize("name", ["corrupt.parquet", "ragged_row.csv", "latin1_body.csv", "not_gzip.csv.gz",
                                  "width_1e400.csv", "duplicate_columns.csv", "empty.csv"])
def test_cli_bad_table_is_one_line_and_exit_2(command, name, tmp_path, capsys):
    argv = [command, str(BAD / name)]
    if command == "fit":
        argv += ["--out", str(tmp_path / "m")]
    if command == "score":
        argv += ["--model", str(tmp_path / "no-model")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"dermctx {command}: error: "), err
    if command != "score":  # score reads its model first
        assert str(BAD / name) in lines[0]


def test_cli_unwritable_output_is_one_line_and_exit_2(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame({"image_id": ["a"], "patient_id": ["p"]}).to_csv(table, index=False)
    assert main(["validate", str(table), "--out", str(table / "under-a-file.csv")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith(f"dermctx validate: error: {table}"), err


def test_cli_writes_the_errors_table_when_every_image_fails(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["p", "p"]}).to_csv(table, index=False)
    (tmp_path / "images").mkdir()
    out = tmp_path / "pairs.csv"
    assert main(["dedup", str(table), "--image-dir", str(tmp_path / "images"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "dermctx dedup: error: " in err
    errors = pd.read_csv(tmp_path / "pairs.errors.csv")
    assert errors["image_id"].tolist() == ["a", "b"]
    assert errors["message"].str.contains("image file not found").all()


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_cli_split_refuses_a_seed_numpy_cannot_take(seed, tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame({"image_id": list("abcd"), "patient_id": list("abcd")}).to_csv(table, index=False)
    assert main(["split", str(table), "--folds", "2", "--random-state", seed]) == 2
    err = capsys.readouterr().err
    assert f"dermctx split: error: PatientKFold: random_state={seed}; expected None, an int in [0, 2**32 - 1]" in err


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["split", "t.csv", "--folds", "x"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
