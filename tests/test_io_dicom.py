"""DICOM: JPEG wrapped unchanged, pixels equal to Pillow's decode, headers and directory tables."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from dermctx import ImageError, TableError, read_dicom, read_dicom_dir, read_isic2020, write_dicom
from dermctx.errors import DermctxWarning
from dermctx.io.dicom import SITE_SCHEME, write_dicom_dir

ROW = {"image_id": "ISIC_0000001", "patient_id": "IP_0012", "lesion_id": "IL_7",
       "age": 45.0, "sex": "female", "site": "palms/soles", "site_detail": "acral",
       "source": "isic2020", "target": 1}


def _jpeg(path, size=(37, 23), mode="RGB", **save):
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, "JPEG", **save)
    return path


def _pillow(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_round_trip_pixels_and_header(tmp_path):
    jpeg = _jpeg(tmp_path / "a.jpg")
    out = write_dicom(jpeg, ROW, tmp_path / "dcm" / "a.dcm")
    assert out == tmp_path / "dcm" / "a.dcm"
    pixels, meta = read_dicom(out)
    assert pixels.dtype == np.uint8 and pixels.shape == (23, 37, 3)
    np.testing.assert_array_equal(pixels, _pillow(jpeg))
    for key in ("image_id", "patient_id", "lesion_id", "age", "sex", "site", "site_detail", "source"):
        assert meta[key] == ROW[key], key
    assert (meta["width"], meta["height"]) == (37, 23)

    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image Storage
    assert ds.Modality == "XC"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (23, 37, 3)
    assert (ds.PatientID, ds.PatientAge, ds.PatientSex) == ("IP_0012", "045Y", "F")
    assert ds.SeriesDescription == "IL_7"
    code = ds.AnatomicRegionSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("palms/soles", SITE_SCHEME)
    assert "target" not in meta  # labels are never written
    # the JPEG is stored byte for byte (pydicom pads a frame to even length with one zero byte)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    original = jpeg.read_bytes()
    assert frame[: len(original)] == original and len(frame) - len(original) in (0, 1)


def test_uids_are_deterministic(tmp_path):
    jpeg = _jpeg(tmp_path / "a.jpg")
    a = pydicom.dcmread(write_dicom(jpeg, ROW, tmp_path / "a.dcm"))
    b = pydicom.dcmread(write_dicom(jpeg, ROW, tmp_path / "b.dcm"))
    other = pydicom.dcmread(write_dicom(jpeg, {**ROW, "image_id": "ISIC_2"}, tmp_path / "c.dcm"))
    assert a.SOPInstanceUID == b.SOPInstanceUID != other.SOPInstanceUID
    assert a.StudyInstanceUID == other.StudyInstanceUID  # same patient, one study
    assert a.SeriesInstanceUID == other.SeriesInstanceUID  # same lesion, one series
    assert pydicom.uid.UID(a.SOPInstanceUID).is_valid and len(a.SOPInstanceUID) <= 64


def test_grey_jpeg_and_missing_fields(tmp_path):
    jpeg = _jpeg(tmp_path / "g.jpg", mode="L")
    row = {"image_id": "g1", "patient_id": "p1", "age": None, "sex": np.nan, "site": None}
    pixels, meta = read_dicom(write_dicom(jpeg, pd.Series(row), tmp_path / "g.dcm"))
    assert pydicom.dcmread(tmp_path / "g.dcm").PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_array_equal(pixels, _pillow(jpeg))
    assert np.isnan(meta["age"]) and meta["sex"] is None and meta["site"] is None
    assert meta["lesion_id"] == "g1"  # defaults to the image id


def test_rgb_jpeg_with_adobe_marker(tmp_path):
    jpeg = _jpeg(tmp_path / "rgb.jpg", keep_rgb=True)  # stored as RGB, not YCbCr
    pixels, _ = read_dicom(write_dicom(jpeg, ROW, tmp_path / "rgb.dcm"))
    assert pydicom.dcmread(tmp_path / "rgb.dcm").PhotometricInterpretation == "RGB"
    np.testing.assert_array_equal(pixels, _pillow(jpeg))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: _jpeg(p, progressive=True), "progressive JPEG; expected baseline"),
        (lambda p: p.write_bytes(_jpeg(p).read_bytes()[:-400]) and p, "truncated JPEG"),
        (lambda p: p.write_bytes(_jpeg(p).read_bytes()[:40]) and p, "truncated JPEG"),
        (lambda p: Image.new("RGB", (8, 8)).save(p, "PNG") or p, "not a JPEG"),
        (lambda p: p, "cannot read the JPEG"),  # missing file
    ],
)
def test_bad_jpeg_raises_naming_file(tmp_path, make, match):
    path = make(tmp_path / "bad.jpg")
    with pytest.raises(ImageError, match=match) as info:
        write_dicom(path, ROW, tmp_path / "out.dcm")
    assert "bad.jpg" in str(info.value)
    assert not (tmp_path / "out.dcm").exists()


def test_bad_row_raises(tmp_path):
    jpeg = _jpeg(tmp_path / "a.jpg")
    with pytest.raises(TableError, match="'patient_id'"):
        write_dicom(jpeg, {"image_id": "x", "patient_id": float("nan")}, tmp_path / "o.dcm")
    with pytest.raises(TableError, match="'age'"):
        write_dicom(jpeg, {**ROW, "age": 130}, tmp_path / "o.dcm")
    with pytest.raises(TableError, match="'site'"):
        write_dicom(jpeg, {**ROW, "site": "elbow"}, tmp_path / "o.dcm")


def test_non_dicom_file_names_file(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not a dicom file at all")
    with pytest.raises(ImageError, match=r"notes\.dcm: not a DICOM file"):
        read_dicom(path)
    with pytest.raises(ImageError, match="no such file"):
        read_dicom(tmp_path / "absent.dcm")


def test_read_dicom_dir_keeps_every_file(tmp_path):
    jpeg = _jpeg(tmp_path / "a.jpg")
    folder = tmp_path / "dicom"
    write_dicom(jpeg, ROW, folder / "p1" / "a.dcm")
    write_dicom(jpeg, {**ROW, "image_id": "ISIC_2", "lesion_id": None, "site": None}, folder / "b")
    write_dicom(jpeg, ROW, folder / "p1" / "copy.dcm")  # same image id again
    (folder / "README.txt").write_text("hello")
    (folder / ".hidden").write_text("skipped")
    labels = pd.DataFrame({"image_name": ["ISIC_0000001", "ISIC_2", "ISIC_9"],
                           "target": [1, 0, 1], "diagnosis": ["melanoma", "nevus", "x"]})
    table, errors = read_dicom_dir(folder, labels=labels)
    assert len(table) + len(errors) == 4
    assert table["image_id"].tolist() == ["ISIC_2", "ISIC_0000001"]  # sorted by path: b, p1/a.dcm
    assert table["target"].tolist() == [0, 1]
    assert table["diagnosis"].tolist() == ["nevus", "melanoma"]
    assert table["lesion_id"].tolist() == ["ISIC_2", "IL_7"]
    assert table["path"].tolist() == [str(folder / "b"), str(folder / "p1" / "a.dcm")]
    assert list(errors.columns) == ["image_id", "row", "path", "stage", "message"]
    by_path = errors.set_index("path")
    assert "README.txt: not a DICOM file" in by_path.loc[str(folder / "README.txt"), "message"]
    assert "already read" in by_path.loc[str(folder / "p1" / "copy.dcm"), "message"]

    unlabelled, _ = read_dicom_dir(folder, recursive=False)
    assert unlabelled["image_id"].tolist() == ["ISIC_2"] and unlabelled["target"].isna().all()


def test_read_dicom_dir_errors(tmp_path):
    with pytest.raises(ImageError, match="not a folder"):
        read_dicom_dir(tmp_path / "absent")
    with pytest.raises(TableError, match="'image_id'"):
        read_dicom_dir(tmp_path, labels=pd.DataFrame({"target": [1]}))


# --- real ISIC JPEGs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dicoms(isic_dir, isic_images, tmp_path_factory):
    """The five smallest real ISIC JPEGs, written as DICOM, with their CSV rows."""
    manifest = pd.read_csv(isic_images / "manifest.csv").nsmallest(5, "bytes")
    table = read_isic2020(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv", image_dir=isic_images)
    table = table.set_index("image_id", drop=False).loc[manifest["image_name"]].reset_index(drop=True)
    folder = tmp_path_factory.mktemp("isic_dicom")
    for _, row in table.iterrows():
        write_dicom(row["path"], row, folder / f"{row['image_id']}.dcm")
    return table, folder


def test_real_jpegs_round_trip(real_dicoms):
    table, folder = real_dicoms
    for _, row in table.iterrows():
        pixels, meta = read_dicom(folder / f"{row['image_id']}.dcm")
        np.testing.assert_array_equal(pixels, _pillow(row["path"]))
        assert meta["image_id"] == row["image_id"] and meta["patient_id"] == row["patient_id"]
        assert meta["lesion_id"] == row["lesion_id"]
        with Image.open(row["path"]) as im:
            assert (meta["width"], meta["height"]) == im.size


def test_real_dicom_dir_rebuilds_table(real_dicoms, isic_dir):
    table, folder = real_dicoms
    rebuilt, errors = read_dicom_dir(folder, labels=isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv")
    assert len(errors) == 0 and len(rebuilt) == len(table)
    rebuilt = rebuilt.set_index("image_id").loc[table["image_id"]].reset_index()
    columns = ["image_id", "patient_id", "lesion_id", "age", "sex", "site", "site_detail",
               "diagnosis", "target", "benign_malignant", "source"]
    pd.testing.assert_frame_equal(
        rebuilt[columns].astype(object), table[columns].astype(object), check_dtype=False
    )
    # the same from headers alone (no labels), for the columns DICOM carries
    headers, _ = read_dicom_dir(folder)
    headers = headers.set_index("image_id").loc[table["image_id"]].reset_index()
    pd.testing.assert_frame_equal(
        headers[columns[:7]].astype(object), table[columns[:7]].astype(object), check_dtype=False
    )
    assert headers["target"].isna().all()


def test_pixel_buffer_bytes_match_file(real_dicoms):
    table, folder = real_dicoms
    row = table.iloc[0]
    ds = pydicom.dcmread(folder / f"{row['image_id']}.dcm")
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    with open(row["path"], "rb") as fh:
        original = fh.read()
    assert frame.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    assert frame[: len(original)] == original
    with Image.open(io.BytesIO(frame)) as im:
        assert im.format == "JPEG"


def test_write_dicom_dir_and_cli(tmp_path, capsys):
    from dermctx.cli import main
    from dermctx.io.dicom import write_dicom_dir

    images = tmp_path / "images"
    images.mkdir()
    _jpeg(images / "ISIC_1.jpg")
    (images / "ISIC_2.jpg").write_bytes(b"not a jpeg")
    csv = tmp_path / "train.csv"
    csv.write_text("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target\n"
                   "ISIC_1,IP_1,male,45,torso,0\nISIC_2,IP_1,male,45,torso,1\n"
                   "ISIC_3,IP_2,female,50,,0\n../escape,IP_2,female,50,,0\n")
    table = read_isic2020(csv, image_dir=images)
    written, errors = write_dicom_dir(table, tmp_path / "out", progress=False)
    assert len(written) + len(errors) == 4
    assert written["image_id"].tolist() == ["ISIC_1"]
    assert written["path"].tolist() == [str(tmp_path / "out" / "ISIC_1.dcm")]
    assert errors["row"].tolist() == [1, 2, 3]
    assert "not a JPEG" in errors["message"].iloc[0]
    assert "not found" in errors["message"].iloc[1]
    assert "escapes the image directory" in errors["message"].iloc[2]

    # some items failed: exit 1, the count is said and the errors table is in the output folder
    assert main(["to-dicom", str(csv), "--image-dir", str(images), "--out", str(tmp_path / "cli")]) == 1
    assert "3 of 4 items failed" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "cli").iterdir() if p.suffix == ".dcm"] == ["ISIC_1.dcm"]
    report = pd.read_csv(tmp_path / "cli" / "errors.csv")
    assert report["image_id"].tolist() == ["ISIC_2", "ISIC_3", "../escape"]


# --- decoding by transfer syntax and photometric interpretation -----------------------------------


def _testdata(name: str) -> str:
    """A file of pydicom's test data that ships with pydicom (skips if only a download has it)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return str(path)


def _dicom(path, pixels, photometric, syntax=ExplicitVRLittleEndian, **header):
    """A minimal Secondary Capture file holding ``pixels`` in ``syntax``; ``header`` overrides."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    ds.PatientID = "p1"
    for key, value in header.items():
        setattr(ds, key, value)
    if syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


RGB = np.random.default_rng(1).integers(0, 256, (19, 23, 3), dtype=np.uint8)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless])
@pytest.mark.parametrize("grey", [False, True])
def test_native_deflated_and_rle_decode_exactly(tmp_path, syntax, grey):
    pixels = RGB[..., 0] if grey else RGB
    path = _dicom(tmp_path / "x.dcm", pixels, "MONOCHROME2" if grey else "RGB", syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    decoded, meta = read_dicom(path)
    np.testing.assert_array_equal(decoded, np.dstack([pixels] * 3) if grey else pixels)
    assert meta["transfer_syntax"] == syntax


def test_pydicom_rle_and_big_endian_files_match_their_uncompressed_twins():
    rle, _ = read_dicom(_testdata("SC_rgb_rle.dcm"))
    # pydicom's reference values for SC_rgb (its stripes), and the same image as JPEG 2000
    stripes = [[255, 0, 0], [255, 128, 128], [0, 255, 0], [128, 255, 128], [0, 0, 255],
               [128, 128, 255], [0, 0, 0], [64, 64, 64], [192, 192, 192], [255, 255, 255]]
    assert rle[5::10, 50].tolist() == stripes
    np.testing.assert_array_equal(rle, read_dicom(_testdata("SC_rgb_gdcm_KY.dcm"))[0])
    big, _ = read_dicom(_testdata("SC_rgb_small_odd_big_endian.dcm"))
    np.testing.assert_array_equal(big, read_dicom(_testdata("SC_rgb_small_odd.dcm"))[0])
    deflated, meta = read_dicom(_testdata("image_dfl.dcm"))
    assert meta["transfer_syntax"] == DeflatedExplicitVRLittleEndian and deflated.shape == (512, 512, 3)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_gdcm.dcm", "JPEGLSNearLossless_08.dcm"])
def test_syntaxes_of_optional_decoders_are_refused(name):
    path = _testdata(name)
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    with pytest.raises(ImageError, match="dermctx decodes JPEG Baseline") as info:
        read_dicom(path)
    assert name in str(info.value) and syntax.name in str(info.value)


def test_htj2k_is_refused_before_decoding(tmp_path):
    path = _dicom(tmp_path / "h.dcm", RGB, "RGB")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless  # refused before any decoding is tried
    ds.PixelData = encapsulate([RGB.tobytes()])
    ds.save_as(path)
    with pytest.raises(ImageError, match=r"h\.dcm: pixel data in transfer syntax 'High-Throughput"):
        read_dicom(path)


def test_native_ybr_422_is_rgb():
    path = _testdata("SC_ybr_full_422_uncompressed.dcm")
    native, meta = read_dicom(path)
    assert meta["photometric_interpretation"] == "YBR_FULL_422"
    # pydicom's floating-point conversion may differ by 1 from libjpeg's integer one
    assert np.abs(native.astype(int) - pixel_array(path)).max() <= 1
    assert native[5, 50].tolist() == [254, 0, 0]  # red, after the file's own rounding


def test_ybr_full_rle_equals_native(tmp_path):
    ybr = pixel_array(_testdata("SC_ybr_full_422_uncompressed.dcm"), raw=True)
    native = _dicom(tmp_path / "n.dcm", ybr, "YBR_FULL")
    rle = _dicom(tmp_path / "r.dcm", ybr, "YBR_FULL", RLELossless)
    np.testing.assert_array_equal(read_dicom(rle)[0], read_dicom(native)[0])
    assert read_dicom(native)[0][5, 50].tolist() == [254, 0, 0]


def _palette_dicom(path, indices, lut, bits, syntax=ExplicitVRLittleEndian):
    """A PALETTE COLOR file: ``lut`` (entries, 3) stored with ``bits`` bits per entry."""
    data = lut.astype(np.uint16 if bits == 16 else np.uint8)
    header = {f"{c}PaletteColorLookupTableDescriptor": [len(lut) % 65536, 0, bits] for c in ("Red", "Green", "Blue")}
    header.update({f"{c}PaletteColorLookupTableData": data[:, i].tobytes()
                   for i, c in enumerate(("Red", "Green", "Blue"))})
    return _dicom(path, indices, "PALETTE COLOR", syntax, **header)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless])
def test_palette_color_is_looked_up(tmp_path, syntax):
    colours = np.random.default_rng(2).integers(0, 256, (256, 3))
    indices = np.random.default_rng(3).integers(0, 256, (9, 11), dtype=np.uint8)
    for bits, lut in ((8, colours), (16, colours * 257), (16, colours * 256)):  # both 16-bit scalings
        path = _palette_dicom(tmp_path / f"p{bits}.dcm", indices, lut, bits, syntax)
        np.testing.assert_array_equal(read_dicom(path)[0], colours[indices])
    # 16-bit indices into a 16-bit table of 4096 entries
    big = np.random.default_rng(4).integers(0, 256, (4096, 3))
    wide = np.random.default_rng(5).integers(0, 4096, (9, 11), dtype=np.uint16)
    path = _palette_dicom(tmp_path / "w.dcm", wide, big * 257, 16, syntax)
    np.testing.assert_array_equal(read_dicom(path)[0], big[wide])


def test_pydicom_palette_file():
    path = _testdata("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    lut = np.stack([np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2")
                    for c in ("Red", "Green", "Blue")], axis=1)
    pixels, _ = read_dicom(path)
    np.testing.assert_array_equal(pixels, lut[pixel_array(ds)] >> 8)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # colours, not grey indices


def test_palette_that_pydicom_would_map_wrongly_is_refused(tmp_path):
    # 8-bit entries but 4096 of them: pydicom's apply_color_lut would wrap indices above 255
    path = _palette_dicom(tmp_path / "p.dcm", np.full((4, 4), 300, np.uint16),
                          np.random.default_rng(0).integers(0, 256, (4096, 3)), 8)
    with pytest.raises(ImageError, match=r"p\.dcm: palette of 4096 8-bit entries"):
        read_dicom(path)


def test_monochrome1_is_inverted(tmp_path):
    grey = RGB[..., 1]
    pixels, _ = read_dicom(_dicom(tmp_path / "m1.dcm", grey, "MONOCHROME1"))
    np.testing.assert_array_equal(pixels, np.dstack([255 - grey] * 3))


@pytest.mark.parametrize(("name", "match"), [
    ("CT_small.dcm", r"= \[16, 16, 1\]; expected 8-bit"),
    ("SC_rgb_rle_16bit.dcm", r"= \[16, 16, 0\]; expected 8-bit"),
    ("liver_1frame.dcm", r"= \[1, 1, 0\]; expected 8-bit"),
    ("SC_rgb_rle_2frame.dcm", "NumberOfFrames is 2; expected a single-frame image"),
])
def test_deep_or_multiframe_images_are_refused(name, match):
    with pytest.raises(ImageError, match=match) as info:
        read_dicom(_testdata(name))
    assert name in str(info.value)


# --- header values: per file ---------------------------------------------------------------------


def _edit(path, **header):
    ds = pydicom.dcmread(path)
    for key, value in header.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_pixels_need_no_patient_id(tmp_path):
    jpeg = _jpeg(tmp_path / "a.jpg")
    path = _edit(write_dicom(jpeg, ROW, tmp_path / "d" / "a.dcm"), PatientID="")
    pixels, meta = read_dicom(path)
    np.testing.assert_array_equal(pixels, _pillow(jpeg))
    assert meta["patient_id"] is None and meta["image_id"] == ROW["image_id"]
    table, errors = read_dicom_dir(tmp_path / "d")  # a table row still needs one
    assert len(table) == 0 and "a.dcm: PatientID is empty" in errors["message"].iloc[0]


def test_one_bad_header_value_is_one_error_row(tmp_path):
    jpeg = _jpeg(tmp_path / "a.jpg")
    folder = tmp_path / "d"
    write_dicom(jpeg, ROW, folder / "a.dcm")
    _edit(write_dicom(jpeg, {**ROW, "image_id": "b"}, folder / "b.dcm"), PatientAge="300Y")
    _edit(write_dicom(jpeg, {**ROW, "image_id": "c"}, folder / "c.dcm"), PatientSex="X")
    table, errors = read_dicom_dir(folder)
    assert table["image_id"].tolist() == [ROW["image_id"]]
    assert errors["row"].tolist() == [1, 2]
    assert "b.dcm: PatientAge '300Y' is 300 years; expected years in [0, 120]" in errors["message"].iloc[0]
    assert "c.dcm: PatientSex 'X'; expected 'M', 'F'" in errors["message"].iloc[1]
    with pytest.raises(ImageError, match=r"b\.dcm: PatientAge '300Y'"):
        read_dicom(folder / "b.dcm")


def test_a_file_the_table_rules_refuse_is_one_error_row(tmp_path, monkeypatch):
    """Whatever the lesion-table rules refuse in one file's header sinks that file only."""
    import dermctx.io.dicom as dicom

    def strict(table, **kwargs):  # stands for any rule of validate_table on a single row
        if (table["patient_id"] == "unknown").any():
            raise TableError(f"{kwargs.get('name')}: column 'patient_id' is a placeholder")
        return validate(table, **kwargs)

    validate = dicom.validate_table
    monkeypatch.setattr(dicom, "validate_table", strict)
    jpeg = _jpeg(tmp_path / "a.jpg")
    write_dicom(jpeg, ROW, tmp_path / "d" / "a.dcm")
    write_dicom(jpeg, {**ROW, "image_id": "b", "patient_id": "unknown"}, tmp_path / "d" / "b.dcm")
    table, errors = read_dicom_dir(tmp_path / "d")
    assert table["image_id"].tolist() == [ROW["image_id"]]
    assert errors["row"].tolist() == [1] and errors["image_id"].tolist() == ["b"]
    assert "b.dcm: column 'patient_id' is a placeholder" in errors["message"].iloc[0]


# --- which id labels join by ---------------------------------------------------------------------


@pytest.fixture
def foreign_folder(tmp_path):
    """Three files as another tool writes them: no dermctx private block, named by image id."""
    jpeg = _jpeg(tmp_path / "a.jpg")
    folder = tmp_path / "d"
    for i, name in enumerate(["IMG_1", "IMG_2", "IMG_3"]):
        path = write_dicom(jpeg, {**ROW, "image_id": name}, folder / f"{name}.dcm")
        ds = pydicom.dcmread(path)
        del ds[0x0011, 0x0010]  # the private creator: the block is gone
        for element in range(0x1101, 0x1105):
            if (0x0011, element) in ds:
                del ds[0x0011, element]
        ds.AccessionNumber = f"ACC{i + 1}"
        ds.save_as(path)
    return folder


def test_id_from_chooses_the_image_id(foreign_folder):
    table, errors = read_dicom_dir(foreign_folder)  # auto: no private block -> SOPInstanceUID
    assert table["image_id"].tolist() == table["sop_instance_uid"].tolist() and len(errors) == 0
    assert table.attrs["id_from"] == "auto"
    assert read_dicom_dir(foreign_folder, id_from="stem")[0]["image_id"].tolist() == ["IMG_1", "IMG_2", "IMG_3"]
    by_accession, _ = read_dicom_dir(foreign_folder, id_from="AccessionNumber")
    assert by_accession["image_id"].tolist() == ["ACC1", "ACC2", "ACC3"]
    assert read_dicom(foreign_folder / "IMG_2.dcm", id_from="stem")[1]["image_id"] == "IMG_2"
    table, errors = read_dicom_dir(foreign_folder, id_from="dermctx")  # none has the private id
    assert len(table) == 0 and len(errors) == 3
    assert "IMG_1.dcm: no image id by id_from='dermctx'" in errors["message"].iloc[0]
    _edit(foreign_folder / "IMG_3.dcm", AccessionNumber="")
    table, errors = read_dicom_dir(foreign_folder, id_from="AccessionNumber")
    assert len(table) == 2 and "IMG_3.dcm: no image id by id_from='AccessionNumber'" in errors["message"].iloc[0]


@pytest.mark.parametrize("bad", ["NoSuchKeyword", "PixelData", "AnatomicRegionSequence", "Stem"])
def test_unknown_id_from_is_refused(foreign_folder, bad):
    with pytest.raises(TableError, match=r"expected one of \['auto', 'dermctx', 'stem'\] or the keyword"):
        read_dicom_dir(foreign_folder, id_from=bad)


def test_unmatched_labels_are_counted_and_named(foreign_folder):
    labels = pd.DataFrame({"image_id": ["IMG_1", "IMG_2", "OTHER"], "target": [1, 0, 1]})
    with pytest.warns(DermctxWarning, match=r"2 of 3 files matched a label row .*1 did not \(e\.g\. \['IMG_3'\]\)"):
        table, _ = read_dicom_dir(foreign_folder, labels=labels, id_from="stem")
    assert table["target"].tolist()[:2] == [1, 0] and pd.isna(table["target"].iloc[2])
    assert (table.attrs["labels_matched"], table.attrs["labels_unmatched"]) == (2, 1)


def test_no_matching_label_suggests_the_key_that_would_match(foreign_folder):
    labels = pd.DataFrame({"image_id": ["IMG_1", "IMG_2", "IMG_3"], "target": [1, 0, 1]})
    with pytest.warns(DermctxWarning, match="0 of 3 files matched") as record:
        table, _ = read_dicom_dir(foreign_folder, labels=labels)
    assert "3 of 3 files would match by the file name without extension: pass id_from='stem'" in str(record[0].message)
    assert table["target"].isna().all()  # never switched silently
    assert (table.attrs["labels_matched"], table.attrs["labels_unmatched"]) == (0, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)  # all match: no warning
        table, _ = read_dicom_dir(foreign_folder, labels=labels, id_from="stem")
    assert table["target"].tolist() == [1, 0, 1] and table.attrs["labels_unmatched"] == 0


# --- EXIF orientation ----------------------------------------------------------------------------


def _exif_jpeg(path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(path, "JPEG", exif=exif)
    return path


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_rotated_jpeg_is_refused(tmp_path, orientation):
    jpeg = _exif_jpeg(tmp_path / "phone.jpg", orientation)
    with pytest.raises(ImageError, match=rf"phone\.jpg: EXIF Orientation is {orientation}.*exiftran -ai"):
        write_dicom(jpeg, ROW, tmp_path / "o.dcm")
    assert not (tmp_path / "o.dcm").exists()
    table = pd.DataFrame([{**ROW, "path": str(jpeg)}])
    written, errors = write_dicom_dir(table, tmp_path / "out", progress=False)
    assert len(written) == 0 and "EXIF Orientation" in errors["message"].iloc[0]


def test_upright_exif_jpeg_is_written(tmp_path):
    from dermctx.io.images import load_image

    jpeg = _exif_jpeg(tmp_path / "up.jpg", 1)
    pixels, _ = read_dicom(write_dicom(jpeg, ROW, tmp_path / "up.dcm"))
    np.testing.assert_array_equal(pixels, _pillow(jpeg))
    np.testing.assert_array_equal(load_image(tmp_path / "up.dcm", 16), load_image(jpeg, 16))
