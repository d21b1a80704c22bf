"""Patient-level splits that cannot leak a patient, a lesion or a duplicate image.

A *group* is a connected component of rows linked by a shared ``patient_id``, a shared
``lesion_id`` or a duplicate pair of image ids. Duplicate pairs can link two patient ids that are
really one person (the ISIC 2020 test set has ten such pairs): those patients become one group.
:class:`PatientKFold` keeps every group on one side of every split and balances the melanoma
rate across folds; :func:`check_leakage` checks any train/test pair of tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from dermctx.errors import DermctxError, DermctxWarning, LeakageError, TableError
from dermctx.pairs import as_pairs, link_components
from dermctx.table import (
    check_identity,
    has_patient_context,
    placeholder_patient_ids,
    refuse_duplicate_columns,
)

__all__ = ["LeakageSummary", "PatientKFold", "check_fold_leakage", "check_leakage", "patient_groups"]


def _id_column(table: pd.DataFrame, col: str, name: str) -> np.ndarray:
    """Column ``col`` as stripped strings; blank values raise naming the rows."""
    values = table[col].astype(object)
    blank = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        rows = np.flatnonzero(blank)
        shown = ", ".join(str(r) for r in rows[:5]) + (
            f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        )
        raise TableError(
            f"{name}: column {col!r} is empty at rows {shown}; every row needs a {col}"
        )
    return values.astype(str).str.strip().to_numpy()


def patient_groups(
    table: pd.DataFrame | None = None,
    *,
    duplicates: pd.DataFrame | None = None,
    groups: Any = None,
    name: str = "table",
) -> np.ndarray:
    """Label each row with its leak-proof group.

    Rows sharing a ``patient_id``, a ``lesion_id`` (when the column exists), a ``groups`` value, or
    linked by a duplicate pair of ``image_id`` values get the same label, transitively. The
    table must follow :func:`dermctx.table.check_identity`: a placeholder patient id (``-1``,
    ``unknown``...) raises :class:`TableError` rather than pooling unrelated rows into one
    group, and a lesion id shared by several patients links them, with a warning naming it.

    Parameters
    ----------
    table : DataFrame, optional
        A lesion table with ``patient_id`` (and optionally ``lesion_id``, ``image_id``).
    duplicates : DataFrame, optional
        Image-id pairs in any layout :func:`dermctx.pairs.as_pairs` accepts (e.g. the ISIC
        duplicate CSVs). Needs ``image_id`` in ``table``. Pairs naming images absent from the
        table are ignored.
    groups : array-like of shape (n,), optional
        Extra group labels (e.g. patient ids when no table is given).

    Returns
    -------
    ndarray of int, shape (n,)
        Group label per row, numbered 0.. in order of first appearance.
    """
    if table is None and groups is None:
        raise DermctxError("patient_groups: give a lesion table with 'patient_id' or `groups`")
    if table is not None and not isinstance(table, pd.DataFrame):
        raise TableError(f"{name}: expected a pandas DataFrame, got {type(table).__name__}")
    if table is not None:
        refuse_duplicate_columns(table, name)
    n = len(table) if table is not None else len(groups)
    node = np.arange(n).astype(str)
    links: list[tuple[np.ndarray, np.ndarray]] = []

    def same_value(values: np.ndarray) -> None:
        # link every row to the first row holding the same value
        codes, _ = pd.factorize(pd.Series(values), use_na_sentinel=False)
        _, first = np.unique(codes, return_index=True)  # first row of each value
        links.append((node, node[first[codes]]))

    if groups is not None:
        groups = np.asarray(groups, dtype=object)
        if groups.ndim != 1 or len(groups) != n:
            raise DermctxError(
                f"groups has shape {groups.shape}; expected ({n},), one label per row"
            )
        if pd.isna(pd.Series(groups)).any():
            rows = np.flatnonzero(pd.isna(pd.Series(groups)).to_numpy())[:5].tolist()
            raise DermctxError(f"groups is missing at rows {rows}; every row needs a group")
        codes = pd.Series(groups, dtype=object)
        unknown = placeholder_patient_ids(codes) & (pd.to_numeric(codes, errors="coerce") != 0).to_numpy()
        if unknown.any():  # 0 is an ordinary group code; -1, "unknown"... are not
            raise DermctxError(
                f"groups holds placeholder values {sorted({str(v) for v in codes[unknown]})[:5]} "
                f"(unknown patient) at rows {np.flatnonzero(unknown)[:5].tolist()}; dermctx never "
                "reads them as one patient: give each such row its own group")
        same_value(groups.astype(str))
    if table is not None:
        if "patient_id" not in table.columns:
            raise TableError(
                f"{name}: missing column 'patient_id' (found {list(table.columns)[:20]})"
            )
        check_identity(table, name=name)  # no placeholder patients, no lesion id across patients
        same_value(_id_column(table, "patient_id", name))
        if "lesion_id" in table.columns:
            lesion = table["lesion_id"].astype(object)
            blank = (lesion.isna() | (lesion.astype(str).str.strip() == "")).to_numpy()
            # a row without a lesion id is its own lesion
            values = np.where(blank, "\x00row" + node, lesion.astype(str).str.strip().to_numpy())
            same_value(values)
    if duplicates is not None:
        if table is None or "image_id" not in table.columns:
            raise TableError(
                f"{name}: `duplicates` name image ids, so the table needs an 'image_id' column"
            )
        pairs = as_pairs(duplicates, name="duplicates")
        image_ids = _id_column(table, "image_id", name)
        index = pd.Index(image_ids)
        if not index.is_unique:
            dup = index.duplicated(keep=False)
            raise TableError(
                f"{name}: column 'image_id' repeats at rows {np.flatnonzero(dup)[:5].tolist()}; "
                "duplicate pairs need unique image ids"
            )
        a = index.get_indexer(pairs["image_id_1"])
        b = index.get_indexer(pairs["image_id_2"])
        keep = (a >= 0) & (b >= 0)
        if len(pairs) and not ((a >= 0) | (b >= 0)).any():
            warnings.warn(
                f"{name}: none of the {len(pairs)} duplicate pairs names an image of the table "
                f"(pair ids such as {pairs['image_id_1'].iloc[0]!r}, table ids such as "
                f"{image_ids[0] if len(image_ids) else None!r}); check that both use the same ids "
                "(e.g. with or without a file extension)", DermctxWarning, stacklevel=3)
        links.append((node[a[keep]], node[b[keep]]))
    return link_components(node.tolist(), *[(a.tolist(), b.tolist()) for a, b in links])


class PatientKFold:
    """K folds that keep patients, lesions and duplicate groups whole, stratified on the target.

    A scikit-learn splitter: pass it as ``cv=`` to ``cross_val_score`` or loop over
    :meth:`split`. Rows are grouped by :func:`patient_groups`; groups are then dealt to folds
    greedily, largest melanoma count first, each to the fold where it best keeps every fold's
    count of melanomas and of other lesions near its share. On ISIC 2020 every fold's melanoma
    rate lands within a few percent of the overall rate.

    Parameters
    ----------
    n_splits : int, default 5
        Number of folds (>= 2).
    shuffle : bool, default True
        Break ties between equal groups in a random order (``random_state``); otherwise in order
        of first appearance.
    random_state : int, RandomState or None
        Seed of the shuffle; an int gives the same folds on every call.
    duplicates : DataFrame, optional
        Duplicate image-id pairs (any layout :func:`dermctx.pairs.as_pairs` accepts). Pairs
        linking two patients merge them into one group.

    Notes
    -----
    With a lesion table as ``X``, ``split`` reads ``patient_id``, ``lesion_id``, ``image_id`` and
    (when ``y`` is None) ``target`` from it; ``groups``, when given, links rows further. With an
    array ``X``, ``groups`` (patient ids) is required. Missing targets (an unlabelled set) are
    balanced by size only. A table whose patient ids are a proxy (HAM10000) gets a warning: such
    splits keep lesions whole, but cannot keep a real patient on one side. :meth:`split` and
    :meth:`assign` raise :class:`~dermctx.TableError` for a table that names a column twice or
    has blank ids, and :class:`~dermctx.DermctxError` for settings or ``y``/``groups`` that do not
    fit the rows.
    """

    def __init__(
        self,
        n_splits: int = 5,
        *,
        shuffle: bool = True,
        random_state: Any = None,
        duplicates: pd.DataFrame | None = None,
    ) -> None:
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state
        self.duplicates = duplicates

    def __repr__(self) -> str:
        dup = "None" if self.duplicates is None else f"<{len(self.duplicates)} pairs>"
        return (
            f"PatientKFold(n_splits={self.n_splits}, shuffle={self.shuffle}, "
            f"random_state={self.random_state!r}, duplicates={dup})"
        )

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of folds."""
        return int(self.n_splits)

    def split(
        self, X: Any, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train, test)`` row positions (int arrays) for each fold.

        Every row is in exactly one test fold; no group is ever on both sides.
        """
        fold = self.assign(X, y, groups)
        positions = np.arange(len(fold))
        for k in range(self.n_splits):
            test = fold == k
            yield positions[~test], positions[test]

    def assign(self, X: Any, y: Any = None, groups: Any = None) -> np.ndarray:
        """The test fold of each row: int array of shape (n,) with values in ``[0, n_splits)``."""
        n_splits = self.n_splits
        if (
            not isinstance(n_splits, (int, np.integer))
            or isinstance(n_splits, bool)
            or n_splits < 2
        ):
            raise DermctxError(f"PatientKFold: n_splits must be an int >= 2, got {n_splits!r}")
        if not self.shuffle and self.random_state is not None:
            raise DermctxError(
                "PatientKFold: random_state has no effect when shuffle=False; leave it None or set shuffle=True"
            )
        if isinstance(X, pd.DataFrame):
            refuse_duplicate_columns(X, "PatientKFold.split")
        table = X if isinstance(X, pd.DataFrame) and "patient_id" in X.columns else None
        if table is None and groups is None:
            raise DermctxError(
                "PatientKFold.split: X has no 'patient_id' column, so pass groups= (patient ids), "
                "or pass a lesion table as X"
            )
        if table is not None and not has_patient_context(table):
            warnings.warn(
                "PatientKFold: this table has no real patient ids (its source, such as HAM10000 or "
                "ISIC 2019, gives a lesion or image id as patient_id): folds keep lesions whole, but "
                "one person may be on both sides",
                DermctxWarning,
                stacklevel=3,
            )
        label = patient_groups(table, duplicates=self.duplicates, groups=groups)
        n = len(label)
        # number the groups by their smallest patient id (or group value), not by row order, so
        # the same table in another row order gets the same folds
        key = (table["patient_id"] if table is not None else pd.Series(groups)).astype(str).to_numpy()
        if n:
            first_key = pd.Series(key).groupby(label).min()
            label = np.argsort(np.argsort(first_key.to_numpy(), kind="stable"))[label]
        if X is not None and table is None and hasattr(X, "__len__") and len(X) != n:
            raise DermctxError(f"PatientKFold.split: X has {len(X)} rows but groups has {n}")
        target = self._target(table, y, n)

        n_groups = int(label.max()) + 1 if n else 0
        if n_splits > n_groups:
            raise DermctxError(
                f"PatientKFold: n_splits={n_splits} is more than the {n_groups} patient groups "
                "(patients merged with their lesions and duplicates); use fewer folds"
            )
        pos = np.bincount(label, weights=(target == 1), minlength=n_groups)
        size = np.bincount(label, minlength=n_groups).astype(float)
        neg = size - pos
        total_pos, total_neg = pos.sum(), neg.sum()
        if 0 < total_pos < n_splits:
            warnings.warn(
                f"PatientKFold: only {int(total_pos)} melanoma(s) for {n_splits} folds; "
                "some test folds will have none",
                UserWarning,
                stacklevel=3,
            )

        # deal groups: most melanomas first, then largest; ties in random (or first-seen) order
        order = np.arange(n_groups)
        if self.shuffle:
            try:
                rng = check_random_state(self.random_state)
            except (TypeError, ValueError) as exc:  # a negative or too large seed, a string...
                raise DermctxError(f"PatientKFold: random_state={self.random_state!r}; expected None, "
                                   "an int in [0, 2**32 - 1] or a numpy RandomState") from exc
            order = rng.permutation(n_groups)
        order = order[np.lexsort((-size[order], -pos[order]))]
        # adding group g to fold f raises sum_c ((count_fc - T_c / K) / T_c)^2 in proportion to
        # sum_c a_gc * count_fc / T_c^2: pick the fold where that is smallest (fewest rows on ties)
        scale_pos = 1.0 / max(total_pos, 1.0) ** 2
        scale_neg = 1.0 / max(total_neg, 1.0) ** 2
        fold_pos = [0.0] * n_splits
        fold_neg = [0.0] * n_splits
        folds = range(n_splits)
        group_fold = np.empty(n_groups, dtype=np.int64)
        pos_list, neg_list = pos.tolist(), neg.tolist()
        for g in order.tolist():  # plain floats: K is small, numpy per-group calls would dominate
            a, b = pos_list[g] * scale_pos, neg_list[g] * scale_neg
            f = min(folds, key=lambda k: (a * fold_pos[k] + b * fold_neg[k], fold_pos[k] + fold_neg[k], k))
            group_fold[g] = f
            fold_pos[f] += pos_list[g]
            fold_neg[f] += neg_list[g]
        return group_fold[label]

    @staticmethod
    def _target(table: pd.DataFrame | None, y: Any, n: int) -> np.ndarray:
        """Targets as float (NaN = unlabelled), from ``y`` or the table's ``target`` column."""
        if y is None and table is not None and "target" in table.columns:
            y, name = table["target"], "column 'target'"
        elif y is None:
            return np.full(n, np.nan)
        else:
            name = "y"
        raw = pd.Series(np.asarray(y, dtype=object).reshape(-1))
        if len(raw) != n:
            raise DermctxError(f"PatientKFold.split: y has {len(raw)} values for {n} rows")
        values = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        not_number = (raw.notna() & np.isnan(values)).to_numpy()  # e.g. "mel": not a 0/1 label
        bad = not_number | (~np.isnan(values) & ~np.isin(values, (0.0, 1.0)))
        if bad.any():
            raise DermctxError(
                f"PatientKFold.split: {name} has values other than 0/1 at rows "
                f"{np.flatnonzero(bad)[:5].tolist()}; expected 1 (melanoma), 0 or missing"
            )
        return values


@dataclass(frozen=True)
class LeakageSummary:
    """What :func:`check_leakage` checked, when it found no leak."""

    n_train: int
    n_test: int
    train_patients: int
    test_patients: int
    pairs_checked: int

    def __repr__(self) -> str:
        return (
            f"LeakageSummary(no leak: {self.n_train} train rows / {self.train_patients} patients, "
            f"{self.n_test} test rows / {self.test_patients} patients, "
            f"{self.pairs_checked} duplicate pairs checked)"
        )


def _ids(values: pd.Series) -> set[str]:
    return {str(v).strip() for v in values.dropna().tolist()}


def _listing(what: str, items: list[Any], limit: int = 10) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {what} ({', '.join(map(str, items[:limit]))}{more})"


def check_fold_leakage(table: pd.DataFrame, folds: Any, *, duplicates: pd.DataFrame | None = None,
                       name: str = "folds") -> None:
    """Raise :class:`~dermctx.LeakageError` if folds made elsewhere split a patient group.

    ``folds`` is one fold label per row of ``table``. A patient group (a patient, the patients
    its lesion ids or ``duplicates`` pairs link to it) must lie in one fold; the message names
    how many do not and one patient. One pass over the groups of :func:`patient_groups`.
    """
    groups = patient_groups(table, duplicates=duplicates)
    n_folds = pd.Series(np.asarray(folds)).groupby(groups).nunique()
    split = n_folds.index[n_folds.to_numpy() > 1]
    if len(split):
        first = int(np.flatnonzero(groups == split[0])[0])
        raise LeakageError(f"{name}: {len(split)} patient group(s) are in more than one fold "
                           f"(e.g. patient {table['patient_id'].iloc[first]!r}, linked with its lesions "
                           "and duplicates); folds must keep each patient whole (write them with "
                           "PatientKFold or 'dermctx split')")


def check_leakage(
    train: pd.DataFrame, test: pd.DataFrame, *, duplicates: pd.DataFrame | None = None
) -> LeakageSummary:
    """Raise :class:`~dermctx.LeakageError` if a patient, lesion, image or duplicate pair is split.

    Parameters
    ----------
    train, test : DataFrame
        Lesion tables (``patient_id``; ``image_id`` and ``lesion_id`` are checked when present).
    duplicates : DataFrame, optional
        Duplicate image-id pairs (any layout :func:`dermctx.pairs.as_pairs` accepts); a pair with
        one image on each side is a leak, even across two patient ids.

    Returns
    -------
    LeakageSummary
        Row, patient and pair counts, when nothing leaks.

    Raises
    ------
    LeakageError
        Naming the shared patients, lesions and images, and the split duplicate pairs.
    TableError
        A side is not a DataFrame, has no ``patient_id`` or names a column twice.
    """
    for side, frame in (("train", train), ("test", test)):
        if not isinstance(frame, pd.DataFrame):
            raise TableError(
                f"check_leakage: {side} must be a lesion table (DataFrame), got {type(frame).__name__}"
            )
        refuse_duplicate_columns(frame, f"check_leakage: {side} table")
        if "patient_id" not in frame.columns:
            raise TableError(f"check_leakage: {side} table has no 'patient_id' column")
    problems: list[str] = []
    for col, what in (("patient_id", "patients"), ("lesion_id", "lesions"), ("image_id", "images")):
        if col in train.columns and col in test.columns:
            shared = sorted(_ids(train[col]) & _ids(test[col]))
            if shared:
                problems.append(f"{_listing(what, shared)} on both sides")
    n_pairs = 0
    if duplicates is not None:
        if "image_id" not in train.columns or "image_id" not in test.columns:
            raise TableError("check_leakage: duplicates= needs an 'image_id' column in both tables")
        pairs = as_pairs(duplicates, name="duplicates")
        train_ids, test_ids = _ids(train["image_id"]), _ids(test["image_id"])
        one, two = pairs["image_id_1"].tolist(), pairs["image_id_2"].tolist()
        n_pairs = sum(
            (a in train_ids or a in test_ids) and (b in train_ids or b in test_ids)
            for a, b in zip(one, two, strict=False)
        )
        named = sorted(
            f"{a}~{b}"
            for a, b in zip(one, two, strict=False)
            if (a in train_ids and b in test_ids) or (a in test_ids and b in train_ids)
        )
        if named:
            problems.append(f"{_listing('duplicate pairs', named)} split between train and test")
    if problems:
        raise LeakageError("leak between train and test: " + "; ".join(problems))
    return LeakageSummary(
        n_train=len(train),
        n_test=len(test),
        train_patients=int(train["patient_id"].nunique()),
        test_patients=int(test["patient_id"].nunique()),
        pairs_checked=n_pairs,
    )
