"""ISIC 2019 Challenge: the training metadata and its one-hot ground truth, and the test metadata.

Column map (ISIC 2019 -> lesion table): ``image -> image_id``, ``age_approx -> age``, ``sex``,
``anatom_site_general -> site`` (archive terms; the raw term in ``site_detail``), ``lesion_id``.
The ground truth (``ISIC_2019_Training_GroundTruth.csv``: ``image`` and one 0/1 column per class,
MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK) gives ``target = MEL`` and ``diagnosis`` the class
name. It may be merged into the metadata file or given as a second file (``labels=``).

ISIC 2019 has no patient ids. As for HAM10000, ``patient_id`` is a proxy: the ``lesion_id``,
or ``"unknown:<image>"`` for the rows without one (each its own patient), and
:func:`dermctx.has_patient_context` is False: there is no lesion set to rank against.
"""

from __future__ import annotations

from os import PathLike

import pandas as pd

from dermctx._deprecation import renamed_parameters
from dermctx.io.source import OneHotTarget, Source, read_source

__all__ = ["CLASSES", "SOURCE", "read_isic2019"]

#: The ISIC 2019 ground-truth classes, in file order.
CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")

SOURCE = Source(
    name="isic2019",
    title="ISIC 2019 Challenge metadata",
    signatures=(frozenset({"image", "anatom_site_general"}), frozenset({"image", *CLASSES})),
    columns={"image": "image_id", "age_approx": "age", "anatom_site_general": "site"},
    id_columns=("image", "lesion_id"),
    targets=(OneHotTarget(CLASSES, positive="MEL"),),
    label_columns={c: "a one-hot ground-truth class" for c in CLASSES},
    patient_context=False,
    never_with=frozenset({"patient_id"}),
    patient_proxy="lesion_id",
    labels_file="image",
)


@renamed_parameters(csv="path", ground_truth="labels")
def read_isic2019(
    path: str | PathLike[str] | pd.DataFrame,
    labels: str | PathLike[str] | pd.DataFrame | None = None,
    image_dir: str | PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read ISIC 2019 metadata (with its ground truth) into a validated lesion table.

    Parameters
    ----------
    path : path or DataFrame
        ``ISIC_2019_Training_Metadata.csv`` or ``ISIC_2019_Test_Metadata.csv``, the ground-truth
        file alone, or the two merged. (``csv=`` is a deprecated alias.)
    labels : path or DataFrame, optional
        ``ISIC_2019_Training_GroundTruth.csv`` when it is a separate file (as ``labels=`` of
        :func:`dermctx.read_table`); every metadata row needs its ground-truth row (joined by
        ``image``). (``ground_truth=`` is a deprecated alias.)
    image_dir : path, optional
        Folder of the images, named ``<image>.jpg``; sets ``path`` and ``image_error``.

    Returns
    -------
    DataFrame
        The lesion table (``source == "isic2019"``), one row per metadata row, in file order;
        ``target`` missing when no ground truth is given; ``attrs["patient_context"] = False``.

    Raises
    ------
    TableError
        Unreadable files, a metadata row with no ground-truth row, one-hot values that are not
        a single 1, values outside the table's vocabulary; naming the rows.
    """
    return read_source(SOURCE, path, image_dir=image_dir, labels=labels)
