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

Read with :func:`dermctx.read_table`, which recognises the layout from its header, or
``read_table(path, source="isic2024")`` to say so.
"""

from __future__ import annotations

from dermctx.io.source import BinaryTarget, Source

__all__ = ["SOURCE"]

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
