"""The registered sources, recognition by header, and :func:`read_table`.

Every public layout dermctx reads is one module of :mod:`dermctx.io` declaring a
:class:`~dermctx.io.source.Source`; :data:`SOURCES` lists them. :func:`read_table` reads the
header, picks the source whose signature fits best, says which one it chose, and reads the file
with :func:`~dermctx.io.source.read_source`. :func:`label_columns` gathers every source's
label-derived columns for the estimators' guard.

This module sees both the lesion table (:mod:`dermctx.table`) and the sources, so that neither
imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from os import PathLike
from typing import Literal

import pandas as pd

from dermctx.errors import TableError
from dermctx.io import ham, isic, isic2018, isic2019, isic2024, isic_archive, pad_ufes20
from dermctx.io._common import read_csv_frame
from dermctx.io.source import BinaryTarget, Source, read_source
from dermctx.table import COLUMNS, REQUIRED_COLUMNS, TABLE_LABEL_COLUMNS

__all__ = ["CANONICAL", "SOURCES", "detect_source", "label_columns", "read_table"]

logger = logging.getLogger("dermctx")

#: The lesion table itself (``image_id``, ``patient_id``, ...): read as it is.
CANONICAL = Source(
    name="table",
    title="dermctx lesion table",
    signatures=(frozenset(REQUIRED_COLUMNS),),
    targets=(BinaryTarget("target"),),
    label_columns={c: "holds, derives from or leaks the label" for c in TABLE_LABEL_COLUMNS},
)

#: Every registered source. A header matching several is read as the one whose matching
#: signature is largest (ISIC 2024 before the archive export, HAM10000 before the canonical).
SOURCES: tuple[Source, ...] = (
    CANONICAL,
    isic.SOURCE,
    ham.SOURCE,
    isic2018.SOURCE,
    isic2019.SOURCE,
    isic_archive.SOURCE,
    isic2024.SOURCE,
    pad_ufes20.SOURCE,
)


def _known_layouts() -> str:
    return "; ".join(
        f"{s.title} ({' or '.join(', '.join(sorted(sig)) for sig in s.signatures)})" for s in SOURCES
    )


def detect_source(columns: Collection[str], name: str = "table") -> Source:
    """The registered source a header belongs to (see :data:`SOURCES`).

    Raises
    ------
    TableError
        No source fits (listing the known layouts and the lesion-table columns), or two fit
        equally well.
    """
    scores = [(s.match(columns), s) for s in SOURCES]
    best = max(score for score, _ in scores)
    if best == 0:
        near = min(SOURCES, key=lambda s: len(s.missing(columns)) / len(min(s.signatures, key=len)))
        missing = near.missing(columns)
        hint = (f"missing column(s) {missing} of the {near.title} layout; "
                if len(missing) < len(min(near.signatures, key=len)) else "unknown table layout; ")
        raise TableError(
            f"{name}: {hint}found columns {list(columns)[:15]}. Known layouts: "
            f"{_known_layouts()}. A lesion table has the columns {list(COLUMNS)} "
            f"({list(REQUIRED_COLUMNS)} required)"
        )
    tied = [s for score, s in scores if score == best]
    if len(tied) > 1:
        raise TableError(f"{name}: the header fits several layouts ({[s.title for s in tied]}); "
                         f"pass source= (CLI: --source) with one of {[s.name for s in tied]}")
    return tied[0]


def read_table(
    path: str | PathLike[str] | pd.DataFrame,
    *,
    image_dir: str | PathLike[str] | None = None,
    labels: str | PathLike[str] | pd.DataFrame | None = None,
    source: str | None = None,
    unknown_patients: Literal["error", "own"] = "error",
    lesion_ids: Literal["global", "per_patient"] = "global",
    bad_ids: Literal["raise", "keep"] = "raise",
) -> pd.DataFrame:
    """Read any supported table (CSV, ``.csv.gz`` or Parquet), recognising its layout.

    The layouts (:data:`SOURCES`): the canonical lesion table, ISIC 2020, HAM10000, ISIC 2019
    (metadata, ground truth, or both), ISIC 2018 Task 3 ground truth, ISIC archive exports,
    ISIC 2024 (SLICE-3D) and PAD-UFES-20. The choice is logged (logger ``"dermctx"``) and
    stored in ``table.attrs["format"]``.

    Parameters
    ----------
    path : path or DataFrame
        The file, or a frame read from one.
    image_dir : path, optional
        Folder of the images: attaches ``path`` (and ``image_error``) by image id, the usual
        extensions and the source's own naming, for every layout.
    labels : path or DataFrame, optional
        A separate ground-truth file, for layouts that come as two files (ISIC 2019).
    source : str, optional
        A registered source name (``"isic2019"``...) to read as, instead of recognising it.
    unknown_patients, lesion_ids, bad_ids
        As in :func:`dermctx.validate_table`.

    Returns
    -------
    DataFrame
        The validated lesion table (see :func:`dermctx.io.source.read_source`).

    Raises
    ------
    TableError
        Missing or unreadable file (a ragged or unclosed CSV row, bytes that are not UTF-8, an
        empty file, a corrupt Parquet or gzip file, a folder), a column name given twice, an
        unknown layout (listing the known ones), ``source`` not a registered name, or any error
        of the source's reader (:func:`~dermctx.io.source.read_source`), naming the file,
        column and rows.
    ImageError
        ``image_dir`` is not a folder.
    """
    frame, name = read_csv_frame(path, id_columns=_ID_COLUMNS)
    if source is None:
        chosen = detect_source(frame.columns, name)
    else:
        by_name = {s.name: s for s in SOURCES}
        if not isinstance(source, str) or source not in by_name:
            raise TableError(f"source={source!r}: expected one of {sorted(by_name)}")
        chosen = by_name[source]
    logger.info("%s: read as %s (source %r)", name, chosen.title, chosen.name)
    table = read_source(chosen, frame, image_dir=image_dir, labels=labels,
                        unknown_patients=unknown_patients, lesion_ids=lesion_ids, name=name, bad_ids=bad_ids)
    return table


#: Id columns of every source, read as text whatever the layout turns out to be.
_ID_COLUMNS: tuple[str, ...] = tuple(sorted({c for s in SOURCES for c in (*s.id_columns, "image_id")}))


def label_columns() -> dict[str, str]:
    """Every label-derived column name (lower-case) of every source -> why it leaks the label."""
    out: dict[str, str] = {}
    for s in (*SOURCES[1:], SOURCES[0]):  # a source's own reason before the generic one
        for col, why in s.label_columns.items():
            out.setdefault(col.lower(), f"{why} ({s.title})")
    return out
