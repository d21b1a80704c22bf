"""Ugly-duckling explanations in a clinician's terms, from a ranker's per-feature contributions.

:meth:`dermctx.ContextRanker.feature_contributions` splits each lesion's score (calibrated logit)
into the contributions of its *source* columns: a source gathers a column and every
patient-relative feature derived from it (``tbp_lv_areaMM2``, ``tbp_lv_areaMM2__z``,
``tbp_lv_areaMM2__rank``... are one source), so the explanation speaks of what was measured, not
of the model's internal features. :func:`describe` words the largest ones, using the lesion's
standing among its own patient's lesions, e.g.::

    raises: tbp_lv_areaMM2 higher than 14 of the patient's 15 other lesions (+3.1 SD from their
    mean); CNN score 12% (higher than 13 of the patient's 15 other lesions) | lowers: age 34

The sources a :class:`~dermctx.ContextRanker` can have, and how each is worded:

==================== =============================================================================
source               wording
==================== =============================================================================
``cnn_score``        the CNN's probability (the offset stage) and its rank among the others
``cnn_logit``        the CNN score's patient-relative features (z, rank, same-site)
a context feature    how many of the patient's other lesions it exceeds (or falls below), and its
                     z-score against their mean
an outlier group     how many of the patient's other lesions lie closer to their centre
``emb``              the same, for the appearance embedding
``set_model``        the set transformer's score (attention over the patient's lesions)
``patient``          the patient's lesion count
``image_size``       the image's pixel size (``use_image_size``)
anything else        its value
==================== =============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dermctx.formatting import format_number, format_probability, plural

__all__ = ["ExplanationContext", "describe", "format_probability", "source_of"]

#: Sources shared by all of a patient's lesions; their contributions are left out of the words.
PATIENT_LEVEL: tuple[str, ...] = ("age", "sex", "patient")
#: Contributions smaller than this (calibrated logit units) are not worded.
MIN_CONTRIBUTION: float = 0.05


def source_of(feature: str) -> str:
    """The source column of a model feature: ``"tbp_lv_H__site_z"`` -> ``"tbp_lv_H"``; the image's
    ``area``, ``width`` and ``height`` features -> ``"image_size"``."""
    base = feature.split("__", 1)[0]
    return "image_size" if base in ("area", "width", "height") else base


@dataclass
class ExplanationContext:
    """What :func:`describe` needs besides the contributions, all aligned with the scored rows.

    Attributes
    ----------
    codes : ndarray of int, (n,)
        Patient of each row (0..n_patients-1).
    values : dict of str to ndarray (n,)
        The raw value of each numeric source (context features, the CNN score, age...).
    z : dict of str to ndarray (n,)
        Leave-one-out z-score against the patient's other lesions, per context source.
    distance : dict of str to ndarray (n,)
        Distance to the centroid of the patient's other lesions, per outlier group / ``emb``.
    labels : dict of str to ndarray (n,)
        Text values (sex, site).
    group_sizes : dict of str to int
        Number of columns of each outlier group.
    families : list of list of str
        Groups of strongly correlated context sources (size: area, perimeter, diameter...).
        Their contributions are worded together, by the member on which this lesion deviates
        most: tree models spread the credit of one deviation over its correlated measurements.
    score_source : str or None
        The CNN score's column name (its raw value is a probability).
    """

    codes: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    z: dict[str, np.ndarray] = field(default_factory=dict)
    distance: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    group_sizes: dict[str, int] = field(default_factory=dict)
    families: list[list[str]] = field(default_factory=list)
    score_source: str | None = None


def _standing(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: how many of the patient's other valid values are lower, higher, and their count."""
    frame = pd.DataFrame({"g": codes, "x": x})
    valid = frame["x"].notna()
    n = valid.groupby(frame["g"]).transform("sum").to_numpy() - valid.to_numpy()
    lower = frame.groupby("g")["x"].rank(method="min").to_numpy() - 1.0
    higher = n - (frame.groupby("g")["x"].rank(method="max").to_numpy() - 1.0)
    return np.nan_to_num(lower), np.nan_to_num(higher), n


def _phrase(source: str, i: int, ctx: ExplanationContext, standing: Mapping[str, tuple]) -> str:
    def compare(name: str, word_hi: str = "higher", word_lo: str = "lower", short: bool = False) -> str:
        lower, higher, n = standing[name]
        if n[i] <= 0:
            return "no other lesions to compare"
        of = f"of {int(n[i])}" if short else f"of the patient's {plural(int(n[i]), 'other lesion')}"
        if lower[i] >= higher[i]:
            return f"{word_hi} than {int(lower[i])} {of}"
        return f"{word_lo} than {int(higher[i])} {of}"

    if source == ctx.score_source:
        return f"CNN score {format_probability(ctx.values[source][i])} ({compare(source)})"
    if source == "cnn_logit" and ctx.score_source in ctx.values:
        return f"CNN score relative to the patient's other lesions: {compare(ctx.score_source)}"
    if source in ctx.distance:
        what = (f"{ctx.group_sizes[source]} measurements ({source})" if source in ctx.group_sizes
                else "appearance (embedding)")
        return f"unlike this patient's other lesions in {what}: {compare(source, 'further from their centre', 'closer to their centre')}"
    if source.startswith("family:"):
        members = ctx.families[int(source.split(":", 1)[1])]
        dev = [abs(ctx.z[m][i]) if np.isfinite(ctx.z[m][i]) else -1.0 for m in members]
        head = members[int(np.argmax(dev))]
        others = len(members) - 1
        return _phrase(head, i, ctx, standing) + f" and {plural(others, 'correlated measurement')}"
    if source in ctx.z:
        value = ctx.values[source][i]
        if not np.isfinite(value):
            return f"{source} missing"
        z = ctx.z[source][i]
        if standing[source][2][i] <= 0:
            return f"{source} {format_number(value)} (no other lesions to compare)"
        where = "at their mean" if abs(z) < 0.05 else f"{z:+.1f} SD from their mean"  # never "-0.0 SD"
        return f"{source} {compare(source)} ({where})"
    if source == "patient" and "patient" in ctx.values:
        return f"the patient has {plural(int(ctx.values['patient'][i]), 'lesion')}"
    if source == "set_model":
        return "the set model (attention over the patient's lesions)"
    if source in ctx.labels:
        label = ctx.labels[source][i]
        return f"{source} {label if label is not None else 'missing'}"
    if source in ctx.values:
        value = ctx.values[source][i]
        return f"{source} {format_number(value)}" if np.isfinite(value) else f"{source} missing"
    return source


def describe(
    contributions: pd.DataFrame,
    ctx: ExplanationContext,
    *,
    n_raise: int = 3,
    n_lower: int = 2,
    min_contribution: float = MIN_CONTRIBUTION,
) -> list[str]:
    """One sentence per row: the sources that raised and lowered its score most, in words.

    Parameters
    ----------
    contributions : DataFrame, (n, k)
        Calibrated-logit contribution of each source (``baseline`` is never worded).
    ctx : ExplanationContext
        Values aligned with the rows of ``contributions``.
    n_raise, n_lower : int
        At most this many raising / lowering sources per lesion, largest first.
    min_contribution : float
        Sources contributing less (absolute, logit units) are left out.

    Returns
    -------
    list of str, length n
        ``"raises: ...; ... | lowers: ..."``; ``"no single feature stands out"`` when none passes.
    """
    contributions = contributions.drop(columns=["baseline"], errors="ignore")
    for k, members in enumerate(ctx.families):  # one deviation, credited to its correlates too
        present = [m for m in members if m in contributions.columns]
        if len(present) > 1:
            merged = contributions[present].sum(axis=1)
            contributions = contributions.drop(columns=present).assign(**{f"family:{k}": merged})
    # what is the same for every lesion of the patient (age, sex, lesion count) sets the level of
    # all their scores but does not say why this lesion stands out: not worded
    contributions = contributions.drop(columns=[c for c in PATIENT_LEVEL if c in contributions.columns])
    sources = list(contributions.columns)
    values = contributions.to_numpy(dtype=float)
    needed = set(ctx.z) | set(ctx.distance) | ({ctx.score_source} if ctx.score_source else set())
    standing = {}
    for name in needed:
        arr = ctx.distance.get(name, ctx.values.get(name))
        if arr is not None:
            standing[name] = _standing(np.asarray(arr, dtype=float), ctx.codes)
    out = []
    for i in range(len(contributions)):
        order = np.argsort(-values[i], kind="stable")
        ups = [sources[j] for j in order if values[i, j] >= min_contribution][:n_raise]
        downs = [sources[j] for j in order[::-1] if values[i, j] <= -min_contribution][:n_lower]
        parts = []
        if ups:
            parts.append("raises: " + "; ".join(_phrase(s, i, ctx, standing) for s in ups))
        if downs:
            parts.append("lowers: " + "; ".join(_phrase(s, i, ctx, standing) for s in downs))
        out.append(" | ".join(parts) if parts else "no single feature stands out")
    return out
