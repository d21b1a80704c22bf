"""DICOM: JPEG wrapped unchanged, pixels equal to Pillow's decode, headers and directory tables."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_frames

from dermctx import ImageError, TableError, read_dicom, read_dicom_dir, read_isic2020, write_dicom
from dermctx.io.dicom import SITE_SCHEME

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


def test_write_dicom_dir_and_cli(tmp_path):
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

    assert main(["to-dicom", str(csv), "--image-dir", str(images), "--out", str(tmp_path / "cli")]) == 1
    assert [p.name for p in (tmp_path / "cli").iterdir() if p.suffix == ".dcm"] == ["ISIC_1.dcm"]
    report = pd.read_csv(tmp_path / "cli" / "to-dicom.errors.csv")
    assert report["image_id"].tolist() == ["ISIC_2", "ISIC_3", "../escape"]
