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

Read with :func:`dermctx.read_table`, which recognises the layout from its header, or
``read_table(path, source="isic_archive")`` to say so.
"""

from __future__ import annotations

from dermctx.io.source import DiagnosisTarget, HierarchyTarget, Source

__all__ = ["MELANOMA_PATTERN", "SOURCE"]

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
