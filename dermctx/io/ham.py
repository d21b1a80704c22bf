"""HAM10000 (Tschandl et al. 2018): the metadata CSV of 10,015 dermoscopic images.

Column map (HAM10000 -> lesion table): ``image_id``, ``lesion_id``, ``dx -> diagnosis`` (one of
akiec, bcc, bkl, df, mel, nv, vasc), ``target = (dx == "mel")``, ``dx_type`` (histo, follow_up,
consensus, confocal), ``age``, ``sex`` ("unknown" becomes missing), ``localization -> site``
(the 15 terms mapped onto the ISIC 2020 sites by :func:`dermctx.table.normalise_site`; the raw term
is kept in ``site_detail``).

HAM10000 has no patient ids. ``patient_id`` is therefore a *proxy*: the lesion id. It keeps all
images of one lesion together in a split, but two lesions of one person may still land on both
sides, and a "patient" holds a single lesion, so there is no patient context to rank against.
The table says so in two ways that downstream code checks with
:func:`dermctx.table.has_patient_context`: ``table.attrs["patient_context"] = False``, and
``source == "ham10000"`` on every row (which survives operations that drop ``attrs``, and CSV
round trips).
"""

from __future__ import annotations

from os import PathLike

import pandas as pd

from dermctx.errors import TableError
from dermctx.io._common import attach_image_paths, read_source_csv
from dermctx.table import normalise_site, validate_table

__all__ = ["DIAGNOSES", "read_ham10000"]

SOURCE = "ham10000"
#: The seven HAM10000 diagnosis codes.
DIAGNOSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
_REQUIRED = ("lesion_id", "image_id", "dx")


def read_ham10000(
    csv: str | PathLike[str] | pd.DataFrame,
    image_dir: str | PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read the HAM10000 metadata CSV into a validated lesion table.

    Parameters
    ----------
    csv : path or DataFrame
        ``HAM10000_metadata.csv`` (or a frame read from it). Needs ``lesion_id``, ``image_id``
        and ``dx``; ``dx_type``, ``age``, ``sex`` and ``localization`` are used when present.
    image_dir : path, optional
        Folder of the images, named ``<image_id>.jpg``. When given, ``path`` is set per row and
        ``image_error`` says why a row's image is unusable (missing where it is fine).

    Returns
    -------
    DataFrame
        One row per CSV row, in file order, with the lesion-table columns, ``patient_id`` equal
        to ``lesion_id`` (a proxy), ``source == "ham10000"``, ``dx_type``, ``site_detail``, and
        ``attrs["patient_context"] = False``.

    Raises
    ------
    TableError
        Missing file or column, a blank ``lesion_id`` or ``image_id`` (naming the rows), or a
        ``dx`` outside :data:`DIAGNOSES`.
    """
    frame, name = read_source_csv(csv, _REQUIRED, id_columns=("lesion_id", "image_id"),
                                  what="HAM10000")
    dx = frame["dx"].astype(object).where(frame["dx"].notna(), None)
    dx = dx.map(lambda v: None if v is None else str(v).strip().lower())
    bad = ~dx.isin(DIAGNOSES).to_numpy()
    if bad.any():
        rows = [int(i) for i in bad.nonzero()[0][:5]]
        raise TableError(
            f"{name}: column 'dx' has values {sorted(set(map(str, dx[bad])))[:5]} at rows {rows}; "
            f"expected one of {list(DIAGNOSES)}"
        )
    blank = (frame["lesion_id"].isna() | (frame["lesion_id"].astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        rows = [int(i) for i in blank.nonzero()[0][:5]]
        raise TableError(
            f"{name}: column 'lesion_id' is empty at rows {rows}; HAM10000 rows need a lesion_id "
            "(it stands in for the missing patient id)"
        )
    frame = frame.drop(columns=["dx"]).assign(diagnosis=dx.to_numpy(dtype=object))
    frame["target"] = (dx == "mel").astype(int).to_numpy()
    frame["patient_id"] = frame["lesion_id"]
    if "localization" in frame.columns:
        site, detail = normalise_site(frame["localization"])
        frame = frame.drop(columns=["localization"])
        frame["site"], frame["site_detail"] = site, detail
    frame["source"] = SOURCE
    table = validate_table(frame, name=name)
    if image_dir is not None:
        table = attach_image_paths(table, image_dir, name=name, extensions=(".jpg", ".jpeg", ".png"))
    table.attrs["patient_context"] = False
    return table
