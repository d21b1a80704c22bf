"""Tests of photos with several lesions: dermctx.io.boxes (YOLO, COCO), dermctx.crops and
dermctx.detection (photo-level metrics, the box confusion matrix, mAP from pycocotools)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import dermctx
from dermctx.crops import crop_lesions, crop_region, embed_crops
from dermctx.detection import BACKGROUND, box_iou, detection_metrics, mean_average_precision
from dermctx.errors import MetricError, TableError
from dermctx.io.boxes import BOX_COLUMNS, photo_size, read_coco, read_yolo
from dermctx.table import validate_table

SMALL = "ISIC_0169687"  # 640 x 480, EXIF orientation 1
WIDE = "ISIC_0052212"  # 1872 x 1053


def _yolo_line(cls: int, box: tuple[float, float, float, float], size: tuple[int, int],
               conf: float | None = None) -> str:
    """A YOLO line, 6 decimals as detectors write them, for a box given in pixels."""
    (x0, y0, x1, y1), (w, h) = box, size
    values = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
    if conf is not None:
        values.append(conf)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in values)


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def photos(isic_images: Path, tmp_path: Path) -> Path:
    """A folder with two real ISIC JPEGs (640 x 480 and 1872 x 1053), both upright."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in (SMALL, WIDE):
        shutil.copy(isic_images / f"{name}.jpg", folder / f"{name}.jpg")
        assert photo_size(folder / f"{name}.jpg")[2] == 1  # no EXIF turn: pixels as stored
    return folder


# --- reading boxes and cutting crops -----------------------------------------------------------


def test_crops_equal_expected_regions_on_real_photos(photos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / f"{SMALL}.txt").write_text("\n".join([
        _yolo_line(0, (100, 50, 260, 170), (640, 480)),  # inside
        _yolo_line(1, (576, 384, 640, 480), (640, 480)),  # touches the right and bottom edges
    ]) + "\n")
    (labels / f"{WIDE}.txt").write_text(_yolo_line(0, (1000.5, 300.25, 1200.5, 500.75), (1872, 1053)))

    boxes, errors = read_yolo(labels, photos, class_names=["nevus", "lentigo"])
    assert len(errors) == 0
    assert list(boxes.columns) == list(BOX_COLUMNS)
    # sorted by photo_id, then line number (box_id)
    assert list(zip(boxes["photo_id"], boxes["box_id"], strict=True)) == [
        (WIDE, 1), (SMALL, 1), (SMALL, 2)]
    assert boxes["class_name"].tolist() == ["nevus", "nevus", "lentigo"]
    np.testing.assert_allclose(boxes.loc[1, ["x0", "y0", "x1", "y1"]].to_numpy(float),
                               [100, 50, 260, 170], atol=0.01)
    assert boxes[["photo_width", "photo_height"]].values.tolist() == [[1872, 1053], [640, 480],
                                                                       [640, 480]]

    lesions, errors = crop_lesions(boxes)  # margin 0.1, square
    assert len(errors) == 0 and len(lesions) == 3
    small, wide = _rgb(photos / f"{SMALL}.jpg"), _rgb(photos / f"{WIDE}.jpg")
    # box 160 x 120 centred (180, 110): square side 160, +10% each side = 192 px
    np.testing.assert_array_equal(lesions["crop"].iloc[1], small[14:206, 84:276])
    # border box 64 x 96 centred (608, 432): side 96 * 1.2 = 115.2 -> [550, 666) x [374, 490),
    # clipped to the photo
    np.testing.assert_array_equal(lesions["crop"].iloc[2], small[374:480, 550:640])
    assert lesions["clipped"].tolist() == [False, False, True]
    assert lesions.loc[2, ["crop_x0", "crop_y0", "crop_x1", "crop_y1"]].tolist() == [550, 374, 640, 480]
    assert lesions.loc[2, ["width", "height"]].tolist() == [90, 106]
    # square=False, margin 0: the whole-pixel cover of (1000.5, 300.25)-(1200.5, 500.75)
    plain, _ = crop_lesions(boxes.iloc[[0]], margin=0.0, square=False)
    np.testing.assert_array_equal(plain["crop"].iloc[0], wide[300:501, 1000:1201])

    # identity, lesion table, box and detector columns
    assert lesions["image_id"].tolist() == [f"{WIDE}_box1", f"{SMALL}_box1", f"{SMALL}_box2"]
    assert lesions["lesion_id"].tolist() == lesions["image_id"].tolist()
    assert lesions["patient_id"].tolist() == [WIDE, SMALL, SMALL]  # default: one photo, one patient
    assert lesions["class_name"].tolist() == ["nevus", "nevus", "lentigo"]
    assert validate_table(lesions.drop(columns="crop"))["image_id"].is_unique

    # on disk: the same pixels (lossless PNG), with a path Embedder reads
    disk, errors = crop_lesions(boxes, out_dir=tmp_path / "crops", patient_id="P1")
    assert len(errors) == 0 and "crop" not in disk.columns
    assert set(disk["patient_id"]) == {"P1"}
    for mem, path in zip(lesions["crop"], disk["path"], strict=True):
        assert Path(path).parent == (tmp_path / "crops").resolve()
        np.testing.assert_array_equal(_rgb(Path(path)), mem)


def test_crop_region_geometry() -> None:
    # square about the centre, margin on each side, clipped at the edges
    assert crop_region((10, 10, 30, 20), (100, 100), margin=0.0) == ((10, 5, 30, 25), False)
    assert crop_region((10, 10, 30, 20), (100, 100), margin=0.0, square=False) == ((10, 10, 30, 20), False)
    # square side 20, +50% each side = 40 about (20, 15): [0, 40) x [-5, 35), clipped at the top
    assert crop_region((10, 10, 30, 20), (100, 100), margin=0.5) == ((0, 0, 40, 35), True)
    # half-pixel corners: the covering pixels, then squared by growing the shorter side
    (left, top, right, bottom), clipped = crop_region((10.5, 10, 20.5, 20), (100, 100), margin=0.0)
    assert (left, top, right, bottom) == (10, 10, 21, 21) and not clipped
    # float round-off within 0.01 px snaps, it does not add a pixel
    assert crop_region((9.999, 10.004, 30.003, 19.996), (100, 100), margin=0.0,
                       square=False)[0] == (10, 10, 30, 20)


def test_malformed_yolo_lines_are_reported_with_file_and_line(photos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    bad = labels / f"{SMALL}.txt"
    bad.write_text("\n".join([
        "0 0.5 0.5 0.2 0.2",            # 1: fine
        "0 0.5 0.5 0.2",                # 2: 4 values
        "x 0.5 0.5 0.2 0.2",            # 3: class not an integer
        "0 1.2 0.5 0.1 0.1",            # 4: centre outside [0, 1]
        "",                             # 5: blank: nothing
        "0 0.5 0.5 0.1 0.1 1.5",        # 6: confidence outside [0, 1]
        "0 0.5 nan 0.1 0.1",            # 7: not finite
        "0 0.5 0.5 0 0.1",              # 8: zero width
        "2 0.5 0.5 0.1 0.1",            # 9: class outside class_names
        "0 0.1 0.1 0.2 0.1 0.3 0.2 0.4",  # 10: a polygon
        "1 0.9 0.9 0.3 0.3 0.75",       # 11: fine, with a confidence; extends past the edge
    ]))
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no photo of that name
    (labels / "classes.txt").write_text("nevus\nlentigo\n")  # LabelImg's class list: not labels

    boxes, errors = read_yolo(labels, photos, class_names=labels / "classes.txt")
    box_rows = boxes[boxes["box_id"].notna()]
    assert box_rows["box_id"].tolist() == [1, 11]
    assert box_rows["class_name"].tolist() == ["nevus", "lentigo"]
    assert np.isnan(box_rows["confidence"].iloc[0]) and box_rows["confidence"].iloc[1] == 0.75
    line_errors = errors[errors["path"] == str(bad)]
    lines = [int(m) for m in line_errors["message"].str.extract(r", line (\d+):")[0]]
    assert lines == [2, 3, 4, 6, 7, 8, 9, 10]
    assert line_errors["message"].str.startswith(str(bad)).all()
    messages = dict(zip(lines, line_errors["message"], strict=True))
    assert "4 values" in messages[2] and "not a non-negative integer" in messages[3]
    assert "cx = 1.2 is outside [0, 1]" in messages[4] and "confidence = 1.5" in messages[6]
    assert "not in class_names" in messages[9] and "polygon" in messages[10]
    orphan = errors[errors["path"] == str(labels / "orphan.txt")]
    assert len(orphan) == 1 and "no photo for this label file" in orphan["message"].iloc[0]
    # the photo without a label file is a negative photo: one row, no box
    negative = boxes[boxes["photo_id"] == WIDE]
    assert len(negative) == 1 and negative["box_id"].isna().all() and negative["x0"].isna().all()
    assert len(errors) == 9


def test_yolo_ambiguous_photo_and_bad_arguments(photos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / f"{SMALL}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with Image.open(photos / f"{SMALL}.jpg") as im:
        im.save(photos / f"{SMALL}.png")  # two photos, one name
    boxes, errors = read_yolo(labels, photos)
    assert SMALL not in set(boxes["photo_id"])
    assert len(errors) == 1 and "several photos share the name" in errors["message"].iloc[0]
    with pytest.raises(TableError, match=r"read_yolo: path \(the label files\): .* is not a folder"):
        read_yolo(tmp_path / "nowhere", photos)
    with pytest.raises(TableError, match="class_names"):
        read_yolo(labels, photos, class_names=3.5)  # type: ignore[arg-type]


def test_exif_orientation_6_gives_the_regions_a_viewer_sees(isic_images: Path, tmp_path: Path) -> None:
    upright = _rgb(isic_images / f"{SMALL}.jpg")  # (480, 640, 3): what the viewer must see
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 480 wide, 640 high
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    stored.save(images / "phone.png", exif=exif)  # lossless: pixels compare exactly
    stored.save(images / "phone_jpeg.jpg", exif=exif, quality=95)
    with Image.open(images / "phone.png") as im:
        assert im.size == (480, 640)  # stored sideways
    line = _yolo_line(0, (100, 50, 260, 170), (640, 480)) + "\n"  # viewer's coordinates
    (labels / "phone.txt").write_text(line)
    (labels / "phone_jpeg.txt").write_text(line)

    boxes, errors = read_yolo(labels, images)
    assert len(errors) == 0
    assert boxes[["photo_width", "photo_height", "exif_orientation"]].values.tolist() == [
        [640, 480, 6], [640, 480, 6]]
    lesions, errors = crop_lesions(boxes)
    assert len(errors) == 0
    np.testing.assert_array_equal(lesions["crop"].iloc[0], upright[14:206, 84:276])
    jpeg = lesions["crop"].iloc[1].astype(float)
    assert jpeg.shape == (192, 192, 3)
    assert np.abs(jpeg - upright[14:206, 84:276]).mean() < 4  # JPEG loss only
    # a box table made for the stored (sideways) size is refused, not cut from the wrong place
    sideways = boxes.iloc[[0]].assign(photo_width=480, photo_height=640)
    lesions, errors = crop_lesions(sideways)
    assert len(lesions) == 0 and "shows as 640 x 480" in errors["message"].iloc[0]


def test_rgba_and_palette_photos_become_rgb(isic_images: Path, tmp_path: Path) -> None:
    rgb = _rgb(isic_images / f"{SMALL}.jpg")[:200, :200]
    alpha = np.zeros((200, 200), np.uint8)
    alpha[:, 100:] = 255  # left half transparent
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.save(tmp_path / "palette.png")
    boxes = pd.DataFrame({
        "photo": [str(tmp_path / "rgba.png"), str(tmp_path / "palette.png")],
        "photo_id": ["rgba", "palette"], "box_id": [1, 1],
        "x0": [50.0, 50.0], "y0": [50.0, 50.0], "x1": [150.0, 150.0], "y1": [150.0, 150.0]})
    lesions, errors = crop_lesions(boxes, margin=0.0)
    assert len(errors) == 0
    expected = rgb[50:150, 50:150].copy()
    expected[:, :50] = 0  # transparent pixels composited on black, as load_image does
    np.testing.assert_array_equal(lesions["crop"].iloc[0], expected)
    np.testing.assert_array_equal(lesions["crop"].iloc[1],
                                  np.asarray(palette.convert("RGB"))[50:150, 50:150])


def test_every_box_is_a_crop_or_an_error(photos: Path, tmp_path: Path) -> None:
    photo = str(photos / f"{SMALL}.jpg")
    boxes = pd.DataFrame({
        "photo": [photo, photo, photo, str(tmp_path / "gone.jpg"), photo, photo, photo, photo],
        "photo_id": [SMALL, SMALL, SMALL, "gone", SMALL, SMALL, SMALL, "other"],
        "box_id": [1, 2, 2, 1, 3, pd.NA, 4, 1],
        "x0": [10.0, 20, 20, 10, 30, np.nan, 400, 5], "y0": [10.0, 20, 20, 10, 40, np.nan, 300, 5],
        "x1": [50.0, 60, 60, 50, 20, np.nan, 410, 600], "y1": [50.0, 60, 60, 50, 80, np.nan, 310, 400],
    })
    patients = {SMALL: "P7", "gone": "P8"}  # "other" has no patient
    lesions, errors = crop_lesions(boxes, patient_id=patients, max_pixels=200_000)
    # row 5 is a photo with no box (skipped); 7 boxes -> 1 crop + 6 errors
    assert lesions["image_id"].tolist() == [f"{SMALL}_box1", f"{SMALL}_box4"]
    assert lesions["patient_id"].tolist() == ["P7", "P7"]
    assert errors["row"].tolist() == [1, 2, 3, 4, 7]
    by_row = dict(zip(errors["row"], errors["message"], strict=True))
    assert "made twice" in by_row[1] and "made twice" in by_row[2]
    assert "no such photo" in by_row[3]
    assert "x1 > x0" in by_row[4]
    assert "no patient id" in by_row[7]
    assert len(lesions) + len(errors) == 7  # 8 rows, one of them a photo with no box
    # the pixel budget: an absurd box is refused with its size
    lesions, errors = crop_lesions(boxes.iloc[[7]], patient_id="P9", max_pixels=200_000)
    assert len(lesions) == 0 and "above max_pixels=200,000" in errors["message"].iloc[0]
    with pytest.raises(TableError, match="lacks column"):
        crop_lesions(boxes.drop(columns="box_id"))
    with pytest.raises(TableError, match="margin"):
        crop_lesions(boxes, margin=-0.1)
    placeholder, errors = crop_lesions(boxes.iloc[[0]], patient_id="unknown")
    assert len(placeholder) == 0 and "placeholder" in errors["message"].iloc[0]
    odd = boxes.iloc[[0]].astype({"box_id": object}).assign(box_id="x")
    kept, errors = crop_lesions(odd, patient_id="P1")
    assert len(kept) == 0 and "expected an integer id" in errors["message"].iloc[0]


def _coco(images: Path, annotations: list[dict], tmp_path: Path, name: str = "truth.json") -> Path:
    data = {
        "images": [{"id": 1, "file_name": f"{SMALL}.jpg", "width": 640, "height": 480},
                   {"id": 2, "file_name": f"{WIDE}.jpg", "width": 1872, "height": 1053}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nevus"}, {"id": 2, "name": "lentigo"}],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_read_coco_matches_yolo_and_reports_bad_entries(photos: Path, tmp_path: Path) -> None:
    anns = [
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [100, 50, 160, 120]},
        {"id": 8, "image_id": 1, "category_id": 2, "bbox": [576, 384, 64, 96], "score": 0.4},
        {"id": 9, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 10]},     # unknown category
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10]},        # 3 numbers
        {"id": 11, "image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 10]},    # unknown image
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [700, 10, 10, 10]},  # centre outside
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},     # repeated id
    ]
    boxes, errors = read_coco(_coco(photos, anns, tmp_path), photos)
    with_box = boxes[boxes["box_id"].notna()]
    assert with_box["box_id"].tolist() == [7, 8]
    assert with_box[["x0", "y0", "x1", "y1"]].values.tolist() == [[100, 50, 260, 170],
                                                                [576, 384, 640, 480]]
    assert with_box["class_name"].tolist() == ["nevus", "lentigo"]
    assert np.isnan(with_box["confidence"].iloc[0]) and with_box["confidence"].iloc[1] == 0.4
    assert boxes.loc[boxes["photo_id"] == WIDE, "box_id"].isna().all()  # image without annotations
    where = errors["message"].str.extract(r"annotations\[(\d+)\]")[0].astype(int).tolist()
    assert where == [2, 3, 4, 5, 6]
    assert "category_id 5" in errors["message"].iloc[0] and "image_id 3" in errors["message"].iloc[2]
    assert "already used by annotations[0]" in errors["message"].iloc[4]

    # the same boxes written as YOLO lines crop to the same pixels
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / f"{SMALL}.txt").write_text(_yolo_line(0, (100, 50, 260, 170), (640, 480)) + "\n")
    yolo, _ = read_yolo(labels, photos)
    a, _ = crop_lesions(with_box.iloc[[0]])
    b, _ = crop_lesions(yolo[yolo["box_id"].notna()])
    np.testing.assert_array_equal(a["crop"].iloc[0], b["crop"].iloc[0])

    # a results list with images_from; a JSON size that is not the viewer's is refused
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [100, 50, 160, 120],
                                    "score": 0.9}, {"image_id": 1, "category_id": 1,
                                                    "bbox": [1, 1, 5, 5]}]))
    pred, errors = read_coco(results, photos, images_from=tmp_path / "truth.json")
    assert pred.loc[pred["box_id"].notna(), "box_id"].tolist() == [1]
    assert "no 'score'" in errors["message"].iloc[0]
    with pytest.raises(TableError, match="results list"):
        read_coco(results, photos)
    wrong = json.loads((tmp_path / "truth.json").read_text())
    wrong["images"][0].update(width=480, height=640)
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    _, errors = read_coco(tmp_path / "wrong.json", photos)
    assert errors["message"].str.contains("shows as 640 x 480").sum() >= 2


# --- detection metrics --------------------------------------------------------------------------


def _table(rows: list[tuple], photos: list[str] = ()) -> pd.DataFrame:
    """Boxes from (photo, class, x0, y0, x1, y1[, confidence]) tuples, plus photos with no box."""
    out = pd.DataFrame(
        [{"photo_id": r[0], "box_id": k + 1, "class_name": r[1], "x0": r[2], "y0": r[3],
          "x1": r[4], "y1": r[5], "confidence": r[6] if len(r) > 6 else np.nan}
         for k, r in enumerate(rows)])
    empty = pd.DataFrame({"photo_id": list(photos), "box_id": pd.NA, "class_name": None,
                          "x0": np.nan, "y0": np.nan, "x1": np.nan, "y1": np.nan,
                          "confidence": np.nan})
    return pd.concat([out, empty], ignore_index=True) if len(empty) else out


# four photos, three classes; p4 has no lesion. Hand-worked below.
TRUTH = _table([
    ("p1", "nevus", 0, 0, 100, 100), ("p1", "lentigo", 200, 200, 260, 260),
    ("p2", "nevus", 50, 50, 150, 150), ("p2", "sk", 300, 300, 400, 380),   # the sk is missed
    ("p3", "lentigo", 10, 10, 60, 60),
], photos=["p4"])
PRED = _table([
    ("p1", "nevus", 0, 0, 100, 100, 0.9),          # right
    ("p1", "lentigo", 205, 205, 265, 265, 0.8),    # right, IoU 3025/4175 = 0.72
    ("p2", "lentigo", 50, 50, 150, 150, 0.7),      # the nevus, called lentigo
    ("p2", "nevus", 500, 500, 540, 540, 0.6),      # nothing there
    ("p3", "lentigo", 10, 10, 60, 60, 0.2),        # right, but below the 0.25 threshold
    ("p4", "sk", 0, 0, 30, 30, 0.95),              # on the photo with no lesion
])


def test_detection_metrics_equal_hand_computed_values() -> None:
    result = detection_metrics(TRUTH, PRED)  # conf >= 0.25, IoU >= 0.5
    assert result.n_photos == 4
    got = result.per_class.set_index("class")
    # photo level: nevus in truth {p1, p2}, predicted {p1, p2}
    assert got.loc["nevus", ["TP", "FP", "FN", "TN"]].tolist() == [2, 0, 0, 2]
    # lentigo in truth {p1, p3}, predicted {p1, p2} (p3's is below the threshold)
    assert got.loc["lentigo", ["TP", "FP", "FN", "TN"]].tolist() == [1, 1, 1, 1]
    # sk in truth {p2}, predicted {p4}
    assert got.loc["sk", ["TP", "FP", "FN", "TN"]].tolist() == [0, 1, 1, 2]
    np.testing.assert_allclose(got.loc["nevus", ["precision", "sensitivity", "specificity", "accuracy"]]
                               .to_numpy(float), [1, 1, 1, 1])
    np.testing.assert_allclose(got.loc["lentigo", ["precision", "sensitivity", "specificity",
                                                   "accuracy"]].to_numpy(float), [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(got.loc["sk", ["precision", "sensitivity", "specificity", "accuracy"]]
                               .to_numpy(float), [0, 0, 2 / 3, 0.5])
    assert got["truth_boxes"].to_dict() == {"lentigo": 2, "nevus": 2, "sk": 1}
    assert got["pred_boxes"].to_dict() == {"lentigo": 2, "nevus": 2, "sk": 1}

    # box level: rows truth, columns predicted
    expected = pd.DataFrame(
        [[1, 0, 0, 1],    # lentigo: p1 matched; p3 missed (its prediction is below threshold)
         [1, 1, 0, 0],    # nevus: p2 called lentigo; p1 matched
         [0, 0, 0, 1],    # sk: missed
         [0, 1, 1, 0]],   # false detections: a nevus on p2, an sk on p4
        index=["lentigo", "nevus", "sk", BACKGROUND], columns=["lentigo", "nevus", "sk", BACKGROUND])
    pd.testing.assert_frame_equal(result.confusion, expected, check_names=False, check_dtype=False)
    assert result.accuracy == pytest.approx(2 / 7)
    assert result.matches["outcome"].value_counts().to_dict() == {
        "match": 3, "missed": 2, "false detection": 2}
    iou = result.matches.loc[result.matches["truth_class"] == "lentigo", "iou"].dropna()
    assert iou.tolist() == pytest.approx([3025 / 4175])

    # a lower threshold lets p3's lentigo in
    low = detection_metrics(TRUTH, PRED, conf_threshold=0.1).per_class.set_index("class")
    assert low.loc["lentigo", ["TP", "FP", "FN", "TN"]].tolist() == [2, 1, 0, 1]


def test_confusion_matching_is_one_to_one_by_iou() -> None:
    truth = _table([("a", "nevus", 0, 0, 10, 10)])
    pred = _table([("a", "nevus", 0, 0, 10, 10, 0.5), ("a", "nevus", 0, 0, 10, 12, 0.9)])
    result = detection_metrics(truth, pred)
    match = result.matches[result.matches["outcome"] == "match"]
    assert match["pred_box"].tolist() == [1]  # IoU 1.0 beats 100/120 despite lower confidence
    assert result.confusion.loc[BACKGROUND, "nevus"] == 1
    np.testing.assert_allclose(box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 12], [20, 20, 30, 30]])),
                               [[100 / 120, 0.0]])


def test_detection_inputs_are_checked() -> None:
    with pytest.raises(MetricError, match=r"photo\(s\) \['zz'\] are not in the truth"):
        detection_metrics(TRUTH, _table([("zz", "nevus", 0, 0, 5, 5, 0.5)]))
    with pytest.raises(MetricError, match="confidence is missing"):
        detection_metrics(TRUTH, TRUTH)
    with pytest.raises(MetricError, match="not in classes"):
        detection_metrics(TRUTH, PRED, classes=["nevus", "lentigo"])
    with pytest.raises(MetricError, match="conf_threshold"):
        detection_metrics(TRUTH, PRED, conf_threshold=1.5)
    inverted = TRUTH.copy()
    inverted.loc[0, "x1"] = -1
    with pytest.raises(MetricError, match="row 0"):
        detection_metrics(inverted, PRED)
    with pytest.warns(dermctx.DermctxWarning, match="no class of pred"):
        detection_metrics(TRUTH, PRED.assign(class_name="0"))


def test_mean_average_precision_hand_derived_values() -> None:
    pytest.importorskip("pycocotools", reason="mAP needs the optional extra dermctx[detection]")
    # perfect detections: AP 1 for each class
    perfect = TRUTH[TRUTH["box_id"].notna() & (TRUTH["photo_id"] != "p4")].assign(confidence=0.9)
    value, per_class = mean_average_precision(TRUTH, perfect)
    assert value == pytest.approx(1.0) and per_class["ap"].tolist() == pytest.approx([1.0, 1.0, 1.0])

    # one class, 2 truth boxes; ranked detections TP (0.9), FP (0.8), TP (0.7):
    # precision-recall (1, 0.5), (0.5, 0.5), (2/3, 1); interpolated precision is 1 at recall
    # 0..0.50 (51 of COCO's 101 points) and 2/3 at 0.51..1 (50 points)
    truth = _table([("a", "nevus", 0, 0, 50, 20), ("b", "nevus", 100, 0, 150, 30)])
    pred = _table([("a", "nevus", 0, 0, 50, 20, 0.9), ("a", "nevus", 300, 0, 350, 30, 0.8),
                   ("b", "nevus", 100, 0, 150, 30, 0.7)])
    value, per_class = mean_average_precision(truth, pred)
    assert value == pytest.approx((51 + 50 * 2 / 3) / 101)
    # a wide box (IoU 0.5 exactly with a 50 x 20 box) still matches at 0.5, not at 0.6
    wide = _table([("a", "nevus", 0, 0, 50, 40, 0.9)])
    assert mean_average_precision(truth.iloc[[0]], wide)[0] == pytest.approx(1.0)
    assert mean_average_precision(truth.iloc[[0]], wide, iou_threshold=0.6)[0] == 0.0

    # several classes: a class found perfectly (1), one never found (0), one only predicted (NaN)
    truth = _table([("a", "nevus", 0, 0, 50, 20), ("a", "sk", 100, 0, 150, 30)])
    pred = _table([("a", "nevus", 0, 0, 50, 20, 0.9), ("a", "lentigo", 300, 0, 350, 30, 0.8)])
    value, per_class = mean_average_precision(truth, pred)
    assert per_class.set_index("class")["ap"].to_dict() == pytest.approx(
        {"lentigo": np.nan, "nevus": 1.0, "sk": 0.0}, nan_ok=True)
    assert value == pytest.approx(0.5)


def test_mean_average_precision_equals_the_coco_reference_pipeline() -> None:
    pytest.importorskip("pycocotools", reason="mAP needs the optional extra dermctx[detection]")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    truth_rows, pred_rows = [], []
    for photo in range(8):
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(30, 80, 2)
            c = str(rng.choice(["nevus", "lentigo", "sk"]))
            truth_rows.append((f"p{photo}", c, x, y, x + w, y + h))
            if rng.random() < 0.8:
                j = rng.normal(0, 6, 4)
                c2 = c if rng.random() < 0.8 else str(rng.choice(["nevus", "lentigo", "sk"]))
                pred_rows.append((f"p{photo}", c2, x + j[0], y + j[1], x + w + j[2], y + h + j[3],
                                  float(rng.random())))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 500, 2)
            pred_rows.append((f"p{photo}", str(rng.choice(["nevus", "lentigo", "sk"])), x, y,
                              x + 40, y + 30, float(rng.random())))
    photos = [f"p{k}" for k in range(8)]
    truth = _table(truth_rows, photos=photos)
    pred = _table(pred_rows)
    value, _ = mean_average_precision(truth, pred)

    # the reference: pycocotools' own pipeline, default parameters, stats[1] = AP at IoU 0.50
    cats = {c: k + 1 for k, c in enumerate(sorted({r[1] for r in truth_rows + pred_rows}))}

    def anns(rows: list[tuple], scored: bool) -> list[dict]:
        return [{"id": k + 1, "image_id": photos.index(r[0]) + 1, "category_id": cats[r[1]],
                 "bbox": [r[2], r[3], r[4] - r[2], r[5] - r[3]],
                 "area": (r[4] - r[2]) * (r[5] - r[3]), "iscrowd": 0,
                 **({"score": r[6]} if scored else {})} for k, r in enumerate(rows)]

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": k + 1} for k in range(8)],
                      "categories": [{"id": i, "name": c} for c, i in cats.items()],
                      "annotations": anns(truth_rows, False)}
        gt.createIndex()
        dt = gt.loadRes(anns(pred_rows, True))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.2 < value < 0.95  # a case with some errors, not a trivial 0 or 1
    assert value == pytest.approx(ev.stats[1], abs=1e-12)


def test_mean_average_precision_without_pycocotools_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match=r'pip install "dermctx\[detection\]"'):
        mean_average_precision(TRUTH, PRED)


# --- crops -> embeddings -> ranking -------------------------------------------------------------


def test_crops_go_to_embedder_and_context_ranker(photos: Path, tmp_path: Path, one_torch_thread) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / f"{SMALL}.txt").write_text("\n".join(
        _yolo_line(0, box, (640, 480), conf) for box, conf in
        [((100, 50, 260, 170), 0.9), ((576, 384, 640, 480), 0.5), ((300, 200, 340, 260), 0.7)]))
    boxes, _ = read_yolo(labels, photos)
    memory, _ = crop_lesions(boxes)
    disk, _ = crop_lesions(boxes, out_dir=tmp_path / "crops")
    embedder = dermctx.Embedder("test_efficientnet", pretrained=False, image_size=32, batch_size=4,
                                n_jobs=1, device="cpu")
    emb, errors = embedder.embed(disk, progress=False)
    assert len(emb) == 3 and len(errors) == 0  # the photo WIDE has no box: no crop
    same, errors = embed_crops(memory, embedder, progress=False)  # in memory: the same numbers
    assert len(errors) == 0
    pd.testing.assert_frame_equal(emb, same)

    train = dermctx.make_ugly_duckling(20, lesions_per_patient=5, dim=emb.shape[1], random_state=0)
    ranker = dermctx.ContextRanker(score_col=None, gbm=dermctx.MetadataGBM(n_estimators=10, min_child_samples=5),
                                   n_folds=2).fit(train)
    scores, errors = ranker.rank(disk.join(emb, on="image_id"))
    assert len(errors) == 0
    assert scores["image_id"].tolist() == disk["image_id"].tolist()
    assert set(scores["patient_id"]) == {SMALL}  # the photo's lesions, ranked together
    assert scores["patient_rank"].tolist() == scores["score"].rank(
        ascending=False, method="min").astype(int).tolist()
    assert ((scores["score"] > 0) & (scores["score"] < 1)).all()


def test_lazy_exports() -> None:
    assert dermctx.read_yolo is read_yolo and dermctx.read_coco is read_coco
    assert dermctx.crop_lesions is crop_lesions and dermctx.embed_crops is embed_crops
    assert dermctx.detection_metrics is detection_metrics
    assert dermctx.mean_average_precision is mean_average_precision


# --- the example --------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "detect_and_rank.py"


def _example_main():
    import runpy

    return runpy.run_path(str(EXAMPLE), run_name="example")["main"]


def test_example_exits_clearly_without_data(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="data not found"):
        _example_main()(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])


@pytest.mark.slow
def test_example_quick_run(shared_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _example_main()(["--data-dir", str(shared_data), "--out", str(out), "--quick"]) == 0
    text = capsys.readouterr().out
    assert "plumbing, not clinical accuracy" in text
    assert "read 12 truth boxes and 13 detections (0 errors)" in text
    assert "['1600 x 1200']" in text  # the viewer's size of photos stored sideways
    assert "12 crops" in text and "12 crops ranked, 0 errors" in text
    assert len(list((out / "crops").glob("*.png"))) == 12
    report = (out / "report.html").read_text()
    assert report.count("<img") == 4 + 12  # the 4 photos and the 12 crops
    assert "Plumbing demonstration, not clinical accuracy" in report
