"""Synthetic lesion tables with known signals, for tests and benchmarks.

* :func:`make_ugly_duckling` draws patients whose lesion embeddings (``emb_*``) cluster around a
  patient-specific centre. A melanoma is drawn from the *population* distribution of lesions, not
  from its own patient's cluster: over all patients, melanomas and benign lesions have exactly the
  same distribution (so no single-lesion model can beat AUC 0.5 in expectation), yet within its
  patient a melanoma is an outlier (so a model that sees the patient's other lesions can find it).
* :func:`make_tbp_patients` draws whole patients with the 33 numeric ISIC 2024 (SLICE-3D)
  lesion-visualiser columns (``tbp_lv_*`` and ``clin_size_long_diam_mm``), calibrated on the
  real per-class distributions stored in ``dermctx/data/tbp_calibration.json``, with melanomas
  that are outliers within their patient (``mode="outlier"``) or that carry per-lesion signal
  only (``mode="null"``). See ``docs/synthetic.md``.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd

from dermctx.errors import DermctxError, DermctxWarning
from dermctx.table import SITES, embedding_column_names, normalise_site

__all__ = ["TBP_COLUMNS", "make_tbp_patients", "make_ugly_duckling"]


def make_ugly_duckling(
    n_patients: int,
    *,
    lesions_per_patient: int | tuple[int, int] = (4, 30),
    dim: int = 16,
    melanoma_rate: float = 0.05,
    centre_scale: float = 1.0,
    within_scale: float = 0.5,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """A lesion table whose melanomas are outliers within their patient but not globally.

    For patient ``p`` a centre ``c_p ~ N(0, centre_scale² I)`` is drawn; each benign lesion is
    ``c_p + N(0, within_scale² I)``. Each melanoma is drawn from
    ``N(0, (centre_scale² + within_scale²) I)``, independent of ``c_p``: exactly the marginal
    distribution of benign lesions over all patients, but far from its own patient's centre.
    Age, sex and site are drawn independently of the label.

    Parameters
    ----------
    n_patients : int
        Number of patients (>= 1).
    lesions_per_patient : int or (low, high)
        Lesions per patient: a fixed number, or drawn uniformly from ``low..high`` (inclusive).
    dim : int
        Embedding width: columns ``emb_0000 .. emb_{dim-1}`` (float32).
    melanoma_rate : float
        Probability that a lesion is a melanoma, in [0, 1). Each patient keeps at least one
        benign lesion, so the rate realised is slightly below this on tiny sets.
    centre_scale, within_scale : float
        Standard deviations of the patient centres and of lesions around their centre. The smaller
        ``within_scale / centre_scale``, the more a melanoma stands out within its patient.
    random_state : int or None
        Seed; the same seed gives the same table.

    Returns
    -------
    DataFrame
        One row per lesion, in patient order: ``image_id, patient_id, lesion_id, age, sex, site,
        diagnosis, target, path, source`` (``"synthetic"``) and ``emb_*`` (float32). Ids carry
        the seed (``"syn7-P00000"``, ``"syn7-I0000000"``), so tables drawn with different seeds
        can be concatenated without sharing a patient.
    """
    if int(n_patients) != n_patients or n_patients < 1:
        raise DermctxError(f"n_patients must be a positive integer, got {n_patients!r}")
    low, high = _size_range(lesions_per_patient)
    if not 0 <= melanoma_rate < 1:
        raise DermctxError(f"melanoma_rate must be in [0, 1), got {melanoma_rate!r}")
    if dim < 1:
        raise DermctxError(f"dim must be >= 1, got {dim!r}")
    if centre_scale <= 0 or within_scale <= 0:
        raise DermctxError(
            f"centre_scale and within_scale must be > 0, got {centre_scale!r}, {within_scale!r}"
        )

    rng = np.random.default_rng(random_state)
    n_per = rng.integers(low, high + 1, size=n_patients)  # (P,)
    n = int(n_per.sum())
    patient = np.repeat(np.arange(n_patients), n_per)  # (n,)
    centres = rng.normal(0.0, centre_scale, size=(n_patients, dim))  # (P, dim)
    benign = centres[patient] + rng.normal(0.0, within_scale, size=(n, dim))  # (n, dim)
    population = rng.normal(0.0, np.hypot(centre_scale, within_scale), size=(n, dim))  # (n, dim)

    target = rng.random(n) < melanoma_rate  # (n,)
    # keep one benign lesion per patient: a set made only of melanomas has no "normal" to differ from
    starts = np.concatenate([[0], np.cumsum(n_per)[:-1]])
    all_mel = np.add.reduceat(target, starts) == n_per
    target[starts[all_mel]] = False
    emb = np.where(target[:, None], population, benign).astype(np.float32)

    tag = "syn" if random_state is None else f"syn{random_state}"  # draws with other seeds do not collide
    pid = np.array([f"{tag}-P{p:05d}" for p in range(n_patients)], dtype=object)[patient]
    image_id = np.array([f"{tag}-I{i:07d}" for i in range(n)], dtype=object)
    table = pd.DataFrame(
        {
            "image_id": image_id,
            "patient_id": pid,
            "lesion_id": image_id,
            "age": np.round(rng.uniform(20, 85, n_patients)[patient] / 5) * 5,
            "sex": np.array(["male", "female"], dtype=object)[rng.integers(0, 2, n_patients)][patient],
            "site": np.array(SITES[:4], dtype=object)[rng.integers(0, 4, n)],
            "diagnosis": np.where(target, "melanoma", "nevus").astype(object),
            "target": target.astype(int),
            "path": None,
            "source": "synthetic",
        }
    )
    emb_frame = pd.DataFrame(emb, columns=embedding_column_names(dim))
    return pd.concat([table, emb_frame], axis=1)


# ---------------------------------------------------------------------------------------------
# Whole-patient ISIC 2024-style tables (make_tbp_patients)

#: The calibration file in ``dermctx/data`` (written by ``benchmarks/make_tbp_calibration.py``).
TBP_CALIBRATION = "tbp_calibration.json"

#: The 33 numeric per-lesion columns :func:`make_tbp_patients` writes: the 32 numeric
#: ``tbp_lv_*`` columns of ISIC 2024 that the label does not derive from (not
#: ``tbp_lv_dnn_lesion_confidence``) and ``clin_size_long_diam_mm``, in the official file's order.
TBP_COLUMNS: tuple[str, ...] = (
    "clin_size_long_diam_mm",
    "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext",
    "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2",
    "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean", "tbp_lv_deltaA", "tbp_lv_deltaB",
    "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm", "tbp_lv_eccentricity",
    "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence", "tbp_lv_norm_border", "tbp_lv_norm_color",
    "tbp_lv_perimeterMM", "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt",
    "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z",
)

_LOG: dict[str, Any] = {"kind": "log", "sign": 1.0, "offset": 0.0}
#: Where each column is modelled as Gaussian: ``log`` (``log(sign * x + offset)``) for positive
#: skewed sizes, contrasts and spreads, ``logit`` on ``[lo, hi]`` for bounded scores, identity for
#: CIELAB coordinates and 3D positions. Values are mapped back and clipped to the column's real
#: range (stored in the calibration).
TBP_TRANSFORMS: dict[str, dict[str, Any]] = {
    **{c: {"kind": "identity"} for c in TBP_COLUMNS},
    **{c: dict(_LOG) for c in (
        "clin_size_long_diam_mm", "tbp_lv_areaMM2", "tbp_lv_perimeterMM", "tbp_lv_minorAxisMM",
        "tbp_lv_area_perim_ratio", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm", "tbp_lv_stdL",
        "tbp_lv_stdLExt", "tbp_lv_symm_2axis", "tbp_lv_norm_border")},
    "tbp_lv_deltaL": {"kind": "log", "sign": -1.0, "offset": 0.0},  # the lesion is darker than the skin
    "tbp_lv_color_std_mean": {"kind": "log", "sign": 1.0, "offset": 0.5},  # 11% exact zeros
    "tbp_lv_radial_color_std_max": {"kind": "log", "sign": 1.0, "offset": 0.5},
    "tbp_lv_eccentricity": {"kind": "logit", "lo": 0.0, "hi": 1.0, "eps": 1e-3},
    "tbp_lv_nevi_confidence": {"kind": "logit", "lo": 0.0, "hi": 100.0, "eps": 1e-4},
    "tbp_lv_symm_2axis_angle": {"kind": "logit", "lo": -2.5, "hi": 177.5, "eps": 1e-3},
}
#: Columns given in multiples of a step in the real data (the symmetry axis angle, 5 degrees).
TBP_STEPS: dict[str, float] = {"tbp_lv_symm_2axis_angle": 5.0}

#: Columns that are exact functions of others in the real data (to 1e-5): recomputed after the
#: draw, so a generated row is as consistent as a real one (C = |(A, B)|, H = atan2(B, A) in
#: degrees, A = Aext + deltaA ..., area_perim_ratio = perimeter² / area).
TBP_DERIVED: dict[str, str] = {
    "tbp_lv_A": "tbp_lv_Aext + tbp_lv_deltaA",
    "tbp_lv_B": "tbp_lv_Bext + tbp_lv_deltaB",
    "tbp_lv_L": "tbp_lv_Lext + tbp_lv_deltaL",
    "tbp_lv_C": "hypot(tbp_lv_A, tbp_lv_B)",
    "tbp_lv_Cext": "hypot(tbp_lv_Aext, tbp_lv_Bext)",
    "tbp_lv_H": "degrees(atan2(tbp_lv_B, tbp_lv_A))",
    "tbp_lv_Hext": "degrees(atan2(tbp_lv_Bext, tbp_lv_Aext))",
    "tbp_lv_area_perim_ratio": "tbp_lv_perimeterMM ** 2 / tbp_lv_areaMM2",
}

#: The clinically meaningful features a planted melanoma deviation is put on, in groups (one
#: feature per group at most): size, colour, contrast with the skin, colour irregularity, border,
#: symmetry, shape. A feature is eligible when the real melanoma-benign mean difference on it is
#: at least :data:`PLANT_MIN_Z` within-patient SDs.
PLANT_GROUPS: dict[str, tuple[str, ...]] = {
    "size": ("tbp_lv_areaMM2", "tbp_lv_perimeterMM", "tbp_lv_minorAxisMM",
             "clin_size_long_diam_mm"),
    "colour": ("tbp_lv_H", "tbp_lv_norm_color", "tbp_lv_deltaB"),
    "contrast": ("tbp_lv_deltaLBnorm", "tbp_lv_deltaLB", "tbp_lv_deltaL"),
    "colour irregularity": ("tbp_lv_color_std_mean", "tbp_lv_radial_color_std_max", "tbp_lv_stdL"),
    "border": ("tbp_lv_norm_border",),
    "symmetry": ("tbp_lv_symm_2axis",),
    "shape": ("tbp_lv_eccentricity",),
}
PLANT_MIN_Z = 0.5
#: Default lesion counts: lognormal, median 40, log-SD 0.9, clipped to [5, 300] (see make_tbp_patients).
LESIONS_MEDIAN, LESIONS_LOG_SD, LESIONS_RANGE = 40.0, 0.9, (5, 300)
#: At most this many melanomas per patient (and at most half of the patient's lesions).
MAX_MELANOMAS_PER_PATIENT = 5


def tbp_forward(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Map real values of a column into the space where it is modelled as Gaussian."""
    x = np.asarray(x, dtype=float)
    if spec["kind"] == "identity":
        return x.copy()
    if spec["kind"] == "log":
        return np.log(np.maximum(spec["sign"] * x + spec["offset"], 1e-12))
    if spec["kind"] == "logit":
        p = np.clip((x - spec["lo"]) / (spec["hi"] - spec["lo"]), spec["eps"], 1 - spec["eps"])
        return np.log(p) - np.log1p(-p)
    raise DermctxError(f"unknown transform {spec!r}")


def tbp_inverse(y: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Map Gaussian-space values back to the column's real scale (before clipping to its range)."""
    y = np.asarray(y, dtype=float)
    if spec["kind"] == "identity":
        return y.copy()
    if spec["kind"] == "log":
        return spec["sign"] * (np.exp(y) - spec["offset"])
    if spec["kind"] == "logit":
        return spec["lo"] + (spec["hi"] - spec["lo"]) / (1.0 + np.exp(-y))
    raise DermctxError(f"unknown transform {spec!r}")


def tbp_derive(values: dict[str, np.ndarray]) -> None:
    """Recompute the :data:`TBP_DERIVED` columns in place from the columns they are made of."""
    v = values
    v["tbp_lv_A"] = v["tbp_lv_Aext"] + v["tbp_lv_deltaA"]
    v["tbp_lv_B"] = v["tbp_lv_Bext"] + v["tbp_lv_deltaB"]
    v["tbp_lv_L"] = v["tbp_lv_Lext"] + v["tbp_lv_deltaL"]
    v["tbp_lv_C"] = np.hypot(v["tbp_lv_A"], v["tbp_lv_B"])
    v["tbp_lv_Cext"] = np.hypot(v["tbp_lv_Aext"], v["tbp_lv_Bext"])
    v["tbp_lv_H"] = np.degrees(np.arctan2(v["tbp_lv_B"], v["tbp_lv_A"]))
    v["tbp_lv_Hext"] = np.degrees(np.arctan2(v["tbp_lv_Bext"], v["tbp_lv_Aext"]))
    v["tbp_lv_area_perim_ratio"] = v["tbp_lv_perimeterMM"] ** 2 / v["tbp_lv_areaMM2"]


@lru_cache(maxsize=1)
def _calibration_text() -> str:
    return (resources.files("dermctx") / "data" / TBP_CALIBRATION).read_text(encoding="utf-8")


def load_tbp_calibration() -> dict[str, Any]:
    """The calibration :func:`make_tbp_patients` draws from (a fresh copy of the stored JSON).

    Keys: ``source`` (file, rows, licence), ``columns`` (:data:`TBP_COLUMNS`), ``transforms``,
    ``range`` (real min and max of each column), ``steps``, ``sites`` (ISIC 2024 site terms),
    ``site_offset`` (benign mean of each site minus the benign mean, in the transformed space),
    ``classes`` (``benign``, ``melanoma``, ``malignant``: ``n``, ``n_patients``, ``mean``, ``sd``,
    ``corr`` with its ``shrinkage``, counts of ``age``, ``sex``, ``site`` and ``missing`` rates),
    ``phenotype_share`` (per column, with the raw intraclass correlations and their bootstrap SEs).
    """
    cal: dict[str, Any] = json.loads(_calibration_text())
    return cal


def _cov(stats: dict[str, Any]) -> np.ndarray:
    sd = np.asarray(stats["sd"], dtype=float)
    return np.asarray(stats["corr"], dtype=float) * np.outer(sd, sd)


def _root(cov: np.ndarray) -> np.ndarray:
    """A square root ``F`` with ``F @ F.T == cov`` (eigenvalues below zero, from rounding, set to 0)."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return vecs * np.sqrt(np.clip(vals, 0.0, None))  # (F, F)


def _smoothed_freq(counts: dict[str, float], keys: list[str]) -> np.ndarray:
    c = np.array([counts.get(k, 0.0) for k in keys], dtype=float) + 1.0  # add-one smoothing
    return c / c.sum()


def _lesion_counts(rng: np.random.Generator, n_patients: int,
                   lesions_per_patient: int | tuple[int, int] | None) -> np.ndarray:
    if lesions_per_patient is None:
        raw = np.exp(rng.normal(np.log(LESIONS_MEDIAN), LESIONS_LOG_SD, size=n_patients))
        return np.clip(np.rint(raw), *LESIONS_RANGE).astype(np.int64)
    low, high = _size_range(lesions_per_patient)
    return rng.integers(low, high + 1, size=n_patients).astype(np.int64)


def _size_range(lesions_per_patient: int | tuple[int, int]) -> tuple[int, int]:
    """``(low, high)`` lesions per patient from an int or a pair, checked: 1 <= low <= high."""
    if isinstance(lesions_per_patient, (int, np.integer)):
        low = high = int(lesions_per_patient)
    else:
        try:
            low, high = (int(v) for v in lesions_per_patient)
        except (TypeError, ValueError) as exc:
            raise DermctxError("lesions_per_patient must be an int or a (low, high) pair, "
                               f"got {lesions_per_patient!r}") from exc
    if low < 1 or high < low:
        raise DermctxError(f"lesions_per_patient must satisfy 1 <= low <= high, got ({low}, {high})")
    return low, high


def _plant_shifts(rng: np.random.Generator, n_mel: int, diff: np.ndarray, z: np.ndarray,
                  within: np.ndarray, columns: list[str], scale: float, rising: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Planted deviations of ``n_mel`` melanomas: shifts (M, F), main feature index (M,),
    direction (M,) and which features were planted (M, F) bool.

    ``diff``, ``z`` and the shifts are in the transformed space; ``rising`` (F,) is +1 where the
    transform increases with the real value and -1 where it decreases, so that the direction
    returned is that of the real value.

    Each melanoma gets 1-3 groups of :data:`PLANT_GROUPS` (drawn with weights the largest real
    |z| of the group), one eligible feature per group (weights |z|), shifted by ``scale *
    diff``; every other column moves by its within-patient regression on the planted ones.
    """
    n_feat = len(columns)
    col_index = {c: j for j, c in enumerate(columns)}
    members = [[col_index[c] for c in feats if abs(z[col_index[c]]) >= PLANT_MIN_Z]
               for feats in PLANT_GROUPS.values()]
    members = [m for m in members if m]
    shifts = np.zeros((n_mel, n_feat))
    main = np.full(n_mel, -1, dtype=np.int64)
    direction = np.zeros(n_mel, dtype=np.int64)
    planted = np.zeros((n_mel, n_feat), dtype=bool)
    if n_mel == 0 or not members or scale == 0:
        return shifts, main, direction, planted
    group_w = np.array([max(abs(z[j]) for j in m) for m in members])
    k = rng.integers(1, min(3, len(members)) + 1, size=n_mel)  # (M,)
    # k groups without replacement, weights group_w (Gumbel top-k)
    keys = np.log(group_w)[None, :] + rng.gumbel(size=(n_mel, len(members)))  # (M, G)
    order = np.argsort(-keys, axis=1)
    chosen_groups = np.arange(len(members))[None, :] < k[:, None]  # (M, G) by rank
    feat_keys = np.log(np.abs(z) + 1e-300)[None, :] + rng.gumbel(size=(n_mel, n_feat))  # (M, F)
    for g, m in enumerate(members):
        pick = np.asarray(m)[np.argmax(feat_keys[:, m], axis=1)]  # (M,) one member per group
        use = ((order == g) & chosen_groups).any(axis=1)  # (M,) group g among the first k
        planted[np.flatnonzero(use), pick[use]] = True
    absz = np.where(planted, np.abs(z)[None, :], -1.0)
    main = np.argmax(absz, axis=1)
    direction = (np.sign(diff) * rising)[main].astype(np.int64)  # on the real scale
    delta = scale * diff  # (F,) shift of a planted feature, in the transformed space
    patterns, inverse = np.unique(planted, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        shifts[np.ravel(inverse) == p] = _pattern_shift(pattern, within, delta)
    return shifts, main, direction, planted


def _pattern_shift(pattern: np.ndarray, within: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """(F,) shift of a melanoma whose features ``pattern`` (F,) bool are planted: ``delta`` on
    them, every other column by its within-patient regression on them, ``W[:, S] W[S, S]^-1 δ_S``."""
    s = np.flatnonzero(pattern)
    return within[:, s] @ np.linalg.solve(within[np.ix_(s, s)], delta[s])


#: Melanomas simulated to estimate the distribution of planted patterns for ``oracle=True``.
ORACLE_PATTERN_DRAWS = 200_000


def _gauss_logpdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density of N(mean, cov) at the rows of ``x`` (n, F) (the constant 2π term dropped)."""
    chol = np.linalg.cholesky(cov)
    half = np.linalg.solve(chol, (x - mean).T)  # (F, n)
    return -0.5 * (half ** 2).sum(axis=0) - np.log(np.diag(chol)).sum()


def _outlier_log_lr(r: np.ndarray, patterns: np.ndarray, weights: np.ndarray, within: np.ndarray,
                    delta: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """log p(r | melanoma) / p(r | benign) for residuals ``r`` (n, F) from the patient's own benign
    mean, over the columns ``seen`` (F,) bool.

    Benign: ``r ~ N(0, W)``; melanoma: a mixture over planted patterns ``k`` (weights ``π_k``) of
    ``N(s_k, W)`` (:func:`_pattern_shift`): each component's log ratio is linear in ``r``.
    """
    shifts = np.stack([_pattern_shift(p, within, delta) for p in patterns])[:, seen]  # (K, F') s_k
    a = np.linalg.solve(within[np.ix_(seen, seen)], shifts.T).T  # (K, F') W^-1 s_k
    b = 0.5 * (a * shifts).sum(axis=1)  # (K,) s_k' W^-1 s_k / 2
    terms = np.log(weights)[None, :] + r[:, seen] @ a.T - b[None, :]  # (n, K)
    top = terms.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(terms - top).sum(axis=1, keepdims=True)))[:, 0]


def make_tbp_patients(
    n_patients: int,
    *,
    mode: Literal["outlier", "null"] = "outlier",
    lesions_per_patient: int | tuple[int, int] | None = None,
    melanoma_rate: float = 0.01,
    phenotype_share: float | None = None,
    deviation_sd: float = 1.0,
    malignant: Literal["melanoma", "all"] = "melanoma",
    oracle: bool = False,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Whole patients of 3D total-body photography, with ISIC 2024's per-lesion columns.

    Whole-patient ISIC 2024 (SLICE-3D) data is not available to dermctx's tests and benchmarks:
    the shared subset has 1,370 rows with ``tbp_lv_*`` values, a median of 2 per patient. This
    generator keeps what that subset shows, the per-class distributions of the 33 numeric
    columns (:data:`TBP_COLUMNS`), and adds what it cannot show, whole patients, from a stated
    model. The numbers are in ``dermctx/data/tbp_calibration.json`` (see
    ``benchmarks/make_tbp_calibration.py`` and ``docs/synthetic.md``).

    **Model.** Each column is mapped to a space where it is modelled as Gaussian
    (:data:`TBP_TRANSFORMS`: log for sizes, contrasts and spreads, logit for bounded scores).
    There a benign lesion of patient ``p`` at site ``s`` is::

        x = mu_benign + o_s + d_p + e,
        d_p ~ N(0, Sb),  e ~ N(0, Sw),   Sb = S^½ Σ_benign S^½,  Sw = (1-S)^½ Σ_benign (1-S)^½

    where ``o_s`` is the real benign site offset (3D position and colour depend on the site),
    ``Σ_benign`` the real benign covariance and ``S`` the diagonal of the phenotype shares: the
    share of each column's benign variance that lies between patients (skin colour about 0.4,
    lesion size about 0.15, position 0), estimated as the intraclass correlation of the real
    patients with >= 2 benign lesions. ``d_p`` is the patient's phenotype: shifted colour and
    size of all their lesions. Values are mapped back, clipped to the real range of the column,
    and the columns that are exact functions of others (:data:`TBP_DERIVED`) recomputed.

    * ``mode="outlier"``: a melanoma is a benign draw of its *own* patient (same ``d_p``) plus
      a planted deviation on 1-3 clinically meaningful features (:data:`PLANT_GROUPS`: size,
      colour, contrast, colour irregularity, border, symmetry, shape; a feature is eligible when
      the real class difference on it is >= 0.5 within-patient SD, and drawn with weight its
      size). A planted feature is shifted by ``deviation_sd`` times the real mean difference
      ``mu_melanoma - mu_benign`` (direction and size from the data); every other column moves
      by its within-patient regression on the planted ones, so the lesion stays plausible
      (a larger lesion also has a larger perimeter and diameter). The melanoma is an outlier
      among its own patient's lesions; across patients the phenotype hides part of it.
    * ``mode="null"``: no phenotype (``S = 0``: patients are exchangeable, a patient's other
      lesions carry no information about a lesion) and melanomas drawn from the real malignant
      distribution ``N(mu_melanoma + o_s, Σ_melanoma)``: per-lesion signal only.

    Patient age and sex are drawn from the real benign frequencies; a patient's melanoma rate
    is ``melanoma_rate`` times the real likelihood ratio of their age and sex (so the classes'
    age and sex frequencies follow the real ones); sites are drawn per lesion from the real
    frequencies of the lesion's class. Missing values are planted at the real benign rates
    (age and sex per patient, site per lesion; the ``tbp_lv_*`` columns are complete in the
    real data, so they are here).

    **Limits.** The within-patient structure is assumed, not learnt: real patients may have
    several kinds of benign lesions (clusters), sun-damage gradients over the body, and
    melanomas that are not outliers; the shares come from pairs of lesions of 231 patients.
    The malignant distribution is that of the 157 real melanomas (or all 393 malignant rows),
    from patients who were biopsied. At the calibrated shares most benign variance of lesion
    size and colour irregularity lies within a patient (shares 0.12-0.22), so a melanoma's
    deviation from its own patient is nearly its deviation from the population and context has
    little to remove; ``phenotype_share`` explores larger shares. The Gaussian in the
    transformed space misses some shapes (the size floor near 2.5 mm, the zeros of the colour
    spreads, the bimodal nevus confidence). Positions ``tbp_lv_x/y/z`` follow the site only on
    average.

    Parameters
    ----------
    n_patients : int
        Number of patients (>= 1).
    mode : {"outlier", "null"}
        How melanomas are drawn (see above).
    lesions_per_patient : None, int or (low, high)
        Lesions per patient. None (default): lognormal with median 40 and log-SD 0.9, clipped to
        [5, 300] (mean about 58). The real ISIC 2024 training set has 401,059 lesions of 1,042
        patients (mean 385) and the shared subset cannot give the distribution; the default
        is smaller so that, at the default ``melanoma_rate``, most patients have 0-2 melanomas
        as in the real data. An int: that many; a pair: uniform on ``low..high``.
    melanoma_rate : float
        Mean share of lesions that are melanomas, in [0, 0.5]. Default 0.01: ten times the real
        ISIC 2024 malignant rate (393 of 401,059, 0.1%), so that 400,000 lesions hold about
        4,000 melanomas for benchmarks; about a third of patients have one or more. A patient
        has at most 5 melanomas and at most half of their lesions.
    phenotype_share : float or None
        None: the calibrated per-column shares (``mode="outlier"``) or 0 (``"null"``). A float
        in [0, 1): that share for every column (``mode="outlier"`` only; the null has none).
    deviation_sd : float
        Size of the planted deviation, as a multiple of the real class difference (>= 0). The
        default 1.0 moves a planted feature by the real melanoma-benign mean difference:
        0.6-1.9 within-patient SDs (size 1.7-1.9, colour 1.0-1.7, contrast 1.2-1.4, colour
        irregularity 1.1-1.3, symmetry 0.6; border and eccentricity differ by less than 0.5 SD
        in the data and are not planted). A per-lesion LightGBM then reaches an AUC of about
        0.80 on held-out patients (0.65 at 0.5, 0.90 at 1.5). The SDs are those at the calibrated
        phenotype shares: a larger ``phenotype_share`` leaves less variance within a patient, so
        the same shift is more within-patient SDs (about twice as many at 0.8). 0 plants nothing:
        melanomas are then benign draws (no signal at all).
    malignant : {"melanoma", "all"}
        The real class that calibrates the melanomas: the 157 ISIC 2024 melanomas (default),
        or all 393 malignant rows (ISIC 2024's ``target``: 60% basal and squamous cell
        carcinomas).
    oracle : bool
        Add ``oracle_log_odds``: the generator's own log odds that the lesion is a melanoma,
        from what no model is shown (its drawn values of the columns that are not
        :data:`TBP_DERIVED`, before clipping and rounding, the patient's
        phenotype ``d_p``, the site offsets, the planted-pattern distribution and the patient's
        melanoma rate): ``logit(rate_p) + log P(site | melanoma) / P(site | benign) + log LR``.
        Ranking by it is the Bayes-optimal ranking of these patients, within each patient and
        (up to the cap on melanomas per patient) pooled, so its AUC, pAUC and within-patient AUC
        are the ceilings any model can reach on the table, up to sampling noise. The pattern
        mixture of ``mode="outlier"`` is estimated from :data:`ORACLE_PATTERN_DRAWS` simulated
        melanomas (a fixed seed). Refused as an input by every estimator, like ``planted_*``.
    random_state : int or None
        Seed; the same seed gives the same table.

    Returns
    -------
    DataFrame
        One row per lesion, in patient order: ``image_id, patient_id, lesion_id, target, age,
        sex, site, site_detail`` (the ISIC 2024 site term), ``source`` (``"synthetic"``), the 33
        :data:`TBP_COLUMNS` (float64), ``planted_feature`` (the main planted feature of an outlier
        melanoma, ``""`` otherwise), ``planted_direction`` (+1 or -1, 0 otherwise) and, with
        ``oracle=True``, ``oracle_log_odds`` (float64). These columns describe the label and are
        refused as inputs by every estimator.
        Ids carry the seed (``"tbp7-P00000"``), so draws with different seeds do not collide.
    """
    if int(n_patients) != n_patients or n_patients < 1:
        raise DermctxError(f"n_patients must be a positive integer, got {n_patients!r}")
    if mode not in ("outlier", "null"):
        raise DermctxError(f"mode must be 'outlier' or 'null', got {mode!r}")
    if malignant not in ("melanoma", "all"):
        raise DermctxError(f"malignant must be 'melanoma' or 'all', got {malignant!r}")
    if not 0 <= melanoma_rate <= 0.5:
        raise DermctxError(f"melanoma_rate must be in [0, 0.5], got {melanoma_rate!r}")
    if not (np.isfinite(deviation_sd) and deviation_sd >= 0):
        raise DermctxError(f"deviation_sd must be a finite number >= 0, got {deviation_sd!r}")
    if phenotype_share is not None and not 0 <= phenotype_share < 1:
        raise DermctxError(f"phenotype_share must be None or in [0, 1), got {phenotype_share!r}")
    if mode == "null" and phenotype_share:
        raise DermctxError("mode='null' has no patient phenotype (its patients are exchangeable); "
                           f"phenotype_share must be None or 0, got {phenotype_share!r}")
    n_patients = int(n_patients)
    cal = load_tbp_calibration()
    columns: list[str] = cal["columns"]
    benign, mel = cal["classes"]["benign"], cal["classes"]["melanoma" if malignant == "melanoma" else "malignant"]
    mu_b, mu_m = np.asarray(benign["mean"]), np.asarray(mel["mean"])
    cov_b = _cov(benign)
    if mode == "null":
        share = np.zeros(len(columns))
    elif phenotype_share is None:
        share = np.asarray(cal["phenotype_share"]["share"], dtype=float)
    else:
        share = np.full(len(columns), float(phenotype_share))
    root_b = _root(cov_b)
    root_between = np.sqrt(share)[:, None] * root_b  # (F, F)
    root_within = np.sqrt(1 - share)[:, None] * root_b
    within = root_within @ root_within.T

    rng = np.random.default_rng(random_state)
    n_per = _lesion_counts(rng, n_patients, lesions_per_patient)  # (P,)
    n = int(n_per.sum())
    patient = np.repeat(np.arange(n_patients), n_per)  # (n,)
    starts = np.concatenate([[0], np.cumsum(n_per)[:-1]])

    # patients: age and sex from the benign frequencies; melanoma rate tilted by their likelihood ratio
    ages = sorted({*benign["age"], *mel["age"]}, key=float)
    f_age_b, f_age_m = _smoothed_freq(benign["age"], ages), _smoothed_freq(mel["age"], ages)
    sexes = ["female", "male"]
    f_sex_b, f_sex_m = _smoothed_freq(benign["sex"], sexes), _smoothed_freq(mel["sex"], sexes)
    age_i = rng.choice(len(ages), size=n_patients, p=f_age_b)
    sex_i = rng.choice(2, size=n_patients, p=f_sex_b)
    lr = (f_age_m / f_age_b)[age_i] * (f_sex_m / f_sex_b)[sex_i]  # mean 1 over benign patients
    rate_p = np.clip(melanoma_rate * lr, 0.0, 1.0)
    cap = np.minimum(MAX_MELANOMAS_PER_PATIENT, n_per // 2)
    n_mel_p = np.minimum(rng.binomial(n_per, rate_p), cap)  # (P,)
    order = np.lexsort((rng.random(n), patient))  # a random order of each patient's lesions
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[patient[order]]
    target = rank < n_mel_p[patient]  # (n,)
    n_mel = int(target.sum())
    if n_mel == 0 and melanoma_rate > 0:
        warnings.warn(f"make_tbp_patients: no melanoma was drawn ({n} lesions of {n_patients} patients at "
                      f"melanoma_rate={melanoma_rate}); a patient has at most "
                      f"{MAX_MELANOMAS_PER_PATIENT} melanomas and at most half of their lesions, so "
                      "patients need 2 or more lesions", DermctxWarning, stacklevel=2)

    # sites per lesion, from the real frequencies of the lesion's class
    sites: list[str] = cal["sites"]
    site_i = np.where(target, rng.choice(len(sites), size=n, p=_smoothed_freq(mel["site"], sites)),
                      rng.choice(len(sites), size=n, p=_smoothed_freq(benign["site"], sites)))
    offsets = np.asarray([cal["site_offset"][s] for s in sites], dtype=float)  # (S, F)

    # features in the transformed space
    n_feat = len(columns)
    phenotype = rng.standard_normal((n_patients, n_feat)) @ root_between.T  # (P, F)
    x = mu_b + offsets[site_i] + phenotype[patient] + rng.standard_normal((n, n_feat)) @ root_within.T
    mel_rows = np.flatnonzero(target)
    planted_feature = np.full(n, "", dtype=object)
    planted_direction = np.zeros(n, dtype=np.int64)
    if mode == "null":
        draw = rng.standard_normal((n_mel, n_feat)) @ _root(_cov(mel)).T
        x[mel_rows] = mu_m + offsets[site_i[mel_rows]] + draw
    else:
        calibrated = np.asarray(cal["phenotype_share"]["share"], dtype=float)
        sd_within = np.asarray(benign["sd"]) * np.sqrt(1 - calibrated)
        diff = mu_m - mu_b
        rising = np.array([-1.0 if cal["transforms"][c].get("sign", 1.0) < 0 else 1.0 for c in columns])
        shifts, main, direction, _ = _plant_shifts(rng, n_mel, diff, diff / sd_within, within,
                                                   columns, float(deviation_sd), rising)
        x[mel_rows] += shifts
        has = main >= 0
        planted_feature[mel_rows[has]] = np.asarray(columns, dtype=object)[main[has]]
        planted_direction[mel_rows] = direction

    log_odds = None
    if oracle:
        f_site_b, f_site_m = _smoothed_freq(benign["site"], sites), _smoothed_freq(mel["site"], sites)
        prior = np.clip(rate_p, 1e-9, 1 - 1e-9)
        log_odds = (np.log(prior) - np.log1p(-prior))[patient] + np.log(f_site_m / f_site_b)[site_i]
        # the columns the table shows (the others are recomputed from them, their draws discarded)
        seen = np.array([c not in TBP_DERIVED for c in columns])
        if mode == "null":
            at = (x - mu_b - offsets[site_i])[:, seen]  # (n, F') from the site's benign mean
            cov_m, cov_s = _cov(mel)[np.ix_(seen, seen)], cov_b[np.ix_(seen, seen)]
            log_odds += _gauss_logpdf(at, (mu_m - mu_b)[seen], cov_m) - _gauss_logpdf(at, np.zeros(at.shape[1]), cov_s)
        elif deviation_sd > 0:
            _, _, _, drawn = _plant_shifts(np.random.default_rng(0), ORACLE_PATTERN_DRAWS, diff,
                                           diff / sd_within, within, columns, float(deviation_sd), rising)
            patterns, counts = np.unique(drawn[drawn.any(axis=1)], axis=0, return_counts=True)
            if len(patterns):
                r = x - mu_b - offsets[site_i] - phenotype[patient]  # (n, F) from the patient's benign mean
                log_odds += _outlier_log_lr(r, patterns, counts / counts.sum(), within,
                                            float(deviation_sd) * diff, seen)

    # back to the real scale: clip to the real range, round to the real step, recompute derived columns
    values: dict[str, np.ndarray] = {}
    for j, col in enumerate(columns):
        v = np.clip(tbp_inverse(x[:, j], cal["transforms"][col]), *cal["range"][col])
        step = cal["steps"].get(col)
        values[col] = np.round(v / step) * step if step else v
    tbp_derive(values)
    for col, rate in cal["classes"]["benign"]["missing"].items():
        if col in values and rate > 0:
            values[col][rng.random(n) < rate] = np.nan

    miss = benign["missing"]
    age = np.asarray(ages, dtype=float)[age_i]
    age[rng.random(n_patients) < miss["age"]] = np.nan
    sex = np.asarray(sexes, dtype=object)[sex_i]
    sex[rng.random(n_patients) < miss["sex"]] = None
    site_lost = rng.random(n) < miss["site"]
    site_detail = np.asarray(sites, dtype=object)[site_i]
    site_detail[site_lost] = None
    site = normalise_site(pd.Series(sites, dtype=object))[0].to_numpy(dtype=object)[site_i]
    site[site_lost] = None

    tag = "tbp" if random_state is None else f"tbp{random_state}"
    pid = np.array([f"{tag}-P{p:05d}" for p in range(n_patients)], dtype=object)[patient]
    image_id = np.array([f"{tag}-I{i:07d}" for i in range(n)], dtype=object)
    table = pd.DataFrame({
        "image_id": image_id,
        "patient_id": pid,
        "lesion_id": image_id,
        "target": target.astype(np.int64),
        "age": age[patient],
        "sex": sex[patient],
        "site": site,
        "site_detail": site_detail,
        "source": "synthetic",
    })
    features = pd.DataFrame({c: values[c] for c in TBP_COLUMNS})
    planted = pd.DataFrame({"planted_feature": planted_feature,
                            "planted_direction": planted_direction})
    if log_odds is not None:
        planted["oracle_log_odds"] = log_odds
    return pd.concat([table, features, planted], axis=1)
