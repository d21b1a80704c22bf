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
from typing import Any

import numpy as np
import pandas as pd

from dermctx.formatting import format_number, format_probability, plural

__all__ = ["ISIC2024_LABELS", "ExplanationContext", "describe", "format_probability", "resolve_labels", "source_of"]

#: Sources shared by all of a patient's lesions; their contributions are left out of the words.
PATIENT_LEVEL: tuple[str, ...] = ("age", "sex", "patient")
#: Contributions smaller than this (calibrated logit units) are not worded.
MIN_CONTRIBUTION: float = 0.05
#: A family of correlated measurements is worded by its most deviating member, followed by up to
#: this many more members that deviate from the patient's other lesions by at least
#: :data:`FAMILY_ALSO_SD` (leave-one-out z-score): a planted size deviation moves area,
#: perimeter and diameter together, and the one that moved most is not always the one changed.
FAMILY_ALSO: int = 2
FAMILY_ALSO_SD: float = 1.5
#: A measurement within this many SDs of the patient's other lesions' mean, with at least
#: :data:`TYPICAL_SHARE` of them on each side, is typical for the patient: its contribution comes
#: from the value itself, so the value is worded ("border irregularity 3.2, typical for this
#: patient"), not a deviation the lesion does not have.
TYPICAL_SD: float = 0.5
TYPICAL_SHARE: float = 0.25


def source_of(feature: str) -> str:
    """The source column of a model feature: ``"tbp_lv_H__site_z"`` -> ``"tbp_lv_H"``; the image's
    ``area``, ``width`` and ``height`` features -> ``"image_size"``."""
    base = feature.split("__", 1)[0]
    return "image_size" if base in ("area", "width", "height") else base


#: Words for the ISIC 2024 (SLICE-3D) per-lesion measurements, for ``labels="isic2024"`` in
#: :meth:`dermctx.ContextRanker.explain`, ``score_patient`` and ``rank``. From the challenge's
#: description of ``train-metadata.csv`` (Kurtansky et al., "The SLICE-3D dataset", Scientific
#: Data 11, 884, 2024): colours are CIELAB values of the 3D total-body photograph, inside the
#: lesion or on the skin just outside it ("ext").
ISIC2024_LABELS: dict[str, str] = {
    "clin_size_long_diam_mm": "largest diameter (mm)",
    "tbp_lv_A": "redness (A*) inside", "tbp_lv_Aext": "redness (A*) of the surrounding skin",
    "tbp_lv_B": "yellowness (B*) inside", "tbp_lv_Bext": "yellowness (B*) of the surrounding skin",
    "tbp_lv_C": "colour saturation (chroma) inside", "tbp_lv_Cext": "chroma of the surrounding skin",
    "tbp_lv_H": "hue inside", "tbp_lv_Hext": "hue of the surrounding skin",
    "tbp_lv_L": "lightness (L*) inside", "tbp_lv_Lext": "lightness (L*) of the surrounding skin",
    "tbp_lv_areaMM2": "area (mm²)", "tbp_lv_area_perim_ratio": "border jaggedness (perimeter²/area)",
    "tbp_lv_color_std_mean": "colour irregularity inside",
    "tbp_lv_deltaA": "redness contrast with the surrounding skin",
    "tbp_lv_deltaB": "yellowness contrast with the surrounding skin",
    "tbp_lv_deltaL": "lightness contrast with the surrounding skin",
    "tbp_lv_deltaLB": "contrast with the surrounding skin (L*, B*)",
    "tbp_lv_deltaLBnorm": "contrast with the surrounding skin (normalised)",
    "tbp_lv_eccentricity": "eccentricity (elongation)", "tbp_lv_minorAxisMM": "smallest diameter (mm)",
    "tbp_lv_nevi_confidence": "the TBP software's nevus confidence",
    "tbp_lv_norm_border": "border irregularity (0-10)", "tbp_lv_norm_color": "colour variation (0-10)",
    "tbp_lv_perimeterMM": "perimeter (mm)", "tbp_lv_radial_color_std_max": "colour asymmetry (radial)",
    "tbp_lv_stdL": "lightness variation inside", "tbp_lv_stdLExt": "lightness variation of the surrounding skin",
    "tbp_lv_symm_2axis": "border asymmetry", "tbp_lv_symm_2axis_angle": "angle of the asymmetry axis",
    "tbp_lv_x": "position on the body (x)", "tbp_lv_y": "position on the body (y)",
    "tbp_lv_z": "position on the body (z)", "tbp_lv_dnn_lesion_confidence": "the TBP software's lesion confidence",
}


def resolve_labels(labels: Any) -> dict[str, str]:
    """``labels`` of the explanations as a mapping: None (column names), "isic2024"
    (:data:`ISIC2024_LABELS`) or a dict of column -> words. Raises ValueError otherwise."""
    if labels is None:
        return {}
    if isinstance(labels, str):
        if labels == "isic2024":
            return dict(ISIC2024_LABELS)
        raise ValueError(f"labels={labels!r}; expected None, 'isic2024' or a dict of column -> words")
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                  for k, v in labels.items()):
        raise ValueError("labels: expected a dict of column name -> non-empty words (or None, 'isic2024')")
    return dict(labels)

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
    names : dict of str to str
        Words for a column in the sentences (``"area (mm²)"`` for ``tbp_lv_areaMM2``); a column
        without one is named as it is.
    families : list of list of str
        Groups of strongly correlated context sources (size: area, perimeter, diameter...).
        Their contributions are worded together, by the member on which this lesion deviates
        most and up to :data:`FAMILY_ALSO` more that deviate by :data:`FAMILY_ALSO_SD` or more:
        tree models spread the credit of one deviation over its correlated measurements.
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
    names: dict[str, str] = field(default_factory=dict)  # a column's words in the sentences


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
        dev = np.array([abs(ctx.z[m][i]) if np.isfinite(ctx.z[m][i]) else -1.0 for m in members])
        order = np.argsort(-dev, kind="stable")
        also = [members[j] for j in order[1:1 + FAMILY_ALSO] if dev[j] >= FAMILY_ALSO_SD]
        text = _phrase(members[order[0]], i, ctx, standing)
        if also:
            text += "; with " + ", ".join(f"{ctx.names.get(m, m)} {compare(m, short=True)} "
                                          f"({ctx.z[m][i]:+.1f} SD)" for m in also)
        others = len(members) - 1 - len(also)
        return text + (f" and {plural(others, 'more correlated measurement')}" if others else "")
    if source in ctx.z:
        value = ctx.values[source][i]
        name = ctx.names.get(source, source)
        if not np.isfinite(value):
            return f"{name} missing"
        z = ctx.z[source][i]
        if standing[source][2][i] <= 0:
            return f"{name} {format_number(value)} (no other lesions to compare)"
        lower, higher, n = standing[source]
        if abs(z) < TYPICAL_SD and min(lower[i], higher[i]) >= TYPICAL_SHARE * n[i]:
            return f"{name} {format_number(value)}, typical for this patient ({compare(source, short=True)})"
        if abs(z) < 0.05:
            return f"{name} {compare(source)} (at their mean)"  # never "-0.0 SD"
        if (z > 0) != (lower[i] >= higher[i]):  # above most but below their mean (or the reverse):
            return f"{name} {compare(source)}"  # a skewed set; the count alone does not contradict itself
        return f"{name} {compare(source)} ({z:+.1f} SD from their mean)"
    if source == "patient" and "patient" in ctx.values:
        return f"the patient has {plural(int(ctx.values['patient'][i]), 'lesion')}"
    if source == "set_model":
        return "the set model (attention over the patient's lesions)"
    if source in ctx.labels:
        label = ctx.labels[source][i]
        return f"{ctx.names.get(source, source)} {label if label is not None else 'missing'}"
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
