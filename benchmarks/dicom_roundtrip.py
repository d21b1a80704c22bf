"""Write every real ISIC 2020 JPEG in ../shared as DICOM and read it back; check pixels and header.

Run by hand (several minutes on 2 cores: the JPEGs are up to 6000x4000)::

    python benchmarks/dicom_roundtrip.py [--limit N]

Writes ``benchmarks/results/dicom_roundtrip.md`` and ``.json``: how many images decode from DICOM
to exactly Pillow's RGB decode of the JPEG (dermctx's integer YCbCr->RGB), how many would with
pydicom's floating-point conversion instead, whether ``read_dicom_dir`` rebuilds the CSV columns,
and timings. These are exact counts over a fixed set of files, not estimates, so they carry no
confidence interval.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.pixels import pixel_array
from tqdm import tqdm

from dermctx import read_dicom, read_dicom_dir, read_isic2020, write_dicom

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isic2020"
COLUMNS = ["image_id", "patient_id", "lesion_id", "age", "sex", "site", "site_detail",
           "diagnosis", "target"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the N smallest JPEGs")
    args = parser.parse_args()

    csv = DATA / "ISIC_2020_Training_GroundTruth_v2.csv"
    table = read_isic2020(csv, image_dir=DATA / "images")
    table = table[table["image_error"].isna()].reset_index(drop=True)
    table = table.assign(bytes=[Path(p).stat().st_size for p in table["path"]]).sort_values("bytes")
    if args.limit:
        table = table.head(args.limit)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for _, row in tqdm(list(table.iterrows()), desc="dicom round trip", unit="image"):
            t0 = time.perf_counter()
            dcm = write_dicom(row["path"], row, out / f"{row['image_id']}.dcm")
            t1 = time.perf_counter()
            pixels, meta = read_dicom(dcm)
            t2 = time.perf_counter()
            with Image.open(row["path"]) as im:
                reference = np.asarray(im.convert("RGB"))
            float_rgb = pixel_array(dcm, decoding_plugin="pillow")  # pydicom's own conversion
            rows.append({
                "image_id": row["image_id"], "pixels": reference.shape[0] * reference.shape[1],
                "write_s": t1 - t0, "read_s": t2 - t1,
                "equal": bool(np.array_equal(pixels, reference)),
                "float_values_off": int((float_rgb != reference).sum()),
                "header_ok": all(meta[c] == row[c] or (pd.isna(meta[c]) and pd.isna(row[c]))
                                 for c in COLUMNS[:7]),
            })
        t0 = time.perf_counter()
        rebuilt, errors = read_dicom_dir(out, labels=csv)
        dir_s = time.perf_counter() - t0
    rebuilt = rebuilt.set_index("image_id").loc[table["image_id"]].reset_index()
    same = rebuilt[COLUMNS].astype(object).fillna("<NA>").to_numpy() == \
        table[COLUMNS].astype(object).fillna("<NA>").to_numpy()

    res = pd.DataFrame(rows)
    result = {
        "images": len(res),
        "pixels_equal_to_pillow": int(res["equal"].sum()),
        "images_off_with_pydicom_float_conversion": int((res["float_values_off"] > 0).sum()),
        "values_off_with_pydicom_float_conversion": int(res["float_values_off"].sum()),
        "header_fields_intact": int(res["header_ok"].sum()),
        "read_dicom_dir_rows": len(rebuilt), "read_dicom_dir_errors": len(errors),
        "read_dicom_dir_cells_equal_to_csv": f"{int(same.sum())}/{same.size}",
        "read_dicom_dir_seconds": round(dir_s, 3),
        "median_write_ms": round(1000 * res["write_s"].median(), 1),
        "median_read_ms": round(1000 * res["read_s"].median(), 1),
        "median_read_ms_per_megapixel": round(1e9 * (res["read_s"] / res["pixels"]).median(), 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "dicom_roundtrip.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# DICOM round trip on the real ISIC 2020 JPEGs", "",
             "`python benchmarks/dicom_roundtrip.py" + (f" --limit {args.limit}" if args.limit else "") + "`",
             "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.items()]
    (results / "dicom_roundtrip.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
