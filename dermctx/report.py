"""Reports people look at: plots, tables and one self-contained ``report.html``.

:func:`write_report` takes a :class:`~dermctx.benchmarking.BenchmarkResult` (or a lesion table with
ready-made score columns) and writes, into one folder:

================== ===============================================================================
``report.html``    everything below in one file (plots and thumbnails embedded as base64), so it
                   opens anywhere, offline
``metrics.json``   the model table, paired differences, per-seed figures, calibration, subgroups
``metrics.md``     the model table and differences as Markdown
``roc.png``        ROC curves of every model, with patient-bootstrap bands (:mod:`dermctx.display`)
``pr.png``         precision-recall curves, with bands
``reliability.png`` reliability (calibration) curves, for models whose scores are probabilities
``operating_points.csv`` sensitivity at fixed specificity and the reverse, with CIs
``calibration.csv`` Brier score and expected calibration error per model and data source, with CIs
``subgroups.csv``  every ranking metric by sex, age band, anatomic site and source, with CIs, and
                   each model's paired difference to the reference model
``predictions.csv`` the out-of-fold scores behind every figure
================== ===============================================================================

The work is done in three steps: compute the tables and plots (:func:`_compute`), write the
files, render the page (:mod:`dermctx.report_html`). Plots are drawn with matplotlib's Agg
canvas directly (no ``pyplot``, no global backend change).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from html import escape
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dermctx import report_html as H
from dermctx.benchmarking import BENCHMARK_METRICS, BenchmarkResult, json_value
from dermctx.errors import DermctxError, errors_frame
from dermctx.formatting import format_number
from dermctx.metrics import METRICS, MIN_MELANOMAS

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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _curve_figure(kind: str, frame: pd.DataFrame, models: Sequence[str], *, n_boot: int,
                  random_state: int, min_melanomas: int):
    """ROC (``kind="roc"``) or precision-recall curves of every model on one axes, drawn by the
    display objects of :mod:`dermctx.display` (patient-bootstrap bands, CIs in the legend)."""
    from dermctx.display import PrecisionRecallDisplay, RocCurveDisplay

    display = RocCurveDisplay if kind == "roc" else PrecisionRecallDisplay
    fig = _figure()
    ax = fig.add_subplot()
    y, pid = frame["target"].to_numpy(), frame["patient_id"].to_numpy()
    for i, m in enumerate(models):
        display.from_predictions(
            y, frame[m].to_numpy(dtype=float), patient_id=pid, n_boot=n_boot,
            random_state=random_state, min_melanomas=min_melanomas, name=m, ax=ax,
            curve_kwargs={"color": _COLOURS[i % len(_COLOURS)]},
            plot_chance_level=i == len(models) - 1)
    if kind == "roc":
        ax.axhline(0.8, color="0.85", lw=0.8, zorder=0)
    ax.set_title("ROC" if kind == "roc" else "Precision-recall")
    return fig


def _reliability_figure(frame: pd.DataFrame, models: Sequence[str]
                        ) -> tuple[Any, dict[str, tuple[int, int]]]:
    """Reliability curves (decile bins, log axes) and, per model, (bins left out, bins).

    A bin is drawn only where it can be: bins without lesions are never drawn, and a bin without
    a melanoma (observed rate 0) has no place on a log axis, so it is left out and counted
    instead of being pinned to the axis floor. The axes reach down to the smallest point drawn.
    """
    from dermctx.metrics import reliability_curve

    fig = _figure()
    ax = fig.add_subplot()
    y = frame["target"].to_numpy()
    left_out, drawn = {}, []
    for i, m in enumerate(models):
        curve = reliability_curve(y, frame[m].to_numpy(), n_bins=10, strategy="quantile")
        shown = curve[(curve["n"] > 0) & (curve["observed_rate"] > 0)
                      & (curve["mean_predicted"] > 0)]
        left_out[m] = (len(curve) - len(shown), len(curve))
        ax.plot(shown["mean_predicted"], shown["observed_rate"], marker="o", ms=3.5, lw=1.2,
                color=_COLOURS[i % len(_COLOURS)], label=m)
        drawn += [*shown["mean_predicted"], *shown["observed_rate"]]
    lo = min([1e-3, *drawn])
    lo = 10.0 ** np.floor(np.log10(lo))
    ax.plot([lo, 1], [lo, 1], color="0.7", lw=0.8, ls="--", label="perfect calibration")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1),
           xlabel="mean predicted probability (decile bins)", ylabel="observed melanoma rate",
           title="Reliability")
    ax.legend(loc="upper left", fontsize=8)
    return fig, left_out


# --- tables -------------------------------------------------------------------------------


def _calibration(frame: pd.DataFrame, models: Sequence[str], n_boot: int, random_state: int
                 ) -> pd.DataFrame:
    from dermctx.metrics import subgroup_table

    parts = []
    several = "source" in frame.columns and frame["source"].nunique(dropna=False) > 1
    for m in models:
        if not H.is_probability(frame[m].to_numpy(dtype=float)):
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


def _operating_points(frame: pd.DataFrame, models: Sequence[str], n_boot: int, random_state: int,
                      min_melanomas: int) -> pd.DataFrame:
    from dermctx.metrics import (
        OperatingPoint,
        degenerate_ci,
        patient_bootstrap,
        sensitivity_at_specificity,
        specificity_at_sensitivity,
        too_few_melanomas,
    )

    y, pid = frame["target"].to_numpy(), frame["patient_id"].to_numpy()
    thin = too_few_melanomas("auc", y, min_melanomas=min_melanomas)  # a sensitivity: melanomas
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
            row = {"model": m, "measure": kind, "at": f"{fixed} >= {rate:.2f}",
                   "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                   "missing_reason": thin or "", f"{fixed}_reached": getattr(point, fixed),
                   "threshold": point.threshold}
            if not thin:
                boot = patient_bootstrap(_field(func, kind), y, s, pid, n_boot=n_boot,
                                         random_state=random_state, **kw)
                why = degenerate_ci(boot)
                row.update(estimate=boot.estimate, missing_reason=why or "")
                if not why:
                    row.update(ci_low=boot.low, ci_high=boot.high)
            rows.append(row)
    return pd.DataFrame(rows)


def _subgroups(frame: pd.DataFrame, models: Sequence[str], reference: str, n_boot: int,
               random_state: int, min_melanomas: int, progress: bool) -> pd.DataFrame:
    """:data:`SUBGROUP_METRICS` by subgroup for every model, and for each model but the
    reference its paired difference to the reference (``<m>_difference*`` columns)."""
    from dermctx.metrics import AGE_BANDS, subgroup_table

    by = [b for b in SUBGROUP_BY if b in frame.columns or (b == "age_band" and "age" in frame.columns)]
    if "source" in by and frame["source"].nunique(dropna=False) < 2:
        by.remove("source")  # one source: its row would repeat "all"
    parts = []
    for m in tqdm(models, desc="report: subgroups", unit="model", disable=not progress, leave=False):
        t = subgroup_table(frame, m, by=by, metrics=SUBGROUP_METRICS, n_boot=n_boot,
                           random_state=random_state, min_melanomas=min_melanomas,
                           reference_col=None if m == reference else reference)
        t.insert(0, "model", m)
        t.insert(1, "reference", "" if m == reference else reference)
        parts.append(t)
    out = pd.concat(parts, ignore_index=True)
    # age bands in age order (not alphabetical), "unknown" last; other groups keep their order
    rank = {name: i for i, (_, _, name) in enumerate(AGE_BANDS)}
    key = np.where(out["by"] == "age_band", out["group"].map(rank).fillna(len(rank)), 0)
    out["__pos"] = np.arange(len(out))
    block = out.groupby(["model", "by"], sort=False).ngroup()
    out = out.assign(__block=block, __key=key).sort_values(["__block", "__key", "__pos"],
                                                           kind="mergesort")
    return out.drop(columns=["__pos", "__block", "__key"]).reset_index(drop=True)


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


# --- the report -----------------------------------------------------------------------------


class _Computed(NamedTuple):
    """What the report shows, computed before anything is written."""

    frame: pd.DataFrame  # first seed's predictions with the table's metadata
    plots: dict[str, bytes]  # PNG of each plot, by name
    reliability_left_out: dict[str, tuple[int, int]]  # (bins left out, bins) per model
    operating: pd.DataFrame
    calibration: pd.DataFrame
    subgroups: pd.DataFrame


def _as_result(result_or_scores: Any, score_cols: Sequence[str] | None, reference: str | None,
               **bench: Any) -> BenchmarkResult:
    """The BenchmarkResult to report: as given, or benchmarked from a table of scores."""
    if isinstance(result_or_scores, BenchmarkResult):
        return result_or_scores
    if not isinstance(result_or_scores, pd.DataFrame):
        raise DermctxError("write_report: expected a BenchmarkResult or a DataFrame of scores, got "
                           f"{type(result_or_scores).__name__}")
    if not score_cols:
        raise DermctxError("write_report: with a table of scores, pass score_cols= naming the "
                           "score columns to report")
    missing = [c for c in score_cols if c not in result_or_scores.columns]
    if missing:
        raise DermctxError(f"write_report: score column(s) {missing} not in the table "
                           f"(columns {list(result_or_scores.columns)[:20]})")
    from dermctx.benchmarking import benchmark

    # ready-made scores: no folds were fitted, so no per-fold AUC
    return benchmark(result_or_scores, {c: c for c in score_cols}, reference=reference,
                     metrics=[m for m in BENCHMARK_METRICS if m != "fold_auc"], **bench)


def _compute(result: BenchmarkResult, *, n_boot: int, random_state: int, min_melanomas: int,
             progress: bool) -> _Computed:
    """Step 1: the plots and tables, from the first seed's predictions."""
    models = result.models
    seed0 = result.predictions["seed"].iloc[0]
    pred = result.predictions[result.predictions["seed"] == seed0].reset_index(drop=True)
    meta = result.table.drop(columns=["patient_id", "target"], errors="ignore")
    frame = pred.merge(meta, on="image_id", how="left", validate="1:1")
    probs = [m for m in models if H.is_probability(frame[m].to_numpy(dtype=float))]
    boot = {"n_boot": n_boot, "random_state": random_state}
    plots = {kind: _png(_curve_figure(kind, frame, models, min_melanomas=min_melanomas, **boot))
             for kind in ("roc", "pr")}
    left_out: dict[str, tuple[int, int]] = {}
    if probs:
        fig, left_out = _reliability_figure(frame, probs)
        plots["reliability"] = _png(fig)
    return _Computed(
        frame=frame, plots=plots, reliability_left_out=left_out,
        operating=_operating_points(frame, models, n_boot, random_state, min_melanomas),
        calibration=_calibration(frame, models, n_boot, random_state),
        subgroups=_subgroups(frame, models, result.reference, n_boot, random_state, min_melanomas,
                             progress))


def _write_files(out: Path, result: BenchmarkResult, c: _Computed, errors: list[dict[str, Any]],
                 *, title: str, when: str) -> None:
    """Step 2: every file but ``report.html``."""
    from dermctx import __version__

    for name, data in c.plots.items():
        (out / f"{name}.png").write_bytes(data)
    c.operating.to_csv(out / "operating_points.csv", index=False)
    c.calibration.to_csv(out / "calibration.csv", index=False)
    c.subgroups.to_csv(out / "subgroups.csv", index=False)
    payload = result.to_dict()
    for key, frame in (("operating_points", c.operating), ("calibration", c.calibration),
                       ("subgroups", c.subgroups)):
        payload[key] = [{k: json_value(v) for k, v in r.items()}
                        for r in frame.to_dict(orient="records")]
    (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "metrics.md").write_text(
        f"# {title}\n\nWritten {when} by dermctx {__version__}.\n\n{result.to_markdown()}")
    seed0 = result.predictions["seed"].iloc[0]
    result.predictions[result.predictions["seed"] == seed0].to_csv(out / "predictions.csv",
                                                                   index=False)
    table = errors_frame(errors)
    if len(table):
        table.to_csv(out / "report.errors.csv", index=False)
    else:  # never leave a previous run's errors beside this report
        (out / "report.errors.csv").unlink(missing_ok=True)


def _method_html(result: BenchmarkResult, when: str) -> str:
    from dermctx import __version__

    c = result.config
    if c.get("fitted_models"):
        how = (
            f"<p>Out-of-fold predictions from {c.get('folds')}-fold <code>PatientKFold</code> "
            f"(patients, lesions and duplicate groups kept whole), seeds {escape(str(c.get('seeds')))}; "
            "every fitted model is cloned and fitted on the training patients of each fold, so no "
            "score comes from a model that saw that patient. Figures in the model table are means "
            "over seeds with "
        )
    else:
        how = ("<p>Scores were given ready-made (no model was fitted in this benchmark). Figures "
               "come with ")
    n_min = c.get("min_melanomas", MIN_MELANOMAS)
    return (
        how + f"patient-bootstrap 95% CIs ({format_number(c.get('n_boot'))} resamples of patients, all "
        f"of a patient's lesions together). {escape(METRICS['pauc80'].label)} is the ROC area above "
        "80% sensitivity (ISIC 2024, range 0-0.2); within-patient AUC is the mean over patients "
        "with both classes; top-k is the share of melanoma patients with a melanoma among their k "
        "highest-scored lesions. "
        f"A ranking figure resting on fewer than {n_min} melanomas (for the per-patient metrics: "
        f"patients with a melanoma, and with a melanoma and another lesion) is not shown (n/a), "
        "and a CI whose bootstrap degenerates (95% of resamples give one value, or most resamples "
        "leave the metric undefined) is left out (no CI); each says why in a note. "
        "Plots and per-patient views use the first seed; the curves' shaded bands are pointwise "
        "patient-bootstrap 95% bands. Mean per-fold AUC does not rank lesions "
        "of different fold models against each other (pooled AUC does, penalising calibration "
        "drift).</p>"
        + H.table_html(["model", "specification"],
                        [[escape(k), f"<code>{escape(v)}</code>"] for k, v in c.get("models", {}).items()])
        + f'<p class="muted">dermctx {__version__}, written {when}.</p>'
    )


def _render(result: BenchmarkResult, c: _Computed, patients_html: str, *, title: str,
            intro: str | None, when: str) -> str:
    """Step 3: the page."""
    cfg = result.config
    models = result.models
    auc = result.metrics[result.metrics["metric"] == "auc"].set_index("model")["estimate"]
    summary = (
        f"<p>{format_number(cfg.get('n_images'))} images of {format_number(cfg.get('n_patients'))} patients "
        f"({format_number(cfg.get('n_melanomas'))} melanomas). Models: "
        + ", ".join(f"<b>{escape(m)}</b>" + (f" (AUC {auc[m]:.4f})" if np.isfinite(auc.get(m, np.nan))
                                           else "") for m in models)
        + f". Reference for differences: <b>{escape(result.reference)}</b>.</p>"
    )
    plot_imgs = "".join(f'<img alt="{name}" src="{H.data_uri(data)}">'
                        for name, data in c.plots.items())
    if c.reliability_left_out:
        dropped = [f"{escape(m)} {n} of {k}" for m, (n, k) in c.reliability_left_out.items()
                   if n]
        reliability = ("Reliability: decile bins of predicted probability, log axes."
                       + (" Bins without a melanoma (observed rate 0, which a log axis cannot "
                          f"show) are left out: {', '.join(dropped)}." if dropped else ""))
    else:
        reliability = "No probabilities: reliability not shown."
    sections = {
        "summary": ("Summary", (f"<p>{escape(intro)}</p>" if intro else "") + summary),
        "models": ("Models", H.models_html(result)),
        "differences": ("Paired differences", H.differences_html(result)),
        "plots": ("ROC, precision-recall and reliability",
                  f'<div class="plots">{plot_imgs}</div>'
                  "<p class=\"note\">ROC and precision-recall: shaded, the pointwise "
                  "patient-bootstrap 95% band of each curve; in the legend, the area with its CI "
                  f"(first seed). {reliability}</p>"),
        "operating": ("Operating points", H.operating_html(c.operating)),
        "calibration": ("Calibration by source",
                        H.calibration_html(c.calibration, CALIBRATION_METRICS)),
        "subgroups": ("Subgroups", H.subgroups_html(c.subgroups, SUBGROUP_METRICS,
                                                    result.reference)),
        "patients": ("Patients", patients_html),
        "method": ("Method", _method_html(result, when)),
    }
    return H.page_html(title, sections)


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
    min_melanomas: int = MIN_MELANOMAS,
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
    min_melanomas : int
        A ranking figure (a subgroup's, an operating point's, a curve's band and CI; with a
        table of scores, the model table's) resting on fewer melanomas is shown as ``n/a`` with
        the reason (:func:`dermctx.metrics.too_few_melanomas`). Default
        :data:`dermctx.metrics.MIN_MELANOMAS`.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    Path
        The path of ``report.html``. Figures use the first seed's out-of-fold predictions; the
        model table and differences average all seeds.
    """
    out = Path(out_dir)
    result = _as_result(result_or_scores, score_cols, reference, n_boot=n_boot,
                        random_state=random_state, min_melanomas=min_melanomas, progress=progress)
    models = result.models
    primary = primary if primary is not None else models[-1]
    if primary not in models:
        raise DermctxError(f"write_report: primary {primary!r} is not one of the models {models}")
    out.mkdir(parents=True, exist_ok=True)

    stages = tqdm(total=4, desc="report", unit="step", disable=not progress, leave=False)
    computed = _compute(result, n_boot=n_boot, random_state=random_state,
                        min_melanomas=min_melanomas, progress=progress)
    stages.update(1)
    overlay = None
    if checkpoint is not None:
        from dermctx.explain import gradcam_overlay, load_classifier

        net, net_meta = load_classifier(checkpoint)
        overlay = (lambda path: gradcam_overlay(net, net_meta, path), n_overlays)
    patients = _sample_patients(computed.frame, n_patients, random_state)
    patients_html, errors = H.patients_html(
        computed.frame, models, primary, patients, max_lesions=max_lesions, thumb_size=thumb_size,
        progress=progress, explain=explain, overlay=overlay)
    stages.update(1)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    _write_files(out, result, computed, errors, title=title, when=when)
    stages.update(1)
    path = out / "report.html"
    path.write_text(_render(result, computed, patients_html, title=title, intro=intro, when=when),
                    encoding="utf-8")
    stages.update(1)
    stages.close()
    return path
