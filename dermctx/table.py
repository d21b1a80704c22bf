"""The lesion table: one row per lesion image, the shape every dermctx step reads and writes.

Columns (see ``docs/table.md``):

========== ================================================================================
image_id   unique id of the image (string, required)
patient_id id of the patient (string, required); the unit of every split and of context
lesion_id  id of the lesion (string); several images may show one lesion. Defaults to image_id
age        age in years, float in [0, 120], or missing
sex        "male", "female", or missing
site       anatomic site in the ISIC 2020 terms (:data:`SITES`), or missing
diagnosis  diagnosis as the source names it (string), or missing
target     1 for melanoma, 0 otherwise, missing for unlabelled sets
path       path of the image file (string), or missing
source     where the row came from ("isic2020", "ham10000", "dicom", "table", ...)
========== ================================================================================

and, when known: ``width``, ``height`` (pixels), ``dx_type`` (how the diagnosis was established),
``site_detail`` (the source's raw site term). Any other column is kept as it is. Embeddings are
float32 columns ``emb_0000, emb_0001, ...`` (see :func:`embedding_columns`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from dermctx._deprecation import warn_renamed
from dermctx.errors import DermctxWarning, TableError

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "PLACEHOLDER_PATIENT_IDS",
    "REQUIRED_COLUMNS",
    "SEXES",
    "SITES",
    "TABLE_LABEL_COLUMNS",
    "check_identity",
    "describe_rows",
    "embedding_column_names",
    "embedding_columns",
    "has_patient_context",
    "normalise_metadata",
    "normalise_sex",
    "normalise_site",
    "placeholder_patient_ids",
    "refuse_duplicate_columns",
    "shared_lesion_ids",
    "to_numbers",
    "validate_table",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "patient_id")
COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_id",
    "lesion_id",
    "age",
    "sex",
    "site",
    "diagnosis",
    "target",
    "path",
    "source",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("width", "height", "dx_type", "site_detail")
#: The label-derived columns of the canonical lesion table's own layout (ISIC 2020's ``tfrecord``
#: marks duplicates; a CNN's out-of-fold ``fold`` was stratified on the target): this layout's
#: share of :data:`dermctx.label_guard.LABEL_COLUMNS`, which gathers every registered source's and
#: is what models refuse as inputs and benchmarks drop before fitting.
TABLE_LABEL_COLUMNS: tuple[str, ...] = (
    "target", "diagnosis", "benign_malignant", "fold", "tfrecord", "dx", "dx_type", "label",
    "melanoma", "y", "mel", "kfold",
)
SEXES: tuple[str, ...] = ("male", "female")
SITES: tuple[str, ...] = (
    "head/neck",
    "upper extremity",
    "lower extremity",
    "torso",
    "palms/soles",
    "oral/genital",
)

# Raw site terms of the sources dermctx reads, mapped onto SITES (None = missing). The raw term
# is kept in ``site_detail``. HAM10000 "hand" and "foot" are mapped to the extremity, not to
# palms/soles: the dataset does not say whether the lesion is acral ("acral" says so).
_SITE_TERMS: dict[str, str | None] = {
    **{s: s for s in SITES},
    "anterior torso": "torso",
    "posterior torso": "torso",
    "lateral torso": "torso",
    "trunk": "torso",
    "back": "torso",
    "chest": "torso",
    "abdomen": "torso",
    "scalp": "head/neck",
    "face": "head/neck",
    "ear": "head/neck",
    "neck": "head/neck",
    "hand": "upper extremity",
    "foot": "lower extremity",
    "acral": "palms/soles",
    "genital": "oral/genital",
    "unknown": None,
    "": None,
}
_MISSING_WORDS = {"", "unknown", "nan", "none", "na", "n/a"}

#: Sources whose ``patient_id`` is a stand-in (the lesion or the image id), not a real patient:
#: the sources registered in :mod:`dermctx.io.registry` with ``patient_context=False``.
PROXY_PATIENT_SOURCES: frozenset[str] = frozenset({"ham10000", "isic2019", "isic2018"})

#: Patient ids that public code and exports use for "patient unknown" (compared stripped and
#: case-blind; numbers such as "-1.0" too). They never name one patient: see :func:`validate_table`.
PLACEHOLDER_PATIENT_IDS: frozenset[str] = frozenset(
    {"", "-1", "0", "unknown", "unk", "none", "nan", "na", "n/a", "#n/a", "<na>", "null", "?", "-",
     "missing", "not available", "anonymous", "anon"}
)
#: Prefix of the patient id given to a row of an unknown patient with ``unknown_patients="own"``.
UNKNOWN_PATIENT_PREFIX = "unknown:"


def describe_rows(table: pd.DataFrame, mask: np.ndarray | pd.Series, limit: int = 5) -> str:
    """Name the rows where ``mask`` is true: 0-based positions and image ids, at most ``limit``."""
    mask = np.asarray(mask, dtype=bool)
    positions = np.flatnonzero(mask)
    shown = []
    ids = table["image_id"].to_numpy() if "image_id" in table.columns else None
    for pos in positions[:limit]:
        shown.append(f"{pos} (image_id {ids[pos]!r})" if ids is not None else str(pos))
    more = f" and {len(positions) - limit} more" if len(positions) > limit else ""
    return f"row{'s' if len(positions) != 1 else ''} {', '.join(shown)}{more}"


def has_patient_context(table: pd.DataFrame) -> bool:
    """Whether ``patient_id`` names real patients, so that a patient's lesion set is meaningful.

    False when ``table.attrs["patient_context"]`` is False (set by
    :func:`dermctx.read_ham10000`) or when any row's ``source`` is one whose patient ids are
    proxies (:data:`PROXY_PATIENT_SOURCES`, i.e. HAM10000; ``source`` survives operations that
    drop ``attrs``, and CSV round trips). Splitting and ranking code calls this to warn that
    patient-level grouping or context is unavailable. True otherwise.
    """
    if table.attrs.get("patient_context") is False:
        return False
    if "source" in table.columns:
        sources = table["source"].dropna().astype(str).str.strip().str.lower()
        if sources.isin(PROXY_PATIENT_SOURCES).any():
            return False
    return True


def _map_cells(values: pd.Series, fn: Any) -> pd.Series:
    """``fn`` of every cell as an object Series; a column of text is mapped once per distinct value
    (millions of rows hold a handful of terms), anything else cell by cell."""
    arr = values.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(arr, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(arr, use_na_sentinel=True)  # exact for str: no 1 == True merging
        mapped = np.array([*(fn(u) for u in uniques), fn(None)], dtype=object)
        return pd.Series(mapped[codes], index=values.index, dtype=object)
    return pd.Series([fn(v) for v in arr], index=values.index, dtype=object)


def _term(value: Any) -> Any:
    """A metadata cell as a lower-case term, or None for missing and missing words."""
    if is_missing_scalar(value):
        return None
    text = cell_text(value).strip().lower()
    return None if text in _MISSING_WORDS else text


def normalise_sex(values: pd.Series) -> pd.Series:
    """Lower-case sex values; "unknown", empty and NaN become missing. Other values are kept."""
    return _map_cells(values, _term)


def normalise_site(
    values: pd.Series, terms: Mapping[str, str | None] | None = None
) -> tuple[pd.Series, pd.Series]:
    """Map raw site terms to :data:`SITES`. Returns ``(site, site_detail)``.

    Known terms: the ISIC 2020 and ISIC archive terms (``anterior torso`` ...), the HAM10000
    ones, and ``terms`` (lower-case raw term -> site or None), which a source declares for its
    own vocabulary. Matching is case-blind. ``site_detail`` is the raw term (missing where the
    raw value is missing). A term dermctx does not know is kept as ``site`` as it is, so that
    :func:`validate_table` names it.
    """
    known = {**_SITE_TERMS, **(terms or {})}
    raw = values.astype(object).where(values.notna(), None)
    detail = raw.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())

    def to_site(v: str | None) -> str | None:
        if v is None or pd.isna(v):  # pandas may store the missing values as NaN
            return None
        key = v.lower()
        return known[key] if key in known else v

    return detail.map(to_site), detail


def embedding_column_names(dim: int, prefix: str = "emb_") -> list[str]:
    """``["emb_0000", "emb_0001", ...]``: the names of a ``dim``-wide embedding."""
    return [f"{prefix}{i:04d}" for i in range(dim)]


def embedding_columns(frame: pd.DataFrame, prefix: str = "emb_") -> list[str]:
    """The embedding columns of ``frame`` (those starting with ``prefix``), in column order."""
    return [c for c in frame.columns if isinstance(c, str) and c.startswith(prefix)]


def refuse_duplicate_columns(frame: pd.DataFrame, who: str | None = None) -> None:
    """Refuse a frame whose column names are not one flat set of distinct names.

    Every entry point that takes a table calls this first: with two ``site`` columns, ``X["site"]``
    is a DataFrame, and pandas would fail later with a message that names neither.

    Parameters
    ----------
    frame : DataFrame
        The table.
    who : str, optional
        The file or the function, named at the start of the message (``"ContextRanker.fit"``).

    Raises
    ------
    TableError
        Naming the repeated column names, or saying that the columns have several levels of
        names (a ``MultiIndex``).
    """
    where = f"{who}: " if who else ""
    columns = frame.columns
    if isinstance(columns, pd.MultiIndex):
        example = f", e.g. {columns[0]!r}" if len(columns) else ""
        raise TableError(
            f"{where}the columns have {columns.nlevels} levels of names (a MultiIndex{example}); "
            "expected one name per column, such as 'image_id'"
        )
    dup = sorted({str(c) for c in columns[columns.duplicated()]})
    if dup:
        raise TableError(f"{where}column name(s) {dup} appear more than once; expected one each")


def cell_text(value: Any) -> str:
    """A cell as text, never raising: bytes decoded as UTF-8 (bad bytes replaced), else ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def as_texts(values: pd.Series) -> pd.Series:
    """Every cell as text (missing cells as ""), same index; never raises on odd objects."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values.astype(object).where(values.notna(), "").astype(str)
    texts = [("" if is_missing_scalar(v) else cell_text(v)) for v in values.to_numpy(dtype=object)]
    return pd.Series(texts, index=values.index, dtype=object)


#: The id columns every step reads as stripped text (``" P1"`` and ``"P1"`` are one patient).
ID_COLUMNS: tuple[str, ...] = ("patient_id", "image_id", "lesion_id")


def stripped_ids(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its :data:`ID_COLUMNS` as :func:`validate_table` reads them: text without
    surrounding spaces (a cell of spaces only is missing), whole numbers stored as floats as the
    numbers (``123.0`` is ``"123"``). The same object when nothing changes, else a shallow copy
    with the changed columns replaced."""
    changed = {}
    for col in ID_COLUMNS:
        if col not in table.columns or table[col].dtype.kind in "biu":
            continue
        values = table[col]
        clean, no_id = _id_cells(values)  # as validate_table reads them; cells that are no id stay
        differ = (as_texts(values) != clean).to_numpy() & ~no_id
        if differ.any():
            changed[col] = values.astype(object).where(~differ, clean.where(clean != "", None))
    return table.assign(**changed) if changed else table


def repeated_image_rows(
    table: pd.DataFrame, positions: np.ndarray | None = None, ignore: Sequence[str] = ()
) -> tuple[np.ndarray, dict[int, str]]:
    """Rows whose non-blank ``image_id`` another row has too: ``(copies, problems)``.

    A row equal in every column (but ``ignore``) to an earlier row with its image id is a copy:
    ``copies`` (n,) bool marks it and ``problems`` refuses it (the first stays). When the rows of
    an image id differ in any column, nothing tells which one is right: every one of them is in
    ``problems``, naming the rows and the first column that differs. ``problems`` maps a row's
    position (0-based, in ``table``) to its message; the messages name rows by ``positions``
    (default: the positions in ``table``, e.g. the rows of a whole input of which ``table`` is
    part). Missing cells are equal to each other.
    """
    n = len(table)
    copies = np.zeros(n, dtype=bool)
    problems: dict[int, str] = {}
    if "image_id" not in table.columns or not n:
        return copies, problems
    named = np.arange(n) if positions is None else np.asarray(positions)
    ids = as_texts(table["image_id"]).str.strip().to_numpy(dtype=object)
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy() & (ids != "")
    if not repeated.any():
        return copies, problems
    rows = np.flatnonzero(repeated)
    cols = [c for c in table.columns if c not in ignore]
    cells = pd.DataFrame({i: as_texts(table[c].iloc[rows]).to_numpy(dtype=object) for i, c in enumerate(cols)})
    for image_id, group in pd.Series(rows).groupby(ids[rows], sort=False):
        at = group.to_numpy()
        local = np.searchsorted(rows, at)
        block = cells.iloc[local]
        differing = [j for j in range(len(cols)) if block[j].nunique() > 1]
        if not differing:
            for i in at[1:]:
                copies[i] = True
                problems[int(i)] = (f"image_id {image_id!r} appears on an earlier row too (row {int(named[at[0]])}, "
                                    "identical): a copy; each lesion image once")
            continue
        col = cols[differing[0]]
        values = list(dict.fromkeys(block[differing[0]]))[:3]
        shown = ", ".join(str(int(named[i])) for i in at[:5]) + (f" and {len(at) - 5} more" if len(at) > 5 else "")
        for i in at:
            problems[int(i)] = (f"image_id {image_id!r} is on rows {shown} with different values (column "
                                f"{str(col)!r}: {' vs '.join(repr(v) for v in values)}); each image once: which "
                                "row is right cannot be told, so none of them is scored")
    return copies, problems


def is_missing_scalar(value: Any) -> bool:
    """None, NaN, NA or NaT (a list, array or other container is never missing)."""
    if value is None:
        return True
    if np.ndim(value) != 0 or isinstance(value, (str, bytes, bytearray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def is_blank(series: pd.Series) -> np.ndarray:
    """Where a cell is missing or blank text."""
    missing = series.isna().to_numpy(dtype=bool)
    if series.dtype.kind in "biufcmM":  # numbers and dates are never blank text
        return missing
    return missing | (as_texts(series).str.strip() == "").to_numpy(dtype=bool)


def to_numbers(values: pd.Series, *, booleans: bool = True) -> tuple[pd.Series, np.ndarray]:
    """A column as float64 numbers, and where it holds something that is not a finite number.

    Works on any dtype and any cell content: text is parsed as pandas parses numbers ("45",
    "1e3"; not "１２" or "1,5"); dates, durations, periods, intervals, complex numbers, lists,
    dicts, bytes and other objects are not numbers; ``True``/``False`` are 1/0 when ``booleans``
    is True and not numbers otherwise. Infinite values and numbers beyond the float range
    ("1e400") are not finite.

    Returns
    -------
    numbers : Series of float64
        Same index; NaN where the cell is missing or not a number.
    bad : ndarray of bool
        True where a cell is given (not missing, not blank text) but is not a finite number.
    """
    given = ~is_blank(values)
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(object)
        dtype = values.dtype
    kind = getattr(dtype, "kind", "O")
    if kind in "mMc" or isinstance(dtype, (pd.PeriodDtype, pd.IntervalDtype)):
        numbers = np.full(len(values), np.nan)
    elif kind == "b" or pd.api.types.is_bool_dtype(dtype):
        numbers = values.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        if not booleans:
            numbers = np.full(len(values), np.nan)
    else:
        cells = values
        if kind == "O":
            objects = values.to_numpy(dtype=object)
            odd = np.fromiter(
                ((isinstance(v, (bool, np.bool_)) and not booleans) or isinstance(v, (complex, np.complexfloating))
                 or np.ndim(v) != 0 for v in objects), dtype=bool, count=len(objects))
            if odd.any():
                cells = values.astype(object).where(~odd, None)
        parsed = pd.to_numeric(cells, errors="coerce")
        if getattr(parsed.dtype, "kind", "O") == "c":
            parsed = pd.Series(np.full(len(values), np.nan), index=values.index)
        try:
            numbers = parsed.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError, OverflowError):
            numbers = pd.to_numeric(parsed.astype(object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    numbers = np.asarray(numbers, dtype=float)
    with np.errstate(invalid="ignore"):
        bad = given & ~np.isfinite(numbers)
    return pd.Series(numbers, index=values.index, dtype=float), bad


def preview_cells(values: pd.Series, limit: int = 5) -> list[Any]:
    """The first ``limit`` cells for a message: numbers as they are, anything else as short text."""
    return [v if isinstance(v, (int, float, np.integer, np.floating)) else cell_text(v)[:40]
            for v in values.to_numpy(dtype=object)[:limit]]


def _id_text(value: Any) -> str:
    """One id as text: a whole number stored as a float (a column with a gap) as the number
    (``123.0`` -> ``"123"``), anything else as its stripped text."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return cell_text(value).strip()


def _id_cells(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """An id column as stripped text (missing as ""), and a mask of the cells that are no id: a
    list, dict, array, bytes that are not UTF-8, True/False, or a float too large to hold a
    whole number exactly (2**53 and above; float32: 2**24), whose neighbours it would merge
    with (their text is "")."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return (values.astype(object).where(values.notna(), "").astype(str).str.strip(),
                np.zeros(len(values), dtype=bool))
    cells = values.to_numpy(dtype=object)
    texts: list[str] = []
    bad = np.zeros(len(cells), dtype=bool)
    for i, v in enumerate(cells):
        if isinstance(v, (bytes, bytearray)):
            try:
                texts.append(bytes(v).decode("utf-8").strip())
            except UnicodeDecodeError:
                bad[i] = True
                texts.append("")
        elif (np.ndim(v) != 0 or isinstance(v, (dict, set, frozenset, bool, np.bool_))
              or (isinstance(v, (float, np.floating)) and np.isfinite(v)
                  and abs(v) >= 2.0 ** (np.finfo(type(v)).nmant + 1))):
            bad[i] = True
            texts.append("")
        else:
            texts.append("" if is_missing_scalar(v) else _id_text(v))
    return pd.Series(texts, index=values.index, dtype=object), bad


def unreadable_ids(values: pd.Series) -> np.ndarray:
    """(n,) bool: the cells of an id column that are no id (see :func:`validate_table`): a list,
    dict, array, bytes that are not UTF-8, True/False, or a float too large to hold a whole
    number exactly. Whole-number columns have none."""
    if values.dtype.kind in "iu":
        return np.zeros(len(values), dtype=bool)
    return _id_cells(values)[1]


def _id_texts(values: pd.Series, column: str, where: str, table: pd.DataFrame) -> pd.Series:
    """An id column as stripped text; refuses cells that hold a list, dict, array or non-UTF-8 bytes."""
    texts, bad = _id_cells(values)
    if bad.any():
        shown = preview_cells(values[bad], 3)
        raise TableError(
            f"{where}column {column!r} holds {shown} at {describe_rows(table, bad)}; expected text "
            "ids (a list, dict, array, True/False, bytes that are not UTF-8 text, or a float too large "
            "to hold a whole number exactly is not an id)"
        )
    return texts


def placeholder_patient_ids(ids: pd.Series) -> np.ndarray:
    """Boolean mask of the rows whose patient id is missing or a placeholder.

    Placeholders are :data:`PLACEHOLDER_PATIENT_IDS` (stripped, case-blind) and any number equal
    to -1 or 0 however it is written ("-1.0", "000").
    """
    text = as_texts(ids).str.strip().str.lower()
    numbers = pd.to_numeric(text, errors="coerce")
    return (text.isin(PLACEHOLDER_PATIENT_IDS) | numbers.isin([-1, 0])).to_numpy()


def shared_lesion_ids(table: pd.DataFrame) -> pd.Series:
    """Lesion ids used by more than one patient -> how many patients use them (most first)."""
    if "lesion_id" not in table.columns:
        return pd.Series(dtype=int)
    ids = table[["patient_id", "lesion_id"]].astype(object)
    ids = ids[~is_blank(ids["lesion_id"])]
    ids = pd.DataFrame({c: as_texts(ids[c]) for c in ids.columns}, index=ids.index)
    counts = ids.groupby("lesion_id", sort=False)["patient_id"].nunique()
    return counts[counts > 1].sort_values(ascending=False, kind="stable")


def _warnshared_lesion_ids(table: pd.DataFrame, where: str) -> None:
    """Warn, naming them, about lesion ids that several patients share (see check_identity)."""
    shared = shared_lesion_ids(table)
    if not len(shared):
        return
    named = ", ".join(f"{lesion!r} is shared by {n} patients" for lesion, n in shared.head(3).items())
    more = f" (and {len(shared) - 3} more shared ids)" if len(shared) > 3 else ""
    warnings.warn(
        f"{where}lesion_id {named}{more}. dermctx reads a lesion id as one lesion across the "
        "table, so these patient ids are kept together as one person in splits, folds and "
        "counts. If lesion ids are numbered per patient (1, 2, 3... for each patient), pass "
        "lesion_ids='per_patient' (CLI: --lesion-ids per-patient)",
        DermctxWarning, stacklevel=3,
    )


def check_identity(table: pd.DataFrame, *, name: str | None = None) -> None:
    """Check the identity rules every dermctx step relies on; raise if one is broken.

    * no ``patient_id`` is missing or a placeholder (:func:`placeholder_patient_ids`): such rows
      are unknown patients, never one patient;
    * a ``lesion_id`` (when the column exists) names one lesion across the whole table. An id
      that several patients share therefore links them, as one person with two patient ids
      (splits keep them on one side; the cohort table counts one lesion). Since that is more
      often a per-patient counter (1, 2, 3... for each patient), a :class:`DermctxWarning`
      names the id and how many patients share it; ``validate_table(lesion_ids="per_patient")``
      reads such ids instead.

    :func:`validate_table` applies these rules (and offers explicit treatments); splitters and
    estimators that take a raw DataFrame call this so that every entry point follows them.

    Raises
    ------
    TableError
        Naming the rows with blank or placeholder patient ids.

    Warns
    -----
    DermctxWarning
        Naming the lesion ids shared by several patients and how many share each.
    """
    where = f"{name}: " if name else ""
    own = ("pass unknown_patients='own' to validate_table/read_table (CLI: --unknown-patients "
           "own) to make each such row its own patient")
    blank = is_blank(table["patient_id"])
    if blank.any():
        raise TableError(f"{where}column 'patient_id' is empty at {describe_rows(table, blank)}; "
                         f"every row needs a patient_id, or {own}")
    placeholder = placeholder_patient_ids(table["patient_id"])
    if placeholder.any():
        values = sorted({str(v).strip() for v in table["patient_id"][placeholder]})[:5]
        raise TableError(
            f"{where}column 'patient_id' holds placeholder values {values} (unknown patient) at "
            f"{describe_rows(table, placeholder)}; dermctx never reads them as one patient. Give "
            f"real patient ids, or {own}"
        )
    _warnshared_lesion_ids(table, where)


def _warn_outsized_patients(table: pd.DataFrame, where: str) -> None:
    """Warn when one patient holds > 5% of the rows (or melanomas) and > 5x the median patient."""
    rows = table.groupby("patient_id", sort=False).size()
    mel = table.loc[table["target"] == 1].groupby("patient_id", sort=False).size()  # >= 1 each
    for counts, what in ((rows, "rows"), (mel, "melanomas")):
        total = int(counts.sum())
        if len(counts) < 2:
            continue
        big = counts[(counts > 0.05 * total) & (counts > 5 * counts.median())]
        for patient, n in big.sort_values(ascending=False).head(3).items():
            warnings.warn(
                f"{where}patient {patient!r} holds {n} of {total} {what} ({n / total:.0%}; the "
                f"median patient holds {counts.median():g}); check that this id names one person "
                "and is not a placeholder for unknown patients",
                DermctxWarning, stacklevel=3,
            )


def normalise_metadata(frame: pd.DataFrame) -> tuple[dict[str, pd.Series], dict[str, np.ndarray]]:
    """The ``age``, ``sex`` and ``site`` columns of ``frame`` in the table's vocabulary.

    Returns ``(values, bad)``: for each of those columns present, ``values[col]`` is the column
    normalised as :func:`validate_table` stores it (age as float; sex and site lower-case; missing
    words such as "unknown" as missing), and ``bad[col]`` a boolean array marking the rows whose
    value is outside the vocabulary (age not a number in [0, 120], sex not in :data:`SEXES`, site
    not in :data:`SITES`). Missing values are never bad.
    """
    values: dict[str, pd.Series] = {}
    bad: dict[str, np.ndarray] = {}
    if "age" in frame.columns:
        # float64 even for nullable input (pd.NA would make the comparisons ambiguous); text,
        # dates, booleans and other objects are not ages
        age, not_number = to_numbers(frame["age"], booleans=False)
        with np.errstate(invalid="ignore"):
            bad["age"] = not_number | ((age < 0) | (age > 120)).to_numpy()
        values["age"] = age
    if "sex" in frame.columns:
        sex = normalise_sex(frame["sex"]).astype(object)
        bad["sex"] = (sex.notna() & ~sex.isin(SEXES)).to_numpy()
        values["sex"] = sex
    if "site" in frame.columns:
        site = _map_cells(frame["site"], _term)
        bad["site"] = (site.notna() & ~site.isin(SITES)).to_numpy()
        values["site"] = site
    return values, bad


def validate_table(
    table: pd.DataFrame,
    *,
    labelled: bool = False,
    name: str | None = None,
    unknown_patients: Literal["error", "own"] = "error",
    lesion_ids: Literal["global", "per_patient"] = "global",
    bad_ids: Literal["raise", "keep"] = "raise",
) -> pd.DataFrame:
    """Check a lesion table and return a normalised copy.

    The copy has every column of :data:`COLUMNS` (missing optional ones added as missing values,
    ``lesion_id`` defaulting to ``image_id``), ids as strings, ``age`` as float, ``sex`` and
    ``site`` lower-case, ``target`` as int (float with NaN when some targets are missing). The
    row order and every extra column are kept.

    Parameters
    ----------
    table : DataFrame
        The lesion table.
    labelled : bool
        Require a target on every row.
    name : str, optional
        The file the table came from, named in error messages.
    unknown_patients : {"error", "own"}
        What a missing or placeholder ``patient_id`` (``-1``, ``0``, ``unknown``, ``none``,
        ``nan``, empty...; :func:`placeholder_patient_ids`) means. ``"error"`` (default): raise,
        naming the rows. ``"own"``: each such row is its own patient, with ``patient_id``
        ``"unknown:<image_id>"`` (what merging ISIC 2019 rows, which have no patient ids, into
        ISIC 2020 needs). Such rows are never pooled into one patient.
    lesion_ids : {"global", "per_patient"}
        How to read ``lesion_id``. ``"global"`` (default): a lesion id names one lesion across
        the table; an id shared by several patients links them (one person under two ids) and
        is warned about, naming it and how many patients share it (:func:`check_identity`).
        ``"per_patient"``: ids are numbered within each patient (1, 2, 3... per patient); they
        are stored as ``"<patient_id>/<lesion_id>"`` so that every later step (splits, cohort
        table, ranker folds) sees one lesion per id.
    bad_ids : {"raise", "keep"}
        Rows that cannot be identified: a blank ``image_id``, a blank or placeholder
        ``patient_id`` (under ``unknown_patients="error"``), an ``image_id`` of an earlier row.
        ``"raise"`` (default): refuse the table, naming the rows. ``"keep"``: keep them as they
        are (a blank patient id as None) for a scorer that reports each as an error row
        (:meth:`ContextRanker.rank <dermctx.ContextRanker.rank>`, ``dermctx score``); every other
        check still applies, and fitting and splitting still refuse them.

    Warns
    -----
    DermctxWarning
        When lesion ids are shared by several patients (naming them), and when one patient
        holds more than 5% of the rows (or of the melanomas) and more than 5 times the median
        patient's count: usually a placeholder id under another name.

    Raises
    ------
    TableError
        Naming the column and rows at fault: a missing ``image_id``/``patient_id`` column, a
        column name given twice (or several levels of column names), blank or placeholder
        patient ids, blank image ids, an id cell holding a list, dict, array or bytes that are
        not UTF-8, a duplicate ``image_id``, ``target`` not 0/1, ``sex`` not male/female,
        ``age`` outside [0, 120] or not a number (text, a date, a boolean...), ``site`` outside
        :data:`SITES`, ``width``/``height`` not whole numbers >= 0; or an argument that is not
        one of the values above.
    """
    where = f"{name}: " if name else ""
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"{where}expected a pandas DataFrame, got {type(table).__name__}")
    refuse_duplicate_columns(table, name)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise TableError(
            f"{where}missing column(s) {missing}; a lesion table needs {list(REQUIRED_COLUMNS)} "
            f"(found columns {list(table.columns)[:20]})"
        )
    if not isinstance(labelled, (bool, np.bool_)):
        raise TableError(f"labelled={labelled!r}; expected True or False")
    if not isinstance(unknown_patients, str) or unknown_patients not in ("error", "own"):
        raise TableError(f"unknown_patients={unknown_patients!r}; expected 'error' or 'own'")
    if not isinstance(lesion_ids, str) or lesion_ids not in ("global", "per_patient"):
        raise TableError(f"lesion_ids={lesion_ids!r}; expected 'global' or 'per_patient'")
    if not isinstance(bad_ids, str) or bad_ids not in ("raise", "keep"):
        raise TableError(f"bad_ids={bad_ids!r}; expected 'raise' or 'keep'")
    keep = bad_ids == "keep"
    out = table.copy()  # the caller's index is kept; messages name 0-based row positions

    blank = is_blank(out["image_id"])
    if blank.any() and not keep:
        raise TableError(
            f"{where}column 'image_id' is empty at {describe_rows(out, blank)}; "
            "every row needs an image_id"
        )
    out["image_id"] = _id_texts(out["image_id"], "image_id", where, out)
    out["patient_id"] = _id_texts(out["patient_id"], "patient_id", where, out).where(
        ~is_blank(out["patient_id"]), None)
    if "lesion_id" in out.columns:
        out["lesion_id"] = _id_texts(out["lesion_id"], "lesion_id", where, out).where(
            ~is_blank(out["lesion_id"]), None)
    unknown = placeholder_patient_ids(out["patient_id"])
    if unknown.any() and unknown_patients == "own":
        own = UNKNOWN_PATIENT_PREFIX + out["image_id"]
        taken = own[unknown].isin(out.loc[~unknown, "patient_id"].astype(str).str.strip()).to_numpy()
        if taken.any():
            raise TableError(f"{where}patient id {own[unknown][taken].iloc[0]!r} (for an unknown "
                             "patient) is already a real patient's id; rename that patient")
        out["patient_id"] = out["patient_id"].astype(object).where(~unknown, own)
    elif unknown.any() and not keep:
        check_identity(out, name=name)  # raises, naming the rows
    blank_patient = is_blank(out["patient_id"])
    patient = out["patient_id"].astype(str).str.strip().astype(object)
    patient[blank_patient] = None
    out["patient_id"] = patient

    dup = out["image_id"].duplicated(keep=False).to_numpy() & ~is_blank(out["image_id"])
    if dup.any() and not keep:
        raise TableError(
            f"{where}column 'image_id' has duplicate values at {describe_rows(out, dup)}; "
            "each image must appear once"
        )

    if "lesion_id" not in out.columns:
        out["lesion_id"] = out["image_id"]
    else:
        blank = is_blank(out["lesion_id"])
        lesion = out["lesion_id"].astype(object).where(~blank, None)
        lesion = lesion.map(lambda v: v if v is None else str(v).strip())
        if lesion_ids == "per_patient":
            lesion = (out["patient_id"] + "/" + lesion.astype(str)).where(~blank, None)
        out["lesion_id"] = lesion.where(~blank, out["image_id"]).astype(str)
        _warnshared_lesion_ids(out, where)

    for col in ("age", "sex", "site"):
        if col not in out.columns:
            out[col] = np.nan if col == "age" else None
    values, bad = normalise_metadata(out)
    if bad["age"].any():
        raise TableError(
            f"{where}column 'age' has values outside [0, 120] or not numbers at "
            f"{describe_rows(out, bad['age'])} (values {preview_cells(out['age'][bad['age']])}); "
            "expected years in [0, 120] or missing"
        )
    if bad["sex"].any():
        raise TableError(
            f"{where}column 'sex' has unknown values {sorted(set(values['sex'][bad['sex']]))[:5]} at "
            f"{describe_rows(out, bad['sex'])}; expected one of {list(SEXES)} or missing"
        )
    if bad["site"].any():
        raise TableError(
            f"{where}column 'site' has unknown values {sorted(set(values['site'][bad['site']]))[:5]} at "
            f"{describe_rows(out, bad['site'])}; expected one of {list(SITES)} or missing "
            "(map raw terms with dermctx.table.normalise_site and keep them in 'site_detail')"
        )
    for col in ("age", "sex", "site"):
        out[col] = values[col]

    for col in ("width", "height"):  # pixels, when known
        if col in out.columns:
            pixels, odd = to_numbers(out[col], booleans=False)
            with np.errstate(invalid="ignore"):
                odd |= ((pixels != pixels.round()) | (pixels < 0) | (pixels >= 2**63)).to_numpy()
            if odd.any():
                raise TableError(
                    f"{where}column {col!r} has values {preview_cells(out[col][odd])} at "
                    f"{describe_rows(out, odd)}; expected a whole number of pixels >= 0 or missing"
                )

    # target
    if "target" not in out.columns:
        out["target"] = np.nan
    target, not_label = to_numbers(out["target"])
    not_label |= (target.notna() & ~target.isin([0, 1])).to_numpy()
    if not_label.any():
        raise TableError(
            f"{where}column 'target' has values other than 0/1 at {describe_rows(out, not_label)} "
            f"(values {preview_cells(out['target'][not_label])}); expected 1 (melanoma), 0, or missing"
        )
    if labelled and target.isna().any():
        miss = target.isna().to_numpy()
        raise TableError(
            f"{where}column 'target' is missing at {describe_rows(out, miss)}; "
            "this step needs a label (0/1) on every row"
        )
    out["target"] = target.astype(int) if target.notna().all() else target.astype(float)

    for col in ("diagnosis", "path", "source"):
        if col not in out.columns:
            out[col] = None
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    if out["source"].isna().all():
        out["source"] = "table"

    _warn_outsized_patients(out, where)
    ordered = [*COLUMNS, *[c for c in out.columns if c not in COLUMNS]]
    return out[ordered]


def __getattr__(name: str) -> Any:
    # deprecated: this module's LABEL_COLUMNS, a second meaning of label_guard.LABEL_COLUMNS
    if name == "LABEL_COLUMNS":
        warn_renamed("dermctx.table", "LABEL_COLUMNS",
                     "dermctx.table.TABLE_LABEL_COLUMNS (this layout's label columns) or "
                     "dermctx.label_guard.LABEL_COLUMNS (every source's, what models refuse)",
                     kind="", stacklevel=3)
        return TABLE_LABEL_COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
