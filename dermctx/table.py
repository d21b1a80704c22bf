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

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from dermctx.errors import TableError

__all__ = [
    "COLUMNS",
    "LABEL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SEXES",
    "SITES",
    "describe_rows",
    "embedding_column_names",
    "embedding_columns",
    "has_patient_context",
    "normalise_metadata",
    "normalise_sex",
    "normalise_site",
    "read_table",
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
    "melanoma", "y", "mel",
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

#: Sources whose ``patient_id`` is a stand-in (HAM10000: the lesion id), not a real patient.
PROXY_PATIENT_SOURCES: frozenset[str] = frozenset({"ham10000"})


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


def normalise_site(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Map raw site terms to :data:`SITES`. Returns ``(site, site_detail)``.

    ``site_detail`` is the raw term (missing where the raw value is missing). A term dermctx does
    not know is kept as ``site`` as it is, so that :func:`validate_table` names it.
    """
    raw = values.astype(object).where(values.notna(), None)
    detail = raw.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())

    def to_site(v: str | None) -> str | None:
        if v is None or pd.isna(v):  # pandas may store the missing values as NaN
            return None
        key = v.lower()
        return _SITE_TERMS[key] if key in _SITE_TERMS else v

    return detail.map(to_site), detail


def embedding_column_names(dim: int, prefix: str = "emb_") -> list[str]:
    """``["emb_0000", "emb_0001", ...]``: the names of a ``dim``-wide embedding."""
    return [f"{prefix}{i:04d}" for i in range(dim)]


def embedding_columns(frame: pd.DataFrame, prefix: str = "emb_") -> list[str]:
    """The embedding columns of ``frame`` (those starting with ``prefix``), in column order."""
    return [c for c in frame.columns if isinstance(c, str) and c.startswith(prefix)]


def _is_blank(series: pd.Series) -> np.ndarray:
    return (series.isna() | (series.astype(str).str.strip() == "")).to_numpy()


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

    Raises
    ------
    TableError
        Naming the column and rows at fault: a missing ``image_id``/``patient_id`` column, blank
        ids, a duplicate ``image_id``, ``target`` not 0/1, ``sex`` not male/female, ``age``
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
    out = table.copy()  # the caller's index is kept; messages name 0-based row positions

    for col in ("image_id", "patient_id"):
        blank = _is_blank(out[col])
        if blank.any():
            raise TableError(
                f"{where}column {col!r} is empty at {describe_rows(out, blank)}; "
                f"every row needs a {col}"
            )
        out[col] = out[col].astype(str).str.strip()

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
        out["lesion_id"] = out["lesion_id"].astype(object).where(~blank, out["image_id"])
        out["lesion_id"] = out["lesion_id"].astype(str).str.strip()

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

    ordered = [*COLUMNS, *[c for c in out.columns if c not in COLUMNS]]
    return out[ordered]


def read_table(path: str | PathLike[str], *, image_dir: str | PathLike[str] | None = None
               ) -> pd.DataFrame:
    """Read a lesion table from a CSV or Parquet file, recognising its kind by its header.

    * a canonical dermctx table (``image_id``, ``patient_id`` columns): validated as it is;
    * an ISIC 2020 CSV (``image_name``, ``patient_id``): read with :func:`dermctx.read_isic2020`;
    * a HAM10000 CSV (``lesion_id``, ``image_id``, ``dx``): read with :func:`dermctx.read_ham10000`.

    ``image_dir`` is passed to the ISIC and HAM10000 readers to attach image paths.
    """
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".txt", ".gz"):
        try:
            frame = pd.read_csv(path, nrows=0)
        except Exception as exc:
            raise TableError(f"{path}: cannot be read as CSV ({exc})") from exc
        cols = set(frame.columns)
        if {"image_name", "patient_id"} <= cols:
            from dermctx.io.isic import read_isic2020

            return read_isic2020(path, image_dir=image_dir)
        if {"lesion_id", "image_id", "dx"} <= cols:
            from dermctx.io.ham import read_ham10000

            return read_ham10000(path, image_dir=image_dir)
        frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "lesion_id": str})
    else:
        raise TableError(f"{path}: unknown table format {suffix!r}; expected .csv or .parquet")
    return validate_table(frame, name=str(path))
