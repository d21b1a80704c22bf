"""Helpers shared by the loaders: reading a source CSV, and attaching image paths safely."""

from __future__ import annotations

import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import pandas as pd

from dermctx.errors import ImageError, TableError

#: Extensions tried, in order, when looking for ``<image_id><ext>`` in an image folder.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".JPG", ".JPEG", ".png", ".PNG")


def read_source_csv(
    csv: str | PathLike[str] | pd.DataFrame,
    required: Sequence[str],
    id_columns: Sequence[str],
    what: str,
) -> tuple[pd.DataFrame, str]:
    """Read a source CSV (or take a DataFrame) and check its columns.

    Returns ``(frame, name)`` where ``name`` names the input in error messages. Id columns are
    read as strings so that ids such as ``"0012"`` keep their leading zeros.
    """
    if isinstance(csv, pd.DataFrame):
        frame, name = csv.copy(), f"<{what} DataFrame>"
    else:
        path = Path(csv)
        name = str(path)
        if not path.is_file():
            raise TableError(f"{name}: no such file (expected a {what} CSV)")
        try:
            frame = pd.read_csv(path, dtype={c: str for c in id_columns}, keep_default_na=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise TableError(f"{name}: cannot be read as a {what} CSV ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise TableError(
            f"{name}: missing column(s) {missing}; a {what} CSV needs {list(required)} "
            f"(found {list(frame.columns)})"
        )
    return frame, name


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

    ``image_error`` is missing where the file was found, and otherwise says why (file not found,
    or a path that escapes ``image_dir``; such a row's ``path`` is left missing). Rows are
    never dropped. Raises :class:`ImageError` if ``image_dir`` is not a folder.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ImageError(f"{image_dir}: image directory does not exist or is not a folder")
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
        for ext in extensions:
            file_name = image_id + ext
            if file_name in present or (os.sep in image_id and (image_dir / file_name).is_file()):
                found = safe_image_path(image_dir, image_id, ext, row=row, name=name)
                break
        if found is None:
            paths.append(str(expected))
            errors.append(
                f"{name}: row {row} (image_id {image_id!r}): image file not found in "
                f"{str(image_dir)!r} (tried {', '.join(image_id + e for e in extensions)})"
            )
        else:
            paths.append(str(found))
            errors.append(None)
    out = table.copy()
    out["path"] = pd.Series(paths, index=out.index, dtype=object)
    out["image_error"] = pd.Series(errors, index=out.index, dtype=object)
    return out
