"""Build ``dermctx/data/isic2020_demo.parquet``, the real data behind ``dermctx demo``.

Run by hand from the repository root (needs ``../shared/data``)::

    python benchmarks/make_demo_data.py

It keeps the 23,299 ISIC 2020 training images of the 1,440 patients that have an out-of-fold
CNN score in ``isic2020/oof_effnet_b1_dev.csv`` and joins, per image:

* the ISIC 2020 v2 metadata (patient, lesion, age, sex, anatomic site, diagnosis, target);
* the original image size (``width``, ``height``) from ``train_with_image_sizes.csv``;
* the CNN's out-of-fold melanoma probability as ``cnn_score``.

The CNN's own ``fold`` column and the ``tfrecord`` split are left out on purpose: both leak the
label (see issue 3). Source: SIIM-ISIC 2020 Melanoma Classification, ISIC Archive,
doi:10.34970/2020-ds01, licence CC BY-NC 4.0 (see ``dermctx/data/README.md``).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from dermctx.table import normalise_site, validate_table

ROOT = Path(__file__).resolve().parents[1]


def build(isic_dir: Path) -> pd.DataFrame:
    oof = pd.read_csv(isic_dir / "oof_effnet_b1_dev.csv")
    meta = pd.read_csv(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv")
    sizes = pd.read_csv(isic_dir / "train_with_image_sizes.csv")[["image_name", "width", "height"]]
    df = oof[["image_name", "pred"]].merge(meta, on="image_name", how="left", validate="1:1")
    df = df.merge(sizes, on="image_name", how="left", validate="1:1")
    if df["patient_id"].isna().any() or df["width"].isna().any():
        raise SystemExit("some scored images have no metadata; check the input files")
    if (oof.set_index("image_name")["target"] != df.set_index("image_name")["target"]).any():
        raise SystemExit("targets of the scores and the metadata disagree")
    site, _ = normalise_site(df["anatom_site_general_challenge"])
    table = pd.DataFrame({
        "image_id": df["image_name"],
        "patient_id": df["patient_id"],
        "lesion_id": df["lesion_id"],
        "age": df["age_approx"],
        "sex": df["sex"],
        "site": site,
        "diagnosis": df["diagnosis"],
        "target": df["target"],
        "source": "isic2020",
        "width": df["width"].astype("int32"),
        "height": df["height"].astype("int32"),
        "cnn_score": df["pred"].astype("float32"),
    })
    table = validate_table(table, labelled=True, name="isic2020 demo")
    table = table.drop(columns=["path"])
    table = table.sort_values(["patient_id", "image_id"]).reset_index(drop=True)
    table["age"] = table["age"].astype("float32")
    table["target"] = table["target"].astype("int8")
    for col in ("image_id", "patient_id", "lesion_id", "sex", "site", "diagnosis", "source"):
        table[col] = table[col].astype(object)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isic-dir", type=Path, default=ROOT.parent / "shared" / "data" / "isic2020")
    parser.add_argument("--out", type=Path, default=ROOT / "dermctx" / "data" / "isic2020_demo.parquet")
    args = parser.parse_args()
    table = build(args.isic_dir)
    table.to_parquet(args.out, index=False, compression="zstd", compression_level=19)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    n_pat = table["patient_id"].nunique()
    print(f"{args.out}: {len(table)} images, {n_pat} patients, {int(table['target'].sum())} melanomas, "
          f"{args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest}")
    np.testing.assert_array_equal(pd.read_parquet(args.out)["image_id"], table["image_id"])


if __name__ == "__main__":
    main()
