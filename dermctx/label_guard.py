"""The label-leak guard: which columns hold the label, and the check every estimator runs.

A column leaks the label in two ways, and :class:`~dermctx.ContextRanker`,
:class:`~dermctx.MetadataGBM` and :class:`~dermctx.SetRanker` refuse both with a
:class:`~dermctx.LeakageError` that names the column:

* by name: the label, a diagnosis, a fold stratified on the label, or a column that exists only
  because of the diagnosis (ISIC 2024's ``iddx_*`` and ``mel_thick_mm``, PAD-UFES-20's
  ``biopsed``...). :data:`LABEL_COLUMNS` gathers them from every registered source
  (:func:`dermctx.io.registry.label_columns`), each with the reason;
* by presence: a feature column given (non-missing) only on rows of one class in the training
  data, such as a melanoma thickness, whatever its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dermctx.errors import LeakageError
from dermctx.io.registry import label_columns

__all__ = ["LABEL_COLUMNS", "check_feature_columns", "refuse_label_columns"]

#: Label-derived column names (lower-case) -> why, from every registered source.
LABEL_COLUMNS: dict[str, str] = label_columns()


def refuse_label_columns(columns: Sequence[Any], *, who: str) -> None:
    """Raise :class:`LeakageError` if a column name is label-derived (case-blind)."""
    bad = [c for c in columns if str(c).lower() in LABEL_COLUMNS]
    if bad:
        reasons = "; ".join(f"{c!r}: {LABEL_COLUMNS[str(c).lower()]}" for c in bad)
        raise LeakageError(
            f"{who}: column(s) {bad} hold or derive from the label and cannot be inputs "
            f"({reasons}). The refused names are dermctx.label_guard.LABEL_COLUMNS"
        )


def check_feature_columns(X: pd.DataFrame, y: Any, columns: Sequence[Any], *, who: str) -> None:
    """Refuse label-derived feature columns, by name and by presence on one class only.

    Parameters
    ----------
    X : DataFrame
        The training table.
    y : array-like of 0/1, length ``len(X)``
        The training labels.
    columns : sequence
        The feature columns the estimator reads from ``X``.
    who : str
        The estimator, named in the message.

    Raises
    ------
    LeakageError
        Naming the column: a label-derived name, or a column that is non-missing on some rows
        but only on rows of one class while the other class is present.
    """
    refuse_label_columns(columns, who=who)
    y = np.asarray(y)
    if len(np.unique(y[~pd.isna(y)])) < 2 or not len(columns):
        return
    present = X[list(columns)].notna().to_numpy()
    for j, col in enumerate(columns):
        classes = np.unique(y[present[:, j]])
        if present[:, j].any() and len(classes) == 1:
            n = int(present[:, j].sum())
            raise LeakageError(
                f"{who}: feature column {col!r} is given only on rows with label {classes[0]} "
                f"({n} row(s)) and missing on every other row of the training data: it exists "
                "because of the label (like a melanoma thickness) and cannot be an input"
            )
