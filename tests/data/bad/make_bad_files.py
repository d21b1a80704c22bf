"""Write the small bad input files of this folder (each a few KB at most); run from the repo root.

    python tests/data/bad/make_bad_files.py

Each file is one kind of bad input that once escaped dermctx as an undocumented exception (or
would have). ``tests/test_fuzz_inputs.py`` reads every one and checks that a documented
:class:`dermctx.DermctxError` names the file (and the column and row where there is one).
The files are committed; this script records how they were made.
"""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from PIL import Image

HERE = Path(__file__).resolve().parent
HEADER = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,target,width,height\n"
ROW = "ISIC_0000001,IP_0000001,male,45,torso,0,6000,4000\n"


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def main() -> None:
    good = (HEADER + ROW + ROW.replace("0000001,IP", "0000002,IP")).encode()
    files: dict[str, bytes] = {
        # CSV bytes
        "ragged_row.csv": good + b"ISIC_0000003,IP_0000001,male,45,torso,0,6000,4000,extra,fields\n",
        "latin1_body.csv": HEADER.encode() + "ISIC_0000001,IP_0000001,male,45,t\xeate,0,6000,4000\n".encode("latin-1"),
        "utf16.csv": (HEADER + ROW).encode("utf-16"),
        "unclosed_quote.csv": HEADER.encode() + b'"ISIC_0000001,IP_0000001,male,45,torso,0,6000,4000\n',
        "empty.csv": b"",
        "duplicate_columns.csv": b"image_id,patient_id,site,site\nISIC_0000001,IP_0000001,torso,torso\n",
        # gzip
        "not_gzip.csv.gz": good,
        "truncated.csv.gz": gzip.compress(good * 20, mtime=0)[:60],
        # Parquet
        "corrupt.parquet": b"PAR1" + bytes(range(200)) + b"PAR1",
        "truncated.parquet": _parquet(pa.table({"image_id": ["ISIC_0000001"], "patient_id": ["IP_1"]}))[:-30],
        "duplicate_columns.parquet": _parquet(pa.Table.from_arrays(
            [pa.array(["ISIC_0000001"]), pa.array(["IP_1"]), pa.array(["torso"]), pa.array(["torso"])],
            names=["image_id", "patient_id", "site", "site"])),
        "binary_id.parquet": _parquet(pa.table({"image_id": pa.array([b"ISIC_1", b"\xff\xfe"], pa.binary()),
                                                "patient_id": ["IP_1", "IP_1"]})),
        "age_as_dates.parquet": _parquet(pa.table({"image_id": ["ISIC_1"], "patient_id": ["IP_1"],
                                                   "age": pa.array([np.datetime64("2020-01-01", "ns")])})),
        # values
        "width_45_5.csv": (HEADER + ROW + ROW.replace("0000001,IP", "0000002,IP").replace("6000", "45.5")).encode(),
        "width_1e400.csv": (HEADER + ROW.replace("6000", "1e400")).encode(),
        "width_too_big.csv": (HEADER + ROW.replace("6000", "99999999999999999999999")).encode(),
        "age_300.csv": (HEADER + ROW.replace(",45,", ",300,")).encode(),
        "one_hot_text.csv": (b"image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
                             b"ISIC_0000001,yes,0,0,0,0,0,0,0,0\n"),
        "one_hot_blank_row.csv": (b"image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
                                  b"ISIC_0000001,1,0,0,0,0,0,0,0,0\nISIC_0000002,,,,,,,,,\n"),
    }
    # DICOM: a tiny JPEG wrapped by write_dicom, then one header value out of range
    from dermctx.io.dicom import write_dicom

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "a.jpg"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(jpeg, "JPEG", quality=50)
        row = {"image_id": "ISIC_0000001", "patient_id": "IP_0000001", "age": 45, "sex": "male",
               "site": "torso"}
        seed = write_dicom(jpeg, row, Path(tmp) / "a.dcm").read_bytes()
    for name, key, value in (("age_300Y.dcm", "PatientAge", "300Y"), ("sex_X.dcm", "PatientSex", "X"),
                             ("age_text.dcm", "PatientAge", "ABCY"), ("no_patient_id.dcm", "PatientID", "")):
        ds = pydicom.dcmread(io.BytesIO(seed))
        setattr(ds, key, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[name] = buf.getvalue()
    files["truncated.dcm"] = seed[: len(seed) // 2]
    files["not_dicom.dcm"] = b"\x00" * 128 + b"DICM" + bytes(range(64))
    for name, data in files.items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
