"""PAD-UFES-20 (Pacheco et al. 2020): smartphone clinical photos with patient metadata.

Column map (``metadata.csv`` -> lesion table): ``img_id -> image_id`` (the file name, with its
``.png``), ``patient_id``, ``lesion_id``, ``age``, ``gender -> sex``, ``region -> site`` (the
upper-case body regions mapped onto the ISIC 2020 sites; the raw term kept in ``site_detail``),
``diagnostic -> diagnosis`` (ACK, BCC, MEL, NEV, SCC, SEK), ``target = (diagnostic == "MEL")``.
The clinical questions (``itch``, ``grew``, ``bleed``...), ``fitspatrick``, the diameters and the
rest are kept as they are.

``biopsed`` is refused as a model input: every cancer in the set was biopsied, benign lesions
mostly not, so it gives the label away.

Read with :func:`dermctx.read_table`, which recognises the layout from its header, or
``read_table(path, source="pad_ufes20")`` to say so.
"""

from __future__ import annotations

from dermctx.io.source import DiagnosisTarget, Source

__all__ = ["DIAGNOSES", "SOURCE"]

#: The six PAD-UFES-20 diagnoses.
DIAGNOSES: tuple[str, ...] = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")

SOURCE = Source(
    name="pad_ufes20",
    title="PAD-UFES-20 metadata",
    signatures=(frozenset({"patient_id", "lesion_id", "img_id", "diagnostic"}),),
    columns={"img_id": "image_id", "gender": "sex", "region": "site", "diagnostic": "diagnosis"},
    id_columns=("patient_id", "lesion_id", "img_id"),
    targets=(DiagnosisTarget("diagnostic", melanoma="mel",
                             vocabulary=DIAGNOSES),),
    label_columns={"diagnostic": "the diagnosis",
                   "biopsed": "every cancer was biopsied, most benign lesions not"},
    # regions not among the ISIC/HAM terms dermctx knows; the lip goes with the face
    sites={"arm": "upper extremity", "forearm": "upper extremity", "thigh": "lower extremity",
           "nose": "head/neck", "lip": "head/neck"},
    image_extensions=(".png", ".jpg"),
)
