"""A tree of diagnoses, after Esteva et al. (2017), and the mappings dermctx ships.

A model is trained on fine *training classes* (the leaves of the tree: "nevus", "melanoma",
"bcc", ...). A user asks a coarser question (benign or malignant?). The probability of an
*inference class* is the sum of the probabilities of the training classes below it, so a
distribution over leaves stays a distribution over inference classes.

Shipped trees (see ``docs/taxonomy.md`` for every choice and why):

=================== ==========================================================================
``isic2020-binary``    every ISIC 2020 ``diagnosis`` value -> benign / malignant
``isic2020-esteva3``   every ISIC 2020 ``diagnosis`` value -> benign / malignant / non-neoplastic
``ham10000-binary``    every HAM10000 ``dx`` code -> benign / malignant (malignant: mel, bcc, akiec)
``ham10000-esteva3``   every HAM10000 ``dx`` code -> benign / malignant / non-neoplastic
=================== ==========================================================================

Example
-------
>>> from dermctx import Taxonomy
>>> tax = Taxonomy.builtin("ham10000-binary")
>>> tax.classes()
['benign', 'malignant']
>>> tax.map(["mel", "nv"])
['malignant', 'benign']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import pandas as pd

from dermctx.errors import DermctxError

__all__ = ["BUILTIN_TAXONOMIES", "Taxonomy"]

# A tree is a mapping from a node name to its children: another mapping, or a list of leaves.
Tree = Mapping[str, Union["Tree", Sequence[str]]]

_ISIC2020_BENIGN = [
    "nevus",
    "seborrheic keratosis",
    "lentigo NOS",
    "lichenoid keratosis",
    "solar lentigo",
    "atypical melanocytic proliferation",
    "unknown",
]

#: The shipped trees, by name. Leaves are the source's own diagnosis terms.
BUILTIN_TAXONOMIES: dict[str, dict[str, Any]] = {
    "isic2020-binary": {
        "benign": [*_ISIC2020_BENIGN, "cafe-au-lait macule"],
        "malignant": ["melanoma"],
    },
    "isic2020-esteva3": {
        "benign": _ISIC2020_BENIGN,
        "malignant": ["melanoma"],
        "non-neoplastic": ["cafe-au-lait macule"],
    },
    "ham10000-binary": {
        "benign": ["nv", "bkl", "df", "vasc"],
        "malignant": ["mel", "bcc", "akiec"],
    },
    "ham10000-esteva3": {
        "benign": ["nv", "bkl", "df", "vasc"],
        "malignant": ["mel", "bcc", "akiec"],
        "non-neoplastic": [],
    },
}


class Taxonomy:
    """A tree of diagnoses: leaves are training classes, inner nodes are inference classes.

    Parameters
    ----------
    tree : mapping
        ``{node: children}`` where ``children`` is a nested mapping of the same kind or a list of
        leaf names (training classes). An inner node may have no leaves (its probability is 0).
        Every name must be unique across the whole tree.
    name : str
        A label for messages and reports.

    Notes
    -----
    Depth 1 (the default for :meth:`classes`, :meth:`map` and :meth:`aggregate`) means the
    children of the root, e.g. benign / malignant. Deeper levels give finer inference classes;
    a leaf above the requested depth is its own class at every deeper level.
    """

    def __init__(self, tree: Tree, *, name: str = "taxonomy") -> None:
        self.name = name
        self.tree = tree
        self._paths: dict[str, tuple[str, ...]] = {}  # leaf -> path of inner nodes from the root
        self._nodes: list[tuple[str, ...]] = []  # inner-node paths, in tree order
        self._walk(tree, (), set())
        if not self._paths:
            raise DermctxError(f"taxonomy {name!r}: the tree has no leaves (training classes)")

    def _walk(self, node: Any, path: tuple[str, ...], seen: set[str]) -> None:
        if isinstance(node, Mapping):
            items: list[tuple[str, Any]] = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = [(leaf, None) for leaf in node]
        else:
            where = "/".join(path) or "<root>"
            raise DermctxError(
                f"taxonomy {self.name!r}: node {where!r} has children of type "
                f"{type(node).__name__}; expected a mapping or a list of leaf names"
            )
        for key, child in items:
            if not isinstance(key, str) or not key:
                raise DermctxError(
                    f"taxonomy {self.name!r}: under {'/'.join(path) or '<root>'!r} found the "
                    f"name {key!r}; expected a non-empty string"
                )
            if key in seen:
                raise DermctxError(
                    f"taxonomy {self.name!r}: the name {key!r} appears twice; names must be unique"
                )
            seen.add(key)
            if child is None:
                self._paths[key] = path
            else:
                self._nodes.append((*path, key))
                self._walk(child, (*path, key), seen)

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def builtin(cls, name: str) -> Taxonomy:
        """One of the shipped trees (:data:`BUILTIN_TAXONOMIES`) by name."""
        if name not in BUILTIN_TAXONOMIES:
            raise DermctxError(
                f"unknown taxonomy {name!r}; expected one of {sorted(BUILTIN_TAXONOMIES)}"
            )
        return cls(BUILTIN_TAXONOMIES[name], name=name)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], *, name: str = "taxonomy") -> Taxonomy:
        """A two-level tree from ``{training class: inference class}``."""
        tree: dict[str, list[str]] = {}
        for leaf, parent in mapping.items():
            tree.setdefault(str(parent), []).append(str(leaf))
        return cls(tree, name=name)

    # --- structure ------------------------------------------------------------------------

    @property
    def leaves(self) -> list[str]:
        """The training classes, in tree order (the column order :meth:`aggregate` expects)."""
        return list(self._paths)

    @property
    def depth(self) -> int:
        """The number of inner levels below the root (1 for a two-level tree)."""
        return max((len(p) for p in self._nodes), default=0)

    def classes(self, depth: int = 1) -> list[str]:
        """The inference classes at ``depth``: inner nodes at that level plus shallower leaves."""
        self._check_depth(depth)
        found = set(self._targets(depth).values())
        # an inner node at this depth with no leaves below is still a class (probability 0)
        found |= {node[-1] for node in self._nodes if len(node) == depth}
        return [name for name in self._tree_order() if name in found]

    def _tree_order(self) -> list[str]:
        names: list[str] = []

        def visit(node: Any) -> None:
            items = node.items() if isinstance(node, Mapping) else [(leaf, None) for leaf in node]
            for key, child in items:
                names.append(key)
                if child is not None:
                    visit(child)

        visit(self.tree)
        return names

    def _check_depth(self, depth: int) -> None:
        if not isinstance(depth, (int, np.integer)) or depth < 1:
            raise DermctxError(f"taxonomy {self.name!r}: depth must be an integer >= 1, got {depth!r}")

    def _targets(self, depth: int) -> dict[str, str]:
        """leaf -> its inference class at ``depth``."""
        return {leaf: (path[depth - 1] if len(path) >= depth else leaf)
                for leaf, path in self._paths.items()}

    def parent(self, leaf: str, depth: int = 1) -> str:
        """The inference class of the training class ``leaf`` at ``depth``."""
        self._check_depth(depth)
        if leaf not in self._paths:
            raise DermctxError(
                f"taxonomy {self.name!r}: unknown training class {leaf!r}; expected one of "
                f"{self.leaves}"
            )
        return self._targets(depth)[leaf]

    # --- use ------------------------------------------------------------------------------

    def map(self, labels: Sequence[Any] | pd.Series, depth: int = 1) -> list[Any] | pd.Series:
        """Map training-class labels to inference classes; missing values stay missing.

        Returns a Series (same index) for a Series, else a list. An unknown label raises
        :class:`DermctxError` naming it and its position.
        """
        self._check_depth(depth)
        targets = self._targets(depth)
        series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels), dtype=object)
        values = series.astype(object).to_numpy()
        missing = pd.isna(values)
        unknown = [i for i, v in enumerate(values) if not missing[i] and v not in targets]
        if unknown:
            shown = ", ".join(f"{i} ({values[i]!r})" for i in unknown[:5])
            raise DermctxError(
                f"taxonomy {self.name!r}: unknown label(s) at position(s) {shown}; expected one "
                f"of {self.leaves}"
            )
        out = [None if missing[i] else targets[v] for i, v in enumerate(values)]
        if isinstance(labels, pd.Series):
            return pd.Series(out, index=labels.index, name=labels.name, dtype=object)
        return out

    def aggregate(
        self,
        proba: np.ndarray | pd.DataFrame,
        depth: int = 1,
        *,
        atol: float = 1e-4,
    ) -> pd.DataFrame:
        """Sum training-class probabilities into inference-class probabilities.

        Parameters
        ----------
        proba : ndarray of shape (n, n_leaves) or DataFrame
            A probability distribution over the training classes per row. An array is read in
            the order of :attr:`leaves`; a DataFrame by column name (every leaf needed; other
            columns are an error).
        depth : int
            Which level of inference classes to return.
        atol : float
            Rows must be non-negative and sum to 1 within ``atol``.

        Returns
        -------
        DataFrame of shape (n, n_classes)
            One column per :meth:`classes` ``(depth)``; rows sum to the input row sums. Keeps the
            DataFrame's index.
        """
        self._check_depth(depth)
        leaves = self.leaves
        if isinstance(proba, pd.DataFrame):
            missing = [c for c in leaves if c not in proba.columns]
            extra = [c for c in proba.columns if c not in self._paths]
            if missing or extra:
                raise DermctxError(
                    f"taxonomy {self.name!r}: probability columns do not match the training "
                    f"classes (missing {missing}, unexpected {extra}); expected {leaves}"
                )
            index = proba.index
            values = proba[leaves].to_numpy(dtype=float)
        else:
            values = np.asarray(proba, dtype=float)
            if values.ndim != 2 or values.shape[1] != len(leaves):
                raise DermctxError(
                    f"taxonomy {self.name!r}: expected probabilities of shape (n, {len(leaves)}) "
                    f"in the order {leaves}, got shape {values.shape}"
                )
            index = pd.RangeIndex(len(values))
        bad = ~np.isfinite(values).all(axis=1) | (values < -atol).any(axis=1)
        bad |= np.abs(values.sum(axis=1) - 1.0) > atol
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise DermctxError(
                f"taxonomy {self.name!r}: rows {rows} are not probability distributions "
                f"(finite, >= 0, summing to 1 within {atol})"
            )
        classes = self.classes(depth)
        targets = self._targets(depth)
        member = np.zeros((len(leaves), len(classes)))  # (n_leaves, n_classes) 0/1
        col = {c: j for j, c in enumerate(classes)}
        for i, leaf in enumerate(leaves):
            member[i, col[targets[leaf]]] = 1.0
        return pd.DataFrame(values @ member, index=index, columns=classes)

    def __repr__(self) -> str:
        return f"Taxonomy({self.name!r}, {len(self._paths)} training classes, classes={self.classes()})"
