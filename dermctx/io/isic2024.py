"""ISIC 2024 Challenge (SLICE-3D): ``train-metadata.csv`` of 3D total-body-photography tiles.

Column map (ISIC 2024 -> lesion table): ``isic_id -> image_id``, ``patient_id``, ``lesion_id``,
``age_approx -> age``, ``sex``, ``anatom_site_general -> site`` (archive terms; the raw term in
``site_detail``), ``iddx_full -> diagnosis``, ``target``. The lesion-visualiser features
(``tbp_lv_*``: CIELAB colour inside and outside the lesion, area, perimeter, eccentricity, border
and colour irregularity, symmetry, nevus confidence, 3D position) and
``clin_size_long_diam_mm`` are kept as float columns (``tbp_lv_location`` and
``tbp_lv_location_simple`` as text), with ``image_type``, ``tbp_tile_type``, ``attribution`` and
``copyright_license``.

**``target`` is the challenge's label: 1 = malignant** (melanoma, basal cell and squamous cell
carcinoma...), not melanoma alone; ``attrs["target_meaning"]`` says so, and
``diagnosis`` (``iddx_full``) tells them apart.

Label-derived, refused by every estimator: ``iddx_full``, ``iddx_1`` .. ``iddx_5`` (the
diagnosis hierarchy), ``mel_thick_mm`` and ``mel_mitotic_index`` (melanoma only), and
``tbp_lv_dnn_lesion_confidence``, which the official test metadata does not have.
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

import pandas as pd

from dermctx.io.source import BinaryTarget, Source, read_source

__all__ = ["SOURCE", "read_isic2024"]

SOURCE = Source(
    name="isic2024",
    title="ISIC 2024 (SLICE-3D) metadata",
    signatures=(frozenset({"isic_id", "patient_id", "tbp_lv_A"}),
                frozenset({"isic_id", "patient_id", "tbp_tile_type"})),
    columns={"isic_id": "image_id", "age_approx": "age", "anatom_site_general": "site",
             "iddx_full": "diagnosis"},
    id_columns=("isic_id", "patient_id", "lesion_id"),
    targets=(BinaryTarget("target"),),
    target_meaning="malignant (ISIC 2024: melanoma, basal cell or squamous cell carcinoma, ...)",
    label_columns={
        "target": "the label",
        "iddx_full": "the diagnosis", "diagnosis": "the diagnosis",
        **{f"iddx_{i}": "the diagnosis hierarchy" for i in range(1, 6)},
        "mel_thick_mm": "given for melanomas only",
        "mel_mitotic_index": "given for melanomas only",
        "tbp_lv_dnn_lesion_confidence": "in the training metadata only, not the test metadata",
    },
    numeric_prefixes=("tbp_lv_", "clin_size_long_diam_mm", "mel_thick_mm"),
    text_columns=("tbp_lv_location", "tbp_lv_location_simple"),
)


def read_isic2024(
    csv: str | PathLike[str] | pd.DataFrame,
    image_dir: str | PathLike[str] | None = None,
    *,
    unknown_patients: Literal["error", "own"] = "error",
    lesion_ids: Literal["global", "per_patient"] = "global",
) -> pd.DataFrame:
    """Read ISIC 2024 ``train-metadata.csv`` (or ``test-metadata.csv``) into a lesion table.

    A leading unnamed index column, as some tools write it, is dropped. Rows appended from
    other sources with every 2024 column empty are read like the others.

    Parameters
    ----------
    csv : path or DataFrame
        The metadata (needs ``isic_id``, ``patient_id`` and the ``tbp_*`` columns).
    image_dir : path, optional
        Folder of the images, named ``<isic_id>.jpg``; sets ``path`` and ``image_error``.
    unknown_patients, lesion_ids
        As in :func:`dermctx.validate_table`.

    Returns
    -------
    DataFrame
        The lesion table (``source == "isic2024"``), one row per input row, in file order.

    Raises
    ------
    TableError
        Unreadable file, a non-numeric ``tbp_lv_*`` value, values outside the table's
        vocabulary, identity problems; naming the column and rows.
    """
    return read_source(SOURCE, csv, image_dir=image_dir, unknown_patients=unknown_patients,
                       lesion_ids=lesion_ids)
