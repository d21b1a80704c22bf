"""Errors raised by dermctx, and the errors table that batch functions return.

Every error dermctx raises on bad input is a :class:`DermctxError` (a ``ValueError``), and its
message names the file, row or column at fault and says what was expected.

Batch functions (loaders, embedders, rankers, duplicate finders) never stop at the first bad item
and never drop one silently: they return ``(result, errors)`` where ``errors`` is a DataFrame with
the columns of :data:`ERROR_COLUMNS`, and ``len(result) + len(errors) == len(input)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

__all__ = [
    "ERROR_COLUMNS",
    "DermctxError",
    "DermctxWarning",
    "ImageError",
    "LeakageError",
    "MetricError",
    "ModelError",
    "TableError",
    "error_record",
    "errors_frame",
]

#: Columns of the errors table: which item (``image_id`` and its 0-based input ``row``), which
#: file (``path``, may be missing), which processing ``stage`` failed, and a readable ``message``.
ERROR_COLUMNS: tuple[str, ...] = ("image_id", "row", "path", "stage", "message")


class DermctxError(ValueError):
    """Base class of every error dermctx raises on bad input."""


class DermctxWarning(UserWarning):
    """An input dermctx accepts but that is probably not what the user meant (named in the text)."""


class TableError(DermctxError):
    """A lesion table (or a CSV/Parquet file holding one) is not what was expected."""


class ImageError(DermctxError):
    """An image or DICOM file cannot be read, or is not what was expected."""


class ModelError(DermctxError):
    """A model, checkpoint or its inputs are not what was expected (or it is not fitted)."""


class MetricError(DermctxError):
    """A metric is undefined for its input (e.g. an AUC with one class), or the input is bad."""


class LeakageError(DermctxError):
    """A patient, lesion or duplicate group appears on both sides of a split."""


def error_record(
    image_id: Any, row: Any, path: Any, stage: str, message: str | BaseException
) -> dict[str, Any]:
    """One row of the errors table, as a dict (``message`` may be an exception)."""
    if isinstance(message, BaseException):
        message = f"{type(message).__name__}: {message}"
    return {"image_id": image_id, "row": row, "path": path, "stage": stage, "message": str(message)}


def errors_frame(records: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """The errors table: a DataFrame with exactly the columns of :data:`ERROR_COLUMNS`.

    ``row`` is a nullable integer (the 0-based position of the item in the input); the other
    columns are strings (``path`` may be missing).
    """
    frame = pd.DataFrame(list(records), columns=list(ERROR_COLUMNS))
    frame["row"] = frame["row"].astype("Int64")
    for col in ("image_id", "path", "stage", "message"):
        frame[col] = frame[col].astype(object)
    return frame.reset_index(drop=True)
