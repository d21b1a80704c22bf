"""DICOM round trip: JPEG + CSV -> DICOM files -> lesion table and pixels again.

Clinics store dermoscopy as DICOM (VL Photographic Image); datasets ship JPEG + CSV. This example
takes a few real ISIC 2020 JPEGs, wraps each in a DICOM file with its patient, age, sex and site
(``write_dicom_dir``: the JPEG bytes are stored unchanged, nothing is re-encoded), rebuilds the
lesion table from the DICOM headers alone (``read_dicom_dir``, no pixel decoding), joins the
labels from the CSV, and reads the pixels back (``read_dicom``: identical to the JPEG's; and
``load_image`` on a ``.dcm`` path, as a network input)::

    python examples/dicom_workflow.py                 # 4 images, into a temporary folder
    python examples/dicom_workflow.py --n 10 --out dicoms/

Run ``python examples/dicom_workflow.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import dermctx

DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--n", type=int, default=4, help="number of images to convert (the smallest files first)")
    parser.add_argument("--out", type=Path, help="folder for the DICOM files (default: a temporary folder)")
    parser.add_argument("--size", type=int, default=224, help="side of the loaded image, pixels")
    args = parser.parse_args(argv)

    isic = args.data_dir / "isic2020"
    metadata = isic / "ISIC_2020_Training_GroundTruth_v2.csv"
    manifest = isic / "images" / "manifest.csv"
    for path in (metadata, manifest):
        if not path.is_file():
            sys.exit(f"data not found: {path}\n(pass --data-dir, or see ../shared/data/README.md)")

    # 1. a lesion table for a few JPEGs: the CSV rows of the images we have, with their paths
    files = pd.read_csv(manifest, dtype={"image_name": str}).sort_values("bytes", kind="stable")
    chosen = files["image_name"].head(args.n)
    csv = pd.read_csv(metadata, dtype={"image_name": str, "patient_id": str, "lesion_id": str})
    table = dermctx.read_isic2020(csv[csv["image_name"].isin(chosen)], image_dir=isic / "images")
    print(f"lesion table from JPEG + CSV: {len(table)} rows")
    print(table[["image_id", "patient_id", "age", "sex", "site", "target"]].to_string(index=False))

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out if args.out is not None else Path(tmp) / "dicom"

        # 2. one DICOM file per row; rows that cannot be written are listed, never dropped silently
        written, errors = dermctx.write_dicom_dir(table, out_dir, progress=False)
        print(f"\nwrote {len(written)} DICOM files to {out_dir} ({len(errors)} errors)")
        if len(errors):
            print(errors.to_string(index=False))

        # 3. the table again, from the DICOM headers only (patient, lesion, age, sex, site, size);
        #    labels are not stored in the DICOM, so they are joined from the CSV by image id
        dicom_table, read_errors = dermctx.read_dicom_dir(out_dir, labels=metadata)
        print(f"\nread back {len(dicom_table)} DICOM files ({len(read_errors)} errors):")
        print(dicom_table[["image_id", "patient_id", "age", "sex", "site", "width", "height", "target"]]
              .to_string(index=False))
        same = table.set_index("image_id")[["patient_id", "sex", "site", "target"]].sort_index()
        back = dicom_table.set_index("image_id")[["patient_id", "sex", "site", "target"]].sort_index()
        fields_match = same.astype(str).equals(back.astype(str))
        print(f"patient, sex, site and label match the CSV: {fields_match}")

        # 4. pixels from a .dcm path. read_dicom gives the full-resolution pixels, bit for bit
        #    Pillow's decode of the original JPEG (its bytes are stored unchanged).
        first = dicom_table.iloc[0]
        jpeg = table.loc[table["image_id"] == first["image_id"], "path"].iloc[0]
        pixels, meta = dermctx.read_dicom(first["path"])
        with Image.open(jpeg) as im:
            original = np.asarray(im.convert("RGB"))
        print(f"\nread_dicom({Path(first['path']).name!r}) -> {pixels.shape} {pixels.dtype}, "
              f"patient {meta['patient_id']}")
        print(f"full-resolution pixels identical to the JPEG's: {bool(np.array_equal(pixels, original))}")

        # load_image reads a .dcm path like any image: a square RGB array for a network
        from_dicom = dermctx.load_image(first["path"], args.size)
        from_jpeg = dermctx.load_image(jpeg, args.size)
        diff = np.abs(from_dicom.astype(int) - from_jpeg.astype(int))
        print(f"load_image(..., {args.size}) -> shape {from_dicom.shape}, dtype {from_dicom.dtype}")
        # a JPEG is decoded at a reduced DCT scale before resizing (fast), a DICOM at full scale,
        # so the two resized arrays can differ slightly when the output is much smaller
        print(f"resized .dcm vs .jpg: mean |difference| {diff.mean():.3f}, max {diff.max()} (0-255 scale)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
