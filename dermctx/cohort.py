"""Cohort description: the "Table 1" of a lesion table, at patient and lesion level.

:func:`cohort_table` describes any lesion table in one wide DataFrame: a two-level row index
``(section, row)``, one column per group (patients with / without melanoma, the folds of a split,
the sites, the sources, ...) plus ``"Total"``. Each cell is a display string: a count with its
percentage where it is one (``"428 (20.8%)"``), or a statistic (``"16.1"``).
:func:`cohort_counts` gives the same table as numbers, and :func:`to_text`, :func:`to_markdown`,
:func:`to_html` and :func:`to_latex` render a table for a terminal, a paper or a report::

    from dermctx import cohort_table, read_table
    from dermctx.cohort import to_markdown, to_text

    table = read_table("ISIC_2020_Training_GroundTruth.csv")
    print(to_text(cohort_table(table)))          # aligned plain text, every column
    print(cohort_table(table).pipe(to_markdown))

In a notebook the DataFrame shows as pandas shows any table (``display(IPython.display.HTML(
to_html(t)))`` for the sectioned rendering); ``print(t)`` is pandas' own text, which elides
columns that do not fit the terminal's width: :func:`to_text` never does.

Counting rules (see ``docs/cohort.md``):

* A **patient** is a ``patient_id``; a **lesion** a ``lesion_id`` (one lesion across the table,
  as everywhere in dermctx: see :func:`dermctx.table.check_identity`); an **image** a row. A
  table whose lesion ids are shared by several patients is refused: a Table 1 needs each lesion
  under one patient.
  Lesion rows use the lesion's label (melanoma if any of its images is), its first recorded
  site and whether any of its images was biopsied. Image rows count rows.
* Missing sex, age, site, diagnosis or ground-truth type is counted in an ``"unknown"`` row, never
  dropped, so the rows of a section add up to the section's total.
* ``by="patient_class"`` puts a patient with at least one melanoma in ``"with melanoma"``, a
  patient with labels and no melanoma in ``"without melanoma"``, and a patient without any label in
  ``"unlabelled"``. For any other ``by`` column a patient is counted in **each** group they have
  rows in, and described there by those rows only (their lesions at that site, in that fold), so
  patient counts of the groups can add up to more than the total.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermctx.errors import TableError
from dermctx.table import SITES, shared_lesion_ids, validate_table

__all__ = [
    "PATIENT_CLASSES",
    "TIMEPOINT_COLUMNS",
    "cohort_counts",
    "cohort_table",
    "to_html",
    "to_latex",
    "to_markdown",
    "to_text",
]

#: Group names of ``by="patient_class"``, in column order.
PATIENT_CLASSES: tuple[str, ...] = ("with melanoma", "without melanoma", "unlabelled")
#: Columns read as the time point of an image (first one present wins) for "timepoints per patient".
TIMEPOINT_COLUMNS: tuple[str, ...] = ("timepoint", "study_date", "acquisition_date", "visit")
TOTAL = "Total"
UNKNOWN = "unknown"

# ground-truth types as the sources spell them -> words for the table
_DX_TYPE_WORDS = {
    "histo": "histopathology",
    "histopathology": "histopathology",
    "follow_up": "follow-up",
    "follow-up": "follow-up",
    "consensus": "consensus",
    "confocal": "confocal",
}
_MISSING_WORDS = {"", "unknown", "nan", "none", "na", "n/a"}

# section names (the first level of the row index)
S_PATIENTS = "patients"
S_SEX = "patients by sex"
S_AGE = "age"
S_LESIONS = "lesions"
S_PER_PATIENT = "lesions per patient"
S_TIMEPOINTS = "timepoints per patient"
S_SITE = "lesions by site"
S_SITE_MEL = "melanomas by site (% of the site's lesions)"
S_DIAGNOSIS = "images by diagnosis"
S_DX_TYPE = "images by ground truth"

# lesion rows on biopsy, by the rule that applies (see _biopsy_rule)
R_BIOPSIED = "biopsied (histopathology)"
R_NOT_BIOPSIED = "not biopsied (follow-up, consensus, confocal)"
R_BIOPSY_UNKNOWN = "biopsy unknown (no ground-truth type)"
R_SPECIFIC = "specific diagnosis (histopathology or follow-up)"
R_NO_SPECIFIC = "not biopsied (diagnosis 'unknown')"

_QUARTILES = (("mean", None), ("Q1", 0.25), ("median", 0.5), ("Q3", 0.75))


@dataclass(frozen=True)
class _Row:
    """One row of the table: its index key, and whether its cells are counts (with a percent)."""

    section: str
    row: str
    count: bool = True


# --- per-group description ------------------------------------------------------------------


def _text(values: pd.Series) -> pd.Series:
    """Strings with missing values and the words of _MISSING_WORDS as None (object dtype)."""
    words = [None if pd.isna(v) or str(v).strip().lower() in _MISSING_WORDS else str(v).strip()
             for v in values.astype(object)]
    return pd.Series(words, index=values.index, dtype=object)


def _lesion_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion_id: patient, label, site, biopsy flag, as described in the module."""
    grouped = rows.groupby("lesion_id", sort=False)
    return pd.DataFrame(
        {
            "patient_id": grouped["patient_id"].first(),  # a shared id links its patients
            "target": grouped["target"].max(),  # NaN only when no image is labelled
            "site": grouped["site"].first(),  # first recorded site (skips missing)
            "biopsy": grouped["_biopsy"].max(),  # 1 if any image biopsied, NaN if unknown
        }
    ).reset_index()


def _patient_frame(rows: pd.DataFrame, lesions: pd.DataFrame, timepoint: str | None
                   ) -> pd.DataFrame:
    """One row per patient: sex (the most frequent recorded), mean age, lesions, time points."""
    patients = pd.DataFrame(index=pd.Index(rows["patient_id"].unique(), name="patient_id"))
    sexes = rows.loc[rows["sex"].notna(), ["patient_id", "sex"]]
    if len(sexes):
        counts = sexes.groupby(["patient_id", "sex"]).size()
        top = counts.sort_values(ascending=False, kind="stable").reset_index()
        top = top.drop_duplicates("patient_id").set_index("patient_id")["sex"]
        patients["sex"] = top.reindex(patients.index).astype(object)
    else:
        patients["sex"] = None
    patients["sex"] = patients["sex"].where(patients["sex"].notna(), None)
    patients["age"] = rows.groupby("patient_id")["age"].mean().reindex(patients.index)
    patients["lesions"] = lesions.groupby("patient_id").size().reindex(patients.index)
    if timepoint is not None:
        times = rows.loc[rows["_timepoint"].notna()]
        patients["timepoints"] = (
            times.groupby("patient_id")["_timepoint"].nunique().reindex(patients.index).fillna(0)
        )
    return patients


def _stat(values: pd.Series, q: float | None) -> float:
    values = values.dropna()
    if len(values) == 0:
        return np.nan
    return float(values.mean()) if q is None else float(values.quantile(q))


def _share(n: float, of: float) -> float:
    return 100.0 * n / of if of else np.nan


def _describe(rows: pd.DataFrame, spec: Sequence[_Row], *, totals: tuple[int, int, int] | None,
              timepoint: str | None) -> dict[tuple[str, str], tuple[float, float]]:
    """``(section, row) -> (value, percent)`` for one group's rows (``totals``: whole-table
    patients, lesions and images, for the group's share; None for the Total column)."""
    lesions = _lesion_frame(rows)
    patients = _patient_frame(rows, lesions, timepoint)
    n_pat, n_les, n_img = len(patients), len(lesions), len(rows)
    out: dict[tuple[str, str], tuple[float, float]] = {}

    def put(section: str, row: str, n: float, of: float | None) -> None:
        out[(section, row)] = (float(n), np.nan if of is None else _share(n, of))

    share_of = totals if totals is not None else (None, None, None)
    put(S_PATIENTS, "total", n_pat, share_of[0])
    sex = patients["sex"].fillna(UNKNOWN)
    for row in ("male", "female", UNKNOWN):
        put(S_SEX, row, int((sex == row).sum()), n_pat)
    put(S_AGE, "mean age per patient (years)", _stat(patients["age"], None), None)
    put(S_AGE, "patients with unknown age", int(patients["age"].isna().sum()), n_pat)

    put(S_LESIONS, "total", n_les, share_of[1])
    put(S_LESIONS, "images", n_img, share_of[2])
    put(S_LESIONS, "benign", int((lesions["target"] == 0).sum()), n_les)
    put(S_LESIONS, "melanoma", int((lesions["target"] == 1).sum()), n_les)
    put(S_LESIONS, "label unknown", int(lesions["target"].isna().sum()), n_les)
    biopsy = lesions["biopsy"]  # the rows of the rule that applies are in spec
    for row, n in ((R_BIOPSIED, biopsy == 1), (R_SPECIFIC, biopsy == 1), (R_NOT_BIOPSIED, biopsy == 0),
                   (R_NO_SPECIFIC, biopsy == 0), (R_BIOPSY_UNKNOWN, biopsy.isna())):
        put(S_LESIONS, row, int(n.sum()), n_les)

    for name, q in _QUARTILES:
        put(S_PER_PATIENT, name, _stat(patients["lesions"], q), None)
        if timepoint is not None:
            put(S_TIMEPOINTS, name, _stat(patients["timepoints"], q), None)

    site = lesions["site"].fillna(UNKNOWN)
    mel = lesions["target"] == 1
    for r in spec:
        if r.section == S_SITE:
            at = site == r.row
            put(S_SITE, r.row, int(at.sum()), n_les)
            put(S_SITE_MEL, r.row, int((at & mel).sum()), int(at.sum()))
    for section, column in ((S_DIAGNOSIS, "_diagnosis"), (S_DX_TYPE, "_dx_type")):
        counts = rows[column].fillna(UNKNOWN).value_counts()
        for r in spec:
            if r.section == section:
                put(section, r.row, int(counts.get(r.row, 0)), n_img)
    return out


# --- the table ------------------------------------------------------------------------------


def _biopsy_rule(table: pd.DataFrame) -> str | None:
    """Which column says whether an image was biopsied: "dx_type", "diagnosis" or None."""
    if table["_dx_type"].notna().any():
        return "dx_type"
    diagnosis = table["diagnosis"].astype(object).where(table["diagnosis"].notna(), None)
    said_unknown = diagnosis.map(lambda v: v is not None and str(v).strip().lower() == UNKNOWN)
    if said_unknown.any():  # the source marks "no specific diagnosis" explicitly (ISIC 2020)
        return "diagnosis"
    return None


def _prepare(table: pd.DataFrame, timepoint: str | None) -> tuple[pd.DataFrame, str | None]:
    """Add the private columns the description reads: _diagnosis, _dx_type, _biopsy, _timepoint."""
    t = table.copy()
    t["_diagnosis"] = _text(t["diagnosis"])
    raw_type = _text(t["dx_type"] if "dx_type" in t.columns else pd.Series(None, index=t.index))
    t["_dx_type"] = pd.Series([None if v is None else _DX_TYPE_WORDS.get(v.lower(), v)
                               for v in raw_type], index=t.index, dtype=object)
    rule = _biopsy_rule(t)
    if rule == "dx_type":
        flag = np.where(t["_dx_type"].isna(), np.nan, (t["_dx_type"] == "histopathology") * 1.0)
    elif rule == "diagnosis":
        flag = np.where(t["_diagnosis"].isna(), 0.0, 1.0)
    else:
        flag = np.full(len(t), np.nan)
    t["_biopsy"] = flag.astype(float)
    if timepoint is not None:
        t["_timepoint"] = _text(t[timepoint])
    return t, rule


def _group_labels(table: pd.DataFrame, by: str | None) -> tuple[pd.Series, list[str]]:
    """The group of each row, as strings, and the groups in column order."""
    if by is None:
        return pd.Series(TOTAL, index=table.index, dtype=object), []
    if by == "patient_class":
        label = table.groupby("patient_id")["target"].max()
        cls = pd.Series(np.where(label == 1, PATIENT_CLASSES[0],
                                 np.where(label == 0, PATIENT_CLASSES[1], PATIENT_CLASSES[2])),
                        index=label.index, dtype=object)
        groups = table["patient_id"].map(cls).astype(object)
        # with/without melanoma whenever anything is labelled (a fold without melanoma shows 0)
        names = list(PATIENT_CLASSES[:2]) if label.notna().any() else []
        return groups, names + [PATIENT_CLASSES[2]] * bool((groups == PATIENT_CLASSES[2]).any())
    if by not in table.columns:
        raise TableError(
            f"cannot group by {by!r}: no such column; expected 'patient_class' or one of "
            f"{list(table.columns)[:30]}"
        )
    values = table[by]
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")  # folds read as 0.0, 1.0 are shown as 0, 1
    order = sorted(values.dropna().unique(), key=lambda v: (not isinstance(v, (int, np.integer)),
                                                             v if isinstance(v, (int, np.integer))
                                                             else str(v)))
    names = [str(v) for v in order]
    groups = values.astype(object).where(values.notna(), None)
    groups = groups.map(lambda v: UNKNOWN if v is None else str(v))
    if (groups == UNKNOWN).any() and UNKNOWN not in names:
        names.append(UNKNOWN)
    if TOTAL in names:
        raise TableError(f"column {by!r} has a group called {TOTAL!r}, the name of the total column")
    return groups, names


def _spec(t: pd.DataFrame, rule: str | None, timepoint: str | None) -> list[_Row]:
    """The rows of the table, decided on the whole table so that every column has the same rows."""
    rows = [_Row(S_PATIENTS, "total")]
    rows += [_Row(S_SEX, s) for s in ("male", "female", UNKNOWN)]
    rows += [_Row(S_AGE, "mean age per patient (years)", count=False),
             _Row(S_AGE, "patients with unknown age")]
    rows.append(_Row(S_LESIONS, "total"))
    several = t["lesion_id"].nunique() < len(t)
    if several:  # several images show one lesion: count both
        rows.append(_Row(S_LESIONS, "images"))
    rows += [_Row(S_LESIONS, "benign"), _Row(S_LESIONS, "melanoma")]
    if t["target"].isna().any():
        rows.append(_Row(S_LESIONS, "label unknown"))
    if rule == "dx_type":
        rows += [_Row(S_LESIONS, R_BIOPSIED), _Row(S_LESIONS, R_NOT_BIOPSIED)]
        if t["_biopsy"].isna().any():
            rows.append(_Row(S_LESIONS, R_BIOPSY_UNKNOWN))
    elif rule == "diagnosis":
        rows += [_Row(S_LESIONS, R_SPECIFIC), _Row(S_LESIONS, R_NO_SPECIFIC)]
    rows += [_Row(S_PER_PATIENT, name, count=False) for name, _ in _QUARTILES]
    if timepoint is not None:
        rows += [_Row(S_TIMEPOINTS, name, count=False) for name, _ in _QUARTILES]
    present = set(t["site"].dropna())
    sites = [s for s in SITES if s in present] + sorted(present - set(SITES)) + [UNKNOWN]
    rows += [_Row(S_SITE, s) for s in sites]
    rows += [_Row(S_SITE_MEL, s) for s in sites]
    for section, column in ((S_DIAGNOSIS, "_diagnosis"), (S_DX_TYPE, "_dx_type")):
        if t[column].notna().any():
            counts = t[column].fillna(UNKNOWN).value_counts()
            names = sorted(counts.index, key=lambda v: (v == UNKNOWN, -counts[v], v))
            rows += [_Row(section, v) for v in names]
    return rows


def _find_timepoint(table: pd.DataFrame, timepoint: str | None) -> str | None:
    if timepoint is not None:
        if timepoint not in table.columns:
            raise TableError(f"timepoint column {timepoint!r} not found; expected one of "
                             f"{list(table.columns)[:30]}")
        return timepoint
    for col in TIMEPOINT_COLUMNS:
        if col in table.columns and table[col].notna().any():
            return col
    return None


def _cohort(table: pd.DataFrame, by: str | None, timepoint: str | None
            ) -> tuple[pd.DataFrame, list[_Row]]:
    """The numeric table of :func:`cohort_counts` and its row spec."""
    t = validate_table(table)
    shared = shared_lesion_ids(t)
    if len(shared):  # a lesion under two patients cannot be counted once per patient and in all
        raise TableError(
            f"cohort table: lesion_id {shared.index[0]!r} is shared by {shared.iloc[0]} patients "
            f"({len(shared)} shared id(s)); a cohort table needs each lesion under one patient. If "
            "lesion ids are numbered per patient, read the table with lesion_ids='per_patient' "
            "(CLI: --lesion-ids per-patient)")
    groups, names = _group_labels(t, by)
    timepoint = _find_timepoint(t, timepoint)
    t, rule = _prepare(t, timepoint)
    spec = _spec(t, rule, timepoint)

    totals = (t["patient_id"].nunique(), t["lesion_id"].nunique(), len(t))
    columns: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
    for name in names:
        columns[name] = _describe(t[groups == name], spec, totals=totals, timepoint=timepoint)
    columns[TOTAL] = _describe(t, spec, totals=None, timepoint=timepoint)

    index = pd.MultiIndex.from_tuples([(r.section, r.row) for r in spec], names=["section", "row"])
    data = {}
    for name, cells in columns.items():
        data[(name, "value")] = [cells[key][0] for key in index]
        data[(name, "percent")] = [cells[key][1] for key in index]
    out = pd.DataFrame(data, index=index)
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=[by or "group", "stat"])
    return out, spec


def cohort_counts(table: pd.DataFrame, by: str | None = "patient_class", *,
                  timepoint: str | None = None) -> pd.DataFrame:
    """The cohort table as numbers.

    Parameters
    ----------
    table : DataFrame
        A lesion table (validated with :func:`dermctx.validate_table`; it is not changed).
    by : str or None
        ``"patient_class"`` (patients with >= 1 melanoma vs none), any column of ``table``
        (a fold, ``site``, ``source``; missing values form the group ``"unknown"``), or None
        for the total only.
    timepoint : str, optional
        The column holding each image's time point (a date or visit number); by default the first
        of :data:`TIMEPOINT_COLUMNS` present. Without one, no "timepoints per patient" rows.

    Returns
    -------
    DataFrame
        Row index ``(section, row)``; columns a two-level index ``(group, stat)`` with ``stat``
        ``"value"`` (a count, or a statistic such as the mean age in years) and ``"percent"``
        (0-100; NaN where the value is not a count). Groups in order, then ``"Total"``.
        Percent denominators: the whole table for the groups' ``total`` rows (the group's share),
        the column's patients / lesions / images elsewhere, and the site's lesions for
        ``melanomas by site``.

    Raises
    ------
    TableError
        When ``table`` is not a valid lesion table or ``by`` / ``timepoint`` is not a column.
    """
    return _cohort(table, by, timepoint)[0]


def _format_value(value: float, count: bool) -> str:
    if not np.isfinite(value):
        return ""
    if count or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def cohort_table(table: pd.DataFrame, by: str | None = "patient_class", *,
                 timepoint: str | None = None) -> pd.DataFrame:
    """Describe a lesion table at patient and lesion level: the "Table 1" of a paper.

    Parameters
    ----------
    table : DataFrame
        A lesion table (see :func:`dermctx.validate_table`); not changed.
    by : str or None
        ``"patient_class"`` (default): columns ``"with melanoma"`` (patients with >= 1 melanoma)
        and ``"without melanoma"`` (plus ``"unlabelled"`` for patients without any label). Any
        column name (a fold, ``"site"``, ``"source"``) gives one column per value (missing values
        in ``"unknown"``); a patient is counted in each group they have rows in, described by
        those rows. None: the ``"Total"`` column only.
    timepoint : str, optional
        Column of each image's time point; see :func:`cohort_counts`.

    Returns
    -------
    DataFrame
        Row index ``(section, row)``, one column per group plus ``"Total"``; each cell a string:
        a count with its percentage where it is one (``"428 (20.8%)"``), or a number (means and
        quartiles to one decimal). Empty where a statistic has no value (an empty group).
        Render it with :func:`to_markdown`, :func:`to_html` or :func:`to_latex`; the numbers are
        in :func:`cohort_counts`.

    Raises
    ------
    TableError
        When ``table`` is not a valid lesion table or ``by`` / ``timepoint`` is not a column.
    """
    counts, spec = _cohort(table, by, timepoint)
    count_rows = {(r.section, r.row) for r in spec if r.count}
    groups = list(dict.fromkeys(counts.columns.get_level_values(0)))
    out = pd.DataFrame(index=counts.index, columns=pd.Index(groups, name=counts.columns.names[0]),
                       dtype=object)
    for key in counts.index:
        is_count = key in count_rows
        for g in groups:
            value, pct = counts.at[key, (g, "value")], counts.at[key, (g, "percent")]
            cell = _format_value(value, is_count)
            if is_count and np.isfinite(pct):
                cell += f" ({pct:.1f}%)"
            out.at[key, g] = cell
    return out


# --- renderings -----------------------------------------------------------------------------


def _sections(frame: pd.DataFrame) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """``[(section, [(row, cells), ...]), ...]`` in table order."""
    if frame.index.nlevels != 2:
        raise TableError("expected a cohort table with a (section, row) index (see cohort_table)")
    out: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for (section, row), cells in zip(frame.index, frame.itertuples(index=False), strict=True):
        if not out or out[-1][0] != section:
            out.append((section, []))
        out[-1][1].append((str(row), ["" if pd.isna(c) else str(c) for c in cells]))
    return out


def to_text(frame: pd.DataFrame) -> str:
    """Render a :func:`cohort_table` as aligned plain text: a line per section, its rows indented
    under it, every column (none elided, whatever the terminal's width), counts right-aligned.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p", "p", "q"],
    ...                   "target": [1, 0, 0]})
    >>> print(to_text(cohort_table(t)).splitlines()[1])
    patients
    """
    sections = _sections(frame)
    labels = [str(c) for c in frame.columns]
    names = [s for s, _ in sections] + [f"  {row}" for _, rows in sections for row, _ in rows]
    width0 = max([len(n) for n in names] + [0])
    widths = [max([len(labels[j])] + [len(cells[j]) for _, rows in sections for _, cells in rows])
              for j in range(len(labels))]

    def line(name: str, cells: Sequence[str]) -> str:
        return "  ".join([name.ljust(width0), *[c.rjust(w) for c, w in zip(cells, widths,
                                                                           strict=True)]]).rstrip()

    out = [line("", labels)]
    for section, rows in sections:
        out.append(section)
        out += [line(f"  {row}", cells) for row, cells in rows]
    return "\n".join(out) + "\n"


def to_markdown(frame: pd.DataFrame) -> str:
    """Render a :func:`cohort_table` as a GitHub Markdown table (section names in bold rows)."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    header = ["", *[esc(str(c)) for c in frame.columns]]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(frame.columns) + "|"]
    for section, rows in _sections(frame):
        lines.append("| " + " | ".join([f"**{esc(section)}**", *[""] * len(frame.columns)]) + " |")
        for row, cells in rows:
            lines.append("| " + " | ".join([f"&nbsp;&nbsp;{esc(row)}", *map(esc, cells)]) + " |")
    return "\n".join(lines) + "\n"


def to_html(frame: pd.DataFrame) -> str:
    """Render a :func:`cohort_table` as an HTML ``<table>`` (section names as spanning rows)."""
    e = html.escape
    n = len(frame.columns)
    parts = ['<table class="dermctx-cohort">', "<thead><tr><th></th>"]
    parts += [f"<th>{e(str(c))}</th>" for c in frame.columns]
    parts.append("</tr></thead>\n<tbody>")
    for section, rows in _sections(frame):
        parts.append(f'<tr><th colspan="{n + 1}" style="text-align:left">{e(section)}</th></tr>')
        for row, cells in rows:
            tds = "".join(f'<td style="text-align:right">{e(c)}</td>' for c in cells)
            parts.append(f'<tr><td style="padding-left:1.5em">{e(row)}</td>{tds}</tr>')
    parts.append("</tbody>\n</table>")
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def to_latex(frame: pd.DataFrame) -> str:
    """Render a :func:`cohort_table` as a LaTeX ``tabular`` (booktabs rules; ``%`` escaped)."""
    n = len(frame.columns)
    lines = [r"\begin{tabular}{l" + "r" * n + "}", r"\toprule",
             " & ".join(["", *[_tex(str(c)) for c in frame.columns]]) + r" \\", r"\midrule"]
    for i, (section, rows) in enumerate(_sections(frame)):
        if i:
            lines.append(r"\addlinespace")
        lines.append(rf"\multicolumn{{{n + 1}}}{{l}}{{\textbf{{{_tex(section)}}}}} \\")
        for row, cells in rows:
            lines.append(" & ".join([r"\quad " + _tex(row), *map(_tex, cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
