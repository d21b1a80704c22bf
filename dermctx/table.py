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
from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from dermctx.errors import DermctxWarning, TableError

__all__ = [
    "COLUMNS",
    "LABEL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PLACEHOLDER_PATIENT_IDS",
    "REQUIRED_COLUMNS",
    "SEXES",
    "SITES",
    "check_identity",
    "describe_rows",
    "embedding_column_names",
    "embedding_columns",
    "has_patient_context",
    "normalise_metadata",
    "normalise_sex",
    "normalise_site",
    "placeholder_patient_ids",
    "shared_lesion_ids",
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
#: Columns that hold the label, are derived from it, or leak it (ISIC 2020's ``tfrecord`` marks
#: duplicates; a CNN's out-of-fold ``fold`` was stratified on the target). Models refuse them as
#: inputs, and benchmarks drop them before fitting.
LABEL_COLUMNS: tuple[str, ...] = (
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


def normalise_sex(values: pd.Series) -> pd.Series:
    """Lower-case sex values; "unknown", empty and NaN become missing. Other values are kept."""
    out = values.astype(object).where(values.notna(), None)
    out = out.map(lambda v: None if v is None else str(v).strip().lower())
    return out.map(lambda v: None if v is None or v in _MISSING_WORDS else v)


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


def _is_blank(series: pd.Series) -> np.ndarray:
    return (series.isna() | (series.astype(str).str.strip() == "")).to_numpy()


def placeholder_patient_ids(ids: pd.Series) -> np.ndarray:
    """Boolean mask of the rows whose patient id is missing or a placeholder.

    Placeholders are :data:`PLACEHOLDER_PATIENT_IDS` (stripped, case-blind) and any number equal
    to -1 or 0 however it is written ("-1.0", "000").
    """
    text = ids.astype(object).where(ids.notna(), "").astype(str).str.strip().str.lower()
    numbers = pd.to_numeric(text, errors="coerce")
    return (text.isin(PLACEHOLDER_PATIENT_IDS) | numbers.isin([-1, 0])).to_numpy()


def shared_lesion_ids(table: pd.DataFrame) -> pd.Series:
    """Lesion ids used by more than one patient -> how many patients use them (most first)."""
    if "lesion_id" not in table.columns:
        return pd.Series(dtype=int)
    ids = table[["patient_id", "lesion_id"]].astype(object)
    ids = ids[~_is_blank(ids["lesion_id"])].astype(str)
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
    blank = _is_blank(table["patient_id"])
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
        raw = frame["age"]
        # float64 even for nullable input (pd.NA would make the comparisons ambiguous)
        age = pd.to_numeric(raw, errors="coerce").astype(float)
        bad["age"] = (raw.notna() & ~_is_blank(raw) & age.isna()).to_numpy() | (
            (age < 0) | (age > 120)
        ).to_numpy()
        values["age"] = age
    if "sex" in frame.columns:
        sex = normalise_sex(frame["sex"]).astype(object)
        bad["sex"] = (sex.notna() & ~sex.isin(SEXES)).to_numpy()
        values["sex"] = sex
    if "site" in frame.columns:
        site = frame["site"].astype(object).where(frame["site"].notna(), None)
        site = site.map(lambda v: None if v is None or str(v).strip().lower() in _MISSING_WORDS
                        else str(v).strip().lower()).astype(object)
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

    Warns
    -----
    DermctxWarning
        When lesion ids are shared by several patients (naming them), and when one patient
        holds more than 5% of the rows (or of the melanomas) and more than 5 times the median
        patient's count: usually a placeholder id under another name.

    Raises
    ------
    TableError
        Naming the column and rows at fault: a missing ``image_id``/``patient_id`` column, blank
        or placeholder patient ids, blank image ids, a duplicate ``image_id``, ``target`` not 0/1, ``sex`` not male/female, ``age``
        outside [0, 120], or ``site`` outside :data:`SITES`.
    """
    where = f"{name}: " if name else ""
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"{where}expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise TableError(
            f"{where}missing column(s) {missing}; a lesion table needs {list(REQUIRED_COLUMNS)} "
            f"(found columns {list(table.columns)[:20]})"
        )
    if unknown_patients not in ("error", "own"):
        raise TableError(f"unknown_patients={unknown_patients!r}; expected 'error' or 'own'")
    if lesion_ids not in ("global", "per_patient"):
        raise TableError(f"lesion_ids={lesion_ids!r}; expected 'global' or 'per_patient'")
    dup_cols = sorted({str(c) for c in table.columns[table.columns.duplicated()]})
    if dup_cols:
        raise TableError(f"{where}column name(s) {dup_cols} appear more than once; expected one each")
    out = table.copy()  # the caller's index is kept; messages name 0-based row positions

    blank = _is_blank(out["image_id"])
    if blank.any():
        raise TableError(
            f"{where}column 'image_id' is empty at {describe_rows(out, blank)}; "
            "every row needs an image_id"
        )
    out["image_id"] = out["image_id"].astype(str).str.strip()
    unknown = placeholder_patient_ids(out["patient_id"])
    if unknown.any() and unknown_patients == "own":
        own = UNKNOWN_PATIENT_PREFIX + out["image_id"]
        taken = own[unknown].isin(out.loc[~unknown, "patient_id"].astype(str).str.strip()).to_numpy()
        if taken.any():
            raise TableError(f"{where}patient id {own[unknown][taken].iloc[0]!r} (for an unknown "
                             "patient) is already a real patient's id; rename that patient")
        out["patient_id"] = out["patient_id"].astype(object).where(~unknown, own)
    elif unknown.any():
        check_identity(out, name=name)  # raises, naming the rows
    out["patient_id"] = out["patient_id"].astype(str).str.strip()

    dup = out["image_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise TableError(
            f"{where}column 'image_id' has duplicate values at {describe_rows(out, dup)}; "
            "each image must appear once"
        )

    if "lesion_id" not in out.columns:
        out["lesion_id"] = out["image_id"]
    else:
        blank = _is_blank(out["lesion_id"])
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
            f"{describe_rows(out, bad['age'])} (values {list(out['age'][bad['age']][:5])}); "
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

    # target
    if "target" not in out.columns:
        out["target"] = np.nan
    target = pd.to_numeric(out["target"], errors="coerce")
    bad = (out["target"].notna() & target.isna()).to_numpy() | (
        target.notna() & ~target.isin([0, 1])
    ).to_numpy()
    if bad.any():
        raise TableError(
            f"{where}column 'target' has values other than 0/1 at {describe_rows(out, bad)} "
            f"(values {list(out['target'][bad][:5])}); expected 1 (melanoma), 0, or missing"
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
