"""One patient's lesions side by side, most suspicious first: a page a clinician can read.

:func:`write_patient_page` writes one self-contained HTML file (images as data URIs, inline CSS,
no script, no external resource) that opens offline in any browser:

- a header with the patient's facts, the model's provenance (what it was trained on, its
  held-out AUC with its CI) and a plain statement that the ranking is a research aid, not a
  diagnosis;
- one card per lesion in rank order (:func:`patient_cards_html`): a thumbnail large enough to
  judge (click to enlarge, click again to close), the score as a percentage, its rank among the
  patient's lesions beside the CNN alone's rank ("#4, CNN alone #7"), the explanation in words,
  and small thumbnails of the lesions it resembles least and most and of those whose presence
  raised or lowered its score (each links to that lesion's card);
- a section "Could not be scored" listing every image that failed, with its file and message.

The report's patient views (:func:`dermctx.write_report`) use the same cards.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermctx.errors import DermctxError, error_record
from dermctx.formatting import (
    format_ci,
    format_number,
    format_probability,
    format_probability_change,
    plural,
)

__all__ = ["DISCLAIMER", "PATIENT_CARDS_CSS", "patient_cards_html", "write_patient_page"]

#: The statement every patient page carries, in its header.
DISCLAIMER = (
    "Research aid, not a diagnosis. This page orders one patient's lesions by a model's "
    "estimated melanoma probability, judged against the patient's other lesions. It does not "
    "say whether any lesion is or is not a melanoma, it is not a cleared medical device, and "
    "every decision about a lesion remains the clinician's, after examining the patient."
)

#: Columns of ``scores`` that :func:`patient_cards_html` requires.
REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "score", "rank")

#: Side (CSS pixels) of the small thumbnails of related lesions.
MINI_SIZE = 56

#: CSS of the cards (a grid that wraps; click-to-enlarge through ``:target``, no script).
#: The grid's ``--thumb`` custom property is set inline to the thumbnail size.
PATIENT_CARDS_CSS = """
.cards{display:grid;gap:14px;margin:.8em 0 1.4em;
grid-template-columns:repeat(auto-fill,minmax(min(100%,max(270px,calc(var(--thumb,160px) + 28px))),1fr))}
.card{border:1px solid #d8d8d8;border-radius:8px;padding:12px;background:#fff;min-width:0;
overflow-wrap:anywhere;box-shadow:0 1px 2px rgba(0,0,0,.05)}
.card.mel{border:2px solid #c62828;background:#fff7f7}
.card .imgs{display:flex;gap:6px;margin-bottom:8px}
.card .imgs>*{flex:1 1 0;min-width:0;max-width:calc(var(--thumb,160px) * 1.4)}
.card figure{margin:0}
.card img.thumb{display:block;width:100%;height:auto;aspect-ratio:1/1;
border-radius:4px;background:#eee;cursor:zoom-in}
.card .noimg{width:100%;aspect-ratio:1/1;display:flex;overflow-wrap:normal;
align-items:center;justify-content:center;text-align:center;border:2px dashed #c62828;
border-radius:4px;color:#b3261e;background:#fdf0f0;font-size:13px;padding:6px;box-sizing:border-box}
.card .noimg.none{border-color:#bbb;color:#777;background:#f6f6f6}
.card .top{display:flex;align-items:baseline;gap:.5em;flex-wrap:wrap}
.card .rank{font-size:1.5em;font-weight:700}
.card .score{font-size:1.5em;font-weight:600;color:#333}
.card .score small{font-size:.55em;font-weight:400;color:#666}
.card .alone{color:#555;font-size:13px}.card .nw{white-space:nowrap}
.card .iid{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#444;margin:.2em 0}
.card .badge{display:inline-block;background:#c62828;color:#fff;border-radius:3px;padding:0 .4em;
font-size:12px;font-family:system-ui,sans-serif;margin-left:.3em}
.card .facts{font-size:13px;color:#555}
.card .why{font-size:13px;margin-top:.5em}
.card .why ul{margin:.1em 0 .4em;padding-left:1.2em}
.card .why b{font-weight:600}
.card .rel{font-size:12px;margin-top:.5em;color:#333}
.card .rel .label{display:block;font-weight:600;margin-bottom:2px}
.card .rel a,.card .rel span.ref{display:inline-flex;flex-direction:column;align-items:center;
margin:0 8px 4px 0;color:#1f4f8f;text-decoration:none;vertical-align:top}
.card .rel.row a,.card .rel.row span.ref{flex-direction:row;gap:8px;text-align:left}
.card img.mini{width:56px;height:56px;border-radius:3px;display:block;background:#eee;flex:none}
.card .mini.noimg{width:56px;height:56px;font-size:9px;padding:2px;flex:none}
.zoom .close{display:none}
.zoom:target{position:fixed;inset:0;z-index:50;margin:0;background:rgba(0,0,0,.88);
display:flex;align-items:center;justify-content:center}
.card .imgs>.zoom:target{max-width:none}
.zoom:target img.thumb{width:min(94vw,94vh);max-width:none;cursor:default}
.zoom:target .close{display:block;position:fixed;inset:0;color:#fff;font:32px/1 sans-serif;
text-align:right;padding:12px 20px;text-decoration:none;cursor:zoom-out}
"""

_PAGE_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#222;
margin:0;background:#f7f7f5}
main{max-width:1400px;margin:0 auto;padding:16px 20px 40px;box-sizing:border-box}
h1{font-size:1.5em;margin:.2em 0 .4em}h2{font-size:1.2em;margin:1.4em 0 .4em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.disclaimer{border:2px solid #b26a00;background:#fff8e6;border-radius:6px;padding:8px 12px;
font-size:14px;margin:.6em 0}
.header{display:grid;gap:8px 28px;grid-template-columns:repeat(auto-fit,minmax(280px,1fr))}
dl.facts{display:grid;grid-template-columns:minmax(5em,max-content) minmax(12em,1fr);gap:2px 12px;margin:.3em 0}
dl.facts dt{max-width:16em}
dl.facts dt{color:#666}dl.facts dd{margin:0;overflow-wrap:anywhere}
.legend{font-size:13px;color:#555}
table.errors{border-collapse:collapse;font-size:13px;width:100%;table-layout:fixed}
table.errors th,table.errors td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top;overflow-wrap:anywhere}
table.errors th{background:#f0f0f0}
footer{font-size:12px;color:#777;margin-top:2em}
"""


# --- values -------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and value.strip() == ""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ids(value: Any) -> list[str]:
    """Image ids from a cell holding one id, a list of ids, or nothing."""
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [str(v) for v in value if not _missing(v)]
    return [] if _missing(value) else [str(value)]


def _is_one(value: Any) -> bool:
    """A label cell that says "melanoma" (1, 1.0, True, "1")."""
    try:
        return not _missing(value) and float(value) == 1.0
    except (TypeError, ValueError):
        return False


def _fmt_score(value: Any, probability: bool) -> str:
    return format_probability(value) if probability else format_number(value, 3, missing="missing")


# --- images -------------------------------------------------------------------------------


def _square(array: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 array centre-cropped to a square and resized to ``size`` pixels."""
    from PIL import Image

    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(array[top:top + side, left:left + side])
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))


def _pixels(source: Any, size: int, image_id: str) -> np.ndarray:
    """``source`` (a file path or an RGB uint8 array) as a square RGB array of ``size`` pixels."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3 or 0 in source.shape:
            raise DermctxError(f"image {image_id!r}: expected an RGB uint8 array (H, W, 3), got "
                               f"{source.dtype} {source.shape}")
        return _square(source, size)
    if isinstance(source, (str, PathLike)):
        from dermctx.io.images import load_image

        return load_image(str(source), size, aspect="crop")
    raise DermctxError(f"image {image_id!r}: expected a file path or an RGB uint8 array, got "
                       f"{type(source).__name__}")


def _jpeg_uri(array: np.ndarray, size: int | None = None, quality: int = 85) -> str:
    from PIL import Image

    im = Image.fromarray(array)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return f"data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class _Images:
    """Each image read once, at the card's size; every failure recorded once, by image id."""

    def __init__(self, images: Mapping[str, Any] | None, px: int, errors: list[dict[str, Any]],
                 stage: str = "thumbnail") -> None:
        self.images = {str(k): v for k, v in (images or {}).items()}
        self.px, self.errors, self.stage = px, errors, stage
        self.cache: dict[str, np.ndarray | None] = {}
        self.uris: dict[tuple[str, int | None], str] = {}

    def pixels(self, image_id: str) -> np.ndarray | None:
        if image_id not in self.cache:
            source = self.images.get(image_id)
            try:
                self.cache[image_id] = None if source is None else _pixels(source, self.px, image_id)
            except DermctxError as exc:
                path = None if isinstance(source, np.ndarray) else str(source)
                self.errors.append(error_record(image_id, None, path, self.stage, exc))
                self.cache[image_id] = None
        return self.cache[image_id]

    def uri(self, image_id: str, size: int | None = None) -> str | None:
        """A JPEG data URI of the image (``size`` pixels; default as read), None if unreadable."""
        key = (image_id, size)
        if key not in self.uris:
            array = self.pixels(image_id)
            if array is None:
                return None
            self.uris[key] = _jpeg_uri(array, size)
        return self.uris[key]


# --- the cards ------------------------------------------------------------------------------


def _split_explanation(text: str) -> tuple[list[str], list[str]] | None:
    """``"raises: a; b | lowers: c"`` (:func:`dermctx.models.explanation.describe`) as lists."""
    raises: list[str] = []
    lowers: list[str] = []
    for part in text.split(" | "):
        head, sep, rest = part.partition(": ")
        if not sep or head not in ("raises", "lowers"):
            return None
        (raises if head == "raises" else lowers).extend(x.strip() for x in rest.split("; ") if x.strip())
    return raises, lowers


def _check_scores(scores: Any, where: str) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise DermctxError(f"{where}: expected a DataFrame of scores, got {type(scores).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise DermctxError(f"{where}: scores lack the column(s) {missing}; expected "
                           f"{list(REQUIRED_COLUMNS)} (what ContextRanker.score_patient returns), "
                           f"got {list(scores.columns)[:20]}")
    frame = scores.reset_index(drop=True).copy()
    frame["image_id"] = frame["image_id"].astype(str)
    dup = frame["image_id"][frame["image_id"].duplicated()].unique()
    if len(dup):
        raise DermctxError(f"{where}: image_id {list(dup[:5])} appear(s) more than once; expected "
                           "one row per lesion")
    for col in ("score", "rank"):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = frame.index[values.isna() & frame[col].notna()]
        if len(bad):
            raise DermctxError(f"{where}: column {col!r} is not a number at row {int(bad[0])} "
                               f"(image_id {frame.loc[bad[0], 'image_id']!r}): {frame.loc[bad[0], col]!r}")
        frame[col] = values
    if frame["rank"].isna().any():
        row = int(frame.index[frame["rank"].isna()][0])
        raise DermctxError(f"{where}: column 'rank' is missing at row {row} (image_id "
                           f"{frame.loc[row, 'image_id']!r}); expected 1 = most suspicious")
    if "patient_id" in frame.columns and frame["patient_id"].astype(str).nunique() > 1:
        raise DermctxError(f"{where}: expected one patient's lesions, got patients "
                           f"{list(frame['patient_id'].astype(str).unique()[:5])}")
    order = np.lexsort((-frame["score"].fillna(-np.inf).to_numpy(), frame["rank"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _is_probability(values: pd.Series) -> bool:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) == 0 or (v.min() >= 0.0 and v.max() <= 1.0))


def patient_cards_html(
    scores: pd.DataFrame,
    *,
    images: Mapping[str, Any] | None = None,
    thumb_size: int = 320,
    image_px: int | None = None,
    compare: Mapping[str, str | tuple[str, str]] | None = None,
    probability_cols: Collection[str] | None = None,
    overlays: Mapping[str, Any] | None = None,
    n_lesions: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    id_prefix: str = "",
) -> str:
    """The cards of one patient's lesions, most suspicious first, as an HTML fragment.

    The fragment needs :data:`PATIENT_CARDS_CSS` in the page's style sheet; it has no script
    and fetches nothing (images are JPEG data URIs).

    Parameters
    ----------
    scores : DataFrame, one row per lesion of one patient
        Required: ``image_id``, ``score`` (probability in [0, 1], or any score), ``rank`` (1 =
        most suspicious; the cards follow it, ties by score). Optional, each shown when present:
        ``cnn_score`` (the CNN alone's probability: its rank among these rows is shown beside
        ``rank``), ``explanation`` (words, e.g. ``"raises: ...; ... | lowers: ..."``),
        ``raised_by`` / ``lowered_by`` (the lesion whose presence raised / lowered this score
        most) with ``raised_by_change`` / ``lowered_by_change`` (probability units),
        ``most_similar`` / ``least_similar`` (one image id or a list), ``target`` (1 marks a
        melanoma: research reports only), ``site``, ``diagnosis``.
    images : mapping, optional
        ``image_id`` -> a JPEG / PNG / DICOM file path (read with :func:`dermctx.load_image`)
        or an RGB uint8 array (H, W, 3). A lesion it lacks shows "no image"; an image that
        cannot be read shows "unreadable image" and is recorded in ``errors``. None: cards
        without images.
    thumb_size : int
        Displayed side of the thumbnails, CSS pixels (cards shrink on narrow screens).
    image_px : int, optional
        Side of the embedded JPEG (default ``2 * thumb_size``, so that the enlarged view, one
        click on the thumbnail, stays sharp).
    compare : mapping, optional
        Other models' ranks to show beside ``rank``: label -> score column (ranked among these
        rows, 1 = highest) or (score column, rank column). Default ``{"CNN alone":
        "cnn_score"}`` when ``scores`` has ``cnn_score``.
    probability_cols : collection of str, optional
        Which of ``score`` and the compared columns are probabilities (shown as percentages;
        others as numbers). Default: those whose values all lie in [0, 1].
    overlays : mapping, optional
        ``image_id`` -> an RGB uint8 array or file (e.g. a Grad-CAM overlay), shown beside the
        thumbnail with the same size.
    n_lesions : int, optional
        The patient's number of lesions when ``scores`` shows only some ("#2 of 40").
    errors : list, optional
        Unreadable images are appended to it as :func:`dermctx.errors.error_record` dicts
        (stage ``"thumbnail"``, or ``"overlay"``), once per image.
    id_prefix : str
        Prefix of the HTML ids (cards link to each other by id): distinct per patient when one
        page holds several patients' cards.

    Returns
    -------
    str
        ``<div class="cards">...</div>``: one ``<article class="card">`` per row.

    Raises
    ------
    DermctxError
        ``scores`` is not a DataFrame, lacks a required column, repeats an ``image_id``, holds
        several patients, or has a non-numeric ``score`` / ``rank``; a ``compare`` column is
        missing; a column named in ``probability_cols`` holds a value outside [0, 1].
    """
    frame = _check_scores(scores, "patient_cards_html")
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, (int, np.integer)) or thumb_size < 16:
        raise DermctxError(f"patient_cards_html: thumb_size must be an integer of at least 16 pixels, got {thumb_size!r}")
    thumb_size = int(thumb_size)
    px = int(image_px) if image_px is not None else 2 * thumb_size
    errors = [] if errors is None else errors
    if compare is None:
        compare = {"CNN alone": "cnn_score"} if "cnn_score" in frame.columns else {}
    ranks: dict[str, tuple[str, pd.Series]] = {}
    for label, spec in compare.items():
        col, rank_col = (spec, None) if isinstance(spec, str) else spec
        if col not in frame.columns:
            raise DermctxError(f"patient_cards_html: compare[{label!r}] names the column {col!r}, "
                               f"which scores lack (columns {list(frame.columns)[:20]})")
        values = pd.to_numeric(frame[col], errors="coerce")
        rank = (frame[rank_col] if rank_col is not None
                else values.rank(ascending=False, method="min"))
        ranks[label] = (col, rank)
    cols = ["score", *(c for c, _ in ranks.values())]
    prob = ({c: _is_probability(frame[c]) for c in cols} if probability_cols is None
            else {c: c in probability_cols for c in cols})
    pics = _Images(images, px, errors)
    cams = _Images(overlays, px, errors, stage="overlay")
    position = {iid: k for k, iid in enumerate(frame["image_id"], start=1)}
    anchor = {iid: f"{id_prefix}lesion-{k}" for iid, k in position.items()}
    total = len(frame) if n_lesions is None else int(n_lesions)

    def figure(store: _Images, iid: str, k: int, kind: str, alt: str) -> str:
        if store.images.get(iid) is None:
            return '<div class="noimg none">no image</div>' if kind == "thumb" else ""
        uri = store.uri(iid)
        if uri is None:
            return f'<div class="noimg" role="img" aria-label="{_e(alt)}">unreadable image</div>'
        zid = f"{id_prefix}zoom-{k}{'' if kind == 'thumb' else '-' + kind}"
        return (f'<figure class="zoom" id="{zid}"><a class="open" href="#{zid}" title="click to '
                f'enlarge"><img class="thumb{"" if kind == "thumb" else " " + kind}" alt="{_e(alt)}" '
                f'src="{uri}" width="{thumb_size}" height="{thumb_size}"></a>'
                f'<a class="close" href="#{anchor[iid]}" title="close" aria-label="close">&times;</a>'
                "</figure>")

    def ref(iid: str, note: str = "") -> str:
        """A small thumbnail of another lesion, linking to its card."""
        k = position.get(iid)
        caption = f"#{k}" if k is not None else _e(iid)
        pic = ""
        if images is not None:
            uri = pics.uri(iid, 2 * MINI_SIZE) if pics.images.get(iid) is not None else None
            pic = (f'<img class="mini" alt="{_e(iid)}" src="{uri}" width="{MINI_SIZE}" '
                   f'height="{MINI_SIZE}">' if uri else
                   f'<span class="mini noimg{"" if iid in pics.images else " none"}">'
                   f'{"unreadable" if iid in pics.images else "no image"}</span>')
        body = f"{pic}<span>{caption}{(': ' + _e(note)) if note else ''}</span>"
        title = f' title="{_e(iid)}"'
        return (f'<a href="#{anchor[iid]}"{title}>{body}</a>' if iid in anchor
                else f'<span class="ref"{title}>{body}</span>')

    cards = []
    for k, r in enumerate(frame.to_dict(orient="records"), start=1):
        iid = str(r["image_id"])
        mel = "target" in r and _is_one(r["target"])
        imgs = ""
        if images is not None:
            imgs = figure(pics, iid, k, "thumb", f"lesion {iid}")
        if cams.images.get(iid) is not None:
            imgs += figure(cams, iid, k, "cam", f"Grad-CAM {iid}")
        rank = "—" if _missing(r["rank"]) else f"#{int(r['rank'])}"
        alone = [f'<span class="nw">{_e(label)} #{int(rk.iloc[k - 1])} '
                 f"({_e(_fmt_score(r[c], prob[c]))})</span>"
                 if not _missing(rk.iloc[k - 1]) else f"{_e(label)}: missing"
                 for label, (c, rk) in ranks.items()]
        head = (f'<div class="top"><span class="rank" title="rank among the patient\'s lesions '
                f'(1 = most suspicious)">{rank}</span>'
                f'<span class="score">{_e(_fmt_score(r["score"], prob["score"]))}'
                f'{" <small>melanoma probability</small>" if prob["score"] else " <small>score</small>"}'
                "</span></div>"
                f'<div class="alone">rank {rank} of {total} in context'
                + "".join(f", {a}" for a in alone) + "</div>")
        ident = (f'<div class="iid">{_e(iid)}'
                 + ('<span class="badge" title="melanoma in the labels">&#9733; melanoma</span>'
                    if mel else "") + "</div>")
        facts = [f"{name} {_e(r[name])}" for name in ("site", "diagnosis")
                 if name in r and not _missing(r[name])]
        parts = [imgs and f'<div class="imgs">{imgs}</div>', head, ident,
                 f'<div class="facts">{" &middot; ".join(facts)}</div>' if facts else ""]
        text = r.get("explanation")
        if not _missing(text):
            split = _split_explanation(str(text))
            if split is None:
                parts.append(f'<div class="why">{_e(text)}</div>')
            else:
                why = "".join(
                    f"<b>{label}</b><ul>{''.join(f'<li>{_e(x)}</li>' for x in items)}</ul>"
                    for label, items in (("What raised it", split[0]), ("What lowered it", split[1]))
                    if items)
                parts.append(f'<div class="why">{why}</div>')
        for key, label in (("raised_by", "Raised most by the presence of"),
                           ("lowered_by", "Lowered most by the presence of")):
            who = _ids(r.get(key))
            if not who:
                continue
            change = r.get(f"{key}_change")
            note = ""
            if not _missing(change):
                note = format_probability_change(change)
                if prob["score"] and not _missing(r["score"]):
                    without = min(max(float(r["score"]) - float(change), 0.0), 1.0)
                    note += f"; {format_probability(without)} without it"
            parts.append(f'<div class="rel row"><span class="label">{label}</span>'
                         + "".join(ref(w, note) for w in who) + "</div>")
        for key, label in (("least_similar", "Looks least like"), ("most_similar", "Looks most like")):
            who = _ids(r.get(key))
            if who:
                parts.append(f'<div class="rel"><span class="label">{label}</span>'
                             + "".join(ref(w) for w in who) + "</div>")
        cards.append(f'<article class="card{" mel" if mel else ""}" id="{anchor[iid]}">'
                     + "".join(parts) + "</article>")
    return f'<div class="cards" style="--thumb:{thumb_size}px">{"".join(cards)}</div>'


# --- the page -------------------------------------------------------------------------------

_LABELS = {
    "patient_id": "Patient", "age": "Age", "sex": "Sex", "n_images": "Images",
    "model": "Model", "trained_on": "Trained on", "held_out_auc": "AUC on patients it was not fitted on (out of fold, 95% CI)",
    "created": "Model created", "cnn": "Lesion CNN", "version": "dermctx version",
}


def _value(key: str, value: Any) -> str:
    if key.endswith("auc") and isinstance(value, (tuple, list)) and len(value) == 3:
        est, lo, hi = value
        return _e(format_ci(est, lo, hi, digits=3))
    if isinstance(value, (tuple, list)):
        return _e(", ".join(str(v) for v in value))
    if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
        return _e(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _e(format_number(value, 3))
    return "—" if _missing(value) else _e(value)


def _facts(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{_e(_LABELS.get(k, k.replace('_', ' ').capitalize()))}</dt>"
                   f"<dd>{_value(k, v)}</dd>" for k, v in items)
    return f'<dl class="facts">{rows}</dl>'


def _errors_html(errors: pd.DataFrame) -> str:
    if len(errors) == 0:
        return '<p class="legend">Every image was scored and is shown above.</p>'
    note = ('<p class="legend">Stage “thumbnail”: the lesion was scored, but its image could not be '
            "read to show it here.</p>"
            if "stage" in errors.columns and (errors["stage"] == "thumbnail").any() else "")
    rows = []
    for r in errors.to_dict(orient="records"):
        where = r.get("path") if not _missing(r.get("path")) else r.get("image_id")
        stage = "" if _missing(r.get("stage")) else str(r["stage"])
        rows.append(f"<tr><td>{_e('—' if _missing(where) else where)}</td><td>{_e(stage)}</td>"
                    f"<td>{_e(r.get('message', ''))}</td></tr>")
    return ('<table class="errors"><colgroup><col style="width:34%"><col style="width:12%">'
            '<col></colgroup><thead><tr><th>file</th><th>stage</th><th>message</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>" + note)


def write_patient_page(
    scores: pd.DataFrame,
    path: str | PathLike[str],
    *,
    images: Mapping[str, Any] | None = None,
    errors: pd.DataFrame | None = None,
    patient: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    title: str | None = None,
    thumb_size: int = 320,
) -> Path:
    """Write one patient's ranked lesions as a self-contained HTML page a clinician can read.

    Parameters
    ----------
    scores : DataFrame, one row per lesion of one patient
        What :meth:`dermctx.ContextRanker.score_patient` returns: ``image_id``, ``score``
        (probability), ``rank`` (1 = most suspicious), and optionally ``cnn_score``,
        ``explanation``, ``raised_by`` / ``lowered_by`` (+ ``_change``, probability units),
        ``most_similar`` / ``least_similar``, ``target`` (marks melanomas: research only),
        ``site``; see :func:`patient_cards_html`.
    path : path
        The HTML file to write (parent folders are created); a folder (an existing one, or a
        path without a suffix) gets ``patient.html``.
    images : mapping, optional
        ``image_id`` -> a JPEG / PNG / DICOM path or an RGB uint8 array (H, W, 3).
    errors : DataFrame, optional
        The errors table of the scoring (:func:`dermctx.errors_frame` columns ``image_id, row,
        path, stage, message``), listed under "Could not be scored" with the images the page
        itself could not read.
    patient : mapping, optional
        Facts shown in the header, in order, e.g. ``{"patient_id": "IP_0001", "age": 55,
        "sex": "female", "n_images": 12}``. Default: ``patient_id`` (when ``scores`` has it) and
        the number of images scored and failed.
    provenance : mapping, optional
        The model's provenance, e.g. ``{"model": "ContextRanker on efficientnet_b0",
        "trained_on": "SIIM-ISIC 2020, 1,440 patients", "held_out_auc": (0.91, 0.89, 0.94),
        "created": "2025-01-31"}``; an ``*auc`` entry given as (estimate, low, high) is shown
        with its CI.
    title : str, optional
        The page's title (default ``"Patient <id>: lesions ranked"``).
    thumb_size : int
        Displayed side of each lesion's thumbnail, CSS pixels (embedded at twice that for the
        enlarged view).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    DermctxError
        ``scores`` is not a valid scores table (see :func:`patient_cards_html`), or ``errors``
        is not a DataFrame. Unreadable images never raise: they show "unreadable image" and are
        listed under "Could not be scored".
    """
    from dermctx import __version__

    frame = _check_scores(scores, "write_patient_page")
    if errors is not None and not isinstance(errors, pd.DataFrame):
        raise DermctxError(f"write_patient_page: errors must be an errors table (DataFrame), got "
                           f"{type(errors).__name__}")
    out = Path(path)
    if out.is_dir() or not out.suffix:
        out = out / "patient.html"
    thumb_errors: list[dict[str, Any]] = []
    cards = patient_cards_html(frame, images=images, thumb_size=thumb_size, errors=thumb_errors)
    from dermctx.errors import errors_frame

    given = errors if errors is not None else errors_frame()
    all_errors = pd.concat([given, errors_frame(thumb_errors)], ignore_index=True) \
        if thumb_errors else given
    pid = None
    if patient and not _missing(patient.get("patient_id")):
        pid = str(patient["patient_id"])
    elif "patient_id" in frame.columns and len(frame):
        pid = str(frame["patient_id"].iloc[0])
    facts = dict(patient or {})
    if pid is not None:
        facts.setdefault("patient_id", pid)
    facts.setdefault("n_images", ", ".join(
        [f"{format_number(len(frame))} scored"]
        + ([f"{format_number(len(given))} could not be scored"] if len(given) else [])
        + ([f"{plural(len(thumb_errors), 'image')} unreadable for this page"] if thumb_errors else [])))
    if "patient_id" in facts:  # the patient first
        facts = {"patient_id": facts.pop("patient_id"), **facts}
    title = title or (f"Patient {pid}: lesions ranked" if pid else "Lesions ranked")
    prov = _facts((provenance or {}).items()) if provenance else \
        '<p class="legend">No provenance was given for the model.</p>'
    has_cnn = "cnn_score" in frame.columns
    research = "target" in frame.columns
    legend = (
        "Lesions in order of suspicion within this patient (#1 = most suspicious); the score is "
        "the model's melanoma probability"
        + ("; “CNN alone” is the rank the image model gives without the patient's other lesions"
           if has_cnn else "")
        + ". pp: percentage points. Click a thumbnail to enlarge it, click again to close."
        + (" Research report: melanomas from the data's labels are marked ★." if research else "")
    )
    head, _, rest = DISCLAIMER.partition(". ")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_PAGE_CSS}{PATIENT_CARDS_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="disclaimer" id="disclaimer"><b>{_e(head)}.</b> {_e(rest)}</p>'
        f'<div class="header"><section id="patient"><h2>Patient</h2>{_facts(facts.items())}</section>'
        f'<section id="model"><h2>Model</h2>{prov}</section></div>'
        f'<section id="lesions"><h2>{_e(plural(len(frame), "lesion"))}, most suspicious first</h2>'
        f'<p class="legend">{_e(legend)}</p>{cards}</section>'
        f'<section id="errors"><h2>Could not be scored</h2>{_errors_html(all_errors)}</section>'
        f"<footer>Written {when} by dermctx {_e(__version__)}. Self-contained: opens offline.</footer>"
        "</main></body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
