"""A data source: one public file layout, declared as data, and the one reader that applies it.

Each public source is a small module of :mod:`dermctx.io` that declares a :class:`Source`: how to
recognise its header, its column map onto the lesion table, its extra site terms, how ``target``
is derived, which columns are label-derived, whether its ``patient_id`` names real patients, and
how its image files are named. :func:`read_source` reads any of them the same way, and
:func:`dermctx.read_table` picks the source from the header (:mod:`dermctx.io.registry`).

Adding a source is one module with a ``SOURCE = Source(...)``, one line in the registry (and, for
a source without patient ids, its name in :data:`dermctx.table.PROXY_PATIENT_SOURCES`), and one
test.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Literal, Protocol

import numpy as np
import pandas as pd

from dermctx._deprecation import renamed_parameters
from dermctx.errors import DermctxWarning, TableError
from dermctx.io._common import IMAGE_EXTENSIONS, attach_image_paths, read_csv_frame
from dermctx.table import (
    SITES,
    UNKNOWN_PATIENT_PREFIX,
    as_texts,
    describe_rows,
    is_blank,
    normalise_site,
    preview_cells,
    to_numbers,
    validate_table,
)

__all__ = [
    "BinaryTarget",
    "DiagnosisTarget",
    "HierarchyTarget",
    "OneHotTarget",
    "Source",
    "TargetRule",
    "read_source",
]

logger = logging.getLogger("dermctx")

#: Raw column names that hold a lesion-table column under another name. A source that does not
#: map one of them, while the table lacks the lesion-table column, is refused rather than read
#: with that column silently empty.
ALIASES: dict[str, tuple[str, ...]] = {
    "image_id": ("image_name", "isic_id", "image", "img_id"),
    "age": ("age_approx",),
    "sex": ("gender",),
    "site": ("anatom_site_general_challenge", "anatom_site_general", "localization", "region",
             "anatomic_site", "body_site", "location"),
}

Labels = tuple[pd.Series, pd.Series | None]  # (target, diagnosis or None)


class TargetRule(Protocol):
    """How a source's label columns give ``target`` (1 = the source's positive class)."""

    def applies(self, columns: Collection[str]) -> bool: ...

    def derive(self, frame: pd.DataFrame, name: str) -> Labels: ...


def _text(values: pd.Series) -> pd.Series:
    """Stripped strings, None where missing or blank (object dtype, same index)."""
    blank = is_blank(values)
    return pd.Series([None if b else str(v).strip() for v, b in zip(values, blank, strict=True)],
                     index=values.index, dtype=object)


@dataclass(frozen=True)
class BinaryTarget:
    """``target`` is a 0/1 column (checked by :func:`dermctx.validate_table`)."""

    column: str

    def applies(self, columns: Collection[str]) -> bool:
        return self.column in columns

    def derive(self, frame: pd.DataFrame, name: str) -> Labels:
        return frame[self.column], None


@dataclass(frozen=True)
class DiagnosisTarget:
    """``target = 1`` where a diagnosis column fully matches the ``melanoma`` pattern (case-blind).

    ``vocabulary``, when given, lists every value the source uses, matched case-blind and
    stored in its spelling there; other values, and blanks, are refused naming the rows.
    Without it, a blank diagnosis leaves ``target`` missing.
    """

    column: str
    melanoma: str
    vocabulary: tuple[str, ...] | None = None

    def applies(self, columns: Collection[str]) -> bool:
        return self.column in columns

    def derive(self, frame: pd.DataFrame, name: str) -> Labels:
        dx = _text(frame[self.column])
        if self.vocabulary is not None:
            spelling = {v.lower(): v for v in self.vocabulary}
            dx = pd.Series([v if v is None else spelling.get(v.lower(), v) for v in dx],
                           index=dx.index, dtype=object)
            bad = ~dx.isin(self.vocabulary).to_numpy(bool)
            if bad.any():
                shown = sorted({"(blank)" if v is None else str(v) for v in dx[bad]})[:5]
                raise TableError(
                    f"{name}: column {self.column!r} has values {shown} at "
                    f"{describe_rows(frame, bad)}; expected one of {list(self.vocabulary)}"
                )
        pattern = re.compile(self.melanoma, re.IGNORECASE)
        target = dx.map(lambda v: np.nan if v is None else float(bool(pattern.fullmatch(str(v)))))
        return target.astype(float), dx


@dataclass(frozen=True)
class OneHotTarget:
    """One 0/1 column per class (ISIC 2018/2019 ground truth); ``positive`` is melanoma.

    Each labelled row has exactly one 1; ``diagnosis`` is that column's name. A row with every
    class column missing is unlabelled; any other pattern is refused naming the rows.
    """

    columns: tuple[str, ...]
    positive: str

    def applies(self, columns: Collection[str]) -> bool:
        return all(c in columns for c in self.columns)

    def derive(self, frame: pd.DataFrame, name: str) -> Labels:
        converted = [to_numbers(frame[c]) for c in self.columns]
        values = np.column_stack([v.to_numpy() for v, _ in converted])  # (n, classes), NaN = missing
        not_number = np.column_stack([b for _, b in converted]).any(axis=1)
        missing = np.isnan(values).all(axis=1) & ~not_number
        one_hot = np.isin(values, [0, 1]).all(axis=1) & (np.nansum(values, axis=1) == 1)
        bad = ~missing & ~one_hot
        if bad.any():
            raise TableError(
                f"{name}: one-hot columns {list(self.columns)} at {describe_rows(frame, bad)} are "
                "not a single 1 among 0s; expected exactly one class per row (0/1 numbers)"
            )
        classes = np.asarray(self.columns, dtype=object)
        best = np.argmax(np.nan_to_num(values, nan=-1.0), axis=1) if len(values) else np.zeros(0, int)
        diagnosis = pd.Series(classes[best], index=frame.index, dtype=object).where(~missing, None)
        target = pd.Series(values[:, self.columns.index(self.positive)], index=frame.index, dtype=float)
        return target, diagnosis


@dataclass(frozen=True)
class HierarchyTarget:
    """A diagnosis hierarchy (``diagnosis_1`` .. ``diagnosis_5``): melanoma if any level matches.

    ``diagnosis`` is the deepest level given; rows with no level given are unlabelled.
    """

    columns: tuple[str, ...]
    melanoma: str

    def applies(self, columns: Collection[str]) -> bool:
        return self.columns[0] in columns

    def derive(self, frame: pd.DataFrame, name: str) -> Labels:
        levels = pd.DataFrame({c: _text(frame[c]) for c in self.columns if c in frame.columns})
        pattern = re.compile(self.melanoma, re.IGNORECASE)
        hit = levels.apply(lambda col: col.map(lambda v: isinstance(v, str) and bool(pattern.fullmatch(v))))
        given = levels.notna()
        deepest = levels.ffill(axis=1).iloc[:, -1].astype(object).where(given.any(axis=1), None)
        target = hit.any(axis=1).astype(float).where(given.any(axis=1), np.nan)
        return target, deepest


@dataclass(frozen=True)
class Source:
    """One public file layout, declared as data (see the module docstring).

    Attributes
    ----------
    name : str
        Short name, stored in the ``source`` column (``"isic2020"``).
    title : str
        What the layout is, for messages (``"SIIM-ISIC 2020 Challenge metadata"``).
    signatures : tuple of sets of str
        Column sets that identify the layout; a header matches when it holds every column of
        one of them. Of several matching sources the one with the largest matching set wins.
    columns : mapping
        Raw column -> lesion-table column. Several raw names may feed one column; a file that
        holds two of them (or one and the lesion-table name) is refused.
    id_columns : tuple of str
        Raw columns read as text, so that ids such as "007" keep their zeros.
    targets : tuple of TargetRule
        How ``target`` is derived; the first rule whose columns are present applies. None
        applies: the rows are unlabelled (a test set).
    target_meaning : str
        What ``target == 1`` means in this source ("melanoma" unless stated).
    label_columns : mapping
        Raw column -> why it is label-derived. Estimators refuse these as inputs.
    sites : mapping
        Raw site terms (lower-case) -> :data:`dermctx.table.SITES`, beyond those
        :func:`dermctx.table.normalise_site` knows. The raw term is kept in ``site_detail``.
    patient_context : bool
        False when the source has no patient ids: ``patient_id`` is then ``patient_proxy``
        (where given) or ``"unknown:<image_id>"``, and :func:`dermctx.has_patient_context` is
        False.
    patient_proxy : str, optional
        The raw column standing in for ``patient_id`` when ``patient_context`` is False.
    proxy_required : bool
        Refuse rows whose ``patient_proxy`` is blank (instead of making them their own patient).
    image_extensions : tuple of str
        Extensions tried after ``<image_id>`` when attaching image paths; an id that already
        ends in an image extension is tried as it is first.
    numeric_prefixes : tuple of str
        Columns whose names start with one of these hold finite numbers (refused otherwise),
        except those in ``text_columns``.
    integer_columns : tuple of str
        Columns of whole numbers >= 0 (pixel sizes), stored as nullable integers.
    text_columns : tuple of str
        Columns matching ``numeric_prefixes`` that hold text (ISIC 2024's body locations).
    labels_file : str, optional
        The raw id column by which a separate ground-truth file joins (ISIC 2019), if the source
        comes as two files.
    never_with : set of str
        Columns the layout never has: a header holding one is not this layout (a HAM10000 file
        has no ``patient_id``; a lesion table written from one has).
    """

    name: str
    title: str
    signatures: tuple[frozenset[str], ...]
    columns: Mapping[str, str] = field(default_factory=dict)
    id_columns: tuple[str, ...] = ()
    targets: tuple[TargetRule, ...] = ()
    target_meaning: str = "melanoma"
    label_columns: Mapping[str, str] = field(default_factory=dict)
    sites: Mapping[str, str | None] = field(default_factory=dict)
    patient_context: bool = True
    patient_proxy: str | None = None
    proxy_required: bool = False
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    numeric_prefixes: tuple[str, ...] = ()
    text_columns: tuple[str, ...] = ()
    integer_columns: tuple[str, ...] = ()
    labels_file: str | None = None
    never_with: frozenset[str] = frozenset()

    def match(self, columns: Collection[str]) -> int:
        """Size of the largest signature contained in ``columns`` (0: no match)."""
        if self.never_with & set(columns):
            return 0
        return max((len(s) for s in self.signatures if s <= set(columns)), default=0)

    def missing(self, columns: Collection[str]) -> list[str]:
        """The columns of the nearest signature that ``columns`` lacks (sorted)."""
        return min((sorted(s - set(columns)) for s in self.signatures), key=len)


def _join_labels(frame: pd.DataFrame, labels: str | PathLike[str] | pd.DataFrame, key: str,
                 source: Source, name: str) -> pd.DataFrame:
    """Join a separate ground-truth file on ``key``: every table row needs one label row."""
    truth, truth_name = read_csv_frame(labels, id_columns=(key,), what=f"{source.title} ground truth")
    if key not in truth.columns:
        raise TableError(f"{truth_name}: no column {key!r} to join the labels by (found {list(truth.columns)[:12]})")
    dup = truth[key].duplicated(keep=False).to_numpy()
    if dup.any():
        raise TableError(f"{truth_name}: column {key!r} repeats at {describe_rows(truth, dup)}; "
                         "expected one label row per image")
    clash = [c for c in truth.columns if c != key and c in frame.columns]
    if clash:
        raise TableError(f"{name} + {truth_name}: both files have column(s) {clash}; expected the "
                         "labels in one of them")
    joined = frame.merge(truth, on=key, how="left", indicator=True, validate="one_to_one")
    unmatched = (joined.pop("_merge") == "left_only").to_numpy()
    if unmatched.any():
        raise TableError(f"{name}: {describe_rows(joined.rename(columns={key: 'image_id'}), unmatched)} "
                         f"have no row in the ground truth {truth_name}; expected one per image")
    extra = len(truth) - len(frame)
    if extra:
        logger.warning("%s: %d ground-truth row(s) name images that are not in %s", truth_name, extra, name)
    return joined


def _rename(frame: pd.DataFrame, source: Source, name: str) -> pd.DataFrame:
    """Apply the column map, refusing a file that holds two names for one column."""
    targets: dict[str, list[str]] = {}
    for raw, col in source.columns.items():
        if raw in frame.columns:
            targets.setdefault(col, []).append(raw)
    for col, raws in targets.items():
        present = [*raws, *([col] if col in frame.columns and col not in raws else [])]
        if len(present) > 1:
            raise TableError(f"{name}: columns {present} all hold {col!r}; expected one of them")
    frame = frame.rename(columns={raws[0]: col for col, raws in targets.items()})
    for col, aliases in ALIASES.items():
        unread = [a for a in aliases if a in frame.columns and a not in source.columns]
        if unread and (col not in frame.columns or is_blank(frame[col]).all()):
            raise TableError(
                f"{name}: column {unread[0]!r} looks like the lesion table's {col!r}, which the "
                f"{source.title} layout does not read; rename it to {col!r} (after mapping its "
                "values to the table's vocabulary) or drop it"
            )
    return frame


def _numeric(frame: pd.DataFrame, source: Source, name: str) -> None:
    """Coerce the source's numeric and integer columns, refusing values that are not."""
    for col in frame.columns:
        whole = col in source.integer_columns
        if not (whole or str(col).startswith(source.numeric_prefixes)) or col in source.text_columns:
            continue
        values, bad = to_numbers(frame[col], booleans=False)
        if whole:
            with np.errstate(invalid="ignore"):
                bad |= ((values != values.round()) | (values < 0) | (values >= 2**63)).to_numpy()
        if bad.any():
            kind = "whole numbers >= 0 (below 2**63)" if whole else "finite numbers"
            raise TableError(f"{name}: column {col!r} has values {preview_cells(frame[col][bad], 3)} at "
                             f"{describe_rows(frame, bad)}; expected {kind} or missing")
        frame[col] = values.astype("Int64") if whole else values


def _patients(frame: pd.DataFrame, source: Source, name: str,
              unknown_patients: Literal["error", "own"]) -> None:
    """Fill ``patient_id`` for sources without patient ids (a proxy or each row its own)."""
    if not source.patient_context:
        if "patient_id" in frame.columns and not is_blank(frame["patient_id"]).all():
            raise TableError(f"{name}: {source.title} has no patient ids, but the file has a "
                             "'patient_id' column; read it as a canonical table instead")
        proxy = frame[source.patient_proxy] if source.patient_proxy in frame.columns else None
        blank = is_blank(proxy) if proxy is not None else np.ones(len(frame), bool)
        if source.proxy_required and blank.any():
            raise TableError(f"{name}: column {source.patient_proxy!r} is empty at "
                             f"{describe_rows(frame, blank)}; {source.title} rows need one (it "
                             "stands in for the missing patient id)")
        own = UNKNOWN_PATIENT_PREFIX + as_texts(frame["image_id"]).str.strip()
        frame["patient_id"] = own if proxy is None else proxy.astype(object).where(~blank, own)
    elif "patient_id" not in frame.columns:
        if unknown_patients != "own":
            raise TableError(f"{name}: no 'patient_id' column; {source.title} rows need one, or "
                             "pass unknown_patients='own' (CLI: --unknown-patients own) to make "
                             "each row its own patient")
        frame["patient_id"] = None


@renamed_parameters(csv="path")
def read_source(
    source: Source,
    path: str | PathLike[str] | pd.DataFrame,
    *,
    image_dir: str | PathLike[str] | None = None,
    labels: str | PathLike[str] | pd.DataFrame | None = None,
    unknown_patients: Literal["error", "own"] = "error",
    lesion_ids: Literal["global", "per_patient"] = "global",
    name: str | None = None,
    bad_ids: Literal["raise", "keep"] = "raise",
) -> pd.DataFrame:
    """Read a file (or frame) of layout ``source`` into a validated lesion table.

    Parameters
    ----------
    source : Source
        The layout (see :mod:`dermctx.io.registry` for the registered ones).
    path : path or DataFrame
        A CSV (also ``.csv.gz``), Parquet file, or a frame read from one. (``csv=`` is a
        deprecated alias.)
    image_dir : path, optional
        Folder of the images: ``path`` is set per row and ``image_error`` says why a row's image
        is unusable (not found, or a name escaping the folder); rows are never dropped. Refused
        when the table already has paths.
    labels : path or DataFrame, optional
        A separate ground-truth file, for sources that come as two files (ISIC 2019).
    unknown_patients, lesion_ids, bad_ids
        As in :func:`dermctx.validate_table`.
    name : str, optional
        What to call the input in messages (default: its path).

    Returns
    -------
    DataFrame
        One row per input row, in input order, with the lesion-table columns, ``source ==
        source.name`` (a canonical table keeps its own), ``site_detail`` (the raw site term) and
        every other column kept. ``attrs``: ``format`` (the source name), ``target_meaning``,
        and ``patient_context`` (False for sources without patient ids).

    Raises
    ------
    TableError
        Unreadable file (see :func:`dermctx.io._common.read_csv_frame`: a ragged CSV row, bytes
        that are not UTF-8, a corrupt Parquet or gzip file...), a column name given twice, a
        header that does not fit the layout, values outside the layout's or the table's
        vocabulary (numeric columns holding anything but finite numbers, integer columns holding
        fractions, negatives or values of 2**63 and more), or identity problems (see
        :func:`dermctx.validate_table`); naming the file, column and rows.
    ImageError
        ``image_dir`` is not a folder.
    """
    frame, read_name = read_csv_frame(path, id_columns=source.id_columns, what=source.title)
    name = name or read_name
    if not source.match(frame.columns):
        raise TableError(f"{name}: missing column(s) {source.missing(frame.columns)}; the "
                         f"{source.title} layout needs them (found {list(frame.columns)[:15]})")
    if labels is not None:
        if source.labels_file is None:
            raise TableError(f"{name}: the {source.title} layout takes no separate labels file")
        frame = _join_labels(frame, labels, source.labels_file, source, name)
    target = diagnosis = None
    id_column = {raw: col for raw, col in source.columns.items() if col == "image_id" and raw in frame}
    for rule in source.targets:
        if rule.applies(frame.columns):  # on raw names; the image id named in messages
            target, diagnosis = rule.derive(frame.rename(columns=id_column), name)
            break
    columns = list(frame.columns)
    frame = _rename(frame, source, name)
    if target is not None:
        frame["target"] = target.to_numpy()
    if diagnosis is not None:  # the rule's reading of the diagnosis (spelling normalised)
        frame["diagnosis"] = diagnosis.to_numpy()
    if "image_id" in frame.columns:
        _patients(frame, source, name, unknown_patients)
    if "site" in frame.columns:
        site, detail = normalise_site(frame["site"], terms=source.sites)
        unknown = (site.notna() & ~site.isin(SITES)).to_numpy()
        if unknown.any():
            raw = next((r for r, c in source.columns.items() if c == "site" and r in columns), "site")
            raise TableError(
                f"{name}: column {raw!r} has site terms {sorted(set(detail[unknown]))[:5]} at "
                f"{describe_rows(frame, unknown)} that the {source.title} layout does not map; "
                f"expected one of {sorted(set(SITES) | set(source.sites))} (or an ISIC/HAM10000 term)"
            )
        frame["site"] = site
        if "site_detail" not in frame.columns:
            frame["site_detail"] = detail
    _numeric(frame, source, name)
    if source.name != "table" or "source" not in frame.columns:
        frame["source"] = source.name
    table = validate_table(frame, name=name, unknown_patients=unknown_patients, lesion_ids=lesion_ids,
                           bad_ids=bad_ids)
    if image_dir is not None:
        given = table["path"].notna().to_numpy()
        if given.any():
            raise TableError(f"{name}: the table already has image paths in column 'path' "
                             f"({describe_rows(table, given)}); pass no image folder, or drop the column")
        table = attach_image_paths(table, image_dir, name=name, extensions=source.image_extensions)
    table.attrs.update(format=source.name, target_meaning=source.target_meaning)
    if source.target_meaning != "melanoma" and target is not None:  # stack: past the wrapper
        warnings.warn(f"{name}: in the {source.title} layout target = 1 means "
                      f"{source.target_meaning}, not melanoma alone; dermctx's counts and metrics "
                      "of 'melanoma' on this table mean that", DermctxWarning, stacklevel=3)
    if not source.patient_context:
        table.attrs["patient_context"] = False
    return table
