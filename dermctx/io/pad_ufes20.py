"""PAD-UFES-20 (Pacheco et al. 2020): smartphone clinical photos with patient metadata.

Column map (``metadata.csv`` -> lesion table): ``img_id -> image_id`` (the file name, with its
``.png``), ``patient_id``, ``lesion_id``, ``age``, ``gender -> sex``, ``region -> site`` (the
upper-case body regions mapped onto the ISIC 2020 sites; the raw term kept in ``site_detail``),
``diagnostic -> diagnosis`` (ACK, BCC, MEL, NEV, SCC, SEK), ``target = (diagnostic == "MEL")``.
The clinical questions (``itch``, ``grew``, ``bleed``...), ``fitspatrick``, the diameters and the
rest are kept as they are.

``biopsed`` is refused as a model input: every cancer in the set was biopsied, benign lesions
mostly not, so it gives the label away.
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

import pandas as pd

from dermctx.io.source import DiagnosisTarget, Source, read_source

__all__ = ["DIAGNOSES", "SOURCE", "read_pad_ufes20"]

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


def read_pad_ufes20(
    csv: str | PathLike[str] | pd.DataFrame,
    image_dir: str | PathLike[str] | None = None,
    *,
    lesion_ids: Literal["global", "per_patient"] = "global",
) -> pd.DataFrame:
    """Read PAD-UFES-20 ``metadata.csv`` into a validated lesion table.

    Parameters
    ----------
    csv : path or DataFrame
        ``metadata.csv`` (needs ``patient_id``, ``lesion_id``, ``img_id``, ``diagnostic``).
    image_dir : path, optional
        Folder of the images, named by ``img_id``; sets ``path`` and ``image_error``.
    lesion_ids
        As in :func:`dermctx.validate_table`.

    Returns
    -------
    DataFrame
        The lesion table (``source == "pad_ufes20"``), one row per image, in file order.

    Raises
    ------
    TableError
        Unreadable file, a ``diagnostic`` outside :data:`DIAGNOSES`, an unknown region, values
        outside the table's vocabulary; naming the column and rows.
    """
    return read_source(SOURCE, csv, image_dir=image_dir, lesion_ids=lesion_ids)
