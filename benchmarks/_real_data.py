"""Load the shared SIIM-ISIC 2020 out-of-fold CNN scores as a lesion table (for the benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

SHARED = Path(os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def load_isic_oof(shared: Path = SHARED) -> pd.DataFrame:
    """The 23,299 lesions with a real EfficientNet-B1 out-of-fold probability (``cnn_score``).

    Joined with ISIC 2020 metadata (age, sex, site) and ``train_with_image_sizes.csv`` (width,
    height). The CNN's ``fold`` and ISIC's ``tfrecord`` columns leak the label and are dropped.
    """
    from dermctx.io.isic import read_isic2020

    isic = shared / "isic2020"
    oof = pd.read_csv(isic / "oof_effnet_b1_dev.csv")
    meta = read_isic2020(isic / "train_with_image_sizes.csv")
    meta = meta.drop(columns=[c for c in ("tfrecord", "fold", "benign_malignant", "patient_code") if c in meta.columns])
    oof = oof.rename(columns={"image_name": "image_id", "pred": "cnn_score"})[["image_id", "cnn_score"]]
    table = meta.merge(oof, on="image_id", how="inner", validate="one_to_one")
    return table.reset_index(drop=True)
