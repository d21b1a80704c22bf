"""Reports people look at: plots, tables and one self-contained ``report.html``.

:func:`write_report` takes a :class:`~dermctx.benchmarking.BenchmarkResult` (or a lesion table with
ready-made score columns) and writes, into one folder:

================== ===============================================================================
``report.html``    everything below in one file (plots and thumbnails embedded as base64), so it
                   opens anywhere, offline
``metrics.json``   the model table, paired differences, per-seed figures, calibration, subgroups
``metrics.md``     the model table and differences as Markdown
``roc.png``        ROC curves of every model
``pr.png``         precision-recall curves
``reliability.png`` reliability (calibration) curves, for models whose scores are probabilities
``operating_points.csv`` sensitivity at fixed specificity and the reverse, with CIs
``calibration.csv`` Brier score and expected calibration error per model and data source, with CIs
``subgroups.csv``  every ranking metric by sex, age band, anatomic site and source, with CIs
``predictions.csv`` the out-of-fold scores behind every figure
================== ===============================================================================

Plots are drawn with matplotlib's Agg canvas directly (no ``pyplot``, no global backend change).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dermctx.benchmarking import BENCHMARK_METRICS, BenchmarkResult, _json_value
from dermctx.errors import DermctxError, error_record, errors_frame
from dermctx.formatting import format_ci, format_number, plural
from dermctx.metrics import METRICS
from dermctx.patient_page import PATIENT_CARDS_CSS

__all__ = ["REPORT_SECTIONS", "write_report"]

#: The ``id`` of every section of ``report.html``, in order.
REPORT_SECTIONS: tuple[str, ...] = (
    "summary", "models", "differences", "plots", "operating", "calibration", "subgroups", "patients",
    "method",
)

#: Operating points of the report: (kind, fixed rate). "sensitivity" = the sensitivity reached
#: at a specificity of at least the rate; "specificity" = the reverse (Esteva et al.).
OPERATING_POINTS: tuple[tuple[str, float], ...] = (
    ("sensitivity", 0.90), ("sensitivity", 0.95), ("specificity", 0.90), ("specificity", 0.95),
)

#: Ranking metrics of the subgroup tables (keys of :data:`dermctx.metrics.METRICS`).
SUBGROUP_METRICS: tuple[str, ...] = ("auc", "pauc80", "within_patient_auc", "top1")
#: Calibration metrics of the calibration table (keys of :data:`dermctx.metrics.METRICS`).
CALIBRATION_METRICS: tuple[str, ...] = ("brier_score", "expected_calibration_error")
SUBGROUP_BY: tuple[str, ...] = ("sex", "age_band", "site", "source")

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


# --- plots --------------------------------------------------------------------------------


def _figure(width: float = 5.0, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _plot_roc(frame: pd.DataFrame, models: Sequence[str], path: Path) -> bytes:
    from dermctx.metrics import auc, roc_curve

    fig = _figure()
    ax = fig.add_subplot()
    y = frame["target"].to_numpy()
    for i, m in enumerate(models):
        curve = roc_curve(y, frame[m].to_numpy())
        ax.plot(curve.fpr, curve.tpr, color=_COLOURS[i % len(_COLOURS)], lw=1.4,
                label=f"{m} (AUC {auc(y, frame[m].to_numpy()):.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.axhline(0.8, color="0.85", lw=0.8)
    ax.set(xlabel="1 - specificity (false-positive rate)", ylabel="sensitivity",
           title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig, path)


def _plot_pr(frame: pd.DataFrame, models: Sequence[str], path: Path) -> bytes:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure()
    ax = fig.add_subplot()
    y = frame["target"].to_numpy()
    for i, m in enumerate(models):
        precision, recall, _ = precision_recall_curve(y, frame[m].to_numpy())
        ap = average_precision_score(y, frame[m].to_numpy())
        ax.step(recall, precision, where="post", color=_COLOURS[i % len(_COLOURS)], lw=1.4,
                label=f"{m} (AP {ap:.3f})")
    ax.axhline(y.mean(), color="0.7", lw=0.8, ls="--", label=f"prevalence {y.mean():.3f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig, path)


def _plot_reliability(frame: pd.DataFrame, models: Sequence[str], path: Path) -> bytes:
    from dermctx.metrics import reliability_curve

    fig = _figure()
    ax = fig.add_subplot()
    y = frame["target"].to_numpy()
    lo = 1e-4
    for i, m in enumerate(models):
        curve = reliability_curve(y, frame[m].to_numpy(), n_bins=10, strategy="quantile")
        ax.plot(np.clip(curve["mean_predicted"], lo, 1), np.clip(curve["observed_rate"], lo, 1),
                marker="o", ms=3.5, lw=1.2, color=_COLOURS[i % len(_COLOURS)], label=m)
    ax.plot([lo, 1], [lo, 1], color="0.7", lw=0.8, ls="--", label="perfect calibration")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1),
           xlabel="mean predicted probability (decile bins)", ylabel="observed melanoma rate",
           title="Reliability")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig, path)


# --- tables -------------------------------------------------------------------------------


def _is_probability(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0)


def _calibration(frame: pd.DataFrame, models: Sequence[str], n_boot: int, random_state: int
                 ) -> pd.DataFrame:
    from dermctx.metrics import subgroup_table

    parts = []
    several = "source" in frame.columns and frame["source"].nunique(dropna=False) > 1
    for m in models:
        if not _is_probability(frame[m].to_numpy(dtype=float)):
            continue
        t = subgroup_table(frame, m, by=("source",), metrics=CALIBRATION_METRICS, n_boot=n_boot,
                           random_state=random_state, include_all=several)
        t.insert(0, "model", m)
        parts.append(t)
    if not parts:
        return pd.DataFrame(columns=["model", "by", "group", "n_images", "n_patients",
                                     "n_melanomas", *CALIBRATION_METRICS])
    return pd.concat(parts, ignore_index=True)


def _field(func: Callable[..., Any], name: str) -> Callable[..., float]:
    """``func`` returning only the ``name`` field of its OperatingPoint.

    The bootstrap reads a tuple's first field (the sensitivity), which is the wrong number for
    :func:`~dermctx.metrics.specificity_at_sensitivity`.
    """

    def metric(y: Any, s: Any, **kw: Any) -> float:
        return float(getattr(func(y, s, **kw), name))

    metric.__name__ = f"{func.__name__}.{name}"
    return metric


def _operating_points(frame: pd.DataFrame, models: Sequence[str], n_boot: int, random_state: int
                      ) -> pd.DataFrame:
    from dermctx.metrics import (
        OperatingPoint,
        patient_bootstrap,
        sensitivity_at_specificity,
        specificity_at_sensitivity,
    )

    y, pid = frame["target"].to_numpy(), frame["patient_id"].to_numpy()
    rows = []
    func: Callable[..., OperatingPoint]
    for m in models:
        s = frame[m].to_numpy(dtype=float)
        for kind, rate in OPERATING_POINTS:
            if kind == "sensitivity":
                func, kw, fixed = sensitivity_at_specificity, {"specificity": rate}, "specificity"
            else:
                func, kw, fixed = specificity_at_sensitivity, {"sensitivity": rate}, "sensitivity"
            point = func(y, s, **kw)
            boot = patient_bootstrap(_field(func, kind), y, s, pid, n_boot=n_boot,
                                     random_state=random_state, **kw)
            rows.append({
                "model": m, "measure": kind, "at": f"{fixed} >= {rate:.2f}",
                "estimate": boot.estimate, "ci_low": boot.low, "ci_high": boot.high,
                f"{fixed}_reached": getattr(point, fixed), "threshold": point.threshold,
            })
    return pd.DataFrame(rows)


def _operating_html(ops: pd.DataFrame) -> str:
    rows = []
    for r in ops.to_dict(orient="records"):
        fixed = "specificity" if r["measure"] == "sensitivity" else "sensitivity"
        rows.append([_e(r["model"]), _e(f"{r['measure']} at {r['at']}"),
                     _ci_cell(r["estimate"], r["ci_low"], r["ci_high"], 3),
                     _fmt(r[f"{fixed}_reached"]), format_number(r["threshold"], 4)])
    return (
        "<p>Operating points as Esteva et al. report them: the best sensitivity of a threshold "
        "whose specificity is at least the given rate, and the reverse. Only thresholds a user "
        "can apply count (no interpolation), so the rate reached may exceed the target. "
        "Patient-bootstrap 95% CIs.</p>"
        + _table_html(["model", "operating point", "value", "rate reached", "threshold"], rows,
                      left=2)
    )


def _subgroups(frame: pd.DataFrame, models: Sequence[str], n_boot: int, random_state: int,
               progress: bool) -> pd.DataFrame:
    from dermctx.metrics import subgroup_table

    by = [b for b in SUBGROUP_BY if b in frame.columns or (b == "age_band" and "age" in frame.columns)]
    if "source" in by and frame["source"].nunique(dropna=False) < 2:
        by.remove("source")  # one source: its row would repeat "all"
    parts = []
    for m in tqdm(models, desc="report: subgroups", unit="model", disable=not progress, leave=False):
        t = subgroup_table(frame, m, by=by, metrics=SUBGROUP_METRICS, n_boot=n_boot,
                           random_state=random_state)
        t.insert(0, "model", m)
        parts.append(t)
    out = pd.concat(parts, ignore_index=True)
    # age bands in age order (not alphabetical), "unknown" last; other groups keep their order
    from dermctx.metrics import AGE_BANDS

    rank = {name: i for i, (_, _, name) in enumerate(AGE_BANDS)}
    key = np.where(out["by"] == "age_band", out["group"].map(rank).fillna(len(rank)), 0)
    out["__pos"] = np.arange(len(out))
    block = out.groupby(["model", "by"], sort=False).ngroup()
    out = out.assign(__block=block, __key=key).sort_values(["__block", "__key", "__pos"],
                                                           kind="mergesort")
    return out.drop(columns=["__pos", "__block", "__key"]).reset_index(drop=True)


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:middle;white-space:nowrap}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.mel td{background:#fde8e8}.muted{color:#777}.plots img{max-width:32%;margin-right:1%}
.patient{margin-bottom:1.6em}.note{color:#555;font-size:13px}.pos{color:#0a7a2f}.neg{color:#b3261e}
.ci{font-size:11px;color:#666}
""" + PATIENT_CARDS_CSS


def _e(value: Any) -> str:
    return html.escape(str(value))


def _text(value: Any) -> str:
    """A table cell's text; missing values as a dash."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
        return "—"
    return str(value)


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return _e(v)


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], left: int | set[int] = 1,
                row_class: Sequence[str] | None = None) -> str:
    """An HTML table; columns in ``left`` (the first ``left``, or those indices) align left."""
    lefts = set(range(left)) if isinstance(left, int) else left
    th = "".join(f'<th class="l">{h}</th>' if i in lefts else f"<th>{h}</th>"
                 for i, h in enumerate(header))
    body = []
    for r, cells in enumerate(rows):
        cls = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        td = "".join(f'<td class="l">{c}</td>' if i in lefts else f"<td>{c}</td>"
                     for i, c in enumerate(cells))
        body.append(f"<tr{cls}>{td}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ci_cell(est: float, lo: float, hi: float, digits: int, signed: bool = False) -> str:
    """An estimate over its 95% CI in smaller type (two lines keep wide tables readable)."""
    text = format_ci(est, lo, hi, digits, signed=signed)
    value, _, ci = text.partition(" ")
    return f'{_e(value)}<br><span class="ci">{_e(ci)}</span>' if ci else _e(value)


def _models_html(result: BenchmarkResult) -> str:
    cols = [m for m in METRICS if m in set(result.metrics["metric"])]
    by = result.metrics.set_index(["model", "metric"])
    rows = []
    for model in result.models:
        cells = [_e(model)]
        for m in cols:
            r = by.loc[(model, m)]
            cells.append(_ci_cell(r["estimate"], r["ci_low"], r["ci_high"], 4))
        rows.append(cells)
    return _table_html(["model", *[_e(METRICS[m].label) for m in cols]], rows)


def _differences_html(result: BenchmarkResult) -> str:
    if len(result.differences) == 0:
        return '<p class="muted">Only one model: no differences.</p>'
    cols = [m for m in METRICS if m in set(result.differences["metric"])]
    by = result.differences.set_index(["model", "metric"])
    rows = []
    for model in [m for m in result.models if m != result.reference]:
        cells = [_e(model)]
        for m in cols:
            r = by.loc[(model, m)]
            better, worse = (r["ci_low"] > 0, r["ci_high"] < 0)
            if not METRICS[m].higher_is_better:
                better, worse = worse, better
            cls = "pos" if better else "neg" if worse else ""
            text = _ci_cell(r["difference"], r["ci_low"], r["ci_high"], 4, signed=True)
            cells.append(f'<span class="{cls}">{text}</span>')
        rows.append(cells)
    return (
        f"<p>Model minus <b>{_e(result.reference)}</b>, on the same patients; 95% CI from a paired "
        "patient bootstrap (green: the whole CI is on the better side of 0; red: on the worse "
        "side).</p>"
        + _table_html(["model", *[_e(METRICS[m].label) for m in cols]], rows)
    )


def _calibration_html(calib: pd.DataFrame) -> str:
    if len(calib) == 0:
        return '<p class="muted">No model gives probabilities in [0, 1]: calibration not shown.</p>'
    rows = []
    for r in calib.itertuples(index=False):
        d = r._asdict()
        rows.append([
            _e(d["model"]), _e(d["group"]), _fmt(d["n_images"]), _fmt(d["n_patients"]),
            _fmt(d["n_melanomas"]),
            *[_ci_cell(d[m], d[f"{m}_low"], d[f"{m}_high"], 4) for m in CALIBRATION_METRICS],
        ])
    return (
        "<p>Brier score (mean squared error of the probability) and expected calibration error "
        "(10 equal-width bins), per data source, with patient-bootstrap 95% CIs. Lower is better. "
        "Only models whose scores are probabilities are shown.</p>"
        + _table_html(["model", "source", "images", "patients", "melanomas",
                       *[_e(METRICS[m].label) for m in CALIBRATION_METRICS]], rows, left=2)
    )


def _subgroups_html(sub: pd.DataFrame) -> str:
    parts = ["<p>Every ranking metric by subgroup (patient-bootstrap 95% CIs; n/a where a "
             "subgroup lacks melanomas). Patients can fall in several site or age groups.</p>"]
    for model, g in sub.groupby("model", sort=False):
        rows = []
        for r in g.to_dict(orient="records"):
            cells = [_e(r["by"]), _e(r["group"]), _fmt(r["n_images"]), _fmt(r["n_patients"]),
                     _fmt(r["n_melanomas"])]
            for m in SUBGROUP_METRICS:
                cells.append(_ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"], 3))
            rows.append(cells)
        parts.append(f"<h3>{_e(model)}</h3>")
        parts.append(_table_html(["by", "group", "images", "patients", "melanomas",
                                  *[_e(METRICS[m].label) for m in SUBGROUP_METRICS]], rows,
                                  left=2))
    return "".join(parts)


def _sample_patients(frame: pd.DataFrame, n: int, random_state: int) -> list[str]:
    """Up to ``n`` patients with >= 2 lesions: about half with a melanoma, deterministic."""
    g = frame.groupby("patient_id", sort=True)["target"].agg(["size", "sum"])
    g = g[g["size"] >= 2]
    rng = np.random.default_rng(random_state)
    with_mel = g.index[g["sum"] > 0].to_numpy()
    without = g.index[g["sum"] == 0].to_numpy()
    k = min(len(with_mel), (n + 1) // 2)
    chosen = list(rng.choice(with_mel, size=k, replace=False)) if k else []
    rest = min(len(without), n - k)
    chosen += list(rng.choice(without, size=rest, replace=False)) if rest else []
    return [str(p) for p in chosen]


#: Columns of an ``explain(patient_id)`` frame that the patient cards show.
CONTEXT_COLUMNS: tuple[str, ...] = (
    "explanation", "raised_by", "raised_by_change", "lowered_by", "lowered_by_change",
    "most_similar", "least_similar",
)


def _patients_html(frame: pd.DataFrame, models: Sequence[str], primary: str, patients: list[str],
                   *, max_lesions: int, thumb_size: int, progress: bool,
                   explain: Callable[[str], pd.DataFrame] | None = None,
                   overlay: tuple[Callable[[Any], np.ndarray], int] | None = None,
                   ) -> tuple[str, list[dict[str, Any]]]:
    """The per-patient view: each sampled patient's lesions as the patient page's cards."""
    from dermctx.patient_page import patient_cards_html

    has_path = "path" in frame.columns and bool(
        frame["path"].astype(object).map(lambda v: _text(v) != "—").any())
    probs = {m for m in models if _is_probability(frame[m].to_numpy(dtype=float))}
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


# --- the report -----------------------------------------------------------------------------


def write_report(
    result_or_scores: BenchmarkResult | pd.DataFrame,
    out_dir: str | PathLike[str],
    *,
    score_cols: Sequence[str] | None = None,
    reference: str | None = None,
    primary: str | None = None,
    title: str = "dermctx report",
    intro: str | None = None,
    n_patients: int = 6,
    max_lesions: int = 15,
    thumb_size: int = 128,
    n_boot: int = 1000,
    random_state: int = 0,
    explain: Callable[[str], pd.DataFrame] | None = None,
    checkpoint: str | PathLike[str] | None = None,
    n_overlays: int = 3,
    progress: bool = True,
) -> Path:
    """Write metrics, plots, tables and a self-contained ``report.html`` into ``out_dir``.

    Parameters
    ----------
    result_or_scores : BenchmarkResult or DataFrame
        A :func:`dermctx.benchmark` result, or a labelled lesion table with ready-made score
        columns (named by ``score_cols``; they are then benchmarked as they are, with
        :func:`dermctx.benchmark` and ``n_boot`` resamples).
    out_dir : path
        Folder to write into (created if needed; files of the same names are replaced).
    score_cols : sequence of str
        With a DataFrame: the score columns to compare, in report order.
    reference : str, optional
        With a DataFrame: the column the paired differences are taken against (default the first).
    primary : str, optional
        The model that orders the per-patient view (default: the last model, usually the one
        being evaluated).
    title, intro : str
        Heading, and an optional paragraph (plain text) under it.
    n_patients : int
        Patients in the per-patient view (about half with a melanoma), drawn with
        ``random_state``. A patient's lesions are listed up to ``max_lesions`` (melanomas always).
    thumb_size : int
        Displayed side of the thumbnails in CSS pixels, when the table has image paths (embedded
        at twice that, so that the enlarged view stays sharp).
    n_boot : int
        Bootstrap resamples for the operating-point, calibration and subgroup CIs (and, with a
        table of scores, for the model table).
    random_state : int
        Seed of the patient sample and of the bootstraps.
    explain : callable, optional
        ``explain(patient_id) -> DataFrame`` with ``image_id, raised_by, raised_by_change,
        lowered_by, lowered_by_change`` and optionally ``explanation``, ``most_similar``,
        ``least_similar`` (the output of :meth:`dermctx.ContextRanker.score_patient` for a fitted
        model): each lesion's card in the per-patient view then shows which of the patient's
        lesions raised and lowered its score most, and the worded feature-level explanation
        (the cards of :func:`dermctx.patient_page.patient_cards_html`).
    checkpoint : path, optional
        A lesion CNN checkpoint (``.safetensors`` from :func:`dermctx.train_lesion_cnn` or
        :func:`dermctx.embed.save_checkpoint`): the per-patient view shows the Grad-CAM overlay
        (:func:`dermctx.explain.gradcam_overlay`, melanoma class) beside the thumbnails of each
        patient's ``n_overlays`` top-ranked lesions. Needs image paths in the table.
    n_overlays : int
        Lesions per patient with an overlay.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    Path
        The path of ``report.html``. Figures use the first seed's out-of-fold predictions; the
        model table and differences average all seeds.
    """
    out = Path(out_dir)
    if isinstance(result_or_scores, BenchmarkResult):
        result = result_or_scores
    elif isinstance(result_or_scores, pd.DataFrame):
        if not score_cols:
            raise DermctxError("write_report: with a table of scores, pass score_cols= naming the "
                               "score columns to report")
        missing = [c for c in score_cols if c not in result_or_scores.columns]
        if missing:
            raise DermctxError(f"write_report: score column(s) {missing} not in the table "
                               f"(columns {list(result_or_scores.columns)[:20]})")
        from dermctx.benchmarking import benchmark

        # ready-made scores: no folds were fitted, so no per-fold AUC
        result = benchmark(result_or_scores, {c: c for c in score_cols}, reference=reference,
                           metrics=[m for m in BENCHMARK_METRICS if m != "fold_auc"], n_boot=n_boot,
                           random_state=random_state, progress=progress)
    else:
        raise DermctxError("write_report: expected a BenchmarkResult or a DataFrame of scores, got "
                           f"{type(result_or_scores).__name__}")
    models = result.models
    primary = primary if primary is not None else models[-1]
    if primary not in models:
        raise DermctxError(f"write_report: primary {primary!r} is not one of the models {models}")
    out.mkdir(parents=True, exist_ok=True)

    seed0 = result.predictions["seed"].iloc[0]
    pred = result.predictions[result.predictions["seed"] == seed0].reset_index(drop=True)
    meta = result.table.drop(columns=["patient_id", "target"], errors="ignore")
    frame = pred.merge(meta, on="image_id", how="left", validate="1:1")
    probs = [m for m in models if _is_probability(frame[m].to_numpy(dtype=float))]

    stages = tqdm(total=6, desc="report", unit="step", disable=not progress, leave=False)
    plots = {
        "roc": _plot_roc(frame, models, out / "roc.png"),
        "pr": _plot_pr(frame, models, out / "pr.png"),
    }
    if probs:
        plots["reliability"] = _plot_reliability(frame, probs, out / "reliability.png")
    stages.update(1)
    ops = _operating_points(frame, models, n_boot, random_state)
    ops.to_csv(out / "operating_points.csv", index=False)
    calib = _calibration(frame, models, n_boot, random_state)
    calib.to_csv(out / "calibration.csv", index=False)
    stages.update(1)
    sub = _subgroups(frame, models, n_boot, random_state, progress)
    sub.to_csv(out / "subgroups.csv", index=False)
    stages.update(1)
    patients = _sample_patients(frame, n_patients, random_state)
    overlay = None
    if checkpoint is not None:
        from dermctx.explain import gradcam_overlay, load_classifier

        net, meta = load_classifier(checkpoint)
        overlay = (lambda path: gradcam_overlay(net, meta, path), n_overlays)
    patients_html, thumb_errors = _patients_html(
        frame, models, primary, patients, max_lesions=max_lesions, thumb_size=thumb_size,
        progress=progress, explain=explain, overlay=overlay)
    stages.update(1)

    payload = result.to_dict()
    payload["operating_points"] = [{k: _json_value(v) for k, v in r.items()}
                                   for r in ops.to_dict(orient="records")]
    payload["calibration"] = [{k: _json_value(v) for k, v in r.items()}
                              for r in calib.to_dict(orient="records")]
    payload["subgroups"] = [{k: _json_value(v) for k, v in r.items()}
                            for r in sub.to_dict(orient="records")]
    (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from dermctx import __version__

    (out / "metrics.md").write_text(
        f"# {title}\n\nWritten {when} by dermctx {__version__}.\n\n{result.to_markdown()}")
    pred.to_csv(out / "predictions.csv", index=False)
    errors = errors_frame(thumb_errors)
    if len(errors):
        errors.to_csv(out / "report.errors.csv", index=False)
    else:  # never leave a previous run's errors beside this report
        (out / "report.errors.csv").unlink(missing_ok=True)
    stages.update(1)

    c = result.config
    auc = result.metrics[result.metrics["metric"] == "auc"].set_index("model")["estimate"]
    summary = (
        f"<p>{_fmt(c.get('n_images'))} images of {_fmt(c.get('n_patients'))} patients "
        f"({_fmt(c.get('n_melanomas'))} melanomas). Models: "
        + ", ".join(f"<b>{_e(m)}</b>" + (f" (AUC {auc[m]:.4f})" if m in auc.index else "")
                    for m in models)
        + f". Reference for differences: <b>{_e(result.reference)}</b>.</p>"
    )
    plot_imgs = "".join(
        f'<img alt="{name}" src="{_data_uri(data)}">' for name, data in plots.items())

    if c.get("fitted_models"):
        how = (
            f"<p>Out-of-fold predictions from {c.get('folds')}-fold <code>PatientKFold</code> "
            f"(patients, lesions and duplicate groups kept whole), seeds {_e(c.get('seeds'))}; "
            "every fitted model is cloned and fitted on the training patients of each fold, so no "
            "score comes from a model that saw that patient. Figures in the model table are means "
            "over seeds with "
        )
    else:
        how = ("<p>Scores were given ready-made (no model was fitted in this benchmark). Figures "
               "come with ")
    method = (
        how + f"patient-bootstrap 95% CIs ({_fmt(c.get('n_boot'))} resamples of patients, all "
        f"of a patient's lesions together). {_e(METRICS['pauc80'].label)} is the ROC area above "
        "80% sensitivity (ISIC 2024, range 0-0.2); within-patient AUC is the mean over patients "
        "with both classes; top-k is the share of melanoma patients with a melanoma among their k "
        "highest-scored lesions. "
        "Plots and per-patient views use the first seed. Mean per-fold AUC does not rank lesions "
        "of different fold models against each other (pooled AUC does, penalising calibration "
        "drift).</p>"
        + _table_html(["model", "specification"],
                      [[_e(k), f"<code>{_e(v)}</code>"] for k, v in c.get("models", {}).items()])
        + f'<p class="muted">dermctx {__version__}, written {when}.</p>'
    )
    sections = {
        "summary": ("Summary", (f"<p>{_e(intro)}</p>" if intro else "") + summary),
        "models": ("Models", _models_html(result)),
        "differences": ("Paired differences", _differences_html(result)),
        "plots": ("ROC, precision-recall and reliability",
                  f'<div class="plots">{plot_imgs}</div>'
                  + ('<p class="note">Reliability: decile bins of predicted probability, log axes.</p>'
                     if probs else '<p class="muted">No probabilities: reliability not shown.</p>')),
        "operating": ("Operating points", _operating_html(ops)),
        "calibration": ("Calibration by source", _calibration_html(calib)),
        "subgroups": ("Subgroups", _subgroups_html(sub)),
        "patients": ("Patients", patients_html),
        "method": ("Method", method),
    }
    body = "".join(f'<section id="{sid}"><h2>{title_}</h2>{content}</section>'
                   for sid, (title_, content) in sections.items())
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>{body}</body></html>\n"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    stages.update(1)
    stages.close()
    return path
