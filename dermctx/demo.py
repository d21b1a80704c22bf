"""``dermctx demo``: patient-context ranking on real data, offline.

The package embeds ``dermctx/data/isic2020_demo.parquet``: the SIIM-ISIC 2020 metadata of 1,440
patients (23,299 images, 436 melanomas) with the out-of-fold melanoma probabilities of a real
EfficientNet-B1 CNN (``cnn_score``). Licence CC BY-NC 4.0, source and build script in
``dermctx/data/README.md``.

:func:`run_demo` splits the patients 80/20 with :class:`~dermctx.PatientKFold` (one fold of five
held out), fits the default :class:`~dermctx.ContextRanker` on the 80%, scores the held-out 20%,
compares it with the CNN alone (patient-bootstrap CIs and paired differences), writes the report
and prints one held-out patient's lesions ranked, with the context explanation.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from dermctx.errors import DermctxError, ModelError
from dermctx.formatting import (
    format_probability,
    format_probability_change,
    format_seconds,
    plural,
)

__all__ = ["DEMO_DATA", "DemoResult", "load_demo_table", "run_demo"]

#: File name of the embedded demo table inside ``dermctx/data``.
DEMO_DATA = "isic2020_demo.parquet"

CNN = "CNN alone"


def load_demo_table() -> pd.DataFrame:
    """The embedded ISIC 2020 demo table (a lesion table with a ``cnn_score`` column).

    Returns
    -------
    DataFrame
        23,299 rows: ``image_id, patient_id, lesion_id, age, sex, site, diagnosis, target, source,
        width, height, cnn_score``. CC BY-NC 4.0 (see ``dermctx/data/README.md``).
    """
    from dermctx.table import validate_table

    ref = resources.files("dermctx") / "data" / DEMO_DATA
    if not ref.is_file():
        raise DermctxError(
            f"the demo data {DEMO_DATA} is missing from the dermctx package (looked in {ref}); "
            "reinstall dermctx or rebuild it with benchmarks/make_demo_data.py"
        )
    with resources.as_file(ref) as path:
        table = pd.read_parquet(path)
    return validate_table(table, labelled=True, name=DEMO_DATA)


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote.

    ``metrics`` and ``differences`` are the tidy tables of
    :class:`~dermctx.benchmarking.BenchmarkResult` on the held-out patients; ``example`` is the
    example patient's ranked lesions; ``report`` the path of ``report.html``.
    """

    metrics: pd.DataFrame
    differences: pd.DataFrame
    example: pd.DataFrame
    example_patient: str
    report: Path
    n_train_patients: int
    n_test_patients: int
    fit_seconds: float
    seconds: float


def _default_model(random_state: int) -> Any:
    try:
        from dermctx.models.ranker import ContextRanker
    except ImportError as exc:  # pragma: no cover - only while the ranker is being written
        raise ModelError(f"the demo's default model, ContextRanker, cannot be imported: {exc}") from exc
    return ContextRanker(random_state=random_state)


def _example_patient(test: pd.DataFrame) -> str:
    """A held-out patient with a melanoma and 5-20 lesions: the first by id (not chosen by score)."""
    g = test.groupby("patient_id", sort=True)["target"].agg(["size", "sum"])
    pick = g[(g["sum"] > 0) & (g["size"] >= 5) & (g["size"] <= 20)]
    if len(pick) == 0:
        pick = g[g["sum"] > 0] if (g["sum"] > 0).any() else g
    return str(pick.index[0])


def _explain(model: Any, patient: pd.DataFrame, score_name: str) -> pd.DataFrame:
    """The patient's lesions ranked by the model, with its context explanation when it has one."""
    from dermctx.label_guard import LABEL_COLUMNS

    X = patient.drop(columns=[c for c in patient.columns if str(c).lower() in LABEL_COLUMNS])
    if hasattr(model, "score_patient"):
        ranked = model.score_patient(X).copy()
    else:
        from dermctx.benchmarking import melanoma_score

        ranked = pd.DataFrame({"image_id": patient["image_id"].to_numpy(),
                               "score": melanoma_score(model, X, score_name)})
        ranked = ranked.sort_values("score", ascending=False, kind="mergesort")
        ranked["rank"] = np.arange(1, len(ranked) + 1)
    info = patient.set_index("image_id")
    ranked["cnn_score"] = info.loc[ranked["image_id"], "cnn_score"].to_numpy()
    ranked["cnn_rank"] = (info["cnn_score"].rank(ascending=False, method="min")
                          .loc[ranked["image_id"]].astype(int).to_numpy())
    ranked["site"] = info.loc[ranked["image_id"], "site"].to_numpy()
    ranked["melanoma"] = np.where(info.loc[ranked["image_id"], "target"].to_numpy() == 1, "yes", "")
    return ranked.reset_index(drop=True)


def _format_example(example: pd.DataFrame, model_name: str) -> str:
    """The ranked lesions as a plain-text table, with the context explanation in words."""

    def change(row: dict[str, Any], kind: str) -> str:
        who = row.get(f"{kind}_by")
        if who is None or (isinstance(who, float) and np.isnan(who)):
            return ""
        return f"{kind} {format_probability_change(row[f'{kind}_by_change'])} by {who}"

    rows = []
    for r in example.to_dict(orient="records"):
        context = "; ".join(x for x in (change(r, "raised"), change(r, "lowered")) if x)
        rows.append({
            "rank": r["rank"], "image_id": r["image_id"], "melanoma": "*" if r["melanoma"] else "",
            model_name: format_probability(r["score"]),
            "CNN (rank)": f"{format_probability(r['cnn_score'])} (#{r['cnn_rank']})",
            "site": r["site"] if isinstance(r["site"], str) else "-",
            **({"context (probability change caused by another lesion, pp)": context}
               if "raised_by" in r else {}),
        })
    header = list(rows[0]) if rows else []
    cells = [[str(r[h]) for h in header] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    right = {"rank", model_name, "CNN (rank)"}  # numbers right-aligned, words left-aligned

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if h in right else v.ljust(w)
                         for v, w, h in zip(values, widths, header, strict=True)).rstrip()

    lines = [line(header), *(line(c) for c in cells)]
    why = [(r["rank"], r["explanation"]) for r in example.to_dict(orient="records")[:3] if r.get("explanation")]
    if why:
        lines += ["", "why (the features that moved each score most):",
                  *(f"  #{rank}: {text}" for rank, text in why)]
    return "\n".join(lines)


def run_demo(
    out_dir: str | PathLike[str] = "dermctx-demo",
    *,
    model: Any = None,
    model_name: str = "ContextRanker",
    table: pd.DataFrame | None = None,
    max_patients: int | None = None,
    n_boot: int = 1000,
    random_state: int = 0,
    progress: bool = True,
    stream: TextIO | None = None,
) -> DemoResult:
    """Fit on 80% of the demo patients, report on the other 20% against the CNN alone.

    Parameters
    ----------
    out_dir : path
        Where the report goes (``report.html``, ``metrics.json``, plots, tables).
    model : estimator, optional
        The model to fit (default: ``ContextRanker(random_state=random_state)``). It gets the
        lesion table minus the label columns (``cnn_score``, age, sex, site, ``patient_id``, ...).
    model_name : str
        Its name in the report.
    table : DataFrame, optional
        Another lesion table with a ``cnn_score`` column (default: the embedded demo table).
    max_patients : int, optional
        Use only this many patients (the first by id): a quicker, smaller run.
    n_boot : int
        Patient-bootstrap resamples for every CI.
    random_state : int
        Seed of the split, the model and the bootstraps: the same seed gives the same numbers.
    progress : bool
        Show progress bars.
    stream : text file, optional
        Where the summary is printed (default ``sys.stdout``).

    Returns
    -------
    DemoResult
    """
    from dermctx.benchmarking import benchmark, melanoma_score
    from dermctx.label_guard import LABEL_COLUMNS
    from dermctx.report import write_report
    from dermctx.splits import PatientKFold

    out = sys.stdout if stream is None else stream
    printed: list[str] = []

    def say(text: str) -> None:
        printed.append(text)
        print(text, file=out, flush=True)

    t0 = time.perf_counter()
    table = load_demo_table() if table is None else table.reset_index(drop=True)
    if "cnn_score" not in table.columns:
        raise DermctxError("run_demo: the table needs a 'cnn_score' column (a lesion CNN's probability)")
    if max_patients is not None:
        keep = np.sort(table["patient_id"].unique())[: int(max_patients)]
        table = table[table["patient_id"].isin(keep)].reset_index(drop=True)
    n_pat = table["patient_id"].nunique()
    say(f"dermctx demo: {plural(n_pat, 'patient')}, {plural(len(table), 'image')}, "
        f"{plural(int(table['target'].sum()), 'melanoma')} (SIIM-ISIC 2020, CC BY-NC 4.0) with "
        "out-of-fold EfficientNet-B1 scores")

    fold = PatientKFold(5, shuffle=True, random_state=random_state).assign(table)
    test_mask = fold == 0
    train = table[~test_mask].reset_index(drop=True)
    test = table[test_mask].reset_index(drop=True)
    model = _default_model(random_state) if model is None else model
    say(f"fitting {model_name} on {plural(train['patient_id'].nunique(), 'patient')} "
        f"({plural(len(train), 'image')}) ...")
    t_fit = time.perf_counter()
    drop = [c for c in table.columns if str(c).lower() in LABEL_COLUMNS]
    model.fit(train.drop(columns=drop), train["target"].to_numpy())
    fit_seconds = time.perf_counter() - t_fit
    scored = test.copy()
    scored[CNN] = test["cnn_score"].to_numpy(dtype=float)
    scored[model_name] = melanoma_score(model, test.drop(columns=drop), model_name)
    say(f"  done in {format_seconds(fit_seconds)}; held out: "
        f"{plural(test['patient_id'].nunique(), 'patient')} ({plural(len(test), 'image')}, "
        f"{plural(int(test['target'].sum()), 'melanoma')})")

    result = benchmark(scored, {CNN: CNN, model_name: model_name}, reference=CNN,
                       metrics=["auc", "pauc80", "within_patient_auc", "top1", "top3"],
                       n_boot=n_boot, random_state=random_state, progress=progress)
    say("")
    say(result.to_markdown())

    patient_id = _example_patient(test)
    patient = test[test["patient_id"] == patient_id].reset_index(drop=True)
    example = _explain(model, patient, model_name)
    say(f"Example held-out patient {patient_id} ({plural(len(patient), 'lesion')}, "
        f"{plural(int(patient['target'].sum()), 'melanoma')}): lesions ranked by {model_name}")
    say(_format_example(example, model_name))

    path = write_report(
        result, out_dir, title=f"dermctx demo: {model_name} vs the CNN alone on held-out patients",
        intro=(f"{model_name} fitted on {train['patient_id'].nunique():,} patients of SIIM-ISIC "
               f"2020 and scored on {test['patient_id'].nunique():,} other patients; the CNN "
               "alone is an EfficientNet-B1's out-of-fold probability. Data CC BY-NC 4.0 (ISIC)."),
        n_boot=n_boot, random_state=random_state, progress=progress,
        explain=(lambda pid: _explain(model, test[test["patient_id"] == pid].reset_index(drop=True),
                                      model_name)) if hasattr(model, "score_patient") else None)
    seconds = time.perf_counter() - t0
    say(f"\nreport: {path}  ({format_seconds(seconds)} in all)")
    # the printed summary, kept beside the report (the example table as a code block)
    text = "\n".join(printed)
    cut = text.index("Example held-out patient")
    head, tail = text[:cut], text[cut:].replace("\n\nreport:", "\n```\n\nreport:")
    first, _, rest = tail.partition("\n")
    tail = f"{first}\n\n```\n{rest}"
    (Path(out_dir) / "demo.md").write_text(
        f"# dermctx demo\n\nWritten {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`run_demo(max_patients={max_patients}, n_boot={n_boot}, random_state={random_state})` "
        f"(what `dermctx demo` runs); fit {fit_seconds:.1f} s, {seconds:.1f} s in all.\n\n"
        + head + tail + "\n")
    return DemoResult(
        metrics=result.metrics, differences=result.differences, example=example,
        example_patient=patient_id, report=path,
        n_train_patients=int(train["patient_id"].nunique()),
        n_test_patients=int(test["patient_id"].nunique()), fit_seconds=fit_seconds,
        seconds=seconds,
    )
