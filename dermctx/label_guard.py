"""The label-leak guard: which columns hold the label, and the check every estimator runs.

A column leaks the label in two ways, and :class:`~dermctx.ContextRanker`,
:class:`~dermctx.MetadataGBM` and :class:`~dermctx.SetRanker` refuse both with a
:class:`~dermctx.LeakageError` that names the column:

* by name: the label, a diagnosis, a fold stratified on the label, or a column that exists only
  because of the diagnosis (ISIC 2024's ``iddx_*`` and ``mel_thick_mm``, PAD-UFES-20's
  ``biopsed``...). :data:`LABEL_COLUMNS` gathers them from every registered source
  (:func:`dermctx.io.registry.label_columns`), each with the reason;
* by values, whatever the column's name, in the training data: a column given (non-missing)
  only on rows of one class (a melanoma thickness); a column missing on a large part of one
  class and on no row of the other (rows appended from another source with their features
  empty); a column whose two values are the two classes (a copy or recoding of the label).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dermctx.errors import DermctxWarning, LeakageError
from dermctx.io.registry import label_columns
from dermctx.metrics import auc as roc_auc
from dermctx.table import as_texts

__all__ = ["LABEL_COLUMNS", "check_feature_columns", "refuse_label_columns"]

#: Label-derived column names (lower-case) -> why, from every registered source, and the columns
#: of :func:`dermctx.synthetic.make_tbp_patients` that record how a melanoma was made.
LABEL_COLUMNS: dict[str, str] = {
    **label_columns(),
    "planted_feature": "names the feature planted on a synthetic melanoma, empty on every "
                       "other lesion (dermctx.synthetic.make_tbp_patients)",
    "planted_direction": "the direction of the deviation planted on a synthetic melanoma, 0 on "
                         "every other lesion (dermctx.synthetic.make_tbp_patients)",
    "oracle_log_odds": "the generator's own log odds of melanoma, from values no model is shown "
                       "(dermctx.synthetic.make_tbp_patients(oracle=True))",
    # a clinic's own spellings of the biopsy and its result: a lesion is biopsied because it looked
    # suspicious, and histology is the diagnosis itself
    **{name: "whether or how the lesion was biopsied, or its histology: decided by, or the same as, the "
             "diagnosis (a clinic's own column)"
       for name in ("biopsied", "biopsy", "biopsy_result", "histology", "histopathology", "pathology")},
}


#: A numeric column whose rows off its most common value are all of one class is refused as a
#: filled-in label column only when that would happen by chance less often than this (the class's
#: share of the rows, to the power of the number of such rows).
LEAK_CHANCE: float = 1e-6

#: A numeric feature column that alone orders the training rows with an AUC this close to 1 (or
#: 0), with at least :data:`NEAR_PERFECT_MIN` rows of each class, is warned about: no single real
#: measurement of a lesion does that, but a CNN's score on its own training images, or a number
#: derived from the diagnosis under another name, does.
NEAR_PERFECT_AUC: float = 0.995
NEAR_PERFECT_MIN: int = 20


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
        Naming the column: a label-derived name, a column that is non-missing on some rows
        but only on rows of one class while the other class is present, a two-valued copy of
        the label, or a numeric column whose rows off its most common value (at least 10) are all
        of one class, beyond chance (:data:`LEAK_CHANCE`; a label column with its blanks filled in).

    Warns
    -----
    DermctxWarning
        A numeric column that alone separates the classes almost perfectly (training AUC >=
        :data:`NEAR_PERFECT_AUC`): an in-sample CNN score or a renamed label-derived number. It
        is used as given.
    """
    refuse_label_columns(columns, who=who)
    y = np.asarray(y)
    classes = np.unique(y[~pd.isna(y)])
    if len(classes) < 2 or not len(columns):
        return
    present = X[list(columns)].notna().to_numpy()
    leaks = [(col, problem) for j, col in enumerate(columns)
             if (problem := _leak(present[:, j], X[col], y, classes))]
    if leaks:
        col, problem = leaks[0]
        more = ""
        if len(leaks) > 1:  # name them all at once, not one refusal per fit
            names = [str(c) for c, _ in leaks[1:]]
            more = (f"; {len(names)} more column(s) leak too: {names[:10]}"
                    f"{f' and {len(names) - 10} more' if len(names) > 10 else ''}")
        raise LeakageError(f"{who}: feature column {col!r} {problem} in the training data, so "
                           f"it gives the label away and cannot be an input{more}")
    _warn_near_perfect(X, y, columns, classes, who)


def _warn_near_perfect(X: pd.DataFrame, y: np.ndarray, columns: Sequence[Any], classes: np.ndarray,
                       who: str) -> None:
    """Warn, naming them, about numeric columns that alone order the training labels almost perfectly."""
    found = []
    for col in columns:
        values = X[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        v = values.to_numpy(dtype=float, na_value=np.nan)
        ok = np.isfinite(v) & ~pd.isna(y)
        labels = y[ok] == classes[-1]
        n_pos = int(labels.sum())
        if min(n_pos, len(labels) - n_pos) < NEAR_PERFECT_MIN or np.ptp(v[ok]) == 0:
            continue
        auc = roc_auc(labels.astype(int), v[ok])
        if max(auc, 1 - auc) >= NEAR_PERFECT_AUC:
            found.append(f"{col!r} (AUC {auc:.4f} on {len(labels)} rows)")
    if found:
        warnings.warn(
            f"{who}: feature column(s) {', '.join(found[:5])} alone separate the training labels almost "
            "perfectly. No single measurement of a lesion does that: a CNN's scores on the images it was "
            "trained on (use out-of-fold scores) or a number derived from the diagnosis under another "
            "name would. The model is fitted on it as given; check where the column comes from",
            DermctxWarning, stacklevel=3)


def _leak(present: np.ndarray, values: pd.Series, y: np.ndarray, classes: np.ndarray) -> str | None:
    """How a feature column reveals the label by its values, or None."""
    given = np.unique(y[present])
    if present.any() and len(given) == 1:
        return (f"is given only on rows with label {given[0]} ({int(present.sum())} rows) and "
                "missing on every other row")
    missing = np.unique(y[~present])
    if len(missing) == 1:
        n_class = int((y == missing[0]).sum())
        if (~present).sum() >= max(10, 0.1 * n_class):
            return (f"is missing on {int((~present).sum())} of the {n_class} rows with label "
                    f"{missing[0]} and on no row of the other class")
    seen = values[present]
    if seen.dtype == object:  # lists, dicts and other unhashable cells are compared by their text
        seen = as_texts(seen)
    if seen.nunique() == 2 and pd.crosstab(seen.astype(str), y[present]).gt(0).sum(axis=1).eq(1).all():
        return "takes two values that are exactly the two classes (a copy of the label)"
    labels = y[present]
    if not pd.api.types.is_numeric_dtype(seen) or pd.api.types.is_bool_dtype(seen):
        return None  # categories (sex, site) may well be one value on a small class
    # every row off the column's most common value is of one class: a label column with its blanks
    # filled in (a melanoma thickness set to 0 elsewhere, a copy of the target with 0 for unknown),
    # or one class held at a single value the other never takes
    mode = seen.mode(dropna=True)
    if len(mode):
        off = (seen != mode.iloc[0]).to_numpy()
        marked = np.unique(labels[off])
        # ... and beyond chance: 41 rows of a 95% class off the mode happen (0.95**41 = 12%; a
        # sparse embedding column), 10 melanomas at 5% prevalence do not (1e-13)
        share = float((labels == marked[0]).mean()) if len(marked) == 1 else 1.0
        if off.sum() >= 10 and len(marked) == 1 and share ** int(off.sum()) < LEAK_CHANCE:
            value = mode.iloc[0].item() if isinstance(mode.iloc[0], np.generic) else mode.iloc[0]
            return (f"differs from its most common value ({value!r}) on {int(off.sum())} rows, all with label "
                    f"{marked[0]} (a label column with its blanks filled in, e.g. a melanoma thickness set to 0 "
                    "elsewhere)")
    return None
