"""SIIM-ISIC 2020: the training and test metadata CSVs, and the duplicate-pair CSVs.

Column map (ISIC -> lesion table): ``image_name -> image_id``, ``patient_id``, ``lesion_id`` (v2
only; otherwise ``image_id``), ``age_approx -> age``, ``sex``,
``anatom_site_general_challenge -> site`` (raw term also in ``site_detail``), ``diagnosis``,
``target`` (missing for the test CSV). Every other column is kept as it is: ``benign_malignant``,
and in ``train_with_image_sizes.csv`` ``width``, ``height``, ``tfrecord`` and ``patient_code``.

``tfrecord`` is the 15-way patient-grouped fold used in the 2020 competition, and
``tfrecord == -1`` marks the 434 images that duplicate another one. Both describe the labels
and duplicates of the whole training set, so a model must never use them as features.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dermctx._deprecation import renamed_parameters
from dermctx.errors import TableError
from dermctx.io._common import read_csv_frame
from dermctx.io.source import BinaryTarget, Source, read_source
from dermctx.pairs import as_pairs

__all__ = ["SOURCE", "read_isic2020", "read_isic_duplicates", "write_isic_duplicates"]

SOURCE = Source(
    name="isic2020",
    title="SIIM-ISIC 2020 Challenge metadata",
    signatures=(frozenset({"image_name", "patient_id"}),),
    columns={
        "image_name": "image_id",
        "age_approx": "age",
        "anatom_site_general_challenge": "site",
        "anatom_site_general": "site",  # the ISIC archive's name for the same column
    },
    id_columns=("image_name", "patient_id", "lesion_id"),
    targets=(BinaryTarget("target"),),
    label_columns={
        "target": "the label",
        "diagnosis": "the diagnosis the label is derived from",
        "benign_malignant": "the label, coarser",
        "tfrecord": "a fold stratified on the label; -1 marks duplicates",
    },
    integer_columns=("width", "height"),
)


@renamed_parameters(csv="path")
def read_isic2020(
    path: str | PathLike[str] | pd.DataFrame,
    image_dir: str | PathLike[str] | None = None,
    *,
    unknown_patients: Literal["error", "own"] = "error",
    lesion_ids: Literal["global", "per_patient"] = "global",
) -> pd.DataFrame:
    """Read an ISIC 2020 metadata CSV into a validated lesion table.

    Reads the training ground truth (v1, and v2 with ``lesion_id``), ``train_with_image_sizes.csv``
    and the test CSV (no ``target`` column: ``target`` is then missing on every row). The site
    column may be ``anatom_site_general_challenge`` or the archive's ``anatom_site_general``.

    Parameters
    ----------
    path : path or DataFrame
        The ISIC CSV (or a frame read from one). Needs ``image_name`` and ``patient_id``.
        (``csv=`` is a deprecated alias.)
    image_dir : path, optional
        Folder of the JPEGs, named ``<image_name>.jpg``. When given, ``path`` is set per row and
        an ``image_error`` column says, per row, why the image is unusable (file not found, or a
        name that escapes the folder such as ``../../etc/passwd``), missing where it is fine.
        Rows are never dropped.
    unknown_patients, lesion_ids
        As in :func:`dermctx.validate_table` (placeholder patient ids such as ``-1`` are
        refused unless ``unknown_patients="own"``).

    Returns
    -------
    DataFrame
        One row per CSV row, in file order, with the lesion-table columns
        (:data:`dermctx.table.COLUMNS`), ``source == "isic2020"``, ``site_detail``, and every
        other CSV column kept.

    Raises
    ------
    TableError
        The file is missing or unreadable, lacks ``image_name``/``patient_id``, or a value is out
        of the table's vocabulary (naming the column and rows, e.g. a blank ``patient_id``).
    ImageError
        ``image_dir`` is not a folder.
    """
    return read_source(SOURCE, path, image_dir=image_dir, unknown_patients=unknown_patients,
                       lesion_ids=lesion_ids)


def read_isic_duplicates(path: str | PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Read an ISIC duplicate-pairs CSV as a canonical pairs frame.

    Accepts ``ISIC_2020_Training_Duplicates.csv`` (``image_name_1, image_name_2``) and
    ``ISIC_2020_Challenge_Duplicates_train_test.csv`` (``ISIC_id, ISIC_id_paired, partition``).

    Returns
    -------
    DataFrame
        Columns ``image_id_1 < image_id_2`` (see :func:`dermctx.pairs.as_pairs`), one row per pair,
        plus ``partition`` ("train"/"test") when the file has it.

    Raises
    ------
    TableError
        The file is missing or unreadable (as :func:`dermctx.read_table` reads CSV, ``.csv.gz``
        and Parquet files), has no pair columns or a column name twice, or a pair has a blank id.
    """
    if isinstance(path, pd.DataFrame):
        return as_pairs(path, name="<duplicates DataFrame>")
    id_cols = ("image_name_1", "image_name_2", "ISIC_id", "ISIC_id_paired", "image_id_1", "image_id_2")
    frame, name = read_csv_frame(path, id_columns=id_cols, what="duplicate-pairs CSV")
    return as_pairs(frame, name=name)


def write_isic_duplicates(
    pairs: pd.DataFrame,
    path: str | PathLike[str],
    layout: Literal["training", "challenge"] = "training",
) -> Path:
    """Write duplicate pairs in one of the two ISIC CSV layouts.

    Parameters
    ----------
    pairs : DataFrame
        Pairs in any layout :func:`dermctx.pairs.as_pairs` accepts. They are written in
        canonical order (first id < second id), one row per pair.
    path : path
        The CSV to write (parent folders are created).
    layout : {"training", "challenge"}
        ``"training"``: columns ``image_name_1, image_name_2``. ``"challenge"``: columns
        ``ISIC_id, ISIC_id_paired, partition``; ``pairs`` then needs a ``partition`` column.

    Returns
    -------
    Path
        ``path``.
    """
    canonical = as_pairs(pairs, name="write_isic_duplicates")
    if layout == "training":
        out = pd.DataFrame({
            "image_name_1": canonical["image_id_1"], "image_name_2": canonical["image_id_2"],
        })
    elif layout == "challenge":
        if "partition" not in canonical.columns:
            raise TableError(
                "write_isic_duplicates: layout 'challenge' needs a 'partition' column "
                f"(train/test); found columns {list(pairs.columns)}"
            )
        blank = canonical["partition"].isna().to_numpy()
        if blank.any():
            raise TableError(
                "write_isic_duplicates: column 'partition' is empty at pair rows "
                f"{np.flatnonzero(blank)[:5].tolist()}; expected 'train' or 'test'"
            )
        out = pd.DataFrame({
            "ISIC_id": canonical["image_id_1"],
            "ISIC_id_paired": canonical["image_id_2"],
            "partition": canonical["partition"],
        })
    else:
        raise TableError(f"write_isic_duplicates: unknown layout {layout!r}; expected 'training' or 'challenge'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path
