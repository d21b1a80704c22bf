"""Throw generated bad inputs at dermctx's public entry points; count what escapes.

Run by hand (about 20-40 minutes on 2 cores at the default size)::

    nice python benchmarks/fuzz_inputs.py [--scale 1.0] [--seed 0] [--workers 2]

Every input is a *bad* one, made by mutating a small valid input: table files of every
registered layout (CSV, ``.csv.gz``, Parquet) with broken bytes, encodings, headers, rows and
cells; DataFrames with odd Python objects, dtypes and column names; images and DICOM files with
broken bytes and header values out of range; bad argument values; the CLI commands called as
``dermctx.cli.main([...])``; and ``ContextRanker`` fit/predict/rank on bad tables.

For each entry point it counts the inputs tried and what happened to each:

* ``ok``: the call returned (and, for batch functions, lost no row);
* ``documented``: it raised a :class:`dermctx.DermctxError` subclass (for the CLI: it returned
  exit code 1 or 2, or argparse exited with 2, without a traceback);
* ``undocumented``: any other exception escaped (its type and a sample input are recorded);
* ``crash``: the process died (a signal, an abort in a native library): every call runs in a
  worker process, so a crash is counted and the worker restarted;
* ``hang``: the call ran past its time limit (the worker is killed and restarted);
* ``lost_rows``: a batch function returned without error but rows in != rows out + errors.

Writes ``benchmarks/results/fuzz_inputs.md`` and ``.json`` with the command and the date. The
counts are exact for the generated set (a fixed seed gives the same inputs), not estimates.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import decimal
import gzip
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# --- values --------------------------------------------------------------------------------------

#: Text that has broken a parser somewhere: numbers out of range or not quite numbers, missing
#: words, control characters, path tricks, long and non-ASCII text.
NASTY_TEXT: tuple[str, ...] = (
    "", " ", "nan", "NaN", "None", "NULL", "#N/A", "NA", "inf", "-inf", "Infinity", "1e400",
    "-1e400", "1e-400", "45.5", "-3", "0", "-0", "-1", "99999999999999999999999",
    "9223372036854775808", "-9223372036854775809", "18446744073709551616", "0x1F", "1_000",
    "１２", "True", "false", "[1, 2]", "{}", "{'a': 1}", "\x00", "a" * 3000, "😀", "1,5", "007",
    " 12 ", "\t", "'", '"', "\\", "../../etc/passwd", "/abs/path", "C:\\x", "unknown", "120.0001",
    "300", "male ", "FEMALE", "m", "x", "torso", "Torso ", "palms/soles", "head", "2020-01-01",
    "1e5", "NaT", "\u202e", "\r", "\n", "é", "mel", "MEL", "1.0", "0.5", "2", "-1.0", "  ",
    "nan nan", "0e0", "+1", "1.", ".5", "١٢", "ⅷ", "1/2", "p", "IP_0001", "ISIC_0000000",
)


def nasty_objects() -> list[Any]:
    """Python objects a DataFrame cell may hold that a CSV never does."""
    return [
        None, np.nan, pd.NA, pd.NaT, float("inf"), -float("inf"), 1e308, -0.0, 10**30, -(10**30),
        True, False, [1], [], {"a": 1}, (1, 2), set(), b"bytes", bytearray(b"ba"),
        decimal.Decimal("NaN"), decimal.Decimal("1e400"), complex(1, 2), np.datetime64("2020-01-01"),
        pd.Timestamp("2020-01-01"), pd.Timedelta("1D"), dt.date(2020, 1, 1), object(),
        np.array([1, 2]), np.int64(2**63 - 1), np.uint64(2**64 - 1), np.float16(1.5), "１２",
        "text", 45.5, -3, 0, 1, 121, 2, "1", "0", "male", "torso", np.float32("nan"), 1 + 0j,
        pd.Interval(0, 1), pd.Period("2020-01"), frozenset({1}), range(3), slice(1), Ellipsis,
    ]


# --- valid seeds, one per layout -----------------------------------------------------------------

SITES_RAW = ("anterior torso", "head/neck", "lower extremity", "upper extremity", "palms/soles")


def seed_frames() -> dict[str, pd.DataFrame]:
    """A small valid frame of every registered layout, all values as text (as a CSV holds them)."""
    ids = [f"ISIC_{i:07d}" for i in range(6)]
    pats = ["IP_1", "IP_1", "IP_2", "IP_2", "IP_3", "IP_3"]
    ages = ["45", "50", "", "70", "30", "35"]
    sexes = ["male", "female", "", "male", "female", "male"]
    tgt = ["0", "1", "0", "0", "1", "0"]
    onehot19 = {c: ["0"] * 6 for c in ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")}
    for i, c in enumerate(["MEL", "NV", "BCC", "NV", "MEL", "UNK"]):
        onehot19[c][i] = "1"
    onehot18 = {c: ["0"] * 6 for c in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")}
    for i, c in enumerate(["MEL", "NV", "BCC", "NV", "MEL", "DF"]):
        onehot18[c][i] = "1"
    frames = {
        "table": pd.DataFrame({"image_id": ids, "patient_id": pats, "lesion_id": [f"L{i}" for i in range(6)],
                               "age": ages, "sex": sexes, "site": ["torso", "head/neck", "", "torso",
                                                                     "palms/soles", "oral/genital"],
                               "target": tgt, "width": ["640"] * 6, "height": ["480"] * 6,
                               "cnn_score": ["0.1", "0.9", "0.2", "0.3", "0.8", "0.05"]}),
        "isic2020": pd.DataFrame({"image_name": ids, "patient_id": pats, "lesion_id": [f"IL_{i}" for i in range(6)],
                                  "sex": sexes, "age_approx": ages,
                                  "anatom_site_general_challenge": [*list(SITES_RAW), "torso"],
                                  "diagnosis": ["unknown", "melanoma", "nevus", "unknown", "melanoma", "nevus"],
                                  "benign_malignant": ["benign", "malignant", "benign", "benign", "malignant", "benign"],
                                  "target": tgt, "tfrecord": ["0", "1", "2", "-1", "3", "4"],
                                  "width": ["6000"] * 6, "height": ["4000"] * 6}),
        "ham10000": pd.DataFrame({"lesion_id": ["HAM_1", "HAM_1", "HAM_2", "HAM_3", "HAM_4", "HAM_5"],
                                  "image_id": ids, "dx": ["mel", "mel", "nv", "bkl", "bcc", "nv"],
                                  "dx_type": ["histo", "histo", "follow_up", "consensus", "histo", "confocal"],
                                  "age": ages, "sex": sexes,
                                  "localization": ["back", "face", "unknown", "trunk", "hand", "foot"]}),
        "isic2019": pd.DataFrame({"image": ids, "age_approx": ages, "anatom_site_general": [*list(SITES_RAW), ""],
                                  "lesion_id": ["BCN_1", "BCN_1", "", "BCN_2", "", "BCN_3"], "sex": sexes,
                                  **onehot19}),
        "isic2019_meta": pd.DataFrame({"image": ids, "age_approx": ages, "anatom_site_general": [*list(SITES_RAW), ""],
                                       "lesion_id": ["BCN_1", "BCN_1", "", "BCN_2", "", "BCN_3"], "sex": sexes}),
        "isic2018": pd.DataFrame({"image": ids, **onehot18}),
        "isic_archive": pd.DataFrame({"isic_id": ids, "patient_id": pats, "lesion_id": [f"IL_{i}" for i in range(6)],
                                      "age_approx": ages, "sex": sexes, "anatom_site_general": [*list(SITES_RAW), ""],
                                      "diagnosis_1": ["Benign", "Malignant", "Benign", "", "Malignant", "Benign"],
                                      "diagnosis_3": ["Nevus", "Melanoma Invasive", "", "", "Melanoma in situ", "Nevus"]}),
        "isic2024": pd.DataFrame({"isic_id": ids, "patient_id": pats, "target": tgt, "age_approx": ages,
                                  "sex": sexes, "anatom_site_general": [*list(SITES_RAW), "posterior torso"],
                                  "tbp_lv_A": ["20.1", "22.5", "19.0", "30.2", "25.0", "21.1"],
                                  "tbp_lv_location": ["Torso Back"] * 6, "tbp_tile_type": ["3D: white"] * 6,
                                  "clin_size_long_diam_mm": ["3.1", "5.2", "2.0", "4.4", "6.0", "2.2"],
                                  "iddx_full": ["Benign", "Malignant::Melanoma", "Benign", "Benign",
                                                "Malignant::BCC", "Benign"]}),
        "pad_ufes20": pd.DataFrame({"patient_id": ["PAT_1", "PAT_1", "PAT_2", "PAT_2", "PAT_3", "PAT_4"],
                                    "lesion_id": ["1", "2", "3", "4", "5", "6"],
                                    "img_id": [f"PAT_{i}_{i}_1.png" for i in range(6)],
                                    "diagnostic": ["MEL", "NEV", "BCC", "ACK", "SEK", "SCC"],
                                    "age": ages, "gender": ["MALE", "FEMALE", "", "MALE", "FEMALE", "MALE"],
                                    "region": ["ARM", "FACE", "BACK", "CHEST", "NOSE", "THIGH"],
                                    "biopsed": ["True"] * 6, "fitspatrick": ["2", "3", "", "1", "2", "4"]}),
    }
    return frames


GROUND_TRUTH_2019 = ("image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
SOURCE_NAMES = ("table", "isic2020", "ham10000", "isic2018", "isic2019", "isic_archive", "isic2024",
                "pad_ufes20")


# --- mutations -----------------------------------------------------------------------------------


class Gen:
    """A seeded source of bad inputs."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seeds = seed_frames()
        self.objects = nasty_objects()

    def pick(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def text(self) -> str:
        if self.chance(0.15):  # random unicode / bytes-ish text
            n = int(self.rng.integers(0, 12))
            return "".join(chr(int(c)) for c in self.rng.integers(1, 0x2FFF, n))
        return self.pick(NASTY_TEXT)

    # tables as text ---------------------------------------------------------------------------
    def mutate_rows(self, frame: pd.DataFrame) -> tuple[list[str], list[list[str]], bool, list[str]]:
        """Header, rows (text) and whether the row count is still known, plus what was done."""
        header = [str(c) for c in frame.columns]
        rows = frame.astype(str).to_numpy().tolist()
        known, done = True, []
        for _ in range(1 if self.chance(0.5) else int(self.rng.integers(1, 4))):
            kind = self.pick(("cell", "cell", "cell", "cell", "cell", "column_values", "dup_header", "blank_header",
                              "drop_column", "alias_column", "index_column", "ragged", "short_row",
                              "no_rows", "many_cells", "dup_row", "blank_row"))
            done.append(kind)
            if kind == "cell" and rows:
                r = int(self.rng.integers(len(rows)))
                if rows[r]:
                    rows[r][int(self.rng.integers(len(rows[r])))] = self.text()
            elif kind == "many_cells" and rows:
                for r in range(len(rows)):
                    for c in range(len(rows[r])):
                        if self.chance(0.3):
                            rows[r][c] = self.text()
            elif kind == "column_values" and rows:
                c = int(self.rng.integers(len(header)))
                value = self.text()
                for r in rows:
                    if c < len(r):
                        r[c] = value if self.chance(0.7) else self.text()
            elif kind == "dup_header" and len(header) > 1:
                i, j = self.rng.choice(len(header), 2, replace=False)
                header[j] = header[i]
            elif kind == "blank_header":
                header[int(self.rng.integers(len(header)))] = self.pick(("", " ", "Unnamed: 0", "nan", "0"))
            elif kind == "drop_column" and len(header) > 1:
                c = int(self.rng.integers(len(header)))
                header.pop(c)
                for r in rows:
                    if c < len(r):
                        r.pop(c)
            elif kind == "alias_column":
                name = self.pick(("gender", "age_approx", "image_name", "isic_id", "localization",
                                  "anatom_site_general", "image", "img_id", "location", "patient_id",
                                  "site", "path", "target", "source", "lesion_id", "emb_0000",
                                  "cnn_score", "tfrecord", "width", "height", "tbp_lv_B", "MEL"))
                header.append(name)
                for r in rows:
                    r.append(self.text())
            elif kind == "index_column":
                header.insert(0, self.pick(("Unnamed: 0", "")))
                vals = self.pick((lambda i: str(i), lambda i: str(i * 2), lambda i: "x", lambda i: "0"))
                for i, r in enumerate(rows):
                    r.insert(0, vals(i))
            elif kind == "ragged" and rows:
                r = int(self.rng.integers(len(rows)))
                rows[r] = rows[r] + [self.text() for _ in range(int(self.rng.integers(1, 4)))]
                known = False
            elif kind == "short_row" and rows:
                r = int(self.rng.integers(len(rows)))
                rows[r] = rows[r][: int(self.rng.integers(0, max(1, len(rows[r]) - 1)))]
                known = False
            elif kind == "no_rows":
                rows = []
            elif kind == "dup_row" and rows:
                rows.append(list(rows[int(self.rng.integers(len(rows)))]))
            elif kind == "blank_row":
                rows.insert(int(self.rng.integers(len(rows) + 1)), [""] * len(header))
                known = False  # pandas may skip a blank line
        return header, rows, known, done

    def csv_bytes(self, header: list[str], rows: list[list[str]]) -> tuple[bytes, bool, list[str]]:
        """Encode as CSV, sometimes broken; returns (bytes, rows still known, what was done)."""
        buf = io.StringIO()
        quoting = self.pick((csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC))
        writer = csv.writer(buf, quoting=quoting, lineterminator=self.pick(("\n", "\r\n")))
        writer.writerow(header)
        writer.writerows(rows)
        text, done, known = buf.getvalue(), [], True
        if self.chance(0.15):  # no quoting at all: embedded commas and newlines break rows
            text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
            done.append("unquoted")
            known = False
        encoding = self.pick(("utf-8",) * 6 + ("utf-8-sig", "latin-1", "utf-16", "cp1252", "utf-32"))
        try:
            data = text.encode(encoding)
        except UnicodeEncodeError:
            data = text.encode(encoding, errors="replace")
            known = False
        if encoding != "utf-8":
            done.append(encoding)
        if self.chance(0.2):
            data, what = self.mutate_bytes(data)
            done.append(what)
            known = False
        return data, known, done

    def mutate_bytes(self, data: bytes) -> tuple[bytes, str]:
        b = bytearray(data)
        kind = self.pick(("truncate", "flip", "insert", "nul", "cr", "random", "empty", "bom"))
        if kind == "truncate" and b:
            b = b[: int(self.rng.integers(len(b)))]
        elif kind == "flip" and b:
            for _ in range(int(self.rng.integers(1, 8))):
                i = int(self.rng.integers(len(b)))
                b[i] ^= 1 << int(self.rng.integers(8))
        elif kind == "insert":
            i = int(self.rng.integers(len(b) + 1))
            b[i:i] = self.rng.bytes(int(self.rng.integers(1, 30)))
        elif kind == "nul" and b:
            b[int(self.rng.integers(len(b)))] = 0
        elif kind == "cr":
            b = bytearray(bytes(b).replace(b"\n", b"\r"))
        elif kind == "random":
            b = bytearray(self.rng.bytes(int(self.rng.integers(0, 400))))
        elif kind == "empty":
            b = bytearray()
        elif kind == "bom":
            b = bytearray(b"\xef\xbb\xbf\xef\xbb\xbf") + b
        return bytes(b), kind

    def parquet_bytes(self, header: list[str], rows: list[list[str]]) -> tuple[bytes, bool, list[str]]:
        """Parquet of the rows, with some columns given odd Arrow types; sometimes broken bytes."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n, done, known = len(rows), [], True
        arrays = []
        for j in range(len(header)):
            col = [r[j] if j < len(r) else "" for r in rows]
            kind = self.pick(("text",) * 5 + ("float", "int", "bool", "timestamp", "binary",
                                             "list", "struct", "dictionary", "decimal", "null",
                                             "uint64", "float16", "duration"))
            try:
                if kind == "text":
                    arr = pa.array(col, pa.string())
                elif kind == "float":
                    arr = pa.array(self.rng.choice([0.0, 1.0, np.nan, np.inf, -np.inf, 45.5, 1e308, -3.0], n))
                elif kind == "int":
                    arr = pa.array(self.rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 300, 45], n), pa.int64())
                elif kind == "uint64":
                    arr = pa.array([2**64 - 1] * n, pa.uint64())
                elif kind == "float16":
                    arr = pa.array(np.full(n, 1.5, np.float16), pa.float16())
                elif kind == "bool":
                    arr = pa.array(self.rng.random(n) < 0.5)
                elif kind == "timestamp":
                    arr = pa.array([dt.datetime(2020, 1, 1)] * n, pa.timestamp("ns"))
                elif kind == "duration":
                    arr = pa.array([dt.timedelta(days=1)] * n, pa.duration("s"))
                elif kind == "binary":
                    arr = pa.array([s.encode("utf-8", "replace") + b"\xff" for s in col], pa.binary())
                elif kind == "list":
                    arr = pa.array([[1, 2]] * n, pa.list_(pa.int64()))
                elif kind == "struct":
                    arr = pa.array([{"a": 1}] * n)
                elif kind == "dictionary":
                    arr = pa.array(col, pa.string()).dictionary_encode()
                elif kind == "decimal":
                    arr = pa.array([decimal.Decimal("1.5")] * n, pa.decimal128(10, 2))
                else:
                    arr = pa.nulls(n)
            except Exception:
                arr = pa.array(col, pa.string())
                kind = "text"
            if kind != "text":
                done.append(f"{kind}:{header[j]}")
            arrays.append(arr)
        table = pa.Table.from_arrays(arrays, names=header) if arrays else pa.table({})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        if self.chance(0.25):
            data, what = self.mutate_bytes(data)
            done.append(what)
            known = False
        return data, known, done

    def table_file(self, layout: str | None = None) -> dict[str, Any]:
        """A bad table file of a layout: ``{"files", "path", "rows", "what", "layout"}``."""
        layout = layout or self.pick(tuple(self.seeds))
        header, rows, known, done = self.mutate_rows(self.seeds[layout].copy())
        container = self.pick(("csv", "csv", "csv", "gz", "parquet", "parquet", "txt", "bad_gz",
                               "odd_ext", "missing", "folder", "pq"))
        files: dict[str, bytes | None] = {}
        if container in ("csv", "txt", "gz", "bad_gz", "odd_ext"):
            data, k2, d2 = self.csv_bytes(header, rows)
            known, done = known and k2, done + d2
            if container == "gz":
                data = gzip.compress(data)
                if self.chance(0.3):
                    data, what = self.mutate_bytes(data)
                    done.append(f"gz_{what}")
                    known = False
            elif container == "bad_gz":
                data = self.pick((data, gzip.compress(data)[:-int(self.rng.integers(1, 20))], b"\x1f\x8b" + data))
                known = False
            name = {"csv": "t.csv", "txt": "t.txt", "gz": "t.csv.gz", "bad_gz": "t.csv.gz",
                    "odd_ext": self.pick(("t.xlsx", "t.json", "t", "t.CSV", "t.tsv", "t.csv.bz2"))}[container]
            files[name] = data
        elif container in ("parquet", "pq"):
            data, k2, d2 = self.parquet_bytes(header, rows)
            known, done = known and k2, done + d2
            name = "t.parquet" if container == "parquet" else "t.pq"
            files[name] = data
        elif container == "missing":
            name = "missing.csv"
        else:  # a folder where a file is expected
            name = "folder.csv"
            files["folder.csv/x.csv"] = b"image_id,patient_id\na,p\n"
        return {"files": files, "path": name, "rows": len(rows) if known else None,
                "what": [layout, container, *done], "layout": layout}

    # tables as DataFrames ---------------------------------------------------------------------
    def bad_frame(self, base: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
        """A canonical frame with odd objects, dtypes, column names or index."""
        frame = (base if base is not None else self.seeds["table"]).copy()
        done = []
        for _ in range(int(self.rng.integers(1, 4))):
            try:
                frame = self._frame_mutation(frame, done)
            except Exception:  # a mutation pandas itself refuses: try another
                continue
        return frame, done

    def _frame_mutation(self, frame: pd.DataFrame, done: list[str]) -> pd.DataFrame:
        kind = self.pick(("object", "object", "object", "column_objects", "dtype", "dup_column",
                          "odd_name", "index", "multiindex_columns", "empty", "numeric_text"))
        done.append(kind)
        cols = list(frame.columns)
        if kind == "object" and len(frame) and cols:
            c = self.pick(cols)
            r = int(self.rng.integers(len(frame)))
            col = frame[c].astype(object) if not isinstance(frame[c], pd.DataFrame) else None
            if col is None:
                return frame
            col.iloc[r] = self.pick(self.objects)
            frame[c] = col
            done[-1] = f"object:{c}"
        elif kind == "column_objects" and cols:
            c = self.pick(cols)
            obj = self.pick(self.objects)
            frame[c] = pd.Series([obj] * len(frame), index=frame.index, dtype=object)
            done[-1] = f"column_objects:{c}"
        elif kind == "dtype" and cols:
            c = self.pick(cols)
            try:
                kind2 = self.pick(("category", "Int64", "boolean", "string", "float32",
                                   "datetime", "sparse", "bool", "period", "complex"))
                if kind2 == "datetime":
                    frame[c] = pd.to_datetime(pd.Series(["2020-01-01"] * len(frame), index=frame.index))
                elif kind2 == "sparse":
                    frame[c] = pd.arrays.SparseArray([0.0] * len(frame))
                elif kind2 == "bool":
                    frame[c] = self.rng.random(len(frame)) < 0.5
                elif kind2 == "period":
                    frame[c] = pd.period_range("2020-01", periods=len(frame), freq="M")
                elif kind2 == "complex":
                    frame[c] = np.ones(len(frame), complex)
                elif kind2 in ("Int64", "boolean", "float32"):
                    frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(
                        {"Int64": "Float64", "boolean": "Float64", "float32": "float32"}[kind2])
                else:
                    frame[c] = frame[c].astype(kind2)
                done[-1] = f"dtype:{c}:{kind2}"
            except Exception:
                pass
        elif kind == "dup_column" and cols:
            c = self.pick(cols)
            frame = pd.concat([frame, frame[[c]]], axis=1)
            done[-1] = f"dup_column:{c}"
        elif kind == "odd_name" and cols:
            i = int(self.rng.integers(len(cols)))
            cols[i] = self.pick((0, 1.5, None, ("a", "b"), "", " site", "SITE", "Patient_ID", np.nan, b"x", True))
            frame.columns = cols
        elif kind == "index":
            frame.index = self.pick((
                [0] * len(frame), [f"r{i}" for i in range(len(frame))],
                pd.MultiIndex.from_arrays([range(len(frame)), range(len(frame))]),
                list(range(len(frame)))[::-1], [np.nan] * len(frame),
            ))
        elif kind == "multiindex_columns" and cols:
            frame.columns = pd.MultiIndex.from_arrays([[str(c) for c in cols], ["x"] * len(cols)])
        elif kind == "empty":
            frame = frame.iloc[:0] if self.chance(0.5) else frame.iloc[:, :0]
        elif kind == "numeric_text" and cols:
            c = self.pick(cols)
            frame[c] = [self.text() for _ in range(len(frame))]
        return frame


# --- images and DICOM ----------------------------------------------------------------------------


def seed_images(rng: np.random.Generator) -> dict[str, bytes]:
    from PIL import Image

    out = {}
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for fmt, name in (("JPEG", "a.jpg"), ("PNG", "a.png"), ("TIFF", "a.tif"), ("GIF", "a.gif"), ("BMP", "a.bmp")):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        out[name] = buf.getvalue()
    for mode, name in (("L", "grey.png"), ("RGBA", "rgba.png"), ("I;16", "deep.png"), ("P", "pal.png"),
                       ("1", "bits.png"), ("LA", "la.png"), ("CMYK", "cmyk.jpg")):
        buf = io.BytesIO()
        im = Image.fromarray(pixels).convert(mode if mode not in ("I;16",) else "I")
        if mode == "I;16":
            im = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        im.save(buf, "JPEG" if name.endswith(".jpg") else "PNG")
        out[name] = buf.getvalue()
    strip = Image.new("RGB", (3000, 1))  # a 1 x 3000 strip: a huge intermediate for "crop"
    buf = io.BytesIO()
    strip.save(buf, "PNG")
    out["strip.png"] = buf.getvalue()
    big = Image.new("L", (12000, 12000))  # 144 Mpx: past Pillow's bomb warning, a tiny file
    buf = io.BytesIO()
    big.save(buf, "PNG", optimize=True)
    out["bomb.png"] = buf.getvalue()
    exif = Image.fromarray(pixels).getexif()
    exif[0x0112] = 99  # an Orientation value that does not exist
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", exif=exif.tobytes())
    out["exif.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", progressive=True)
    out["progressive.jpg"] = buf.getvalue()
    return out


def seed_dicom(jpeg: bytes) -> bytes:
    from dermctx.io.dicom import write_dicom

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "a.jpg"
        src.write_bytes(jpeg)
        row = {"image_id": "ISIC_1", "patient_id": "IP_1", "lesion_id": "L1", "age": 45, "sex": "male",
               "site": "torso", "site_detail": "anterior torso", "source": "isic2020"}
        return write_dicom(src, row, Path(tmp) / "a.dcm").read_bytes()


DICOM_VALUES: dict[str, tuple[Any, ...]] = {
    "PatientAge": ("300Y", "045", "ABCY", "-01Y", "999D", "120M", "1e9Y", "nanY", "infY", " ", "045Y\x00",
                   "0000Y", "121Y", "999W", "", "45Y", "045y", "1441M", "045Y045Y", "Y", "-0Y"),
    "PatientSex": ("X", "male", "m", "\x00", "MF", "", "O", "U", "F ", "female", "1"),
    "PatientID": ("", " ", "-1", "unknown", "0", "\x00", "a" * 64, "IP_2", "nan"),
    "BodyPartExamined": ("", "TORSO", "HEAD", "PALM", "XYZ", "\x00", "anterior torso", "ARM"),
    "Rows": (0, 1, 65535, 24, None),
    "Columns": (0, 1, 65535, 32, None),
    "BitsAllocated": (0, 1, 16, 32, 8, None),
    "BitsStored": (0, 12, 16, 8),
    "PixelRepresentation": (1, 0, 2),
    "SamplesPerPixel": (0, 1, 4, 3),
    "PhotometricInterpretation": ("RGB", "MONOCHROME1", "PALETTE COLOR", "YBR_ICT", "XYZ", "", "CMYK"),
    "NumberOfFrames": ("2", "0", "-1", "x", "1"),
    "SOPInstanceUID": ("", "1.2.3", "x" * 64),
    "Modality": ("", "XC", "CT", "\x00"),
    "SeriesDescription": ("", "\x00", "a" * 64),
}


def mutate_dicom(gen: Gen, seed: bytes) -> tuple[bytes, list[str]]:
    """A DICOM with odd header values (and sometimes broken bytes)."""
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(io.BytesIO(seed))
    done = []
    for _ in range(int(gen.rng.integers(1, 4))):
        kind = gen.pick(("value", "value", "value", "site", "private", "transfer", "delete"))
        try:
            if kind == "value":
                key = gen.pick(tuple(DICOM_VALUES))
                value = gen.pick(DICOM_VALUES[key])
                if value is None:
                    if key in ds:
                        delattr(ds, key)
                else:
                    setattr(ds, key, value)
                done.append(f"{key}={value!r}"[:60])
            elif kind == "site":
                item = Dataset()
                item.CodeValue = gen.pick(("torso", "TORSO", "", "x" * 16, "palms/soles", "\x00"))
                item.CodingSchemeDesignator = gen.pick(("99DERMCTX", "SCT", ""))
                item.CodeMeaning = gen.pick(("torso", "Trunk", "", "xyz", "Anterior torso"))
                ds.AnatomicRegionSequence = [item] * int(gen.rng.integers(0, 3))
                done.append("site")
            elif kind == "private":
                block = ds.private_block(0x0011, "dermctx", create=True)
                block.add_new(int(gen.rng.integers(1, 5)), gen.pick(("UT", "LO", "OB", "US")),
                              gen.pick(("", "\x00", "a" * 2000, b"\xff\xfe", 5)))
                done.append("private")
            elif kind == "transfer":
                ds.file_meta.TransferSyntaxUID = gen.pick((
                    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70",
                    "1.2.840.10008.1.2.5", "1.2.3.4", "", "1.2.840.10008.1.2.4.90"))
                done.append("transfer")
            elif kind == "delete":
                key = gen.pick(("PixelData", "PatientID", "SOPInstanceUID", "Rows", "file_meta"))
                if key == "file_meta":
                    ds.file_meta = pydicom.dataset.FileMetaDataset()
                elif key in ds:
                    delattr(ds, key)
                done.append(f"del {key}")
        except Exception as exc:
            done.append(f"{kind} not set ({type(exc).__name__})")
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
        data = buf.getvalue()
    except Exception as exc:
        data = seed
        done.append(f"unsaved ({type(exc).__name__})")
    if gen.chance(0.25):
        data, what = gen.mutate_bytes(data)
        done.append(what)
    return data, done


# --- the work each input does, run in a worker process ------------------------------------------


def _abs(value: Any, where: Path) -> Any:
    """Strings starting with '@' name files of the task's folder."""
    if isinstance(value, str) and value.startswith("@"):
        return str(where / value[1:])
    if isinstance(value, list):
        return [_abs(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _abs(v, where) for k, v in value.items()}
    return value


def _write_files(files: dict[str, bytes | None], where: Path) -> None:
    for rel, data in files.items():
        path = where / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(data)


_STATE: dict[str, Any] = {}


def _fitted_ranker() -> Any:
    if "ranker" not in _STATE:
        import dermctx

        frame = ranker_seed(0)
        _STATE["ranker"] = dermctx.ContextRanker(random_state=0).fit(frame, frame["target"])
    return _STATE["ranker"]


def ranker_seed(seed: int, n_patients: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_patients * 5
    return pd.DataFrame({
        "image_id": [f"I{i:04d}" for i in range(n)], "patient_id": [f"P{i // 5}" for i in range(n)],
        "age": rng.integers(20, 80, n).astype(float), "sex": rng.choice(["male", "female"], n),
        "site": rng.choice(["torso", "head/neck", "lower extremity"], n), "cnn_score": rng.random(n),
        "target": (np.arange(n) % 4 == 0).astype(int),
    })


def do_task(task: dict[str, Any], where: Path) -> dict[str, Any]:
    """Run one input; returns ``{"status", "exc_type", "message", "lost"}`` (lost: rows)."""
    import dermctx

    _write_files(task.get("files", {}), where)
    entry, args = task["entry"], _abs(task.get("args", {}), where)
    lost = None
    if entry == "read_table":
        table = dermctx.read_table(args["path"], **args.get("kwargs", {}))
        if task.get("rows") is not None and len(table) != task["rows"]:
            lost = task["rows"] - len(table)
    elif entry == "read_source":
        from dermctx.io.registry import SOURCES
        from dermctx.io.source import read_source

        source = {s.name: s for s in SOURCES}[args["source"]]
        table = read_source(source, args["path"], **args.get("kwargs", {}))
        if task.get("rows") is not None and len(table) != task["rows"]:
            lost = task["rows"] - len(table)
    elif entry == "read_table_frame":
        table = dermctx.read_table(task["frame"], **args.get("kwargs", {}))
        if len(table) != len(task["frame"]):
            lost = len(task["frame"]) - len(table)
    elif entry == "validate_table":
        table = dermctx.validate_table(task["frame"], **args.get("kwargs", {}))
        if len(table) != len(task["frame"]):
            lost = len(task["frame"]) - len(table)
    elif entry == "read_isic_duplicates":
        dermctx.read_isic_duplicates(args["path"])
    elif entry == "read_embeddings":
        dermctx.read_embeddings(args["path"])
    elif entry == "load_image":
        out = dermctx.load_image(args["source"], args["size"], **args.get("kwargs", {}))
        size = args["size"]
        if not (isinstance(out, np.ndarray) and out.shape == (size, size, 3) and out.dtype == np.uint8):
            raise AssertionError(f"load_image returned {type(out).__name__} {getattr(out, 'shape', '')}")
    elif entry == "read_dicom":
        dermctx.read_dicom(args["path"], **args.get("kwargs", {}))
    elif entry == "read_dicom_dir":
        table, errors = dermctx.read_dicom_dir(args["path"], **args.get("kwargs", {}))
        lost = task["n_files"] - len(table) - len(errors)
    elif entry == "find_duplicates":
        frame = task["frame"].copy()
        if frame.columns.is_unique and not isinstance(frame.columns, pd.MultiIndex) and "path" in frame.columns:
            frame["path"] = pd.Series([_abs(p, where) for p in frame["path"]], index=frame.index, dtype=object)
        pairs, errors = dermctx.find_duplicates(frame, **args.get("kwargs", {}))
        if args.get("kwargs", {}).get("images", True) is True:
            stages = errors["stage"].isin(["path", "decode", "pixels"]).sum()
            lost = len(frame) - pairs.attrs["n_images"] - int(stages)
    elif entry.startswith("cli"):
        from dermctx.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args["argv"])
            except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                code = exc.code if isinstance(exc.code, int) else 2
        text = err.getvalue()
        if "Traceback" in text:
            return {"status": "undocumented", "exc_type": "traceback printed", "message": text[-300:]}
        if "internal error:" in text:
            line = next(ln for ln in text.splitlines() if "internal error:" in ln)
            return {"status": "undocumented", "exc_type": "internal error", "message": line[:300]}
        if code == 1 and not any(("error:" in ln or "failed" in ln) for ln in text.splitlines()):
            return {"status": "undocumented", "exc_type": "exit 1 without an error line", "message": text[-300:]}
        if code not in (0, 1, 2):
            return {"status": "undocumented", "exc_type": f"exit code {code!r}", "message": text[-300:]}
        if code != 0 and not text.strip():
            return {"status": "undocumented", "exc_type": "silent failure", "message": f"exit {code}"}
        return {"status": "ok" if code == 0 else "documented", "exc_type": None,
                "message": text.strip().splitlines()[-1][:300] if code else None}
    elif entry == "odd_path":
        fn = {"read_table": dermctx.read_table, "read_isic_duplicates": dermctx.read_isic_duplicates,
              "read_embeddings": dermctx.read_embeddings, "read_dicom": dermctx.read_dicom,
              "read_dicom_dir": dermctx.read_dicom_dir, "read_ham10000": dermctx.read_ham10000,
              "read_isic2020": dermctx.read_isic2020,
              "load_image": lambda p: dermctx.load_image(p, 16),
              "read_table(image_dir=)": lambda p: dermctx.read_table(where / "t.csv", image_dir=p),
              "read_table(labels=)": lambda p: dermctx.read_table(where / "t.csv", labels=p, source="isic2019"),
              "write_dicom": lambda p: dermctx.write_dicom(p, {"image_id": "a", "patient_id": "p"}, where / "o.dcm"),
              }[args["function"]]
        fn(args["value"])
    elif entry == "ranker_fit":
        dermctx.ContextRanker(random_state=0).fit(task["frame"], task["y"])
    elif entry in ("ranker_predict", "ranker_rank"):
        ranker = _fitted_ranker()
        if entry == "ranker_predict":
            ranker.predict_proba(task["frame"])
        else:
            scores, errors = ranker.rank(task["frame"])
            lost = len(task["frame"]) - len(scores) - len(errors)
    else:
        raise KeyError(f"unknown entry {entry}")
    return {"status": "ok" if not lost else "lost_rows", "lost": lost}


def _worker(conn: Connection, memory_gb: float) -> None:
    import resource
    import warnings

    if memory_gb:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from dermctx.errors import DermctxError

    base = Path(tempfile.mkdtemp(prefix="dermctx-fuzz-"))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            break
        if task is None:
            break
        where = base / f"t{task['id']}"
        where.mkdir()
        os.chdir(where)  # relative names ("." too) stay inside the task's folder
        try:
            result = do_task(task, where)
        except DermctxError as exc:
            result = {"status": "documented", "exc_type": type(exc).__name__, "message": str(exc)[:300]}
        except Exception as exc:  # what the benchmark is here to find
            tb = traceback.extract_tb(exc.__traceback__)
            frame = next((f for f in reversed(tb) if "/dermctx/" in f.filename), tb[-1] if tb else None)
            at = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}" if frame else "?"
            result = {"status": "undocumented", "exc_type": type(exc).__name__,
                      "message": f"{str(exc)[:300]} [at {at}]"}
        finally:
            os.chdir(base)
            shutil.rmtree(where, ignore_errors=True)
        conn.send(result)
    shutil.rmtree(base, ignore_errors=True)


class Pool:
    """Worker processes that each run one task at a time; a dead or stuck worker is replaced."""

    def __init__(self, n: int, memory_gb: float) -> None:
        self.ctx = mp.get_context("spawn")
        self.memory_gb = memory_gb
        self.workers: list[dict[str, Any]] = [self._start() for _ in range(n)]

    def _start(self) -> dict[str, Any]:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.memory_gb), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "task": None, "since": 0.0}

    def run(self, tasks: Iterator[dict[str, Any]], on_result: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
        tasks = iter(tasks)
        exhausted = False
        while True:
            for i, w in enumerate(self.workers):
                if w["task"] is None and not exhausted:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                        continue
                    w["task"], w["since"] = task, time.monotonic()
                    try:
                        w["conn"].send(task)
                    except (BrokenPipeError, OSError):
                        self._replace(i)
                        on_result(task, {"status": "crash", "exc_type": "worker gone before the task"})
            busy = [w for w in self.workers if w["task"] is not None]
            if not busy and exhausted:
                break
            ready = wait([w["conn"] for w in busy] + [w["proc"].sentinel for w in busy], timeout=1.0)
            now = time.monotonic()
            for i, w in enumerate(self.workers):
                if w["task"] is None:
                    continue
                task = w["task"]
                if w["conn"] in ready:
                    try:
                        result = w["conn"].recv()
                    except (EOFError, OSError):
                        result = None
                    if result is not None:
                        w["task"] = None
                        on_result(task, result)
                        continue
                if w["conn"] in ready or w["proc"].sentinel in ready or not w["proc"].is_alive():
                    w["proc"].join(timeout=5)
                    code = w["proc"].exitcode
                    self._replace(i)
                    on_result(task, {"status": "crash", "exc_type": f"exit code {code}",
                                     "message": "the worker process died"})
                elif now - w["since"] > task.get("timeout", 120):
                    w["proc"].kill()
                    w["proc"].join(timeout=5)
                    self._replace(i)
                    on_result(task, {"status": "hang", "exc_type": "timeout",
                                     "message": f"ran past {task.get('timeout', 120)} s"})

    def _replace(self, i: int) -> None:
        old = self.workers[i]
        with contextlib.suppress(Exception):
            old["conn"].close()
        if old["proc"].is_alive():
            old["proc"].kill()
            old["proc"].join(timeout=5)
        self.workers[i] = self._start()

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w["conn"].send(None)
        for w in self.workers:
            w["proc"].join(timeout=10)
            if w["proc"].is_alive():
                w["proc"].kill()


# --- the inputs ----------------------------------------------------------------------------------


def read_kwargs(gen: Gen) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if gen.chance(0.2):
        kwargs["source"] = gen.pick((*SOURCE_NAMES, "isic2021", "", "TABLE", None))
    if gen.chance(0.15):
        kwargs["unknown_patients"] = gen.pick(("own", "error", "ignore", None, 1))
    if gen.chance(0.1):
        kwargs["lesion_ids"] = gen.pick(("per_patient", "global", "per-patient", None))
    if gen.chance(0.1):
        kwargs["image_dir"] = gen.pick(("@nowhere", "@t.csv", "@imgs"))
    return kwargs


def tasks_read_table(gen: Gen, n: int) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        f = gen.table_file()
        kwargs = read_kwargs(gen)
        files = dict(f["files"])
        if kwargs.get("image_dir") == "@imgs":
            files["imgs/ISIC_0000000.jpg"] = b"\xff\xd8 not a jpeg"
        if gen.chance(0.1):  # a separate labels file, itself bad
            lab = gen.table_file("isic2019")
            files.update({f"labels_{k}": v for k, v in lab["files"].items()})
            kwargs["labels"] = f"@labels_{lab['path']}"
        yield {"entry": "read_table", "files": files, "args": {"path": f"@{f['path']}", "kwargs": kwargs},
               "rows": f["rows"], "what": f["what"] + [f"kwargs={sorted(kwargs)}"]}


def tasks_read_source(gen: Gen, n: int) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        f = gen.table_file()
        source = f["layout"] if f["layout"] in SOURCE_NAMES and gen.chance(0.7) else gen.pick(SOURCE_NAMES)
        if f["layout"] == "isic2019_meta":
            source = "isic2019"
        yield {"entry": "read_source", "files": f["files"],
               "args": {"path": f"@{f['path']}", "source": source}, "rows": f["rows"],
               "what": [*f["what"], f"as {source}"]}


def tasks_frames(gen: Gen, n: int, entry: str) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        base = gen.seeds["table"].copy()
        if gen.chance(0.5):
            base = base.assign(age=pd.to_numeric(base["age"], errors="coerce"),
                               target=pd.to_numeric(base["target"]),
                               width=pd.to_numeric(base["width"]), height=pd.to_numeric(base["height"]))
        frame, done = gen.bad_frame(base)
        kwargs: dict[str, Any] = {}
        if gen.chance(0.2):
            kwargs["unknown_patients"] = gen.pick(("own", "error", "x", None))
        if gen.chance(0.2):
            kwargs["lesion_ids"] = gen.pick(("per_patient", "global", "x", None))
        if entry == "validate_table" and gen.chance(0.2):
            kwargs["labelled"] = gen.pick((True, False, "yes", None, 1))
        if entry == "validate_table" and gen.chance(0.1):
            kwargs["name"] = gen.pick((None, "", 5, "x.csv"))
        yield {"entry": entry, "frame": frame, "args": {"kwargs": kwargs}, "what": [*done, f"kwargs={sorted(kwargs)}"]}


def tasks_duplicates_files(gen: Gen, n: int) -> Iterator[dict[str, Any]]:
    seed = pd.DataFrame({"image_name_1": ["ISIC_1", "ISIC_3"], "image_name_2": ["ISIC_2", "ISIC_4"]})
    seed2 = pd.DataFrame({"ISIC_id": ["ISIC_1"], "ISIC_id_paired": ["ISIC_2"], "partition": ["train"]})
    for _ in range(n):
        header, rows, _, done = gen.mutate_rows(gen.pick((seed, seed2)).copy())
        if gen.chance(0.3):
            data, _, d2 = gen.parquet_bytes(header, rows)
            name = "d.parquet"
        else:
            data, _, d2 = gen.csv_bytes(header, rows)
            name = gen.pick(("d.csv", "d.csv", "d.csv.gz", "d.txt"))
            if name.endswith(".gz") and gen.chance(0.5):
                data = gzip.compress(data)
        yield {"entry": "read_isic_duplicates", "files": {name: data}, "args": {"path": f"@{name}"},
               "what": done + d2}


def tasks_embeddings(gen: Gen, n: int) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {b"dermctx": json.dumps({"model": "m", "image_size": 8}).encode()}
    for _ in range(n):
        cols = {"image_id": pa.array(["a", "b"]), "emb_0000": pa.array([0.1, 0.2], pa.float32())}
        kind = gen.pick(("bytes", "no_meta", "bad_meta", "text_emb", "dup", "other_settings", "folder_file", "list"))
        files: dict[str, bytes | None] = {}
        table = pa.table(cols)
        if kind == "text_emb":
            table = pa.table({"image_id": pa.array(["a", "b"]), "emb_0000": pa.array(["x", "1e400"])})
        elif kind == "list":
            table = pa.table({"image_id": pa.array(["a", "b"]), "emb_0000": pa.array([[1.0], [2.0]])})
        elif kind == "dup":
            table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array([0.1, 0.2]), pa.array([0.3, 0.4])],
                                         names=["image_id", "emb_0000", "emb_0000"])
        if kind == "bad_meta":
            table = table.replace_schema_metadata({b"dermctx": gen.pick((b"{", b"[]", b"null", b"1", b"\xff"))})
        elif kind != "no_meta":
            table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        if kind == "bytes":
            data, _ = gen.mutate_bytes(data)
        files["store/part-00000-aa.parquet"] = data
        if kind == "other_settings":
            other = pa.table(cols).replace_schema_metadata({b"dermctx": json.dumps({"model": "n"}).encode()})
            buf = io.BytesIO()
            pq.write_table(other, buf)
            files["store/part-00001-bb.parquet"] = buf.getvalue()
        path = "@store" if kind != "folder_file" else "@store/part-00000-aa.parquet"
        if kind == "folder_file" and gen.chance(0.5):
            path = "@store/missing"
        yield {"entry": "read_embeddings", "files": files, "args": {"path": path}, "what": [kind]}


def tasks_load_image(gen: Gen, n: int, images: dict[str, bytes], dicom: bytes) -> Iterator[dict[str, Any]]:
    names = tuple(images)
    for _ in range(n):
        name = gen.pick((*names, "x.dcm"))
        data = dicom if name == "x.dcm" else images[name]
        done = [name]
        if gen.chance(0.5):
            data, what = gen.mutate_bytes(data)
            done.append(what)
        target = gen.pick((name, name, "noext", "x.jpg" if not name.endswith(".jpg") else "x.png", "x.dcm", "x.txt"))
        files: dict[str, bytes | None] = {target: data}
        source: Any = f"@{target}"
        kind = gen.pick(("path",) * 6 + ("row", "dict_nopath", "none", "int", "missing", "folder"))
        if kind == "row":
            source = {"image_id": "a", "path": f"@{target}"}
        elif kind == "dict_nopath":
            source = {"image_id": "a", "path": gen.pick((None, "", float("nan")))}
        elif kind == "none":
            source = None
        elif kind == "int":
            source = 5
        elif kind == "missing":
            source = "@missing.jpg"
        elif kind == "folder":
            files["sub"] = None
            source = "@sub"
        done.append(kind)
        size = gen.pick((8, 16, 32, 64, 224) * 3 + (0, -1, 1, 1.5, "32", True, None, np.int64(16)))
        kwargs: dict[str, Any] = {}
        if gen.chance(0.4):
            kwargs["aspect"] = gen.pick(("crop", "pad", "squash", "x", None, 1))
        if gen.chance(0.2):
            kwargs["colour_constancy"] = gen.pick(("shades_of_grey", "grey_world", "x", 1))
        yield {"entry": "load_image", "files": files,
               "args": {"source": source, "size": size, "kwargs": kwargs}, "what": [*done, f"size={size!r}", str(kwargs)]}


def tasks_read_dicom(gen: Gen, n: int, dicom: bytes) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        data, done = mutate_dicom(gen, dicom)
        kwargs = {}
        if gen.chance(0.15):
            kwargs["id_from"] = gen.pick(("auto", "stem", "dermctx", "PatientAge", "Rows", "nope", "", None, 5))
        name = gen.pick(("a.dcm", "a", "a.DCM", "a.jpg"))
        yield {"entry": "read_dicom", "files": {name: data}, "args": {"path": f"@{name}", "kwargs": kwargs},
               "what": [*done, str(kwargs), name]}


def tasks_read_dicom_dir(gen: Gen, n: int, dicom: bytes, jpeg: bytes) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        files: dict[str, bytes | None] = {}
        done = []
        n_files = 0
        for k in range(int(gen.rng.integers(1, 7))):
            kind = gen.pick(("good", "mutated", "mutated", "mutated", "random", "empty", "jpeg", "hidden", "sub"))
            done.append(kind)
            if kind == "good":
                files[f"d/f{k}.dcm"] = dicom
            elif kind == "mutated":
                files[f"d/f{k}.dcm"], what = mutate_dicom(gen, dicom)
                done.extend(what)
            elif kind == "random":
                files[f"d/f{k}.dcm"] = gen.rng.bytes(int(gen.rng.integers(0, 600)))
            elif kind == "empty":
                files[f"d/f{k}"] = b""
            elif kind == "jpeg":
                files[f"d/f{k}.jpg"] = jpeg
            elif kind == "hidden":
                files[f"d/.f{k}.dcm"] = dicom
                n_files -= 1
            else:
                files[f"d/sub/f{k}.dcm"] = dicom
            n_files += 1
        kwargs: dict[str, Any] = {}
        if gen.chance(0.3):
            kwargs["id_from"] = gen.pick(("auto", "stem", "dermctx", "AccessionNumber", "PatientID", "Rows", "x"))
        if gen.chance(0.2):
            kwargs["recursive"] = gen.pick((True, False))
            if kwargs["recursive"] is False:
                n_files -= sum(1 for k in files if k.startswith("d/sub/"))
        if gen.chance(0.2):
            lab = gen.table_file(gen.pick(("table", "isic2020", "ham10000")))
            files.update({f"labels_{k}": v for k, v in lab["files"].items()})
            kwargs["labels"] = f"@labels_{lab['path']}"
        path = "@d" if gen.chance(0.95) else gen.pick(("@missing", "@d/f0.dcm"))
        yield {"entry": "read_dicom_dir", "files": files, "args": {"path": path, "kwargs": kwargs},
               "n_files": n_files, "what": [*done, str(sorted(kwargs))][:12]}


DEDUP_ARGS: dict[str, tuple[Any, ...]] = {
    "threshold": (0.2, 0.0, 1.0, -1, 2, "x", None, float("nan"), float("inf"), True, [0.1], "0.2"),
    "search_radius": (8, 0, 64, -1, 65, "a", 2.5, None, True, np.int64(8)),
    "bands": ("auto", "x", 0, 1, 2, 8, 9, 2.5, None, True, "4", np.int64(3)),
    "embedding_threshold": (None, 0.1, "x", -1, float("nan"), 3, True),
    "embedding_prefix": ("emb_", "", 5, None, "zz_"),
    "images": (True, False, "yes", None, 0),
    "near": (True, False, "no", None),
    "n_jobs": (None, 1, 0, -1, "x", 2.5, True, 10**6),
    "progress": (False, None, "x"),
}


def tasks_find_duplicates(gen: Gen, n: int, images: dict[str, bytes]) -> Iterator[dict[str, Any]]:
    names = ("a.jpg", "a.png", "grey.png", "rgba.png", "deep.png", "strip.png", "pal.png", "exif.jpg", "cmyk.jpg")
    for _ in range(n):
        k = int(gen.rng.integers(1, 6))
        files: dict[str, bytes | None] = {}
        paths: list[Any] = []
        for i in range(k):
            name = gen.pick(names)
            data = images[name]
            if gen.chance(0.3):
                data, _ = gen.mutate_bytes(data)
            kind = gen.pick(("file",) * 5 + ("missing", "none", "nan", "folder", "blank", "int"))
            target = f"i{i}{Path(name).suffix}"
            if kind == "file":
                files[target] = data
                paths.append(f"@{target}")
            elif kind == "missing":
                paths.append("@nothing.jpg")
            elif kind == "folder":
                files[f"dir{i}"] = None
                paths.append(f"@dir{i}")
            else:
                paths.append({"none": None, "nan": float("nan"), "blank": " ", "int": 7}[kind])
        frame = pd.DataFrame({"image_id": [f"I{i}" for i in range(k)], "path": pd.Series(paths, dtype=object)})
        if gen.chance(0.3):
            frame["emb_0000"] = gen.rng.random(k)
            frame["emb_0001"] = gen.pick((gen.rng.random(k), [np.nan] * k, ["x"] * k, [0.0] * k))
        if gen.chance(0.15):
            frame, _ = gen.bad_frame(frame)
        kwargs = {}
        for key in gen.rng.choice(list(DEDUP_ARGS), int(gen.rng.integers(0, 4)), replace=False):
            kwargs[str(key)] = gen.pick(DEDUP_ARGS[str(key)])
        kwargs.setdefault("progress", False)
        if kwargs.get("n_jobs") == 10**6:
            kwargs["n_jobs"] = 64
        yield {"entry": "find_duplicates", "files": files, "frame": frame, "args": {"kwargs": kwargs},
               "what": [f"{k} rows", *[f"{a}={v!r}"[:40] for a, v in kwargs.items()]]}


CLI_COMMANDS = ("validate", "validate", "validate", "describe", "describe", "split", "split", "dedup",
                "dedup", "fit", "score", "score", "to-dicom", "bench", "embed", "train", "explain", None)


def tasks_cli(gen: Gen, n: int, model: dict[str, bytes], images: dict[str, bytes], dicom: bytes) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        command = gen.pick(CLI_COMMANDS)
        if gen.chance(0.3):  # a good table, so that bad arguments reach the command's body
            f = {"files": {"t.csv": ranker_seed(int(gen.rng.integers(100))).to_csv(index=False).encode()},
                 "path": "t.csv", "what": ["table", "valid"]}
        else:
            f = gen.table_file(gen.pick(("table", "table", "isic2020", "ham10000", "isic2019", "isic2024")))
        files = dict(f["files"])
        argv: list[str] = [command] if command else []
        if command is None:
            argv = [gen.pick(("", "nope", "--nope", "-h", "--version"))]
        elif command != "explain":
            argv.append(f"@{f['path']}")
        extra = {
            "validate": [["--out", "@out.csv"], ["--out", "@t.csv/x.csv"], ["--out", "@out.parquet"]],
            "describe": [["--by", gen.pick(("site", "nope", "patient_class", "age", "target"))],
                         ["--format", gen.pick(("md", "html", "tex", "pdf"))], ["--out", "@d/x.md"]],
            "split": [["--folds", gen.pick(("5", "0", "1", "-2", "x", "1000"))],
                      ["--random-state", gen.pick(("0", "x", "-1", "99999999999999999999"))],
                      ["--duplicates", gen.pick(("@missing.csv", "@t.csv", "@dups.csv"))]],
            "dedup": [["--threshold", gen.pick(("0.2", "-1", "x", "nan", "2"))], ["--exact-only"],
                      ["--embedding-threshold", gen.pick(("0.1", "x", "-1"))],
                      ["--jobs", gen.pick(("1", "0", "-1", "x"))], ["--layout", gen.pick(("training", "challenge", "x"))]],
            "fit": [["--out", "@model_out"], ["--score-col", gen.pick(("cnn_score", "nope", "age", "target"))],
                    ["--use-image-size"], ["--cnn", "@nowhere"]],
            "score": [["--model", gen.pick(("@model", "@model", "@nowhere", "@t.csv", "@empty"))],
                      ["--out", gen.pick(("@s.csv", "@s.parquet", "@missing/x/s.csv"))], ["--cnn", "@nowhere"]],
            "to-dicom": [["--out", "@dcm"], ["--image-dir", "@imgs"]],
            "bench": [["--n-boot", gen.pick(("10", "0", "-1", "x"))], ["--folds", gen.pick(("2", "0", "x"))],
                      ["--models", gen.pick(("cnn", "nope", "", "cnn,context"))], ["--seeds", gen.pick(("0", "x", ""))],
                      ["--no-progress"], ["--out", "@bench"]],
            "embed": [["--out", "@emb"], ["--no-pretrained"], ["--backbone", gen.pick(("resnet18", "nope_net"))],
                      ["--image-size", gen.pick(("16", "0", "-5", "x"))], ["--batch-size", gen.pick(("2", "0", "x"))],
                      ["--no-progress"], ["--image-dir", "@imgs"], ["--checkpoint", "@nowhere.safetensors"]],
            "train": [["--out", "@train"], ["--no-pretrained"], ["--epochs", gen.pick(("1", "0", "-1", "x"))],
                      ["--folds", gen.pick(("2", "0", "x"))], ["--backbone", gen.pick(("resnet18", "nope_net"))],
                      ["--image-size", gen.pick(("16", "0", "x"))], ["--image-dir", "@imgs"], ["--no-progress"]],
            "explain": [["@imgs/ISIC_0000000.jpg"], ["@x.dcm"], ["--checkpoint", gen.pick(("@nowhere.safetensors", "@t.csv"))],
                        ["--out", "@expl"]],
        }.get(command or "", [])
        if command in ("embed", "train"):
            argv += ["--no-pretrained", "--no-progress", "--backbone", "resnet18"]
        for opt in extra:
            if gen.chance(0.1 if opt[0] == "--cnn" else 0.4):
                argv += opt
        if command == "score" and "--model" not in argv:
            argv += ["--model", "@model"]
        if command in ("fit", "embed", "train", "to-dicom", "explain") and "--out" not in argv:
            argv += ["--out", "@out_dir"]
        if command == "explain" and "--checkpoint" not in argv:
            argv += ["--checkpoint", "@nowhere.safetensors"]
        if command == "bench":
            argv += ["--n-boot", "10", "--folds", "2", "--no-progress", "--out", "@bench"]
        if gen.chance(0.15) and command not in (None, "explain"):
            argv += gen.pick((["--unknown-patients", gen.pick(("own", "x"))], ["--lesion-ids", "per-patient"],
                              ["--source", gen.pick(("isic2020", "x", "table"))], ["--labels", "@t.csv"],
                              ["--image-dir", gen.pick(("@imgs", "@t.csv", "@nowhere"))]))
        files.update({f"model/{k}": v for k, v in model.items()})
        files["empty"] = None
        files["dups.csv"] = gen.pick((b"image_name_1,image_name_2\nISIC_0000000,ISIC_0000001\n", b"a,b\n\xff\n", b""))
        files["imgs/ISIC_0000000.jpg"] = images["a.jpg"] if gen.chance(0.5) else gen.mutate_bytes(images["a.jpg"])[0]
        files["imgs/ISIC_0000001.jpg"] = images["a.png"]
        files["x.dcm"] = dicom if gen.chance(0.5) else mutate_dicom(gen, dicom)[0]
        timeout = 300 if command in ("embed", "train", "bench", "explain") else 120
        yield {"entry": f"cli {command or '(no command)'}", "files": files, "args": {"argv": argv},
               "what": [*f["what"][:4], " ".join(a.replace("@", "") for a in argv)[:160]], "timeout": timeout}


def tasks_ranker(gen: Gen, n: int, entry: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        base = ranker_seed(i % 7 + 1)
        frame, done = gen.bad_frame(base) if gen.chance(0.85) else (base, ["valid"])
        y: Any = base["target"].to_numpy()
        if entry == "ranker_fit" and gen.chance(0.3):
            kind = gen.pick(("strings", "nan", "one_class", "short", "list", "none", "frame", "floats", "bool"))
            y = {"strings": np.array(["0", "1"] * (len(base) // 2), dtype=object),
                 "nan": np.where(np.arange(len(base)) == 0, np.nan, y),
                 "one_class": np.zeros(len(base), int), "short": y[:-1], "list": y.tolist(),
                 "none": None, "frame": base[["target"]], "floats": y + 0.5, "bool": y.astype(bool)}[kind]
            done.append(f"y={kind}")
        if entry == "ranker_fit":
            frame = frame.drop(columns=[c for c in frame.columns if isinstance(c, str) and c == "target"]) \
                if gen.chance(0.5) and not isinstance(frame.columns, pd.MultiIndex) else frame
        yield {"entry": entry, "frame": frame, "y": y, "what": done, "timeout": 120}


ODD_PATHS: tuple[Any, ...] = (None, 5, 1.5, b"t.csv", ["t.csv"], {"a": 1}, "a\x00b.csv", "a" * 5000,
                              "", ".", "/dev/null", "@", "@t.csv", "@nothing", "~/t.csv", "\u202et.csv",
                              True, np.nan, pd.NA)


def tasks_odd_paths(gen: Gen, n: int) -> Iterator[dict[str, Any]]:
    functions = ("read_table", "read_isic_duplicates", "read_embeddings", "read_dicom", "read_dicom_dir",
                 "read_ham10000", "read_isic2020", "load_image", "read_table(image_dir=)",
                 "read_table(labels=)", "write_dicom")
    files = {"t.csv": b"image,age_approx,anatom_site_general\nISIC_1,45,torso\n"}
    for _ in range(n):
        function, value = gen.pick(functions), gen.pick(ODD_PATHS)
        yield {"entry": "odd_path", "files": files, "args": {"function": function, "value": value},
               "what": [function, repr(value)[:40]]}


# --- the run -------------------------------------------------------------------------------------


#: How entry points are named in the results.
DISPLAY = {"read_table_frame": "read_table (DataFrame)", "ranker_fit": "ContextRanker.fit",
           "ranker_predict": "ContextRanker.predict_proba", "ranker_rank": "ContextRanker.rank",
           "read_source": "read_source (each layout)", "odd_path": "path arguments of odd types"}


def build_tasks(gen: Gen, scale: float, model: dict[str, bytes]) -> list[tuple[str, Iterator[dict[str, Any]]]]:
    images = seed_images(gen.rng)
    dicom = seed_dicom(images["a.jpg"])

    def k(n: int) -> int:
        return max(1, round(n * scale))

    return [
        ("read_table", tasks_read_table(gen, k(8000))),
        ("read_source", tasks_read_source(gen, k(2000))),
        ("read_table (DataFrame)", tasks_frames(gen, k(1500), "read_table_frame")),
        ("validate_table", tasks_frames(gen, k(2500), "validate_table")),
        ("read_isic_duplicates", tasks_duplicates_files(gen, k(500))),
        ("read_embeddings", tasks_embeddings(gen, k(300))),
        ("load_image", tasks_load_image(gen, k(2000), images, dicom)),
        ("read_dicom", tasks_read_dicom(gen, k(1500), dicom)),
        ("read_dicom_dir", tasks_read_dicom_dir(gen, k(500), dicom, images["a.jpg"])),
        ("odd path arguments", tasks_odd_paths(gen, k(300))),
        ("find_duplicates", tasks_find_duplicates(gen, k(1000), images)),
        ("cli", tasks_cli(gen, k(1000), model, images, dicom)),
        ("ContextRanker.fit", tasks_ranker(gen, k(250), "ranker_fit")),
        ("ContextRanker.predict_proba", tasks_ranker(gen, k(600), "ranker_predict")),
        ("ContextRanker.rank", tasks_ranker(gen, k(600), "ranker_rank")),
    ]


def saved_model() -> dict[str, bytes]:
    import dermctx

    frame = ranker_seed(0)
    ranker = dermctx.ContextRanker(random_state=0).fit(frame, frame["target"])
    with tempfile.TemporaryDirectory() as tmp:
        ranker.save(Path(tmp) / "m")
        return {str(p.relative_to(Path(tmp) / "m")): p.read_bytes() for p in (Path(tmp) / "m").rglob("*") if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every entry point's count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space limit per worker")
    parser.add_argument("--only", default=None, help="comma-separated entry groups to run")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz_inputs")
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    gen = Gen(args.seed)
    groups = build_tasks(gen, args.scale, saved_model())
    if args.only:
        keep = {g.strip() for g in args.only.split(",")}
        groups = [(name, it) for name, it in groups if name in keep]

    stats: dict[str, Counter] = defaultdict(Counter)
    samples: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    lost_rows: Counter = Counter()
    documented_kinds: dict[str, Counter] = defaultdict(Counter)
    done = 0

    def on_result(task: dict[str, Any], result: dict[str, Any]) -> None:
        nonlocal done
        entry = DISPLAY.get(task["entry"], task["entry"])
        status = result["status"]
        stats[entry]["tried"] += 1
        stats[entry][status] += 1
        if status == "documented":
            documented_kinds[entry][result.get("exc_type") or "exit 1/2"] += 1
        if status == "lost_rows":
            lost_rows[entry] += int(result.get("lost") or 0)
        if status in ("undocumented", "crash", "hang", "lost_rows"):
            key = f"{status}: {result.get('exc_type')}: {str(result.get('message'))[:80]}"
            if key not in samples[entry]:
                samples[entry][key] = {"status": status, "exc_type": result.get("exc_type"),
                                       "message": result.get("message"), "count": 0,
                                       "input": [str(w) for w in task.get("what", [])][:12]}
            samples[entry][key]["count"] += 1
        done += 1
        if done % 500 == 0:
            bad = sum(c["undocumented"] + c["crash"] + c["hang"] + c["lost_rows"] for c in stats.values())
            print(f"{done} inputs, {bad} findings, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    def all_tasks() -> Iterator[dict[str, Any]]:
        i = 0
        for _, it in groups:
            for task in it:
                task["id"] = i
                i += 1
                yield task

    pool = Pool(args.workers, args.memory_gb)
    try:
        pool.run(all_tasks(), on_result)
    finally:
        pool.close()
    wall = time.perf_counter() - t0

    statuses = ("ok", "documented", "undocumented", "crash", "hang", "lost_rows")
    per_entry = {e: {s: int(c[s]) for s in ("tried", *statuses)} for e, c in sorted(stats.items())}
    totals = {s: sum(v[s] for v in per_entry.values()) for s in ("tried", *statuses)}
    command = "python benchmarks/fuzz_inputs.py " + " ".join(sys.argv[1:])
    result = {
        "command": command.strip(), "date_utc": started.strftime("%Y-%m-%d %H:%M"),
        "wall_s": round(wall, 1), "seed": args.seed, "scale": args.scale, "workers": args.workers,
        "python": platform.python_version(), "totals": totals, "per_entry": per_entry,
        "lost_rows": dict(lost_rows), "documented_errors": {e: dict(c.most_common()) for e, c in documented_kinds.items()},
        "findings": {e: sorted(v.values(), key=lambda s: -s["count"]) for e, v in samples.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")

    lines = [
        "# Fuzzing the input boundary: generated bad inputs at every public entry point", "",
        f"Command: `{result['command']}`  ",
        f"Date (UTC): {result['date_utc']}; wall {wall / 60:.1f} min on {args.workers} worker processes; "
        f"seed {args.seed}; Python {result['python']}", "",
        "Every input is bad (a mutation of a small valid input); each call runs in a worker "
        "process, so a crash is counted, not fatal. *documented*: a `DermctxError` subclass (CLI: "
        "exit code 1 or 2 with a one-line message, no traceback); *undocumented*: any other "
        "exception; *lost rows*: a batch call returned with rows in != rows out + rows in its "
        "errors table.", "",
        f"**{totals['tried']:,} inputs: {totals['undocumented']} undocumented exceptions, "
        f"{totals['crash']} process crashes, {totals['hang']} hangs, {totals['lost_rows']} calls "
        f"that lost rows** ({totals['ok']:,} returned, {totals['documented']:,} documented errors).", "",
        "| entry point | inputs | returned | documented errors | undocumented | crashes | hangs | lost rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e, v in per_entry.items():
        lines.append(f"| {e} | {v['tried']:,} | {v['ok']:,} | {v['documented']:,} | {v['undocumented']} | "
                     f"{v['crash']} | {v['hang']} | {v['lost_rows']} |")
    lines.append(f"| **total** | **{totals['tried']:,}** | {totals['ok']:,} | {totals['documented']:,} | "
                 f"**{totals['undocumented']}** | **{totals['crash']}** | **{totals['hang']}** | **{totals['lost_rows']}** |")
    if any(result["findings"].values()):
        lines += ["", "## Findings (first sample of each)", ""]
        for e, found in result["findings"].items():
            for s in found:
                lines.append(f"- **{e}**, {s['status']} x{s['count']}: `{s['exc_type']}`: "
                             f"{str(s['message'])[:200]!r}; input: {', '.join(s['input'])[:200]}")
    lines += ["", "## Documented errors by type", ""]
    for e, kinds in sorted(result["documented_errors"].items()):
        lines.append(f"- {e}: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[8:8 + len(per_entry) + 3]))


if __name__ == "__main__":
    main()
