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

from dermctx._deprecation import renamed_parameters
from dermctx.io.source import DiagnosisTarget, Source, read_source

__all__ = ["DIAGNOSES", "SOURCE", "read_ham10000"]

#: The seven HAM10000 diagnosis codes.
DIAGNOSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

SOURCE = Source(
    name="ham10000",
    title="HAM10000 metadata",
    signatures=(frozenset({"lesion_id", "image_id", "dx"}),),
    columns={"dx": "diagnosis", "localization": "site"},
    id_columns=("lesion_id", "image_id"),
    targets=(DiagnosisTarget("dx", melanoma="mel", vocabulary=DIAGNOSES),),
    label_columns={"dx": "the diagnosis", "dx_type": "how the diagnosis was made (histology "
                   "for most melanomas)"},
    patient_context=False,
    never_with=frozenset({"patient_id"}),
    patient_proxy="lesion_id",
    proxy_required=True,
    image_extensions=(".jpg", ".jpeg", ".png"),
)


@renamed_parameters(csv="path")
def read_ham10000(
    path: str | PathLike[str] | pd.DataFrame,
    image_dir: str | PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read the HAM10000 metadata CSV into a validated lesion table.

    Parameters
    ----------
    path : path or DataFrame
        ``HAM10000_metadata.csv`` (or a frame read from it). Needs ``lesion_id``, ``image_id``
        and ``dx``; ``dx_type``, ``age``, ``sex`` and ``localization`` are used when present.
        (``csv=`` is a deprecated alias.)
    image_dir : path, optional
        Folder of the images, named ``<image_id>.jpg``. When given, ``path`` is set per row and
        ``image_error`` says why a row's image is unusable (missing where it is fine).

    Returns
    -------
    DataFrame
        One row per CSV row, in file order, with the lesion-table columns, ``patient_id`` equal
        to ``lesion_id`` (a proxy), ``diagnosis`` the ``dx`` code, ``source == "ham10000"``,
        ``dx_type``, ``site_detail``, and ``attrs["patient_context"] = False``.

    Raises
    ------
    TableError
        Missing file or column, a blank ``lesion_id`` or ``image_id`` (naming the rows), or a
        ``dx`` outside :data:`DIAGNOSES`.
    """
    return read_source(SOURCE, path, image_dir=image_dir)
