"""ISIC 2018 Task 3: the one-hot ground truth of the 10,015 HAM10000 training images.

``ISIC2018_Task3_Training_GroundTruth.csv`` holds ``image`` and one 0/1 column per class (MEL,
NV, BCC, AKIEC, BKL, DF, VASC): ``target = MEL``, ``diagnosis`` the class name. There is no
metadata and no patient id: each image is its own patient (``"unknown:<image>"``) and
:func:`dermctx.has_patient_context` is False. Join the HAM10000 metadata for lesion ids.

Read with :func:`dermctx.read_table`, which recognises the layout from its header, or
``read_table(path, source="isic2018")`` to say so.
"""

from __future__ import annotations

from dermctx.io.source import OneHotTarget, Source

__all__ = ["CLASSES", "SOURCE"]

#: The ISIC 2018 Task 3 classes, in file order.
CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

SOURCE = Source(
    name="isic2018",
    title="ISIC 2018 Task 3 ground truth",
    signatures=(frozenset({"image", *CLASSES}),),
    columns={"image": "image_id"},
    id_columns=("image",),
    targets=(OneHotTarget(CLASSES, positive="MEL"),),
    label_columns={c: "a one-hot ground-truth class" for c in CLASSES},
    patient_context=False,
    never_with=frozenset({"patient_id"}),
)
