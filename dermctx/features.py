"""Patient-context features: how each lesion compares with the same patient's other lesions.

:func:`patient_context_features` turns per-lesion columns (a CNN logit, image width, an embedding)
into patient-relative columns named ``{col}__{stat}``. Every statistic is *leave-one-out*: a lesion
is compared with the patient's *other* lesions, so its own value never leaks into its reference.

Defined values on small sets (so no NaN appears from set size alone):

============================ ====================== ==========================================
feature                      one-lesion patient     meaning
============================ ====================== ==========================================
``{col}__diff``              0                      value minus the mean of the other lesions
``{col}__z``                 0                      ``diff`` / std of the others (floored)
``{col}__rank``              0.5                    average rank within patient, scaled to [0, 1]
``{col}__ratio``             1                      value / mean of the others
``{col}__same``              1                      fraction of the others with exactly this value
``{col}__med_diff``          0                      value minus the median of the other lesions
``{col}__med_ratio``         1                      value / median of the other lesions
``{col}__site_diff``         0                      ``diff`` against same-site lesions only
``{col}__site_z``            0                      ``z`` against same-site lesions only
``patient__count``           1                      number of lesions of the patient
``patient__site_count``      1                      number of the patient's lesions at this site
``emb__centroid_dist``       0                      distance to the centroid of the others
``emb__centroid_dist_rank``  0.5                    its rank within patient, scaled to [0, 1]
``emb__knn_dist``            0                      mean distance to the k nearest others
``emb__lof``                 1                      local outlier factor among the patient's set
============================ ====================== ==========================================

:func:`patient_outlier_features` gives the four ``emb__*`` scores for any declared group of
numeric columns (ISIC 2024's colour, size and shape measurements), in standardised units.

A lesion whose own value is missing gets NaN features for that column (and is left out of the
other lesions' references); LightGBM handles NaN natively.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dermctx.errors import TableError
from dermctx.table import embedding_columns

__all__ = [
    "ALL_STATS",
    "CONTEXT_STATS",
    "EXACT_MAX",
    "context_scales",
    "outlier_scales",
    "patient_context_features",
    "patient_outlier_features",
]

#: Statistics computed by default for every scalar column, in output order.
CONTEXT_STATS: tuple[str, ...] = ("diff", "z", "rank", "ratio", "same")
#: Every statistic :func:`patient_context_features` can compute (``stats=``).
ALL_STATS: tuple[str, ...] = (*CONTEXT_STATS, "med_diff", "med_ratio")

#: Largest patient set on which embedding kNN/LOF scores are exact; above it every lesion is
#: compared with a random reference sample of this many of the patient's lesions, so the cost
#: per patient is O(n * EXACT_MAX * d) instead of O(n^2 * d).
EXACT_MAX: int = 256


def _loo_moments(
    x: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out count, mean and variance (ddof=0) of the *other* valid values of each group.

    Returns arrays of shape (n,): ``n_other``, ``mean_other`` (NaN where ``n_other == 0``),
    ``var_other`` (0 where ``n_other < 1``). Rows with NaN ``x`` are left out of every sum.
    """
    valid = ~np.isnan(x)
    count = np.bincount(codes, weights=valid.astype(float), minlength=n_groups)
    # centred on each group's own mean for the numerical stability of the sum of squares: a centre
    # shared by the batch would let one extreme value cost every other patient precision
    with np.errstate(invalid="ignore", divide="ignore"):
        group_mean = np.bincount(codes, weights=np.where(valid, x, 0.0), minlength=n_groups) / count
    centre = np.nan_to_num(group_mean, nan=0.0)[codes]
    xc = np.where(valid, x - centre, 0.0)
    s = np.bincount(codes, weights=xc, minlength=n_groups)
    q = np.bincount(codes, weights=xc * xc, minlength=n_groups)
    n_other = count[codes] - valid
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (s[codes] - xc) / n_other
        var = (q[codes] - xc * xc) / n_other - m * m
    var = np.where(n_other > 0, np.clip(var, 0.0, None), 0.0)
    return n_other, m + centre, var


def _loo_diff_z(
    x: np.ndarray, codes: np.ndarray, n_groups: int, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out difference and z-score of ``x`` against its group's other members.

    Returns ``(diff, z, loo_mean, alone)``, each shape (n,); a member alone in its group gets
    difference 0 and z 0. ``floor`` is added (in quadrature) to the group's std.
    """
    n_other, m, var = _loo_moments(x, codes, n_groups)
    alone = n_other <= 0
    diff = np.where(alone, 0.0, x - m)
    denom = np.sqrt(var + floor * floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(denom > 0, diff / denom, 0.0)
    return diff, z, m, alone


def _loo_median(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Median of the *other* valid values of each group, shape (n,); NaN where there are none.

    Exact and vectorised: the group's values are sorted once; the median of the others of the
    value at sorted position ``i`` is read from that order with position ``i`` skipped.
    """
    out = np.full(len(x), np.nan)
    valid = np.flatnonzero(~np.isnan(x))
    if not len(valid):
        return out
    order = valid[np.lexsort((x[valid], codes[valid]))]
    a = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    start = np.repeat(starts, sizes)
    pos = np.arange(len(order)) - start  # sorted position within the group
    m = np.repeat(sizes, sizes) - 1  # number of others

    def other(k: np.ndarray) -> np.ndarray:  # k-th smallest of the others (position i skipped)
        k = np.clip(k, 0, None)
        return a[np.minimum(start + k + (k >= pos), len(a) - 1)]

    upper = other(m // 2)
    med = np.where(m % 2 == 1, upper, (other(m // 2 - 1) + upper) / 2.0)
    out[order] = np.where(m > 0, med, np.nan)
    return out


def _group_rank(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Average rank of ``x`` within its group scaled to [0, 1] (0.5 for a lone value; NaN stays)."""
    s = pd.Series(x)
    r = s.groupby(codes).rank(method="average").to_numpy()
    n = s.notna().groupby(codes).transform("sum").to_numpy().astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r - 1.0) / (n - 1.0)
    return np.where(n > 1, out, np.where(np.isnan(x), np.nan, 0.5))


def _same_fraction(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Fraction of the group's other valid values equal to ``x`` (1 when there are none)."""
    valid = ~np.isnan(x)
    frame = pd.DataFrame({"g": codes, "x": np.where(valid, x, np.inf)})
    same = frame.groupby(["g", "x"])["x"].transform("size").to_numpy() - 1.0
    n_other = pd.Series(valid).groupby(codes).transform("sum").to_numpy() - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n_other > 0, same / n_other, 1.0)
    return np.where(valid, out, np.nan)


def _scalar_features(
    x: np.ndarray,
    name: str,
    codes: np.ndarray,
    site_codes: np.ndarray | None,
    z_floor: float,
    scale: float | None = None,
    stats: Sequence[str] = CONTEXT_STATS,
) -> dict[str, np.ndarray]:
    valid = ~np.isnan(x)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if scale is None:
        scale = float(np.nanstd(x)) if valid.sum() > 1 else 0.0
    floor = z_floor * scale
    diff, z, m, alone = _loo_diff_z(x, codes, n_groups, floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(alone, 1.0, x / m)
    ratio = np.where(np.isfinite(ratio), ratio, np.nan)
    out = {
        f"{name}__diff": diff,
        f"{name}__z": z,
        f"{name}__rank": _group_rank(x, codes),
        f"{name}__ratio": ratio,
        f"{name}__same": _same_fraction(x, codes),
    }
    if "med_diff" in stats or "med_ratio" in stats:
        med = _loo_median(x, codes)
        no_others = np.isnan(med)
        out[f"{name}__med_diff"] = np.where(no_others, 0.0, x - med)
        with np.errstate(invalid="ignore", divide="ignore"):
            med_ratio = np.where(no_others, 1.0, x / med)
        out[f"{name}__med_ratio"] = np.where(np.isfinite(med_ratio), med_ratio, np.nan)
    out = {k: v for k, v in out.items() if k.split("__", 1)[1] in stats}
    if site_codes is not None:
        diff_s, z_s, _, _ = _loo_diff_z(x, site_codes, int(site_codes.max()) + 1, floor)
        out[f"{name}__site_diff"] = diff_s
        out[f"{name}__site_z"] = z_s
    for key, value in out.items():
        out[key] = np.where(valid, value, np.nan)
    return out


def _lof_knn(emb: np.ndarray, k: int, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean distance to the k nearest others and the local outlier factor, within one set.

    ``emb`` is (n, D); neighbours are searched among the reference lesions ``ref`` (sorted
    positions: all n, or a sample). Returns two arrays of shape (n,).
    """
    n = len(emb)
    if n < 2:
        return np.zeros(n), np.ones(n)
    sq = np.einsum("nd,nd->n", emb, emb)
    d = sq[:, None] + sq[ref][None, :] - 2.0 * emb @ emb[ref].T  # (n, m)
    d = np.sqrt(np.clip(d, 0.0, None))
    d[ref, np.arange(len(ref))] = np.inf  # a lesion is not its own neighbour
    k_eff = max(min(k, len(ref) - 1), 1)
    nn = np.argpartition(d, k_eff - 1, axis=1)[:, :k_eff]  # (n, k) indices into ref
    nn_d = np.take_along_axis(d, nn, axis=1)  # (n, k)
    knn = nn_d.mean(axis=1)
    kdist = nn_d.max(axis=1)  # k-distance of every lesion, (n,)
    kdist_ref = kdist[ref]  # (m,)
    reach = np.maximum(kdist_ref[nn], nn_d)  # (n, k)
    lrd = 1.0 / (reach.mean(axis=1) + 1e-12)  # (n,)
    lrd_ref = lrd[ref]
    lof = lrd_ref[nn].mean(axis=1) / lrd
    return knn, lof


def _embedding_features(
    emb: np.ndarray,
    name: str,
    codes: np.ndarray,
    k: int,
    exact_max: int,
    random_state: int | None,
    keys: np.ndarray | None = None,
    row_keys: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    n, _ = emb.shape
    valid = ~np.isnan(emb).any(axis=1)
    e = np.where(valid[:, None], emb, 0.0).astype(np.float64)
    n_groups = int(codes.max()) + 1 if n else 0
    count = np.bincount(codes, weights=valid.astype(float), minlength=n_groups)
    sums = np.zeros((n_groups, e.shape[1]))
    np.add.at(sums, codes, e)
    n_other = count[codes] - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = (sums[codes] - e) / n_other[:, None]  # (n, D) leave-one-out centroid
    dist = np.where(n_other > 0, np.linalg.norm(e - np.nan_to_num(centroid), axis=1), 0.0)
    dist = np.where(valid, dist, np.nan)

    knn = np.full(n, np.nan)
    lof = np.full(n, np.nan)
    rng = np.random.default_rng(random_state)
    if row_keys is not None:  # a lesion's place in every reference sample comes from its id
        seed = f"{random_state or 0:016d}"[-16:]  # hash_array's 16-character key
        draw = pd.util.hash_array(np.asarray(row_keys, dtype=object), hash_key=seed)
    idx = np.flatnonzero(valid)
    order = idx[np.argsort(codes[idx], kind="stable")]
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for rows in np.split(order, bounds):  # one pass per patient, vectorised within it
        if len(rows) == 0:
            continue
        if len(rows) <= exact_max:
            ref = np.arange(len(rows))
        elif row_keys is not None:
            # the exact_max lesions with the smallest id hashes: the same lesions whatever the
            # row order, and removing one lesion changes the sample by at most one lesion
            rows = rows[np.lexsort((row_keys[rows], draw[rows]))]
            ref = np.arange(exact_max)
        else:
            if keys is not None and random_state is not None:
                # a patient's sample is seeded by its own id, not by the patients before it
                key = zlib.crc32(str(keys[codes[rows[0]]]).encode())
                rng = np.random.default_rng([int(random_state), key])
            ref = np.sort(rng.choice(len(rows), exact_max, replace=False))
        knn[rows], lof[rows] = _lof_knn(e[rows], k, ref)
    return {
        f"{name}__centroid_dist": dist,
        f"{name}__centroid_dist_rank": _group_rank(dist, codes),
        f"{name}__knn_dist": knn,
        f"{name}__lof": lof,
    }


def context_scales(table: pd.DataFrame, cols: Sequence[str]) -> dict[str, float]:
    """The global std (ddof=0, NaN ignored) of each column of ``cols``, for ``scales=``.

    0.0 for a column with fewer than two values.
    """
    out = {}
    for col in cols:
        x = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        out[col] = float(np.nanstd(x)) if (~np.isnan(x)).sum() > 1 else 0.0
    return out


def patient_context_features(
    table: pd.DataFrame,
    cols: Sequence[str] = (),
    *,
    embedding_prefix: str | None = "emb_",
    by_site: bool = True,
    patient_col: str = "patient_id",
    site_col: str = "site",
    z_floor: float = 0.1,
    n_neighbors: int = 5,
    exact_max: int = EXACT_MAX,
    random_state: int | None = 0,
    scales: Mapping[str, float] | None = None,
    stats: Sequence[str] = CONTEXT_STATS,
    id_col: str = "image_id",
) -> pd.DataFrame:
    """Patient-relative features of lesion columns, leave-one-out against the patient's others.

    Parameters
    ----------
    table : DataFrame
        Lesion table, one row per lesion, with ``patient_col`` and the columns named in ``cols``
        (and ``site_col`` when ``by_site``).
    cols : sequence of str
        Numeric per-lesion columns (e.g. ``"cnn_logit"``, ``"width"``). For each one the output
        has ``{col}__diff``, ``{col}__z``, ``{col}__rank``, ``{col}__ratio``, ``{col}__same`` and,
        with ``by_site``, ``{col}__site_diff`` and ``{col}__site_z``.
    embedding_prefix : str or None
        Embedding columns (``emb_0000, ...``) are those starting with this prefix; when present the
        output has ``{name}__centroid_dist``, ``{name}__centroid_dist_rank``, ``{name}__knn_dist``
        and ``{name}__lof`` where ``name`` is the prefix without its trailing ``_`` (``"emb"``).
        ``None`` skips embeddings.
    by_site : bool
        Add the site-conditioned versions (against the patient's other lesions at the same site;
        a lesion with a missing site has no same-site others) and ``patient__site_count``.
    z_floor : float
        The std in ``z`` is ``sqrt(var_others + (z_floor * global_std) ** 2)``, so small sets with
        equal values give a finite z instead of a division by zero.
    n_neighbors : int
        ``k`` of the kNN distance and the local outlier factor (fewer when the set is smaller).
    exact_max : int
        kNN/LOF are exact on sets up to this size; larger sets use a reference sample of this
        many lesions: with ``id_col``, the lesions whose hash of (``random_state``, id) is
        smallest (independent of row order and stable when one lesion is removed); without it,
        a random draw seeded by ``random_state`` and the patient id. The total cost is
        O(sum_p n_p * min(n_p, exact_max) * D), linear in the number of lesions for a fixed cap.
    random_state : int or None
        Seed of that reference sample.
    scales : mapping of str to float, optional
        The global std of each column of ``cols`` used in the ``z`` floor. Default: the std over
        ``table``, which makes ``z`` depend on the other patients in ``table``; a fitted model
        passes the scales of its training table (see :func:`context_scales`) so a patient's
        features depend on that patient's lesions only.
    stats : sequence of str
        Which statistics of :data:`ALL_STATS` to compute for each column of ``cols`` (default
        :data:`CONTEXT_STATS`; ``med_diff`` and ``med_ratio`` compare with the median of the
        patient's other lesions).
    id_col : str
        Lesion id column; when present, a large patient's kNN/LOF reference sample is drawn by
        these ids, so the features do not depend on the order of the rows.

    Returns
    -------
    DataFrame
        On ``table.index`` (same row order), float64 columns ``patient__count``, then the
        columns above. See the module docstring for the values on one-lesion patients.

    Raises
    ------
    TableError
        ``patient_col`` or a column of ``cols`` missing, a non-numeric column, blank patient ids.
    """
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"expected a lesion table (pandas DataFrame), got {type(table).__name__}")
    if isinstance(cols, str):
        cols = [cols]
    missing = [c for c in [patient_col, *cols] if c not in table.columns]
    if missing:
        raise TableError(
            f"patient_context_features: column(s) {missing} not in the table "
            f"(columns {list(table.columns)[:20]}); expected {patient_col!r} and each of {list(cols)}"
        )
    pid = table[patient_col]
    if pid.isna().any():
        bad = np.flatnonzero(pid.isna().to_numpy())[:5]
        raise TableError(f"column {patient_col!r} is missing at rows {list(bad)}; every lesion needs a patient")
    unknown = [s for s in stats if s not in ALL_STATS]
    if unknown:
        raise TableError(f"patient_context_features: unknown stats {unknown}; expected some of {list(ALL_STATS)}")
    codes, keys = pd.factorize(pid.astype(str))
    codes = codes.astype(np.int64)
    row_keys = table[id_col].astype(str).to_numpy() if id_col in table.columns else None
    out: dict[str, np.ndarray] = {}
    count = np.bincount(codes)[codes].astype(float) if len(codes) else np.zeros(0)
    out["patient__count"] = count

    site_codes = None
    if by_site:
        if site_col not in table.columns:
            raise TableError(
                f"by_site=True needs a {site_col!r} column (not in the table); pass by_site=False"
            )
        scode = pd.factorize(table[site_col].astype(object))[0].astype(np.int64)  # -1 = missing
        key = codes * (int(scode.max()) + 2) + scode + 1
        # a missing site is shared with nobody: each such lesion is its own group
        key = np.where(scode < 0, -1 - np.arange(len(scode)), key)
        site_codes = pd.factorize(key)[0].astype(np.int64)
        out["patient__site_count"] = np.bincount(site_codes)[site_codes].astype(float)

    for col in cols:
        try:
            x = pd.to_numeric(table[col], errors="raise").to_numpy(dtype=float, na_value=np.nan)
        except (ValueError, TypeError) as exc:
            raise TableError(f"column {col!r} must be numeric for patient context features ({exc})") from exc
        scale = None if scales is None or col not in scales else float(scales[col])
        out.update(_scalar_features(x, col, codes, site_codes, z_floor, scale, stats))

    if embedding_prefix:
        emb_cols = embedding_columns(table, embedding_prefix)
        if emb_cols:
            emb = table[emb_cols].to_numpy(dtype=np.float64, na_value=np.nan)
            name = embedding_prefix.rstrip("_") or "emb"
            out.update(_embedding_features(emb, name, codes, n_neighbors, exact_max, random_state,
                                           np.asarray(keys, dtype=object), row_keys))
    return pd.DataFrame(out, index=table.index)


def _numeric(table: pd.DataFrame, col: str) -> np.ndarray:
    try:
        return pd.to_numeric(table[col], errors="raise").to_numpy(dtype=float, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise TableError(f"column {col!r} must be numeric for patient outlier features ({exc})") from exc


def outlier_scales(table: pd.DataFrame, cols: Sequence[str]) -> dict[str, tuple[float, float]]:
    """The mean and std (ddof=0, NaN ignored) of each column, for ``scales=`` of
    :func:`patient_outlier_features`; (0.0, 1.0) for a column without values, std 1.0 where it is 0.
    """
    out = {}
    for col in cols:
        x = _numeric(table, col)
        if np.isnan(x).all():
            out[col] = (0.0, 1.0)
            continue
        sd = float(np.nanstd(x))
        out[col] = (float(np.nanmean(x)), sd if sd > 0 else 1.0)
    return out


def patient_outlier_features(
    table: pd.DataFrame,
    groups: Mapping[str, Sequence[str]],
    *,
    patient_col: str = "patient_id",
    id_col: str = "image_id",
    scales: Mapping[str, tuple[float, float]] | None = None,
    n_neighbors: int = 5,
    exact_max: int = EXACT_MAX,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """How far each lesion lies from its patient's other lesions over a group of columns.

    Each group of numeric columns (say ISIC 2024's colour, size and shape measurements) is
    standardised column by column (``(x - mean) / std`` with ``scales``, so every column counts in
    population standard deviations) and scored like an embedding: leave-one-out distance to the
    centroid of the patient's other lesions and its within-patient rank, mean distance to the
    ``n_neighbors`` nearest others, and the local outlier factor.

    Parameters
    ----------
    table : DataFrame
        Lesion table with ``patient_col`` and every column of every group.
    groups : mapping of str to sequence of str
        Group name -> its columns. The output has ``{name}__centroid_dist``,
        ``{name}__centroid_dist_rank``, ``{name}__knn_dist`` and ``{name}__lof`` per group.
    scales : mapping of column to (mean, std), optional
        Default: :func:`outlier_scales` of ``table``. A fitted model passes its training
        scales, so a lesion's scores depend on its own patient's lesions only.
    n_neighbors, exact_max, random_state :
        As in :func:`patient_context_features`; large patients' reference samples are drawn by
        ``id_col`` when it is present, so the scores do not depend on row order.

    Returns
    -------
    DataFrame
        On ``table.index``, four float64 columns per group. A missing value is replaced by the
        median of the patient's lesions that have it (the training mean when none has), so a
        lesion is an outlier for what was measured, not for what was not.

    Raises
    ------
    TableError
        A missing or non-numeric column, an empty group, a missing patient id.
    """
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"expected a lesion table (pandas DataFrame), got {type(table).__name__}")
    needed = [patient_col, *[c for cols in groups.values() for c in cols]]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise TableError(f"patient_outlier_features: column(s) {missing} not in the table "
                         f"(columns {list(table.columns)[:20]})")
    pid = table[patient_col]
    if pid.isna().any():
        raise TableError(f"column {patient_col!r} is missing at rows "
                         f"{list(np.flatnonzero(pid.isna().to_numpy())[:5])}; every lesion needs a patient")
    codes, keys = pd.factorize(pid.astype(str))
    codes = codes.astype(np.int64)
    row_keys = table[id_col].astype(str).to_numpy() if id_col in table.columns else None
    out: dict[str, np.ndarray] = {}
    for name, cols in groups.items():
        if not len(cols):
            raise TableError(f"patient_outlier_features: group {name!r} has no columns")
        sc = scales if scales is not None else outlier_scales(table, cols)
        z = np.column_stack([(_numeric(table, c) - sc[c][0]) / sc[c][1] for c in cols])  # (n, d)
        if np.isnan(z).any():
            med = pd.DataFrame(z).groupby(codes).transform("median").to_numpy()
            z = np.where(np.isnan(z), np.nan_to_num(med, nan=0.0), z)
        out.update(_embedding_features(z, name, codes, n_neighbors, exact_max, random_state,
                                       np.asarray(keys, dtype=object), row_keys))
    return pd.DataFrame(out, index=table.index)
