"""The HTML of :func:`dermctx.write_report`: the page, its tables and the per-patient view.

:mod:`dermctx.report` computes the tables and writes the files; this module renders them. Every
number a person reads comes from :mod:`dermctx.formatting`. A figure that is missing shows
``n/a`` and a figure without its CI ``no CI``, each with a numbered note under its table saying
why (too few melanomas, a degenerate bootstrap; see :func:`dermctx.metrics.too_few_melanomas`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dermctx.benchmarking import BenchmarkResult
from dermctx.errors import DermctxError, error_record
from dermctx.formatting import format_ci, format_number, plural
from dermctx.metrics import METRICS, Metric
from dermctx.patient_page import PATIENT_CARDS_CSS

__all__ = [
    "CONTEXT_COLUMNS",
    "CSS",
    "calibration_html",
    "data_uri",
    "differences_html",
    "is_probability",
    "models_html",
    "operating_html",
    "page_html",
    "patients_html",
    "subgroups_html",
    "table_html",
]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:middle;white-space:nowrap}
th{background:#f4f4f4}td.l,th.l{text-align:left}th.w{white-space:normal;font-weight:normal;font-size:12px}
td.na{color:#777;text-align:left;font-style:italic}
tr.mel td{background:#fde8e8}tr.sec th{background:#fafafa;font-weight:600}.muted{color:#777}.plots img{max-width:32%;margin-right:1%}
.patient{margin-bottom:1.6em}.note{color:#555;font-size:13px}.pos{color:#0a7a2f}.neg{color:#b3261e}
.ci{font-size:11px;color:#666}.na{color:#777}.notes{color:#555;font-size:12px;margin-top:-.3em}
.wide{overflow-x:auto}table.compact{font-size:12px}table.compact th,table.compact td{padding:2px 4px}
table.compact .ci{font-size:10.5px}
""" + PATIENT_CARDS_CSS


def is_probability(values: np.ndarray) -> bool:
    """Whether scores are probabilities (finite, in [0, 1]): shown as percentages, calibrated."""
    return bool(np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _text(value: Any) -> str:
    """A table cell's text; missing values as a dash."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
        return "—"
    return str(value)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of a file's bytes (images embedded in the page)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return _e(v)


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], left: int | set[int] = 1,
               row_class: Sequence[str] | None = None, thead: str | None = None,
               table_class: str | None = None) -> str:
    """An HTML table; columns in ``left`` (the first ``left``, or those indices) align left.
    ``thead`` replaces the one-row header made of ``header``; a cell that is already a ``<td>``
    or ``<th>`` is kept as it is."""
    lefts = set(range(left)) if isinstance(left, int) else left
    th = "".join(f'<th class="l">{h}</th>' if i in lefts else f"<th>{h}</th>"
                 for i, h in enumerate(header))
    body = []
    for r, cells in enumerate(rows):
        cls = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        td = "".join(c if c.startswith(("<td", "<th")) else
                     f'<td class="l">{c}</td>' if i in lefts else f"<td>{c}</td>"
                     for i, c in enumerate(cells))
        body.append(f"<tr{cls}>{td}</tr>")
    head = thead if thead is not None else f"<tr>{th}</tr>"
    tcls = f' class="{table_class}"' if table_class else ""
    return f"<table{tcls}><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _ci_cell(est: float, lo: float, hi: float, digits: int, signed: bool = False) -> str:
    """An estimate over its 95% CI in smaller type (two lines keep wide tables readable)."""
    text = format_ci(est, lo, hi, digits, signed=signed)
    value, _, ci = text.partition(" ")
    return f'{_e(value)}<br><span class="ci">{_e(ci)}</span>' if ci else _e(value)


class _Notes:
    """The numbered notes under one table: each reason a figure or CI is missing, once."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"<sup>{self.reasons.index(reason) + 1}</sup>"

    def html(self) -> str:
        if not self.reasons:
            return ""
        return '<p class="notes">' + "<br>".join(
            f"<sup>{i}</sup> {_e(r)}" for i, r in enumerate(self.reasons, 1)) + "</p>"


def _reason(value: Any) -> str:
    """A missing reason as shown (">=" as "≥"); empty when there is none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).replace(">=", "≥")


def _figure_cell(est: float, lo: float, hi: float, reason: Any, notes: _Notes, digits: int = 3,
                 *, signed: bool = False, metric: Metric | None = None) -> str:
    """A figure over its CI; ``n/a`` or ``no CI`` with a note when missing. With ``metric`` (a
    difference), green / red when the whole CI is on the better / worse side of 0."""
    why = _reason(reason)
    if not np.isfinite(est):
        return '<span class="na">n/a</span>' + (notes.mark(why) if why else "")
    text = _ci_cell(est, lo, hi, digits, signed=signed)
    if why:
        return text + f'<br><span class="ci">no CI{notes.mark(why)}</span>'
    if metric is not None and np.isfinite(lo) and np.isfinite(hi):
        better, worse = (lo > 0, hi < 0) if metric.higher_is_better else (hi < 0, lo > 0)
        if better or worse:
            return f'<span class="{"pos" if better else "neg"}">{text}</span>'
    return text


def models_html(result: BenchmarkResult) -> str:
    """The model table: every metric with its patient-bootstrap CI."""
    cols = [m for m in METRICS if m in set(result.metrics["metric"])]
    by = result.metrics.set_index(["model", "metric"])
    notes = _Notes()
    rows = []
    for model in result.models:
        cells = [_e(model)]
        for m in cols:
            r = by.loc[(model, m)]
            cells.append(_figure_cell(r["estimate"], r["ci_low"], r["ci_high"],
                                      r.get("missing_reason"), notes, 4))
        rows.append(cells)
    return table_html(["model", *[_e(METRICS[m].label) for m in cols]], rows) + notes.html()


def differences_html(result: BenchmarkResult) -> str:
    """The paired differences against the reference model."""
    if len(result.differences) == 0:
        return '<p class="muted">Only one model: no differences.</p>'
    cols = [m for m in METRICS if m in set(result.differences["metric"])]
    by = result.differences.set_index(["model", "metric"])
    notes = _Notes()
    rows = []
    for model in [m for m in result.models if m != result.reference]:
        cells = [_e(model)]
        for m in cols:
            r = by.loc[(model, m)]
            cells.append(_figure_cell(r["difference"], r["ci_low"], r["ci_high"],
                                      r.get("missing_reason"), notes, 4, signed=True,
                                      metric=METRICS[m]))
        rows.append(cells)
    return (
        f"<p>Model minus <b>{_e(result.reference)}</b>, on the same patients; 95% CI from a paired "
        "patient bootstrap (green: the whole CI is on the better side of 0; red: on the worse "
        "side).</p>"
        + table_html(["model", *[_e(METRICS[m].label) for m in cols]], rows) + notes.html()
    )


def operating_html(ops: pd.DataFrame) -> str:
    """The operating points (sensitivity at fixed specificity and the reverse)."""
    notes = _Notes()
    rows = []
    for r in ops.to_dict(orient="records"):
        fixed = "specificity" if r["measure"] == "sensitivity" else "sensitivity"
        rows.append([_e(r["model"]), _e(f"{r['measure']} at {r['at']}"),
                     _figure_cell(r["estimate"], r["ci_low"], r["ci_high"],
                                  r.get("missing_reason"), notes),
                     _fmt(r[f"{fixed}_reached"]), format_number(r["threshold"], 4)])
    return (
        "<p>Operating points as Esteva et al. report them: the best sensitivity of a threshold "
        "whose specificity is at least the given rate, and the reverse. Only thresholds a user "
        "can apply count (no interpolation), so the rate reached may exceed the target. "
        "Patient-bootstrap 95% CIs.</p>"
        + table_html(["model", "operating point", "value", "rate reached", "threshold"], rows,
                      left=2) + notes.html()
    )


def calibration_html(calib: pd.DataFrame, metrics: Sequence[str]) -> str:
    """The calibration table: ``metrics`` (Brier score, ECE) per model and data source."""
    if len(calib) == 0:
        return '<p class="muted">No model gives probabilities in [0, 1]: calibration not shown.</p>'
    notes = _Notes()
    rows = []
    for d in calib.to_dict(orient="records"):
        rows.append([
            _e(d["model"]), _e(d["group"]), _fmt(d["n_images"]), _fmt(d["n_patients"]),
            _fmt(d["n_melanomas"]),
            *[_figure_cell(d[m], d[f"{m}_low"], d[f"{m}_high"], d.get(f"{m}_missing_reason"),
                           notes, 4) for m in metrics],
        ])
    return (
        "<p>Brier score (mean squared error of the probability) and expected calibration error "
        "(10 equal-width bins), per data source, with patient-bootstrap 95% CIs. Lower is better. "
        "Only models whose scores are probabilities are shown.</p>"
        + table_html(["model", "source", "images", "patients", "melanomas",
                       *[_e(METRICS[m].label) for m in metrics]], rows, left=2) + notes.html()
    )


def _row_missing(r: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The one reason every figure of a subgroup row is missing, or None. With fewer melanomas
    than the minimum, that is "too few melanomas" (so too few melanoma patients, too)."""
    if any(np.isfinite(r[k]) for k in keys if k in r):
        return None
    reasons = [_reason(r.get(f"{k}_missing_reason")) for k in keys if k in r]
    mel = [x for x in reasons if x.startswith("too few melanomas")]
    if mel:
        return mel[0]
    return reasons[0] if reasons and len(set(reasons)) == 1 and reasons[0] else None


def subgroups_html(sub: pd.DataFrame, metrics: Sequence[str], reference: str) -> str:
    """One table per model of ``metrics`` by subgroup (a header row per grouping column); a
    model other than ``reference`` gets a difference column (model minus reference, paired
    patient bootstrap) beside each metric."""
    parts = [
        "<p>Every ranking metric by subgroup (patient-bootstrap 95% CIs). Patients can fall in "
        f"several site or age groups. Beside each metric of a model other than <b>{_e(reference)}"
        f"</b>: its difference to {_e(reference)} on the same patients of the subgroup (model "
        f"minus {_e(reference)}, paired patient bootstrap; green / red when the whole CI is on the "
        "better / worse side of 0). n/a: a figure not shown, with the reason beside it or in the "
        "notes.</p>"]
    for model, g in sub.groupby("model", sort=False):
        diff = model != reference
        notes = _Notes()
        keys = [*metrics, *([f"{m}_difference" for m in metrics] if diff else [])]
        n_cols = 4 + len(keys)
        rows, classes, by = [], [], None
        for r in g.to_dict(orient="records"):
            if r["by"] != by and r["by"] != "all":
                rows.append([f'<th class="l" colspan="{n_cols}">'
                             f'{_e(str(r["by"]).replace("_", " "))}</th>'])
                classes.append("sec")
            by = r["by"]
            cells = [_e(r["group"]), _fmt(r["n_images"]), _fmt(r["n_patients"]),
                     _fmt(r["n_melanomas"])]
            why = _row_missing(r, keys)
            if why:
                cells.append(f'<td class="na" colspan="{len(keys)}">n/a: {_e(why)}</td>')
            else:
                for m in metrics:
                    cells.append(_figure_cell(r[m], r[f"{m}_low"], r[f"{m}_high"],
                                              r.get(f"{m}_missing_reason"), notes))
                    if diff:
                        d = f"{m}_difference"
                        cells.append(_figure_cell(r[d], r[f"{d}_low"], r[f"{d}_high"],
                                                  r.get(f"{d}_missing_reason"), notes,
                                                  signed=True, metric=METRICS[m]))
            rows.append(cells)
            classes.append("")
        fixed = ["subgroup", "images", "patients", "melanomas"]
        thead = None
        if diff:
            top = "".join(f'<th rowspan="2" class="{"l" if i == 0 else ""}">{h}</th>'
                          for i, h in enumerate(fixed))
            top += "".join(f'<th colspan="2">{_e(METRICS[m].label)}</th>' for m in metrics)
            sub_head = "".join(f'<th class="w">{_e(model)}</th>'
                               f'<th class="w">difference to {_e(reference)}</th>'
                               for m in metrics)
            thead = f"<tr>{top}</tr><tr>{sub_head}</tr>"
        parts.append(f"<h3>{_e(model)}</h3>")
        parts.append('<div class="wide">' + table_html(
            [*fixed, *[_e(METRICS[m].label) for m in metrics]], rows, left=1, thead=thead,
            row_class=classes, table_class="compact" if diff else None)
            + "</div>" + notes.html())
    return "".join(parts)


def page_html(title: str, sections: Mapping[str, tuple[str, str]]) -> str:
    """The whole page: ``sections`` maps each section id to (heading, HTML content)."""
    body = "".join(f'<section id="{sid}"><h2>{heading}</h2>{content}</section>'
                   for sid, (heading, content) in sections.items())
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{body}</body></html>\n"
    )


#: Columns of an ``explain(patient_id)`` frame that the patient cards show.
CONTEXT_COLUMNS: tuple[str, ...] = (
    "explanation", "raised_by", "raised_by_change", "lowered_by", "lowered_by_change",
    "most_similar", "least_similar",
)


def patients_html(frame: pd.DataFrame, models: Sequence[str], primary: str, patients: list[str],
                   *, max_lesions: int, thumb_size: int, progress: bool,
                   explain: Callable[[str], pd.DataFrame] | None = None,
                   overlay: tuple[Callable[[Any], np.ndarray], int] | None = None,
                   ) -> tuple[str, list[dict[str, Any]]]:
    """The per-patient view: each sampled patient's lesions as the patient page's cards."""
    from dermctx.patient_page import patient_cards_html

    has_path = "path" in frame.columns and bool(
        frame["path"].astype(object).map(lambda v: _text(v) != "—").any())
    probs = {m for m in models if is_probability(frame[m].to_numpy(dtype=float))}
    others = [m for m in models if m != primary]
    errors: list[dict[str, Any]] = []
    parts = [f"<p>A sample of patients; each patient's lesions are ranked by <b>{_e(primary)}</b> "
             "(#1 = most suspicious), with the rank each other model gives the lesion within the "
             "patient. Melanomas are marked &#9733; and outlined in red. Click a thumbnail to "
             "enlarge it."
             + (" “Raised / lowered most by the presence of”: the change in probability caused by "
                "another lesion of the patient (the score with and without it)."
                if explain is not None else "")
             + (f" Beside the thumbnails of the first {overlay[1]} lesions of each patient: the "
                "lesion CNN's Grad-CAM map for the melanoma class (where the network looked; "
                "evidence about the model, not a diagnosis)." if overlay is not None else "")
             + "</p>"]
    for n, pid in enumerate(tqdm(patients, desc="report: patients", unit="patient",
                                 disable=not progress, leave=False)):
        p = frame[frame["patient_id"] == pid].copy()
        for m in models:
            p[f"__rank_{m}"] = p[m].rank(ascending=False, method="min").astype(int)
        p = p.sort_values(primary, ascending=False, kind="mergesort")
        shown = p.head(max_lesions)
        extra = p.iloc[max_lesions:]
        shown = pd.concat([shown, extra[extra["target"] == 1]])
        cards = pd.DataFrame({"image_id": shown["image_id"].astype(str).to_numpy(),
                              "score": shown[primary].to_numpy(dtype=float),
                              "rank": shown[f"__rank_{primary}"].to_numpy()})
        for i, m in enumerate(others):
            cards[f"__s{i}"] = shown[m].to_numpy(dtype=float)
            cards[f"__r{i}"] = shown[f"__rank_{m}"].to_numpy()
        for col in ("target", "site", "diagnosis"):
            if col in shown.columns:
                cards[col] = shown[col].to_numpy()
        if explain is not None:
            try:
                ex = explain(pid)
                ex = ex[["image_id", *[c for c in CONTEXT_COLUMNS if c in ex.columns]]]
                cards = cards.merge(ex.assign(image_id=ex["image_id"].astype(str)), on="image_id",
                                    how="left", validate="1:1")
            except DermctxError as exc:
                errors.append(error_record(None, None, None, "explain", f"patient {pid}: {exc}"))
        images = overlays = None
        if has_path:
            paths = {str(i): str(v) for i, v in zip(shown["image_id"], shown["path"], strict=True)
                     if _text(v) != "—"}
            images = dict(paths)
            if overlay is not None:
                overlays = {}
                for iid in list(cards["image_id"])[: overlay[1]]:
                    if iid not in paths:
                        continue
                    try:
                        overlays[iid] = overlay[0](paths[iid])
                    except DermctxError as exc:
                        errors.append(error_record(iid, None, paths[iid], "grad-cam", exc))
        html_cards = patient_cards_html(
            cards, images=images, thumb_size=thumb_size, overlays=overlays, n_lesions=len(p),
            compare={m: (f"__s{i}", f"__r{i}") for i, m in enumerate(others)},
            probability_cols=({"score"} if primary in probs else set())
            | {f"__s{i}" for i, m in enumerate(others) if m in probs},
            errors=errors, id_prefix=f"p{n}-")
        n_mel = int(p["target"].sum())
        age = p["age"].iloc[0] if "age" in p.columns else None
        sex = p["sex"].iloc[0] if "sex" in p.columns else None
        who = ", ".join(x for x in [
            f"{sex}" if isinstance(sex, str) else "",
            f"age {age:.0f}" if age is not None and np.isfinite(age) else ""] if x)
        more = (f" (showing {len(shown)} of {len(p)})" if len(shown) < len(p) else "")
        parts.append(
            f'<div class="patient"><h3>{_e(pid)}</h3><p class="note">'
            + (f"{_e(who)} &middot; " if who else "")
            + f"{_e(plural(len(p), 'lesion'))}, {_e(plural(n_mel, 'melanoma'))}{more}</p>"
            + html_cards + "</div>"
        )
    return "".join(parts), errors
