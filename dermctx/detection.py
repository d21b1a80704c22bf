"""Detection metrics for lesion boxes on photos, as the detection literature reports them.

Ding et al. (2022) detect benign pigmented lesions of several classes on facial photos and report
per-class precision, sensitivity and specificity, accuracy, a confusion matrix across classes and
mAP. :func:`detection_metrics` computes the first four from two boxes tables (ground truth and a
detector's predictions, as :func:`dermctx.read_yolo` and :func:`dermctx.read_coco` return them);
:func:`mean_average_precision` computes mAP with the COCO reference implementation (pycocotools,
the optional extra ``pip install "dermctx[detection]"``), not with code of our own.

Definitions (``conf_threshold`` and ``iou_threshold`` are arguments):

* **Photo level, per class** (precision, sensitivity, specificity, accuracy): a photo is *positive*
  for class c when the truth has a box of class c on it, and *predicted positive* when the
  detector has a box of class c with confidence >= ``conf_threshold`` on it. Over the photos:
  TP, FP, FN, TN; precision = TP/(TP+FP), sensitivity = TP/(TP+FN), specificity = TN/(TN+FP),
  accuracy = (TP+TN)/photos. A ratio with a zero denominator is NaN.
* **Box level, the confusion matrix**: on each photo, truth boxes and predictions (confidence >=
  ``conf_threshold``) are matched one to one whatever their classes, greedily by IoU (highest
  first; ties by higher confidence), a pair needing IoU >= ``iou_threshold``. A matched pair
  counts in (truth class, predicted class); a truth box left unmatched in (its class,
  ``"background"``): a missed lesion; a prediction left unmatched in (``"background"``, its
  class): a false detection. Rows are the truth, columns the prediction (scikit-learn's
  orientation). Box **accuracy** = the diagonal / all counts.
* **mAP@0.5**: COCO's average precision (101-point interpolated precision-recall) at IoU
  ``iou_threshold``, per class, over every prediction whatever its confidence; mAP is the mean
  over the classes that have truth boxes.

The photos evaluated are the photos of the truth table, including its rows with no box (negative
photos: a YOLO photo without labels, a COCO image without annotations). A prediction on a photo
the truth does not list is refused, never read as a negative photo.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dermctx.errors import DermctxWarning, MetricError

__all__ = [
    "BACKGROUND",
    "DetectionMetrics",
    "box_iou",
    "detection_metrics",
    "mean_average_precision",
]

#: Name of the row and column of the confusion matrix for "no lesion" (missed / false detection).
BACKGROUND = "background"
_INSTALL = 'pip install "dermctx[detection]"'


@dataclass(frozen=True)
class DetectionMetrics:
    """What :func:`detection_metrics` returns.

    Attributes
    ----------
    per_class : DataFrame
        One row per class: ``class``, ``photos`` (evaluated), ``truth_photos`` (photos positive
        for the class), ``TP``, ``FP``, ``FN``, ``TN`` (photo counts), ``precision``,
        ``sensitivity``, ``specificity``, ``accuracy`` (photo level), ``truth_boxes`` and
        ``pred_boxes`` (boxes at or above the confidence threshold).
    confusion : DataFrame of int
        Box counts, index = truth classes + ``"background"`` (named ``"truth"``), columns =
        predicted classes + ``"background"`` (named ``"predicted"``).
    accuracy : float
        Box accuracy: matched boxes of the right class / all counts of ``confusion`` (NaN when
        there are none).
    matches : DataFrame
        One row per truth box and per prediction (at or above the threshold): ``photo_id``,
        ``truth_box`` and ``pred_box`` (their ``box_id``), ``truth_class``, ``pred_class``,
        ``iou``, ``confidence`` and ``outcome`` (``"match"``, ``"missed"``,
        ``"false detection"``).
    n_photos : int
    conf_threshold, iou_threshold : float
    """

    per_class: pd.DataFrame
    confusion: pd.DataFrame
    accuracy: float
    matches: pd.DataFrame
    n_photos: int
    conf_threshold: float
    iou_threshold: float


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boxes.

    Parameters
    ----------
    a : ndarray, shape (N, 4)
    b : ndarray, shape (M, 4)
        Corners ``x0, y0, x1, y1`` in pixels (``x1 > x0``, ``y1 > y0``).

    Returns
    -------
    ndarray, float64, shape (N, M)
        IoU in [0, 1] (areas as ``(x1 - x0) * (y1 - y0)``, as pycocotools computes them).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]),
                 0, None)  # (N, M)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]),
                 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (N,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _rows_text(positions: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(p)) for p in positions[:limit])
    more = f" and {len(positions) - limit} more" if len(positions) > limit else ""
    return f"row{'s' if len(positions) != 1 else ''} {shown}{more}"


def _class_text(v: Any) -> str | None:
    """A class index as text ("3" for 3 or 3.0); other values as they are; None when missing."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    try:
        f = float(v)
        if f == int(f):
            return str(int(f))
    except (TypeError, ValueError, OverflowError):
        pass
    return str(v)


def _prepare(frame: Any, name: str, *, predictions: bool) -> tuple[pd.DataFrame, list[str]]:
    """The boxes of a truth or prediction table, checked: ``photo_id`` and ``class`` (str),
    ``box_id``, ``x0..y1``, ``confidence``; and every photo id it lists (with or without boxes)."""
    if not isinstance(frame, pd.DataFrame):
        raise MetricError(f"{name}: expected a boxes table (DataFrame), got {type(frame).__name__}")
    need = ["photo_id", "x0", "y0", "x1", "y1"] + (["confidence"] if predictions else [])
    missing = [c for c in need if c not in frame.columns]
    if "class_name" not in frame.columns and "class" not in frame.columns:
        missing.append("class_name (or class)")
    if missing:
        raise MetricError(f"{name}: the boxes table lacks column(s) {missing} (columns "
                          f"{list(frame.columns)[:20]}); read it with dermctx.read_yolo or read_coco")
    f = frame.reset_index(drop=True)
    if f["photo_id"].isna().any():
        raise MetricError(f"{name}: column 'photo_id' is missing at "
                          f"{_rows_text(np.flatnonzero(f['photo_id'].isna().to_numpy()))}")
    photo = f["photo_id"].astype(str)
    xy = f[["x0", "y0", "x1", "y1"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    empty = np.isnan(xy).all(axis=1)
    if "box_id" in f.columns:
        empty &= f["box_id"].isna().to_numpy()
    bad = ~empty & (~np.isfinite(xy).all(axis=1) | (xy[:, 2] <= xy[:, 0]) | (xy[:, 3] <= xy[:, 1]))
    if bad.any():
        raise MetricError(f"{name}: box corners x0, y0, x1, y1 are missing or not x1 > x0, y1 > y0 "
                          f"at {_rows_text(np.flatnonzero(bad))}; expected pixel corners (a photo "
                          "with no box is a row with box_id and every corner missing)")
    cls = pd.Series([None] * len(f), dtype=object)
    if "class_name" in f.columns:
        cls = f["class_name"].astype(object).where(f["class_name"].notna(), None)
    if "class" in f.columns:
        fallback = f["class"].map(_class_text)
        cls = cls.where(cls.notna(), fallback)
    no_class = ~empty & cls.isna().to_numpy()
    if no_class.any():
        raise MetricError(f"{name}: no class_name (or class) at {_rows_text(np.flatnonzero(no_class))}")
    conf = (pd.to_numeric(f["confidence"], errors="coerce").to_numpy(float) if "confidence" in f.columns
            else np.full(len(f), np.nan))
    if predictions:
        bad_conf = ~empty & ~((conf >= 0) & (conf <= 1))
        if bad_conf.any():
            raise MetricError(f"{name}: confidence is missing or outside [0, 1] at "
                              f"{_rows_text(np.flatnonzero(bad_conf))}; every prediction needs one")
    box_id = f["box_id"].to_numpy(dtype=object) if "box_id" in f.columns else np.arange(len(f))
    boxes = pd.DataFrame({
        "photo_id": photo.to_numpy(dtype=object)[~empty], "class": cls.to_numpy(dtype=object)[~empty],
        "box_id": box_id[~empty], "x0": xy[~empty, 0], "y0": xy[~empty, 1],
        "x1": xy[~empty, 2], "y1": xy[~empty, 3], "confidence": conf[~empty],
    })
    boxes["class"] = boxes["class"].astype(str)
    return boxes, list(dict.fromkeys(photo.tolist()))


def _inputs(truth: Any, pred: Any, classes: Sequence[str] | None
            ) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    t, photos = _prepare(truth, "truth", predictions=False)
    p, pred_photos = _prepare(pred, "pred", predictions=True)
    unknown = sorted(set(pred_photos) - set(photos))
    if unknown:
        raise MetricError(
            f"pred: photo(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not in the truth "
            "table; the truth must list every evaluated photo (a photo with no lesion as a row with "
            "no box), and both tables must use the same photo_id")
    if not photos:
        raise MetricError("truth: no photos; expected a boxes table with at least one photo")
    found = sorted(set(t["class"]) | set(p["class"]))
    if classes is None:
        names = found
    else:
        names = [str(c) for c in classes]
        if BACKGROUND in names or len(set(names)) != len(names):
            raise MetricError(f"classes {names}: expected unique class names other than "
                              f"{BACKGROUND!r}")
        outside = sorted(set(found) - set(names))
        if outside:
            raise MetricError(f"class(es) {outside[:10]} of the boxes are not in classes={names}")
    if BACKGROUND in found:
        raise MetricError(f"a class is named {BACKGROUND!r}, the confusion matrix's name for "
                          "'no lesion'; rename it")
    if len(t) and len(p) and not set(t["class"]) & set(p["class"]):
        warnings.warn(
            f"no class of pred {sorted(set(p['class']))[:5]} is a class of truth "
            f"{sorted(set(t['class']))[:5]}: were they read with the same class names?",
            DermctxWarning, stacklevel=3)
    return t, p, photos, names


def _check_threshold(value: Any, name: str, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0 < value <= 1 if low_open else 0 <= value <= 1)
    if not ok:
        raise MetricError(f"{name}={value!r}; expected a number in {'(0' if low_open else '[0'}, 1]")
    return float(value)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def detection_metrics(
    truth: pd.DataFrame,
    pred: pd.DataFrame,
    *,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    classes: Sequence[str] | None = None,
) -> DetectionMetrics:
    """Per-class photo-level precision, sensitivity, specificity and accuracy; the box confusion
    matrix and box accuracy (definitions in :mod:`dermctx.detection`).

    Parameters
    ----------
    truth, pred : DataFrame
        Boxes tables (:func:`dermctx.read_yolo`, :func:`dermctx.read_coco`, or by hand):
        ``photo_id``, ``class_name`` (or ``class``), ``x0, y0, x1, y1`` in pixels, and for
        ``pred`` a ``confidence`` in [0, 1]. Rows with no box list photos (negative photos in
        ``truth``). The photos evaluated are those of ``truth``.
    conf_threshold : float
        Predictions with confidence >= this count; the others are ignored (Ultralytics' default
        for its confusion matrix is 0.25).
    iou_threshold : float
        Smallest IoU of a matched pair, in (0, 1].
    classes : sequence of str, optional
        The class names in report order (default: every class seen, sorted).

    Returns
    -------
    DetectionMetrics

    Raises
    ------
    MetricError
        A table lacks a column, a box has no class or bad corners, a prediction has no
        confidence in [0, 1], ``pred`` names a photo ``truth`` does not list, a class is outside
        ``classes`` or is named ``"background"``, or a threshold is out of range.

    Warns
    -----
    DermctxWarning
        When ``truth`` and ``pred`` share no class name.
    """
    conf_thr = _check_threshold(conf_threshold, "conf_threshold")
    iou_thr = _check_threshold(iou_threshold, "iou_threshold", low_open=True)
    t, p, photos, names = _inputs(truth, pred, classes)
    p = p[p["confidence"] >= conf_thr].reset_index(drop=True)
    n = len(photos)

    rows = []
    for c in names:
        tpos = set(t.loc[t["class"] == c, "photo_id"])
        ppos = set(p.loc[p["class"] == c, "photo_id"])
        tp, fp, fn = len(tpos & ppos), len(ppos - tpos), len(tpos - ppos)
        tn = n - tp - fp - fn
        rows.append({
            "class": c, "photos": n, "truth_photos": len(tpos), "TP": tp, "FP": fp, "FN": fn,
            "TN": tn, "precision": _ratio(tp, tp + fp), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "accuracy": _ratio(tp + tn, n),
            "truth_boxes": int((t["class"] == c).sum()), "pred_boxes": int((p["class"] == c).sum()),
        })
    per_class = pd.DataFrame(rows, columns=[
        "class", "photos", "truth_photos", "TP", "FP", "FN", "TN", "precision", "sensitivity",
        "specificity", "accuracy", "truth_boxes", "pred_boxes"])

    labels = [*names, BACKGROUND]
    index = {c: k for k, c in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)  # (truth, predicted)
    records: list[dict[str, Any]] = []
    t_groups = dict(tuple(t.groupby("photo_id", sort=False)))
    p_groups = dict(tuple(p.groupby("photo_id", sort=False)))
    for photo in photos:
        g = t_groups.get(photo, t.iloc[:0])
        d = p_groups.get(photo, p.iloc[:0])
        gb, db = g[["x0", "y0", "x1", "y1"]].to_numpy(), d[["x0", "y0", "x1", "y1"]].to_numpy()
        iou = box_iou(gb, db)  # (G, D)
        gi, di = np.nonzero(iou >= iou_thr)
        order = np.lexsort((di, gi, -d["confidence"].to_numpy()[di], -iou[gi, di]))
        used_g: set[int] = set()
        used_d: set[int] = set()
        for k in order:
            a, b = int(gi[k]), int(di[k])
            if a in used_g or b in used_d:
                continue
            used_g.add(a)
            used_d.add(b)
            tc, pc = g["class"].iloc[a], d["class"].iloc[b]
            counts[index[tc], index[pc]] += 1
            records.append({"photo_id": photo, "truth_box": g["box_id"].iloc[a],
                            "pred_box": d["box_id"].iloc[b], "truth_class": tc, "pred_class": pc,
                            "iou": float(iou[a, b]), "confidence": float(d["confidence"].iloc[b]),
                            "outcome": "match"})
        for a in sorted(set(range(len(g))) - used_g):
            tc = g["class"].iloc[a]
            counts[index[tc], index[BACKGROUND]] += 1
            records.append({"photo_id": photo, "truth_box": g["box_id"].iloc[a], "pred_box": None,
                            "truth_class": tc, "pred_class": BACKGROUND, "iou": np.nan,
                            "confidence": np.nan, "outcome": "missed"})
        for b in sorted(set(range(len(d))) - used_d):
            pc = d["class"].iloc[b]
            counts[index[BACKGROUND], index[pc]] += 1
            records.append({"photo_id": photo, "truth_box": None, "pred_box": d["box_id"].iloc[b],
                            "truth_class": BACKGROUND, "pred_class": pc, "iou": np.nan,
                            "confidence": float(d["confidence"].iloc[b]),
                            "outcome": "false detection"})
    confusion = pd.DataFrame(counts, index=pd.Index(labels, name="truth"),
                             columns=pd.Index(labels, name="predicted"))
    total = int(counts.sum())
    accuracy = float(np.trace(counts[:-1, :-1]) / total) if total else float("nan")
    matches = pd.DataFrame(records, columns=["photo_id", "truth_box", "pred_box", "truth_class",
                                             "pred_class", "iou", "confidence", "outcome"])
    return DetectionMetrics(per_class=per_class, confusion=confusion, accuracy=accuracy,
                            matches=matches, n_photos=n, conf_threshold=conf_thr,
                            iou_threshold=iou_thr)


def mean_average_precision(
    truth: pd.DataFrame,
    pred: pd.DataFrame,
    *,
    iou_threshold: float = 0.5,
    classes: Sequence[str] | None = None,
) -> tuple[float, pd.DataFrame]:
    """mAP at one IoU threshold (mAP@0.5 by default), computed by pycocotools' ``COCOeval``.

    The boxes are handed to ``COCOeval`` (``iouType="bbox"``, one area range "all", the given
    IoU threshold, at most ``max(100, most predictions on one photo)`` detections per photo so
    that none is dropped) and AP is read from its precision array as its ``summarize`` reads it:
    the mean of the 101-point interpolated precision at recall 0, 0.01, ..., 1. Every prediction
    counts, whatever its confidence (the ranking by confidence is what AP measures).

    Parameters
    ----------
    truth, pred : DataFrame
        As for :func:`detection_metrics`.
    iou_threshold : float
        IoU at which a prediction matches a truth box of its class, in (0, 1].
    classes : sequence of str, optional
        Class names in report order (default: every class seen, sorted).

    Returns
    -------
    map : float
        The mean of the per-class APs over the classes with truth boxes (NaN when none has).
    per_class : DataFrame
        ``class``, ``truth_boxes``, ``pred_boxes``, ``ap`` (NaN for a class with no truth box).

    Raises
    ------
    ImportError
        pycocotools is not installed: ``pip install "dermctx[detection]"``.
    MetricError
        As for :func:`detection_metrics`.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise ImportError(
            f"mean_average_precision needs pycocotools (the COCO reference implementation): "
            f"{_INSTALL}") from exc
    iou_thr = _check_threshold(iou_threshold, "iou_threshold", low_open=True)
    t, p, photos, names = _inputs(truth, pred, classes)
    image_ids = {photo: k + 1 for k, photo in enumerate(photos)}
    category_ids = {c: k + 1 for k, c in enumerate(names)}

    def anns(boxes: pd.DataFrame, scored: bool) -> list[dict[str, Any]]:
        out = []
        columns = [boxes[c].tolist() for c in ("photo_id", "class", "x0", "y0", "x1", "y1",
                                               "confidence")]
        for k, (photo, c, x0, y0, x1, y1, conf) in enumerate(zip(*columns, strict=True), start=1):
            w, h = x1 - x0, y1 - y0  # ids start at 1: COCOeval reads id 0 as "unmatched"
            ann = {"id": k, "image_id": image_ids[photo], "category_id": category_ids[c],
                   "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0}
            if scored:
                ann["score"] = float(conf)
            out.append(ann)
        return out

    base = {"images": [{"id": i} for i in image_ids.values()],
            "categories": [{"id": i, "name": c} for c, i in category_ids.items()]}
    max_dets = max(100, int(p.groupby("photo_id").size().max()) if len(p) else 0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt, dt = COCO(), COCO()
        gt.dataset = {**base, "annotations": anns(t, scored=False)}
        dt.dataset = {**base, "annotations": anns(p, scored=True)}
        gt.createIndex()
        dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = list(image_ids.values())
        ev.params.catIds = list(category_ids.values())
        ev.params.iouThrs = np.array([iou_thr])
        ev.params.maxDets = [max_dets]
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, 0]  # (recall thresholds, classes)
    ap = [float(precision[:, k].mean()) if (precision[:, k] > -1).all() else float("nan")
          for k in range(len(names))]
    per_class = pd.DataFrame({
        "class": names,
        "truth_boxes": [int((t["class"] == c).sum()) for c in names],
        "pred_boxes": [int((p["class"] == c).sum()) for c in names],
        "ap": ap,
    })
    valid = [a for a in ap if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), per_class
