"""Lesion boxes on clinical and wide-field photos: YOLO label files and COCO JSON -> a boxes table.

A detector (YOLOv5/v8, any COCO-style model) or an annotator marks each lesion of a photo with a
box. :func:`read_yolo` and :func:`read_coco` read those boxes into one table, in pixels of the
photo **as a viewer shows it** (after its EXIF orientation, as ``PIL.ImageOps.exif_transpose``
applies it), so that :func:`dermctx.crop_lesions` can cut each lesion out and the detection
metrics (:mod:`dermctx.detection`) can compare two such tables.

The boxes table (:data:`BOX_COLUMNS`), one row per box:

================ ==============================================================================
photo            path of the photo file (string)
photo_id         the photo's id: its path relative to the images (or labels) folder, without
                 suffix, with ``/`` separators (``"clinic/face_01"``); it joins truth and
                 predictions read from different formats
box_id           the box's id within its photo (integer): the 1-based line number in a YOLO
                 label file; the annotation ``id`` in COCO
class            the class index (integer: YOLO class, COCO category id)
class_name       the class name (string; the index as text when no names are given)
confidence       the detector's confidence in [0, 1]; missing for ground-truth boxes
x0, y0, x1, y1   the box corners in pixels (float; x to the right, y down, origin at the top
                 left corner of the upright photo; ``x1 > x0``, ``y1 > y0``). A box may extend
                 past the photo's edge (its centre is always inside); crops clip it
photo_width,     size of the upright photo in pixels (integers)
photo_height
exif_orientation the photo's EXIF orientation tag (1-8; 1 when absent)
format           ``"yolo"`` or ``"coco"``
================ ==============================================================================

A photo with no box (a YOLO photo without a label file or with an empty one, a COCO image without
annotations) is one row with ``box_id``, ``class`` and the corners missing: it is a negative
photo for the detection metrics, and :func:`dermctx.crop_lesions` skips it.

Both readers return ``(boxes, errors)``. Nothing is dropped silently and nothing is guessed: a
malformed or out-of-range YOLO line is an error record naming the label file and its 1-based line
number; a label file without a photo, a photo that is missing or unreadable, and a COCO entry
that breaks the format are error records naming the file and the entry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dermctx._deprecation import renamed_parameters
from dermctx.errors import ImageError, TableError, error_record, errors_frame
from dermctx.io._common import require_path

__all__ = [
    "BOX_COLUMNS",
    "IMAGE_SUFFIXES",
    "photo_size",
    "read_coco",
    "read_yolo",
]

#: Columns of the boxes table, in order (see the module docstring).
BOX_COLUMNS: tuple[str, ...] = (
    "photo", "photo_id", "box_id", "class", "class_name", "confidence",
    "x0", "y0", "x1", "y1", "photo_width", "photo_height", "exif_orientation", "format",
)
#: Photo suffixes :func:`read_yolo` looks for (case-blind).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

_ORIENTATION_TAG = 274  # EXIF Orientation
_SWAPS_SIDES = {5, 6, 7, 8}  # orientations exif_transpose applies with a transpose or a 90-degree turn
_INT = re.compile(r"^\+?\d+$")


def photo_size(path: str | PathLike[str]) -> tuple[int, int, int]:
    """Size of a photo as a viewer shows it, read from its header (no pixels decoded).

    Returns
    -------
    (width, height, orientation) : tuple of int
        Pixels after the EXIF orientation is applied (``PIL.ImageOps.exif_transpose``
        semantics: orientations 5-8 swap the sides), and the orientation tag (1 when absent or
        not one of 1-8).

    Raises
    ------
    ImageError
        The file is missing or not an image Pillow can open (the message names it).
    """
    p = Path(path)
    require_path(p, "photo")
    try:
        with Image.open(p) as im:
            w, h = im.size
            orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:
        raise ImageError(f"{p}: cannot open the photo ({type(exc).__name__}: {exc}); expected a "
                         "JPEG, PNG, TIFF, BMP or WebP file") from exc
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1  # exif_transpose ignores such a tag too
    if orientation in _SWAPS_SIDES:
        w, h = h, w
    return int(w), int(h), int(orientation)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The boxes table from row dicts, with the columns of BOX_COLUMNS and their dtypes."""
    out = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    for col in ("box_id", "class", "photo_width", "photo_height", "exif_orientation"):
        out[col] = pd.array(out[col].tolist(), dtype="Int64")
    for col in ("confidence", "x0", "y0", "x1", "y1"):
        out[col] = pd.to_numeric(out[col], errors="raise").astype(float)
    for col in ("photo", "photo_id", "class_name", "format"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out.reset_index(drop=True)


def _photo_row(photo: Path, photo_id: str, size: tuple[int, int, int], fmt: str,
               **extra: Any) -> dict[str, Any]:
    w, h, orientation = size
    return {"photo": str(photo), "photo_id": photo_id, "box_id": None, "class": None,
            "class_name": None, "confidence": np.nan, "x0": np.nan, "y0": np.nan, "x1": np.nan,
            "y1": np.nan, "photo_width": w, "photo_height": h, "exif_orientation": orientation,
            "format": fmt, **extra}


def _class_names(class_names: Any) -> dict[int, str] | None:
    """class_names as {index: name}: a sequence, a mapping, or a text file of one name a line."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, PathLike)):
        path = Path(class_names)
        if not path.is_file():
            raise TableError(f"class_names: {path} is not a file; expected a text file with one "
                             "class name per line (class 0 first), a list, or a dict")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        while names and names[-1] == "":
            names.pop()
        if "" in names:
            raise TableError(f"class_names: {path}, line {names.index('') + 1} is blank; expected "
                             "one class name per line")
        return dict(enumerate(names))
    if isinstance(class_names, Mapping):
        out = {}
        for k, v in class_names.items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                raise TableError(f"class_names: key {k!r} is not a class index; expected "
                                 "non-negative integers -> names")
            out[int(k)] = str(v)
        return out
    if isinstance(class_names, Sequence):
        return {i: str(v) for i, v in enumerate(class_names)}
    raise TableError(f"class_names: expected a list of names, a dict index -> name or a text file, "
                     f"got {type(class_names).__name__}")


def _number(token: str) -> float | None:
    try:
        v = float(token)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _parse_yolo_line(tokens: list[str], names: dict[int, str] | None) -> dict[str, Any] | str:
    """One YOLO line's tokens -> its fields, or the problem (a readable message)."""
    if len(tokens) not in (5, 6):
        hint = " (a segmentation polygon? dermctx reads boxes only)" if len(tokens) > 6 else ""
        return (f"{len(tokens)} values; expected 'class cx cy w h' or 'class cx cy w h "
                f"confidence'{hint}")
    if not _INT.match(tokens[0]):
        return f"class {tokens[0]!r} is not a non-negative integer"
    cls = int(tokens[0])
    if names is not None and cls not in names:
        return f"class {cls} is not in class_names (known: 0-{max(names) if names else -1})"
    parsed = [_number(t) for t in tokens[1:]]
    for label, token, v in zip(("cx", "cy", "w", "h", "confidence"), tokens[1:], parsed, strict=False):
        if v is None:
            return f"{label} {token!r} is not a finite number"
    values = [float(v) for v in parsed if v is not None]
    cx, cy, w, h = values[:4]
    for label, v in (("cx", cx), ("cy", cy)):
        if not 0.0 <= v <= 1.0:
            return (f"{label} = {v:g} is outside [0, 1]; expected coordinates normalised by "
                    "the photo's width and height")
    for label, v in (("w", w), ("h", h)):
        if not 0.0 < v <= 1.0:
            return (f"{label} = {v:g} is outside (0, 1]; expected a positive size normalised "
                    "by the photo's width and height")
    conf = values[4] if len(values) == 5 else np.nan
    if len(values) == 5 and not 0.0 <= conf <= 1.0:
        return f"confidence = {conf:g} is outside [0, 1]"
    return {"class": cls, "class_name": names[cls] if names is not None else str(cls),
            "confidence": conf, "cx": cx, "cy": cy, "w": w, "h": h}


def _photos_in(images_dir: Path) -> dict[str, list[Path]]:
    """Relative stem ('sub/name') -> the photo files with that stem under ``images_dir``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(images_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            stem = path.relative_to(images_dir).with_suffix("").as_posix()
            found.setdefault(stem, []).append(path)
    return found


@renamed_parameters(labels_dir="path", images_dir="image_dir")
def read_yolo(
    path: str | PathLike[str],
    image_dir: str | PathLike[str],
    *,
    class_names: Sequence[str] | Mapping[int, str] | str | PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read YOLO label files (ground truth or a detector's ``--save-txt --save-conf`` output).

    Each ``path/<sub>/<name>.txt`` belongs to the photo ``image_dir/<sub>/<name>.<ext>``
    (any of :data:`IMAGE_SUFFIXES`, case-blind). Each non-blank line is one box::

        class cx cy w h [confidence]

    with ``class`` a non-negative integer, the centre ``cx, cy`` in [0, 1] and the size ``w, h``
    in (0, 1], normalised by the width and height of the photo as a viewer shows it (after its
    EXIF orientation), and an optional confidence in [0, 1]. A photo with no label file, or an
    empty one, holds no box (YOLO's convention for a negative photo) and is listed as a row with
    no box. LabelImg's ``classes.txt`` at the top of ``path`` is not a label file.

    Parameters
    ----------
    path : path
        Folder of ``.txt`` label files (searched recursively). (``labels_dir=`` is a deprecated
        alias.)
    image_dir : path
        Folder of the photos, with the same sub-folders. (``images_dir=`` is a deprecated
        alias.)
    class_names : list, dict or path, optional
        Names of the classes: a list (class 0 first), a dict index -> name, or a text file with
        one name per line (``classes.txt``). A class outside it is an error record. Default: the
        class index as text.

    Returns
    -------
    boxes : DataFrame
        The boxes table (:data:`BOX_COLUMNS`), pixel corners in the upright photo, sorted by
        ``photo_id`` and line; ``format`` is ``"yolo"``.
    errors : DataFrame
        The errors table (:func:`dermctx.errors.errors_frame`; ``image_id`` is the photo id,
        ``path`` the label file or photo, ``stage`` ``"read"``): one record per malformed or
        out-of-range line (the message names the file and its 1-based line number), per label
        file without a photo or with several (``a.jpg`` and ``a.png``), and per photo that
        cannot be opened (its box lines are not read).

    Raises
    ------
    TableError
        ``path`` or ``image_dir`` is not a folder, or ``class_names`` is malformed.
    """
    labels = Path(path)
    images = Path(image_dir)
    for name, folder in (("path (the label files)", labels), ("image_dir", images)):
        if not folder.is_dir():
            raise TableError(f"read_yolo: {name}: {folder} is not a folder")
    names = _class_names(class_names)
    photos = _photos_in(images)
    label_files = {
        p.relative_to(labels).with_suffix("").as_posix(): p for p in sorted(labels.rglob("*.txt"))
        if p.is_file()
    }
    class_file = Path(class_names).resolve() if isinstance(class_names, (str, PathLike)) else None
    for stem in [s for s, p in label_files.items()
                 if (s == "classes" and s not in photos) or p.resolve() == class_file]:
        del label_files[stem]  # a list of class names, not boxes

    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for stem in sorted(set(label_files) | set(photos)):
        label = label_files.get(stem)
        candidates = photos.get(stem, [])
        if not candidates and label is not None:
            expected = ", ".join(f"{stem}{s}" for s in IMAGE_SUFFIXES[:3])
            errors.append(error_record(stem, None, str(label), "read",
                                       f"{label}: no photo for this label file in {images} "
                                       f"(looked for {expected}, ...); its boxes are not read"))
            continue
        if len(candidates) > 1:
            where = str(label) if label is not None else str(candidates[0])
            errors.append(error_record(
                stem, None, where, "read",
                f"{where}: several photos share the name {stem!r} "
                f"({', '.join(p.name for p in candidates)}); expected one photo per label file"))
            continue
        photo = candidates[0]
        try:
            size = photo_size(photo)
        except ImageError as exc:
            what = f"; the boxes of {label} are not read" if label is not None else ""
            errors.append(error_record(stem, None, str(photo), "read", f"{exc}{what}"))
            continue
        width, height, _ = size
        if label is None:
            rows.append(_photo_row(photo, stem, size, "yolo"))
            continue
        try:
            text = label.read_text(encoding="utf-8-sig")  # a byte-order mark is not a class
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(error_record(stem, None, str(label), "read",
                                       f"{label}: cannot read as UTF-8 text ({type(exc).__name__}: "
                                       f"{exc}); expected YOLO label lines"))
            continue
        lines = text.splitlines()
        if not any(line.strip() for line in lines):
            rows.append(_photo_row(photo, stem, size, "yolo"))
            continue
        for number, line in enumerate(lines, start=1):
            tokens = line.split()
            if not tokens:
                continue
            parsed = _parse_yolo_line(tokens, names)
            if isinstance(parsed, str):
                errors.append(error_record(stem, None, str(label), "read",
                                           f"{label}, line {number}: {parsed} (line {line.strip()!r})"))
                continue
            cx, cy = parsed["cx"] * width, parsed["cy"] * height
            half_w, half_h = parsed["w"] * width / 2.0, parsed["h"] * height / 2.0
            rows.append({
                **_photo_row(photo, stem, size, "yolo"),
                "box_id": number, "class": parsed["class"], "class_name": parsed["class_name"],
                "confidence": parsed["confidence"],
                "x0": cx - half_w, "y0": cy - half_h, "x1": cx + half_w, "y1": cy + half_h,
            })
    return _frame(rows), errors_frame(errors)


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise TableError(f"{what}: {path} is not a file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"{what}: {path} is not readable JSON ({type(exc).__name__}: {exc})") from exc


def _finite(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value)))


@renamed_parameters(images_dir="image_dir")
def read_coco(
    path: str | PathLike[str],
    image_dir: str | PathLike[str] | None = None,
    *,
    images_from: str | PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read COCO boxes: a dataset JSON (ground truth, or with ``score`` on each annotation) or a
    detector's results list.

    A dataset JSON holds ``images`` (``id``, ``file_name``, ``width``, ``height``),
    ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox`` = ``[x, y, width, height]``
    in pixels from the top left corner, optional ``score`` in [0, 1]) and ``categories`` (``id``,
    ``name``). A results file is a list of such annotations (``score`` required, ``id`` optional:
    its 1-based position, as pycocotools numbers them); ``images_from`` then names the dataset
    JSON that lists the images and categories.

    Boxes refer to the photo as a viewer shows it: each photo is opened (header only) and its
    upright size must equal the JSON's ``width`` and ``height``. A box needs a positive size no
    larger than the photo and its centre inside the photo. Crowd regions (``iscrowd`` = 1) are not
    single lesions and are refused.

    Parameters
    ----------
    path : path
        The dataset JSON or the results list.
    image_dir : path, optional
        Folder the ``file_name`` entries are relative to; default the folder of the dataset JSON.
        (``images_dir=`` is a deprecated alias.)
    images_from : path, optional
        With a results list: the dataset JSON with ``images`` and ``categories``.

    Returns
    -------
    boxes : DataFrame
        The boxes table (:data:`BOX_COLUMNS`) plus ``coco_image_id``; ``photo_id`` is the
        ``file_name`` without its suffix; ``box_id`` the annotation id; ``format`` ``"coco"``.
        An image without annotations is a row with no box.
    errors : DataFrame
        The errors table: one record per annotation or image that breaks these rules, naming the
        JSON file, the entry (``annotations[12] (id 57)``) and what was expected; one per
        annotation of a photo that is missing, unreadable or of another size.

    Raises
    ------
    TableError
        The file is not JSON, not a COCO dataset or results list, or ``images``/``categories``
        are missing or not lists.
    """
    source = Path(path)
    data = _load_json(source, "read_coco")
    dataset_path = source
    if isinstance(data, list):
        if images_from is None:
            raise TableError(f"read_coco: {source} is a COCO results list (no 'images'); pass "
                             "images_from= naming the dataset JSON that lists the images and "
                             "categories")
        dataset_path = Path(images_from)
        dataset = _load_json(dataset_path, "read_coco images_from")
        if not isinstance(dataset, dict):
            raise TableError(f"read_coco: {dataset_path} is not a COCO dataset (a JSON object with "
                             "'images', 'annotations' and 'categories')")
        annotations: Any = data
        results = True
    elif isinstance(data, dict):
        dataset = data
        annotations = data.get("annotations", [])
        results = False
    else:
        raise TableError(f"read_coco: {source} holds a JSON {type(data).__name__}; expected a COCO "
                         "dataset object or a results list")
    for key in ("images", "categories"):
        if not isinstance(dataset.get(key), list):
            raise TableError(f"read_coco: {dataset_path} has no '{key}' list; expected a COCO "
                             "dataset with 'images', 'annotations' and 'categories'")
    if not isinstance(annotations, list):
        raise TableError(f"read_coco: {source}: 'annotations' is a {type(annotations).__name__}; "
                         "expected a list")
    folder = Path(image_dir) if image_dir is not None else dataset_path.parent
    errors: list[dict[str, Any]] = []

    categories: dict[int, str] = {}
    for k, cat in enumerate(dataset["categories"]):
        cid = cat.get("id") if isinstance(cat, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int) or cid in categories:
            raise TableError(f"read_coco: {dataset_path}: categories[{k}] has id {cid!r}; expected a "
                             "unique integer id")
        categories[cid] = str(cat.get("name", cid))

    # images: id -> (photo path, photo_id, upright size) or the problem that makes its boxes unreadable
    images: dict[Any, dict[str, Any]] = {}
    seen_ids: dict[str, Any] = {}
    for k, img in enumerate(dataset["images"]):
        iid = img.get("id") if isinstance(img, dict) else None
        where = f"{dataset_path}: images[{k}] (id {iid!r})"
        if iid is None or isinstance(iid, (bool, dict, list)):
            errors.append(error_record(None, None, str(dataset_path), "read",
                                       f"{where}: no valid 'id'; expected an integer or string"))
            continue
        if iid in images:
            images[iid] = {"problem": f"{where}: image id {iid!r} appears more than once"}
            continue
        name = img.get("file_name")
        if not isinstance(name, str) or not name.strip():
            images[iid] = {"problem": f"{where}: no 'file_name'"}
            continue
        photo = folder / name
        photo_id = Path(name).with_suffix("").as_posix()
        entry: dict[str, Any] = {"photo": photo, "photo_id": photo_id}
        if photo_id in seen_ids:
            entry["problem"] = (f"{where}: file_name {name!r} gives the photo id {photo_id!r} of "
                                f"image {seen_ids[photo_id]!r} too; expected one photo per name")
        seen_ids.setdefault(photo_id, iid)
        w, h = img.get("width"), img.get("height")
        if "problem" not in entry and not all(
                _finite(v) and float(v) == int(v) and v > 0 for v in (w, h)):
            entry["problem"] = f"{where}: width {w!r} and height {h!r}; expected positive integers"
        if "problem" not in entry:
            try:
                size = photo_size(photo)
            except ImageError as exc:
                entry["problem"] = f"{where}: {exc}"
            else:
                if (size[0], size[1]) != (int(w), int(h)):
                    rotated = (" (its EXIF orientation "
                               f"{size[2]} turns the stored {size[1]} x {size[0]} pixels)"
                               if size[2] in _SWAPS_SIDES else "")
                    entry["problem"] = (
                        f"{where}: the JSON says {int(w)} x {int(h)} pixels but {photo} shows as "
                        f"{size[0]} x {size[1]}{rotated}; boxes must refer to the photo as a viewer "
                        "shows it")
                entry["size"] = size
        images[iid] = entry

    rows: list[dict[str, Any]] = []
    boxed: set[Any] = set()
    first_at: dict[int, int] = {}  # annotation id -> its first position
    for k, ann in enumerate(annotations):
        aid = ann.get("id", k + 1 if results else None) if isinstance(ann, dict) else None
        where = f"{source}: annotations[{k}] (id {aid!r})"
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        img = images.get(iid) if iid is not None and not isinstance(iid, (dict, list)) else None
        pid = img.get("photo_id") if img else None
        path_text = str(img["photo"]) if img and "photo" in img else str(source)

        def fail(message: str, pid: Any = pid, path_text: str = path_text) -> None:
            errors.append(error_record(pid, None, path_text, "read", message))

        if not isinstance(ann, dict):
            fail(f"{where}: expected a JSON object, got {type(ann).__name__}")
            continue
        if img is None:
            fail(f"{where}: image_id {iid!r} is not in the images of {dataset_path}")
            continue
        boxed.add(iid)
        if "problem" in img:
            fail(f"{img['problem']}; annotation {aid!r} not read")
            continue
        if isinstance(aid, bool) or not isinstance(aid, int):
            fail(f"{where}: 'id' {aid!r}; expected an integer annotation id")
            continue
        if aid in first_at:
            fail(f"{where}: annotation id {aid} was already used by annotations[{first_at[aid]}]; "
                 "expected unique ids")
            continue
        first_at[aid] = k
        if ann.get("iscrowd", 0) not in (0, False):
            fail(f"{where}: iscrowd = {ann.get('iscrowd')!r}; a crowd region is not one lesion "
                 "(dermctx reads single boxes only)")
            continue
        cid = ann.get("category_id")
        if isinstance(cid, bool) or cid not in categories:
            fail(f"{where}: category_id {cid!r} is not in the categories of {dataset_path} "
                 f"(ids {sorted(categories)[:10]})")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_finite(v) for v in bbox):
            fail(f"{where}: bbox {bbox!r}; expected [x, y, width, height], 4 finite numbers in pixels")
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        W, H, _ = img["size"]
        if not (0 < bw <= W and 0 < bh <= H):
            fail(f"{where}: bbox {bbox!r} has size {bw:g} x {bh:g}; expected a positive size no "
                 f"larger than the photo ({W} x {H} pixels)")
            continue
        cx, cy = x + bw / 2.0, y + bh / 2.0
        if not (0 <= cx <= W and 0 <= cy <= H):
            fail(f"{where}: bbox {bbox!r} has its centre ({cx:g}, {cy:g}) outside the photo "
                 f"({W} x {H} pixels); expected pixel coordinates of the upright photo")
            continue
        score = ann.get("score")
        if score is None and results:
            fail(f"{where}: no 'score'; a results list needs a confidence on every detection")
            continue
        if score is not None and not (_finite(score) and 0.0 <= float(score) <= 1.0):
            fail(f"{where}: score {score!r}; expected a confidence in [0, 1]")
            continue
        rows.append({
            **_photo_row(img["photo"], img["photo_id"], img["size"], "coco",
                         coco_image_id=iid),
            "box_id": aid, "class": cid, "class_name": categories[cid],
            "confidence": float(score) if score is not None else np.nan,
            "x0": x, "y0": y, "x1": x + bw, "y1": y + bh,
        })
    for iid, img in images.items():
        if iid in boxed:
            continue
        if "problem" in img:
            errors.append(error_record(img.get("photo_id"), None, str(img.get("photo", source)),
                                       "read", img["problem"]))
        else:
            rows.append(_photo_row(img["photo"], img["photo_id"], img["size"], "coco",
                                   coco_image_id=iid))
    boxes = _frame(rows)
    boxes["coco_image_id"] = pd.Series([r["coco_image_id"] for r in rows], dtype=object)
    order = np.lexsort((boxes["box_id"].fillna(-1).to_numpy(dtype=np.int64),
                        boxes["photo_id"].astype(str).to_numpy()))
    return boxes.iloc[order].reset_index(drop=True), errors_frame(errors)
