"""Pairs of image ids (duplicates) and the groups they link.

The canonical pairs frame has columns ``image_id_1, image_id_2`` with ``image_id_1 < image_id_2``
(plus any other columns, such as ``kind`` and ``distance``). :func:`as_pairs` also accepts the
ISIC duplicate CSV layouts (``image_name_1, image_name_2`` and ``ISIC_id, ISIC_id_paired``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dermctx.errors import TableError
from dermctx.table import as_texts, is_blank, refuse_duplicate_columns

__all__ = ["PAIR_LAYOUTS", "as_pairs", "link_components"]

#: Column pairs recognised as the two image ids of a pair, in order of preference.
PAIR_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("image_id_1", "image_id_2"),
    ("image_name_1", "image_name_2"),
    ("ISIC_id", "ISIC_id_paired"),
)


def as_pairs(pairs: pd.DataFrame, *, name: str | None = None) -> pd.DataFrame:
    """Return ``pairs`` in canonical form: ``image_id_1 < image_id_2``, one row per pair.

    Accepts any of :data:`PAIR_LAYOUTS`; other columns are kept (from the first occurrence of a
    pair). Self-pairs are dropped with the pair they repeat.

    Raises
    ------
    TableError
        ``pairs`` is not a DataFrame, has repeated column names or no pair columns, or a pair
        has a blank id (naming the rows).
    """
    where = f"{name}: " if name else ""
    if not isinstance(pairs, pd.DataFrame):
        raise TableError(f"{where}expected a DataFrame of image-id pairs, got {type(pairs).__name__}")
    refuse_duplicate_columns(pairs, name)
    for a, b in PAIR_LAYOUTS:
        if a in pairs.columns and b in pairs.columns:
            break
    else:
        raise TableError(
            f"{where}no pair columns found in {list(pairs.columns)}; expected one of "
            f"{[list(p) for p in PAIR_LAYOUTS]}"
        )
    blank = is_blank(pairs[a]) | is_blank(pairs[b])
    if blank.any():
        rows = np.flatnonzero(blank)[:5].tolist()
        raise TableError(f"{where}columns {a!r}/{b!r} are empty at rows {rows}; each pair needs two ids")
    left = as_texts(pairs[a]).str.strip().to_numpy(dtype=object)
    right = as_texts(pairs[b]).str.strip().to_numpy(dtype=object)
    rest = pairs.drop(columns=[a, b]).reset_index(drop=True)
    lo = np.where(left <= right, left, right)
    hi = np.where(left <= right, right, left)
    out = pd.concat(
        [pd.DataFrame({"image_id_1": lo, "image_id_2": hi}), rest], axis=1
    )
    out = out[out["image_id_1"] != out["image_id_2"]]
    return out.drop_duplicates(["image_id_1", "image_id_2"]).reset_index(drop=True)


def link_components(nodes: Sequence[str], *links: tuple[Sequence[str], Sequence[str]]) -> np.ndarray:
    """Connected components of ``nodes`` under undirected links.

    Parameters
    ----------
    nodes : sequence of str, length n
        The items to group (e.g. image ids). Must be unique.
    links : pairs ``(a, b)`` of equal-length sequences
        Each ``a[i] -- b[i]`` joins two items. Ids not in ``nodes`` are ignored.

    Returns
    -------
    ndarray of int, shape (n,)
        Component label per node, numbered 0.. in order of first appearance.
    """
    index = pd.Index(nodes)
    if not index.is_unique:
        raise TableError("link_components: node ids must be unique")
    n = len(index)
    rows: list[np.ndarray] = [np.arange(n)]
    cols: list[np.ndarray] = [np.arange(n)]
    for a, b in links:
        ia = index.get_indexer(pd.Index(a))
        ib = index.get_indexer(pd.Index(b))
        keep = (ia >= 0) & (ib >= 0)
        rows.append(ia[keep])
        cols.append(ib[keep])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so labels are stable and readable
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[labels]
