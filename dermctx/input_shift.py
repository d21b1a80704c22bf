"""Input shift: numeric columns scored on another scale than the model was fitted on.

A measurement sent in another unit (cm for mm, a ratio for a percentage, a CNN logit for a
probability) is still a number, so nothing downstream refuses it, and a tree model silently
reads every value as one of its training extremes. :class:`InputDistribution` keeps, at fit
time, the quantiles of each numeric input column's values and of its patients' medians by
patient size (on a logit scale for a column whose training values all lie in (0, 1), a log
scale for a right-skewed positive one such as a size). Patients
differ (one patient's lesions are all large, another's skin is darker), and a patient's median
varies less the more lesions it has, so a batch is compared patient by patient, each against
training patients with about as many lesions (a single lesion against the training values):
:meth:`InputDistribution.check` returns one message per column where

* more than :data:`OUT_SHARE` of the batch's patients (and at least one) have a median beyond
  the range of their size class's training medians by more than :data:`MARGIN` times that
  range (so a patient scored alone is checked too), or
* with at least :data:`MIN_PATIENTS` patients, their values are distributed unlike the
  training values (Kolmogorov-Smirnov distance above :data:`KS_LIMIT`: the largest gap between
  the two cumulative distributions, 0 to 1), or
* a value lies outside [0, 1] where every training value lay inside (0, 1) (a probability
  sent as a percentage or a logit), or is negative where every training value was positive.

The check warns, it does not refuse: the scores are computed, and the warning names the column
and the medians here and in training. It sees a change of scale that moves the patients'
medians out of the range seen in training, not one that keeps them inside it (a column centred
on 0 multiplied by 2, a percentage near 100 divided by 10 for one patient); the rates at which
it catches x10, /10, x2.54 and x100 on real ISIC 2024 measurements, and how often it warns on
unchanged held-out patients, are in ``benchmarks/results/input_shift.md``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from dermctx.formatting import format_number, plural
from dermctx.table import to_numbers

__all__ = ["KS_LIMIT", "MARGIN", "MIN_PATIENTS", "OUT_SHARE", "InputDistribution"]

#: How far beyond the training patients' medians (times their range) a patient's median is out.
MARGIN = 0.5
#: Share of the batch's patients that may be out before a column is flagged.
OUT_SHARE = 0.05
#: KS distance between the batch's and the training values above which a column is flagged.
KS_LIMIT = 0.4
#: Fewest patients (with a value) for the KS rule.
MIN_PATIENTS = 30
_GRID = np.linspace(0.0, 1.0, 201)  # stored quantiles: every 0.5%
_SIZES = (2, 5, 20)  # patients' size classes (values per patient): 1, 2-4, 5-19, 20 or more
_MIN_TRAINING = 20  # fewest training patients with a value for a column to be checked
_SCALES = ("linear", "log", "logit")  # logit: training values all in (0, 1); log: all > 0
_CLIP = 1e-7


class InputDistribution:
    """Training quantiles of numeric input columns, to notice columns scored on another scale.

    Parameters
    ----------
    columns : dict of str to dict
        Column name -> ``{"scale": s, "values": q, "medians": {"2": q, "5": q, "20": q}}``:
        the scale it is compared on (``"logit"`` when every training value is in (0, 1), such as
        a probability; ``"log"`` when every one is positive and the logarithm makes them more
        symmetric, such as a size; else ``"linear"``); the quantiles
        at 0, 0.5%, ..., 100% (201 non-decreasing numbers) of its training values on that scale;
        and of the medians of training patients with 2-4, 5-19 and 20 or more values (a size
        class with fewer than 20 such patients is left out). Build one with :meth:`fit`.
    """

    def __init__(self, columns: dict[str, dict[str, Any]]):
        self.columns: dict[str, dict[str, Any]] = {
            str(c): {"scale": str(d["scale"]), "values": np.asarray(d["values"], dtype=float),
                     "medians": {str(k): np.asarray(q, dtype=float) for k, q in d["medians"].items()}}
            for c, d in columns.items()}

    @classmethod
    def fit(cls, X: pd.DataFrame, columns: list[str]) -> InputDistribution:
        """Quantiles of each column of ``X`` (with ``patient_id``); a column with values on
        fewer than 20 patients is not checked."""
        out = {}
        for col in columns:
            v, pid = _finite(X, col)
            scale = _scale_of(v)
            v = _on_scale(v, scale)
            medians, sizes = _patient_medians(v, pid)
            if len(medians) < _MIN_TRAINING:
                continue
            by_size = {}
            for k, (lo, hi) in zip(_SIZES, itertools.pairwise([*_SIZES, np.inf]), strict=True):
                chosen = medians[(sizes >= lo) & (sizes < hi)]
                if len(chosen) >= _MIN_TRAINING:
                    by_size[str(k)] = np.quantile(chosen, _GRID)
            out[str(col)] = {"scale": scale, "values": np.quantile(v, _GRID), "medians": by_size}
        return cls(out)

    def to_state(self) -> dict[str, dict[str, Any]]:
        """JSON-ready form (:meth:`from_state` reads it back)."""
        return {c: {"scale": d["scale"], "values": _floats(d["values"]),
                    "medians": {k: _floats(q) for k, q in d["medians"].items()}} for c, d in self.columns.items()}

    @classmethod
    def from_state(cls, state: Any) -> InputDistribution:
        """Read :meth:`to_state`'s output; ValueError naming the column on anything else."""
        if not isinstance(state, dict):
            raise ValueError(f"expected a mapping of column to quantiles, got {type(state).__name__}")
        for col, d in state.items():
            medians = d.get("medians") if isinstance(d, dict) else None
            ok = isinstance(d, dict) and d.get("scale") in _SCALES and _is_quantiles(d.get("values")) \
                and isinstance(medians, dict) and set(medians) <= {str(k) for k in _SIZES} \
                and all(_is_quantiles(q) for q in medians.values())
            if not ok:
                raise ValueError(f"column {col!r}: expected 'scale' (one of {_SCALES}), 'values' ({len(_GRID)} non-decreasing "
                                 "finite numbers) and 'medians' (such lists keyed by '2', '5', '20')")
        return cls(state)

    def check(self, X: pd.DataFrame) -> list[str]:
        """One message per column of ``X`` (with ``patient_id``) that looks shifted; empty when none do."""
        messages = []
        for col, d in self.columns.items():
            if col not in X.columns:
                continue
            v, pid = _finite(X, col)
            if not len(v):
                continue
            raw = v
            lo = {"linear": -np.inf, "log": 0.0, "logit": 0.0}[d["scale"]]
            outside = int(((v < lo) | (v > (1.0 if d["scale"] == "logit" else np.inf))).sum())
            v = _on_scale(v, d["scale"])
            medians, sizes = _patient_medians(v, pid)
            out = 0
            for lo, hi in itertools.pairwise([1, *_SIZES, np.inf]):
                here = medians[(sizes >= lo) & (sizes < hi)]
                if len(here):  # against training patients of the same size class, or a smaller one
                    ref = next((d["medians"][str(k)] for k in reversed(_SIZES) if k <= lo and str(k) in d["medians"]),
                               d["values"])
                    reach = MARGIN * (ref[-1] - ref[0])
                    out += int(((here < ref[0] - reach) | (here > ref[-1] + reach)).sum())
            n_pat = len(medians)
            ks = _ks_distance(v, d["values"]) if n_pat >= MIN_PATIENTS else 0.0
            found = []
            if out and out > OUT_SHARE * n_pat:
                found.append(f"{plural(out, 'patient')} of {n_pat} here {'has' if out == 1 else 'have'} a median "
                             "far beyond those of training patients with as many lesions")
            if outside:
                found.append(f"{outside} of {len(v)} value(s) lie outside "
                             f"{'[0, 1], where every training value lay' if d['scale'] == 'logit' else 'the positive numbers, where every training value lay'}")
            if ks > KS_LIMIT:
                found.append(f"the values of these {n_pat} patients are distributed unlike the training values "
                             f"(Kolmogorov-Smirnov distance {ks:.2f})")
            if found:
                q, scale = d["values"], d["scale"]
                messages.append(f"column {col!r}: {'; '.join(found)} (median {format_number(np.median(raw))} here; "
                                f"training values {format_number(_back(q[0], scale))} to {format_number(_back(q[-1], scale))}, median "
                                f"{format_number(_back(q[len(q) // 2], scale))})")
        return messages


def _finite(X: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """The finite values of a column and their rows' patient ids."""
    v = to_numbers(X[col], booleans=False)[0].to_numpy(dtype=float)
    keep = np.isfinite(v)
    return v[keep], X["patient_id"].astype(str).to_numpy()[keep]


def _patient_medians(v: np.ndarray, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's median of ``v`` and number of values."""
    if not len(v):
        return np.zeros(0), np.zeros(0, dtype=int)
    groups = pd.Series(v).groupby(pid, sort=False)
    return groups.median().to_numpy(dtype=float), groups.size().to_numpy()


def _scale_of(v: np.ndarray) -> str:
    """``"logit"`` for values all in (0, 1); ``"log"`` for positive values that the logarithm
    makes more symmetric (sizes, spreads: right-skewed); else ``"linear"`` (coordinates...)."""
    if not len(v):
        return "linear"
    if ((v > 0) & (v < 1)).all():
        return "logit"
    if (v > 0).all() and abs(_skew(np.log(v))) < abs(_skew(v)):
        return "log"
    return "linear"


def _skew(v: np.ndarray) -> float:
    sd = v.std()
    return float(((v - v.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


def _back(x: float, scale: str) -> float:
    """A value on the comparison scale, back in the column's own units."""
    return float(np.exp(x) if scale == "log" else 1 / (1 + np.exp(-x)) if scale == "logit" else x)


def _on_scale(v: np.ndarray, scale: str) -> np.ndarray:
    """Values on the column's comparison scale; a value outside the scale's domain (<= 0 for
    log; outside (0, 1) for logit, clipped at 1e-7) lands beyond every training value."""
    if scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), -np.inf)
    if scale == "logit":
        p = np.clip(v, _CLIP, 1 - _CLIP)
        return np.log(p / (1 - p)) + np.where(v > 1, np.inf, 0) - np.where(v < 0, np.inf, 0)
    return v


def _floats(q: np.ndarray) -> list[float]:
    return [float(x) for x in q]


def _is_quantiles(q: Any) -> bool:
    if not (isinstance(q, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in q)):
        return False
    a = np.asarray(q, dtype=float)
    return a.shape == _GRID.shape and bool(np.isfinite(a).all()) and not (np.diff(a) < 0).any()


def _ks_distance(v: np.ndarray, q: np.ndarray) -> float:
    """Largest gap between the cumulative distribution of ``v`` and the training one (given by
    its quantiles ``q``), just below and at each value, so that ties (many zeros) compare as ties."""
    x = np.unique(v)
    s = np.sort(v)
    cdf = np.concatenate([[0.0], _GRID])  # cdf[k]: the training share at or below q[k - 1]
    gaps = [np.searchsorted(s, x, side=side) / len(v) - cdf[np.searchsorted(q, x, side=side)]
            for side in ("right", "left")]
    return float(max(np.abs(g).max() for g in gaps))
