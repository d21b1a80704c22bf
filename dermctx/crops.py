"""Lesion crops from clinical and wide-field photos: one lesion-table row per detector box.

A photo of a face or a back shows several lesions. Once a detector (or an annotator) has boxed
them (:func:`dermctx.read_yolo`, :func:`dermctx.read_coco`), :func:`crop_lesions` cuts each box
out of the full-resolution photo, upright as a viewer shows it, and returns a lesion table: the
lesions of one photo become one patient's lesion set, ready for :class:`dermctx.Embedder` and
:class:`dermctx.ContextRanker` like any other (the "ugly duckling" comparison of wide-field
photos). :func:`embed_crops` embeds crops kept in memory.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from dermctx.errors import ImageError, TableError, error_record, errors_frame
from dermctx.io._common import require_path
from dermctx.io.images import to_rgb
from dermctx.table import COLUMNS, placeholder_patient_ids

__all__ = ["CROP_COLUMNS", "MAX_CROP_PIXELS", "crop_lesions", "crop_region", "embed_crops"]

#: Largest crop, in pixels (after clipping): a box that would make a larger crop is refused as an
#: error record (a lesion box that covers a 25-megapixel region is a detector failure, and a
#: table of such crops kept in memory would not fit).
MAX_CROP_PIXELS: int = 25_000_000

#: Columns :func:`crop_lesions` adds to the box columns (``crop`` only when kept in memory).
CROP_COLUMNS: tuple[str, ...] = (
    "width", "height", "crop", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "clipped")

_SNAP = 0.01  # pixel bounds within this many pixels of an integer snap to it (float round-off)
_BOX_REQUIRED = ("photo", "photo_id", "box_id", "x0", "y0", "x1", "y1")


def _floor(v: float) -> int:
    return math.floor(v + _SNAP)


def _ceil(v: float) -> int:
    return math.ceil(v - _SNAP)


def crop_region(
    box: tuple[float, float, float, float],
    photo_size: tuple[int, int],
    *,
    margin: float = 0.1,
    square: bool = True,
) -> tuple[tuple[int, int, int, int], bool]:
    """The pixel region :func:`crop_lesions` cuts for one box.

    The box ``(x0, y0, x1, y1)`` (pixels, float) is made square about its centre (the shorter
    side grown to the longer) when ``square``, then grown by ``margin`` times its width on the
    left and on the right and by ``margin`` times its height above and below. The region is the
    smallest whole-pixel rectangle covering that (bounds within 0.01 px of an integer snap to
    it); when ``square``, the shorter side is grown by the pixels it lacks (half before, half
    after) so the region is square. Finally it is clipped to the photo.

    Parameters
    ----------
    box : (x0, y0, x1, y1)
        Box corners in pixels of the upright photo, ``x1 > x0`` and ``y1 > y0``.
    photo_size : (width, height)
        The upright photo's size in pixels.
    margin : float
        Fraction of the box side added on each side (0.1: a 10% margin, the crop is 1.2 times
        the box).
    square : bool
        Make the region square before clipping.

    Returns
    -------
    ((left, top, right, bottom), clipped)
        Integer pixel bounds (``right`` and ``bottom`` exclusive, so the crop is
        ``array[top:bottom, left:right]``), and whether clipping to the photo changed them.
        The region is empty (``right <= left``) only when the box lies outside the photo.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    w, h = x1 - x0, y1 - y0
    if square:
        w = h = max(w, h)
    ew, eh = w * (1.0 + 2.0 * margin), h * (1.0 + 2.0 * margin)
    left, right = _floor(cx - ew / 2.0), _ceil(cx + ew / 2.0)
    top, bottom = _floor(cy - eh / 2.0), _ceil(cy + eh / 2.0)
    if square:
        side = max(right - left, bottom - top)
        extra_x, extra_y = side - (right - left), side - (bottom - top)
        left, right = left - extra_x // 2, right + extra_x - extra_x // 2
        top, bottom = top - extra_y // 2, bottom + extra_y - extra_y // 2
    W, H = int(photo_size[0]), int(photo_size[1])
    clipped_bounds = (max(0, left), max(0, top), min(W, right), min(H, bottom))
    return clipped_bounds, clipped_bounds != (left, top, right, bottom)


def _upright_rgb(path: str) -> np.ndarray:
    """The photo as a viewer shows it: EXIF orientation applied, RGB, uint8 (H, W, 3)."""
    p = Path(path)
    require_path(p, "photo")
    try:
        with Image.open(p) as src:
            im = ImageOps.exif_transpose(src)  # a loaded, upright copy
            im.load()
        return np.asarray(to_rgb(im), dtype=np.uint8)
    except Exception as exc:
        raise ImageError(f"{p}: cannot decode the photo ({type(exc).__name__}: {exc}); expected a "
                         "readable JPEG, PNG, TIFF, BMP or WebP file") from exc


def _is_missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def _as_int(v: Any) -> int | None:
    """``v`` as an int when it is a whole number (3, 3.0, "3"), else None."""
    if _is_missing(v) or isinstance(v, bool):
        return None
    try:
        f = float(v)
        return int(f) if f == int(f) else None
    except (TypeError, ValueError, OverflowError):
        return None


def _patients(boxes: pd.DataFrame, patient_id: Any) -> tuple[list[Any], str]:
    """One patient id (or None = missing) per row, and how they were chosen (for messages)."""
    photo_ids = boxes["photo_id"].tolist()
    if patient_id is None:
        if "patient_id" in boxes.columns:
            return boxes["patient_id"].tolist(), "the boxes' 'patient_id' column"
        return [None if _is_missing(p) else str(p) for p in photo_ids], "the photo id"
    if isinstance(patient_id, str):
        return [patient_id] * len(boxes), f"patient_id={patient_id!r}"
    if isinstance(patient_id, pd.Series):
        patient_id = patient_id.to_dict()
    if isinstance(patient_id, Mapping):
        keys = {str(k): v for k, v in patient_id.items()}
        out = []
        for pid, photo in zip(photo_ids, boxes["photo"].tolist(), strict=True):
            found = keys.get(str(pid), keys.get(str(photo)))
            out.append(found)
        return out, "the patient_id mapping"
    raise TableError(f"patient_id: expected a string, a mapping photo_id (or photo path) -> patient "
                     f"id, or None, got {type(patient_id).__name__}")


def crop_lesions(
    boxes: pd.DataFrame,
    *,
    margin: float = 0.1,
    square: bool = True,
    out_dir: str | PathLike[str] | None = None,
    patient_id: str | Mapping[str, str] | pd.Series | None = None,
    max_pixels: int = MAX_CROP_PIXELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut each box out of its photo: one lesion-table row per box.

    Each photo is decoded once at full resolution, turned upright by its EXIF orientation
    (``PIL.ImageOps.exif_transpose``), converted to RGB (transparency composited on black, as
    :func:`dermctx.load_image` does), and each of its boxes cut out as :func:`crop_region`
    describes: square about the box centre, with ``margin``, clipped at the photo's edges (a
    border box is kept, with ``clipped`` True, and its crop is then not square).

    Parameters
    ----------
    boxes : DataFrame
        A boxes table (:func:`dermctx.read_yolo`, :func:`dermctx.read_coco`, or built by hand):
        ``photo`` (file path), ``photo_id``, ``box_id`` and ``x0, y0, x1, y1`` (pixels of the
        upright photo). ``photo_width``/``photo_height``, when present, must equal the upright
        photo's size. Rows with no box (``box_id`` and corners missing: negative photos) are
        skipped. Every other column is kept.
    margin : float
        Fraction of the box side added on each side, >= 0.
    square : bool
        Square crops (the usual input of a lesion CNN) rather than the box's own shape.
    out_dir : path, optional
        Write each crop as ``<out_dir>/<image_id>.png`` (sub-folders of ``photo_id`` kept) and
        give its ``path``: the table then goes straight to :meth:`dermctx.Embedder.embed`.
        None: keep the crops in memory, in the ``crop`` column (embed them with
        :func:`embed_crops`).
    patient_id : str, mapping or None
        Whose lesions these are: one id for every photo; a mapping (dict or Series) from
        ``photo_id`` or ``photo`` path to patient id (a photo it lacks is an error record); or
        None: the boxes' ``patient_id`` column when it has one, else each photo is its own
        patient (its ``photo_id``).
    max_pixels : int
        Largest crop in pixels; a larger one is an error record.

    Returns
    -------
    lesions : DataFrame
        One row per box that was cut, in input order: the lesion-table columns
        (:data:`dermctx.table.COLUMNS`; ``image_id`` = ``"<photo_id>_box<box_id>"``, unique;
        ``lesion_id`` = ``image_id`` unless the boxes carry one; ``source`` ``"crops"``;
        ``age``/``sex``/``site``/``diagnosis``/``target`` from the boxes when they carry them,
        else missing), then ``width``, ``height`` (crop size, pixels), ``crop`` (uint8 RGB array
        (height, width, 3), in-memory mode only), ``crop_x0, crop_y0, crop_x1, crop_y1`` (the
        region in the upright photo, integer pixels, end exclusive), ``clipped``, and every column
        of ``boxes`` (box and detector columns: ``class``, ``class_name``, ``confidence``, ...).
        Columns of these names already in ``boxes`` are replaced.
    errors : DataFrame
        The errors table (``stage`` ``"crop"``, ``row`` the 0-based position in ``boxes``): a
        photo that is missing, unreadable or of another size than the boxes say; a box with
        missing or inverted corners, outside the photo, or larger than ``max_pixels``; a repeated
        ``(photo_id, box_id)``; a missing or placeholder patient id; a crop that cannot be
        written. ``len(lesions) + len(errors)`` is the number of box rows.

    Raises
    ------
    TableError
        ``boxes`` is not a DataFrame or lacks a required column; an argument is out of range.
    """
    if not isinstance(boxes, pd.DataFrame):
        raise TableError(f"crop_lesions: expected a boxes table (DataFrame), got {type(boxes).__name__}")
    missing = [c for c in _BOX_REQUIRED if c not in boxes.columns]
    if missing:
        raise TableError(f"crop_lesions: the boxes table lacks column(s) {missing}; expected "
                         f"{list(_BOX_REQUIRED)} (read boxes with dermctx.read_yolo or read_coco)")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 10:
        raise TableError(f"crop_lesions: margin={margin!r}; expected a fraction of the box side in "
                         "[0, 10]")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise TableError(f"crop_lesions: max_pixels={max_pixels!r}; expected a positive integer")
    out_root = Path(out_dir).resolve() if out_dir is not None else None

    frame = boxes.reset_index(drop=True)
    coords = frame[["x0", "y0", "x1", "y1"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    no_box = frame["box_id"].isna().to_numpy() & np.isnan(coords).all(axis=1)
    patients, patient_source = _patients(frame, patient_id)
    errors: list[dict[str, Any]] = []
    image_ids: dict[int, str] = {}

    def fail(i: int, message: str) -> None:
        image_id = image_ids.get(i)
        errors.append(error_record(image_id, i, str(frame["photo"].iloc[i]), "crop", message))

    # --- rows that cannot be cut whatever the pixels ---------------------------------------------
    todo: list[int] = []
    for i in (int(k) for k in np.flatnonzero(~no_box)):
        photo_id, box_id = frame["photo_id"].iloc[i], frame["box_id"].iloc[i]
        where = f"box row {i} (photo_id {photo_id!r}, box_id {box_id!r})"
        if _is_missing(photo_id) or str(photo_id).strip() == "":
            fail(i, f"{where}: no photo_id")
            continue
        if _is_missing(frame["photo"].iloc[i]) or str(frame["photo"].iloc[i]).strip() == "":
            fail(i, f"{where}: no photo path")
            continue
        number = _as_int(box_id)
        if number is None:
            fail(i, f"{where}: box_id {box_id!r}; expected an integer id of the box in its photo")
            continue
        image_ids[i] = f"{photo_id}_box{number}"
        x0, y0, x1, y1 = coords[i]
        if not np.isfinite(coords[i]).all() or x1 <= x0 or y1 <= y0:
            fail(i, f"{where}: corners x0, y0, x1, y1 = {x0:g}, {y0:g}, {x1:g}, {y1:g}; expected "
                 "finite pixels with x1 > x0 and y1 > y0")
            continue
        pid = patients[i]
        if _is_missing(pid) or str(pid).strip() == "":
            fail(i, f"{where}: no patient id from {patient_source}")
            continue
        if placeholder_patient_ids(pd.Series([str(pid)]))[0]:
            fail(i, f"{where}: patient id {pid!r} (from {patient_source}) is a placeholder for an "
                 "unknown patient; give the real id")
            continue
        todo.append(i)
    ids = pd.Series([image_ids[i] for i in todo], dtype=object)
    dup = ids.duplicated(keep=False).to_numpy()
    for i, is_dup in zip(list(todo), dup, strict=True):
        if is_dup:
            fail(i, f"box row {i}: image_id {image_ids[i]!r} is made twice (repeated photo_id "
                 f"{frame['photo_id'].iloc[i]!r} and box_id {frame['box_id'].iloc[i]!r}); expected "
                 "each box once")
    todo = [i for i, is_dup in zip(todo, dup, strict=True) if not is_dup]

    # --- cut, one photo at a time ----------------------------------------------------------------
    made: dict[int, dict[str, Any]] = {}
    by_photo: dict[str, list[int]] = {}
    for i in todo:
        by_photo.setdefault(str(frame["photo"].iloc[i]), []).append(i)
    has_size = "photo_width" in frame.columns and "photo_height" in frame.columns
    for photo, rows in by_photo.items():
        try:
            pixels = _upright_rgb(photo)  # (H, W, 3)
        except ImageError as exc:
            for i in rows:
                fail(i, str(exc))
            continue
        H, W = pixels.shape[:2]
        for i in rows:
            if has_size:
                raw = frame["photo_width"].iloc[i], frame["photo_height"].iloc[i]
                bw, bh = _as_int(raw[0]), _as_int(raw[1])
                if (bw is None or bh is None) and not (_is_missing(raw[0]) and _is_missing(raw[1])):
                    fail(i, f"box row {i}: photo_width, photo_height = {raw[0]!r}, {raw[1]!r}; "
                         "expected whole numbers of pixels or missing")
                    continue
                if bw is not None and bh is not None and (bw, bh) != (W, H):
                    fail(i, f"{photo}: the boxes refer to a {bw} x {bh} photo but it shows "
                         f"as {W} x {H} pixels (after its EXIF orientation); expected boxes in pixels "
                         "of the photo as a viewer shows it")
                    continue
            (left, top, right, bottom), clipped = crop_region(
                tuple(coords[i]), (W, H), margin=float(margin), square=bool(square))
            if right <= left or bottom <= top:
                fail(i, f"box row {i}: the box {tuple(float(v) for v in coords[i])} lies outside "
                     f"the photo ({W} x {H} pixels)")
                continue
            n_pixels = (right - left) * (bottom - top)
            if n_pixels > max_pixels:
                fail(i, f"box row {i}: the crop would be {right - left} x {bottom - top} = "
                     f"{n_pixels:,} pixels, above max_pixels={max_pixels:,}; expected a lesion box "
                     "(raise max_pixels if this is one)")
                continue
            crop = np.ascontiguousarray(pixels[top:bottom, left:right])  # (h, w, 3) uint8
            entry: dict[str, Any] = {"width": right - left, "height": bottom - top,
                                     "crop_x0": left, "crop_y0": top, "crop_x1": right,
                                     "crop_y1": bottom, "clipped": clipped}
            if out_root is None:
                entry["crop"] = crop
            else:
                target = out_root / f"{image_ids[i]}.png"
                try:
                    target = target.resolve()
                    if out_root not in target.parents:
                        fail(i, f"box row {i}: image_id {image_ids[i]!r} would be written outside "
                             f"out_dir {out_root}; expected a photo_id without '..'")
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(crop).save(target, format="PNG")
                except (OSError, ValueError) as exc:
                    fail(i, f"box row {i}: cannot write {str(target)[:300]} "
                         f"({type(exc).__name__}: {exc})")
                    continue
                entry["path"] = str(target)
            made[i] = entry
        del pixels

    # --- the lesion table ------------------------------------------------------------------------
    keep = sorted(made)
    made_cols = [c for c in CROP_COLUMNS if c != "crop" or out_root is None]
    base = frame.iloc[keep].drop(columns=[c for c in ("image_id", "path", "source", *CROP_COLUMNS)
                                          if c in frame.columns])
    base = base.reset_index(drop=True)
    lesions = base.drop(columns=["patient_id"], errors="ignore")
    lesions["image_id"] = [image_ids[i] for i in keep]
    lesions["patient_id"] = [str(patients[i]).strip() for i in keep]
    lesions["path"] = pd.Series([made[i].get("path") for i in keep], dtype=object)
    lesions["source"] = "crops"
    for col in made_cols:
        lesions[col] = pd.Series([made[i][col] for i in keep], dtype=object)
    if "lesion_id" not in lesions.columns:
        lesions["lesion_id"] = lesions["image_id"]
    for col in COLUMNS:
        if col not in lesions.columns:
            lesions[col] = np.nan if col in ("age", "target") else None
    for col in ("width", "height", "crop_x0", "crop_y0", "crop_x1", "crop_y1"):
        lesions[col] = lesions[col].astype("int64")
    lesions["clipped"] = lesions["clipped"].astype(bool)
    box_cols = [c for c in lesions.columns if c not in COLUMNS and c not in made_cols]
    lesions = lesions[[*COLUMNS, *made_cols, *box_cols]]
    errs = errors_frame(sorted(errors, key=lambda r: r["row"]))
    return lesions, errs


def embed_crops(
    lesions: pd.DataFrame,
    embedder: Any,
    **embed_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embed crops kept in memory (the ``crop`` column of :func:`crop_lesions`).

    Each crop is written losslessly (PNG) to a temporary folder and embedded by
    ``embedder.embed``, so the result is exactly what :meth:`dermctx.Embedder.embed` gives for
    the same crops written with ``crop_lesions(..., out_dir=...)``: the same decoding, resizing,
    aspect, colour constancy and TTA.

    Parameters
    ----------
    lesions : DataFrame
        ``image_id`` (unique) and ``crop`` (uint8 RGB arrays, shape (height, width, 3)).
    embedder : dermctx.Embedder
    **embed_kwargs
        Passed to :meth:`dermctx.Embedder.embed` (``store=``, ``progress=``, ...).

    Returns
    -------
    embeddings : DataFrame
        ``emb_*`` float32 columns indexed by ``image_id``, in table order.
    errors : DataFrame
        The errors table; ``row`` is the position in ``lesions``, ``path`` the photo (when the
        table has ``photo``). ``len(embeddings) + len(errors) == len(lesions)``.

    Raises
    ------
    TableError
        ``lesions`` lacks ``image_id`` or ``crop``, or has duplicate image ids.
    """
    if not isinstance(lesions, pd.DataFrame):
        raise TableError(f"embed_crops: expected the lesion table of crop_lesions, got "
                         f"{type(lesions).__name__}")
    for col in ("image_id", "crop"):
        if col not in lesions.columns:
            hint = (" (crops written with out_dir= have a 'path': use Embedder.embed)"
                    if col == "crop" else "")
            raise TableError(f"embed_crops: the table has no {col!r} column{hint}")
    table = lesions.reset_index(drop=True)
    photos = table["photo"].astype(object).tolist() if "photo" in table.columns else [None] * len(table)
    errors: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dermctx-crops-") as tmp:
        valid: list[int] = []
        paths: list[str] = []
        for i, crop in enumerate(table["crop"].tolist()):
            arr = np.asarray(crop) if crop is not None else None
            if arr is None or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 \
                    or arr.shape[0] < 1 or arr.shape[1] < 1:
                shape = None if arr is None else f"{arr.dtype} {arr.shape}"
                errors.append(error_record(table["image_id"].iloc[i], i, photos[i], "load",
                                           f"row {i}: crop is {shape}; expected a uint8 RGB array "
                                           "(height, width, 3)"))
                continue
            path = Path(tmp) / f"{len(valid)}.png"
            Image.fromarray(arr).save(path, format="PNG", compress_level=1)
            valid.append(i)
            paths.append(str(path))
        todo = table.iloc[valid][["image_id"]].assign(path=paths).reset_index(drop=True)
        emb, emb_errors = embedder.embed(todo, **embed_kwargs)
    for rec in emb_errors.to_dict(orient="records"):
        i = valid[int(rec["row"])]
        errors.append(error_record(rec["image_id"], i, photos[i], rec["stage"], rec["message"]))
    return emb, errors_frame(sorted(errors, key=lambda r: r["row"]))
