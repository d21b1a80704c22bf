"""DICOM field cases (``../shared/fieldcases``): files from other tools, phone JPEGs."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from dermctx import ImageError, read_dicom, read_dicom_dir, write_dicom
from dermctx.errors import DermctxWarning
from dermctx.io.dicom import write_dicom_dir


@pytest.fixture(scope="module")
def other_tools(fieldcases):
    """3 real ISIC 2020 JPEGs wrapped as ``<image_name>.dcm`` by another tool, and their labels."""
    folder = fieldcases / "dicom_from_other_tools"
    return folder / "dicom", folder / "labels.csv"


def test_labels_join_by_file_name(other_tools):
    folder, labels = other_tools
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)  # every file matches: no warning
        table, errors = read_dicom_dir(folder, labels=labels, id_from="stem")
    expected = pd.read_csv(labels)
    assert len(errors) == 0
    assert table["image_id"].tolist() == expected["image_name"].tolist()
    assert table["target"].tolist() == expected["target"].tolist()
    assert table["diagnosis"].tolist() == expected["diagnosis"].tolist()
    assert table["patient_id"].tolist() == expected["patient_id"].tolist()
    assert (table.attrs["labels_matched"], table.attrs["labels_unmatched"]) == (3, 0)


def test_default_key_warns_and_suggests_the_file_name(other_tools):
    folder, labels = other_tools
    with pytest.warns(DermctxWarning, match="0 of 3 files matched a label row") as record:
        table, errors = read_dicom_dir(folder, labels=labels)
    assert "3 of 3 files would match by the file name without extension: pass id_from='stem'" in str(
        record[0].message
    )
    assert len(errors) == 0 and table["target"].isna().all()  # the key is not switched silently
    assert (table["image_id"] == table["sop_instance_uid"]).all()
    assert (table.attrs["labels_matched"], table.attrs["labels_unmatched"]) == (0, 3)


def test_other_tools_pixels_decode(other_tools):
    folder, _ = other_tools
    pixels, meta = read_dicom(folder / "ISIC_0152307.dcm", id_from="stem")
    assert meta["image_id"] == "ISIC_0152307" and pixels.shape == (480, 640, 3)


def test_rotated_phone_jpeg_is_refused(fieldcases, tmp_path):
    jpeg = fieldcases / "exif_orientation" / "phone.jpg"
    row = {"image_id": "phone", "patient_id": "p1"}
    with pytest.raises(ImageError, match=r"phone\.jpg: EXIF Orientation is 6: the pixels are stored rotated") as info:
        write_dicom(jpeg, row, tmp_path / "phone.dcm")
    assert "exiftran -ai" in str(info.value) and "jpegtran" in str(info.value)
    assert not (tmp_path / "phone.dcm").exists()
    written, errors = write_dicom_dir(pd.DataFrame([{**row, "path": str(jpeg)}]), tmp_path / "out", progress=False)
    assert len(written) == 0 and errors["row"].tolist() == [0]
    assert "EXIF Orientation is 6" in errors["message"].iloc[0]


def test_labels_in_any_registered_layout(fieldcases, tmp_path):
    """Labels as an ISIC 2018/2019-style one-hot ground truth join like an ISIC 2020 CSV."""
    folder = fieldcases / "dicom_from_other_tools"
    gt = tmp_path / "gt.csv"
    gt.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0152307,1,0,0,0,0,0,0\n"
                  "ISIC_0162627,0,1,0,0,0,0,0\nISIC_0169687,0,0,0,0,1,0,0\n")
    table, errors = read_dicom_dir(folder / "dicom", labels=gt, id_from="stem")
    assert len(errors) == 0
    assert table.set_index("image_id")["target"].to_dict() == {
        "ISIC_0152307": 1, "ISIC_0162627": 0, "ISIC_0169687": 0}
