"""Helpers shared by the loaders: reading a source CSV, and attaching image paths safely."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from dermctx.errors import ImageError, TableError
from dermctx.table import describe_rows, refuse_duplicate_columns, to_numbers

logger = logging.getLogger("dermctx")

#: Extensions tried, in order, when looking for ``<image_id><ext>`` in an image folder.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".JPG", ".JPEG", ".png", ".PNG", ".dcm", ".DCM")


def _drop_index_column(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Drop a leading unnamed column holding 0..n-1 (a pandas index written to the file)."""
    if len(frame.columns) == 0 or not str(frame.columns[0]).startswith("Unnamed: 0"):
        return frame
    values, bad = to_numbers(frame.iloc[:, 0], booleans=False)
    if not bad.any() and values.notna().all() and (values == values.round()).all() and values.is_unique:
        logger.info("%s: dropped the leading unnamed index column", name)
        return frame.iloc[:, 1:]
    return frame


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception on one line, at most ``limit`` characters of message."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_bytes(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Decode cells holding bytes (Parquet binary columns) as UTF-8 text; refuse those that are not."""
    for col in frame.columns:
        values = frame[col]
        if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) not in ("bytes", "mixed"):
            continue
        cells = values.to_numpy(dtype=object)
        is_bytes = np.fromiter((isinstance(v, (bytes, bytearray)) for v in cells), bool, len(cells))
        if not is_bytes.any():
            continue
        decoded = cells.copy()
        bad = np.zeros(len(cells), dtype=bool)
        for i in np.flatnonzero(is_bytes):
            try:
                decoded[i] = bytes(cells[i]).decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
        if bad.any():
            raise TableError(f"{name}: column {col!r} holds bytes that are not UTF-8 text at "
                             f"{describe_rows(frame, bad)}; expected text (save the column as UTF-8 "
                             "strings)")
        frame[col] = pd.Series(decoded, index=frame.index, dtype=object)
    return frame


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    """Read a Parquet file, refusing repeated column names before pyarrow trips over them."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise TableError(f"{name}: column name(s) {dup} appear more than once; expected one each")
    return pd.read_parquet(path)


def read_csv_frame(
    csv: str | PathLike[str] | pd.DataFrame,
    *,
    id_columns: Sequence[str] = (),
    what: str = "lesion table",
) -> tuple[pd.DataFrame, str]:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.txt``) or Parquet file, or copy a DataFrame.

    This is the one place where table files become data: whatever pandas, pyarrow, gzip or the
    codecs raise while reading becomes a :class:`TableError` naming the file. Returns ``(frame,
    name)`` where ``name`` names the input in error messages. ``id_columns`` are read as strings
    so that ids such as ``"0012"`` keep their leading zeros. A leading unnamed column holding
    0..n-1 (an index written by pandas) is dropped; bytes cells (Parquet binary columns) are
    decoded as UTF-8 text.

    Raises
    ------
    TableError
        Naming the file: missing, a folder, of an unknown kind, unreadable (a ragged or unclosed
        CSV row, bytes that are not UTF-8, a corrupt or truncated Parquet or gzip file, an empty
        file), with a column name given twice or several levels of column names, or with bytes
        cells that are not UTF-8 text (naming the column and rows).
    """
    if isinstance(csv, pd.DataFrame):
        frame, name = csv.copy(), f"<{what} DataFrame>"
        refuse_duplicate_columns(frame, name)
    elif not isinstance(csv, (str, PathLike)):
        raise TableError(f"expected a {what} file path or a DataFrame, got {type(csv).__name__}")
    else:
        path = Path(csv)
        name = str(path)
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except (OSError, ValueError) as exc:  # a name the OS refuses (NUL byte, too long)
            raise TableError(f"{name!r}: not a usable file name ({_one_line(exc)})") from exc
        if is_dir:
            raise TableError(f"{name}: is a folder; expected a {what} CSV or Parquet file (read a "
                             "folder of DICOM files with dermctx.read_dicom_dir)")
        if not is_file:
            raise TableError(f"{name}: no such file (expected a {what} CSV or Parquet file)")
        suffixes = [s.lower() for s in path.suffixes[-2:]]
        try:
            if suffixes[-1:] in ([".parquet"], [".pq"]):
                frame = _read_parquet(path, name)
            elif suffixes[-1:] in ([".csv"], [".txt"]) or suffixes[-1:] == [".gz"]:
                frame = pd.read_csv(path, dtype={c: str for c in id_columns}, keep_default_na=True,
                                    low_memory=False)
                if any(str(c).split(".")[0] in frame.columns for c in frame.columns if "." in str(c)):
                    _check_mangled(path, name)
            else:
                raise TableError(f"{name}: unknown table format {path.suffix!r}; expected .csv, "
                                 ".csv.gz or .parquet")
        except TableError:
            raise
        except UnicodeDecodeError as exc:
            raise TableError(f"{name}: cannot be read as a {what}: byte {exc.start} is not UTF-8 "
                             f"({exc.reason}); save the file as UTF-8") from exc
        except pd.errors.EmptyDataError as exc:
            raise TableError(f"{name}: cannot be read as a {what}: the file is empty (expected a "
                             "header line)") from exc
        except MemoryError:
            raise
        except Exception as exc:  # parser, gzip, zlib, OS and Arrow errors alike name the file
            raise TableError(f"{name}: cannot be read as a {what} ({_one_line(exc)})") from exc
        refuse_duplicate_columns(frame, name)
    frame = _decode_bytes(frame, name)
    frame = _drop_index_column(frame, name)
    return frame, name


def _check_mangled(path: Path, name: str) -> None:
    """pandas renames a repeated CSV header ``a, a`` to ``a, a.1``: refuse the repeat instead."""
    header = pd.read_csv(path, nrows=1, header=None).iloc[0].astype(str).tolist()
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise TableError(f"{name}: column name(s) {dup} appear more than once; expected one each")


def safe_image_path(image_dir: Path, image_id: str, ext: str, *, row: int, name: str) -> Path:
    """``image_dir / (image_id + ext)``, refusing any id that would point outside ``image_dir``.

    The check is on the name (``..``, absolute paths, drive letters), not on symbolic links:
    links that the user placed inside ``image_dir`` are followed as usual.

    Raises
    ------
    ImageError
        Naming the table ``name``, the 0-based ``row`` and the id, when the id is absolute or its
        path leaves ``image_dir``.
    """
    root = os.path.abspath(image_dir)
    candidate = os.path.normpath(os.path.join(root, image_id + ext))
    if (
        os.path.isabs(image_id)
        or os.path.commonpath([root, candidate]) != root
        or candidate == root
    ):
        raise ImageError(
            f"{name}: row {row} (image_id {image_id!r}): image path escapes the image directory "
            f"{str(image_dir)!r}; expected a file name inside it"
        )
    return Path(image_dir) / (image_id + ext)


def attach_image_paths(
    table: pd.DataFrame, image_dir: str | PathLike[str], *, name: str,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> pd.DataFrame:
    """Set ``path`` to ``image_dir/<image_id><ext>`` per row, and ``image_error`` where it fails.

    An id that already ends in an image extension (PAD-UFES-20's ``PAT_46_881_14.png``) is tried
    as it is first, then with each of ``extensions``.

    ``image_error`` is missing where the file was found, and otherwise says why (file not found,
    or a path that escapes ``image_dir``; such a row's ``path`` is left missing). Rows are
    never dropped. Raises :class:`ImageError` if ``image_dir`` is not a folder.
    """
    if not isinstance(image_dir, (str, PathLike)):
        raise ImageError(f"image_dir: expected a folder (a path), got {type(image_dir).__name__}")
    image_dir = Path(image_dir)
    require_path(image_dir, "image directory (it does not exist or is not a folder)", folder=True)
    with os.scandir(image_dir) as entries:
        present = {e.name for e in entries if e.is_file()}
    paths: list[str | None] = []
    errors: list[str | None] = []
    for row, image_id in enumerate(table["image_id"].astype(str)):
        try:
            if image_id and "/" not in image_id and "\\" not in image_id and image_id != "..":
                expected = image_dir / (image_id + extensions[0])  # a plain name cannot escape
            else:
                expected = safe_image_path(image_dir, image_id, extensions[0], row=row, name=name)
        except ImageError as exc:
            paths.append(None)
            errors.append(str(exc))
            continue
        found = None
        exact = ("",) if image_id.lower().endswith(tuple(e.lower() for e in IMAGE_EXTENSIONS)) else ()
        for ext in (*exact, *extensions):
            file_name = image_id + ext
            if file_name in present or (os.sep in image_id and (image_dir / file_name).is_file()):
                found = safe_image_path(image_dir, image_id, ext, row=row, name=name)
                break
        if found is None:
            paths.append(str(expected))
            errors.append(
                f"{name}: row {row} (image_id {image_id!r}): image file not found in "
                f"{str(image_dir)!r} (tried {', '.join(image_id + e for e in (*exact, *extensions))})"
            )
        else:
            paths.append(str(found))
            errors.append(None)
    out = table.copy()
    out["path"] = pd.Series(paths, index=out.index, dtype=object)
    out["image_error"] = pd.Series(errors, index=out.index, dtype=object)
    return out


def require_path(path: Path, noun: str, *, folder: bool = False) -> None:
    """Refuse with ``ImageError`` a path the OS cannot use (too long, a NUL byte) or that is not an
    existing file (``folder=True``: folder); ``noun`` names what was expected ("photo")."""
    try:
        found = path.is_dir() if folder else path.is_file()
    except (OSError, ValueError) as exc:  # a name the OS refuses
        raise ImageError(f"{str(path)[:300]}: not a usable {'folder' if folder else 'file'} name "
                         f"({type(exc).__name__})") from exc
    if not found:
        raise ImageError(f"{str(path)[:300]}: no such {noun}")
