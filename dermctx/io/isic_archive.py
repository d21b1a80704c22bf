"""ISIC archive exports: the metadata CSV the ISIC archive (and ``isic-cli``) writes.

Column map (archive -> lesion table): ``isic_id -> image_id``, ``patient_id``, ``lesion_id``,
``age_approx -> age``, ``sex``, ``anatom_site_general -> site`` (archive terms such as
``anterior torso``, ``posterior torso``, ``lateral torso`` map to ``torso``; the raw term is kept
in ``site_detail``). ``target`` is 1 for melanoma, from the diagnosis hierarchy
``diagnosis_1`` .. ``diagnosis_5`` (any level "Melanoma ..." or "... (Melanoma)") or, in older
exports, from ``diagnosis`` ("melanoma", "melanoma metastasis"); rows with no diagnosis are
unlabelled. ``diagnosis`` is the deepest level given. ``attribution``, ``copyright_license`` and
every other column are kept.

Archive exports name the patient where the contributor did; rows without a ``patient_id`` are
unknown patients, refused unless ``unknown_patients="own"`` (see :func:`dermctx.validate_table`).
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

import pandas as pd

from dermctx.io.source import DiagnosisTarget, HierarchyTarget, Source, read_source

__all__ = ["MELANOMA_PATTERN", "SOURCE", "read_isic_archive"]

#: A diagnosis term that names melanoma (full match, case-blind): "Melanoma in situ",
#: "Melanoma Invasive", "Melanoma, NOS", "melanoma metastasis", "... proliferations (Melanoma)".
MELANOMA_PATTERN = r"melanoma\b.*|.*\(melanoma\)"
HIERARCHY = tuple(f"diagnosis_{i}" for i in range(1, 6))

SOURCE = Source(
    name="isic_archive",
    title="ISIC archive export",
    signatures=(frozenset({"isic_id"}),),
    columns={"isic_id": "image_id", "age_approx": "age", "anatom_site_general": "site"},
    id_columns=("isic_id", "patient_id", "lesion_id"),
    targets=(HierarchyTarget(HIERARCHY, MELANOMA_PATTERN),
             DiagnosisTarget("diagnosis", MELANOMA_PATTERN)),
    label_columns={
        **{c: "the diagnosis hierarchy" for c in HIERARCHY},
        "diagnosis": "the diagnosis",
        "benign_malignant": "the label, coarser",
        "diagnosis_confirm_type": "how the diagnosis was made (histology for most melanomas)",
        "concomitant_biopsy": "whether a biopsy was taken (most melanomas)",
        "melanocytic": "part of the diagnosis",
        "mel_class": "melanoma only", "mel_type": "melanoma only", "mel_ulcer": "melanoma only",
        "mel_thick_mm": "melanoma only", "mel_mitotic_index": "melanoma only",
        "nevus_type": "nevi only",
    },
)


def read_isic_archive(
    csv: str | PathLike[str] | pd.DataFrame,
    image_dir: str | PathLike[str] | None = None,
    *,
    unknown_patients: Literal["error", "own"] = "error",
    lesion_ids: Literal["global", "per_patient"] = "global",
) -> pd.DataFrame:
    """Read an ISIC archive metadata export into a validated lesion table.

    Parameters
    ----------
    csv : path or DataFrame
        The export (needs ``isic_id``).
    image_dir : path, optional
        Folder of the images, named ``<isic_id>.jpg``; sets ``path`` and ``image_error``.
    unknown_patients, lesion_ids
        As in :func:`dermctx.validate_table`.

    Returns
    -------
    DataFrame
        The lesion table (``source == "isic_archive"``), one row per input row, in order.

    Raises
    ------
    TableError
        Unreadable file, missing ``isic_id``, no or placeholder patient ids (unless
        ``unknown_patients="own"``), values outside the table's vocabulary; naming the rows.
    """
    return read_source(SOURCE, csv, image_dir=image_dir, unknown_patients=unknown_patients,
                       lesion_ids=lesion_ids)
