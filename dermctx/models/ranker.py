"""ContextRanker: the model users call to rank a patient's lesions for melanoma.

It takes what a clinic has per lesion (a CNN probability ``cnn_score`` and/or appearance
embeddings ``emb_*``, with age, sex and site) and scores each lesion *in the context of the
patient's other lesions*:

1. **offset**: a logistic stage on the raw CNN logit (and, with embeddings, the out-of-fold logit
   of a :class:`~dermctx.SetRanker`): the CNN keeps its full resolution, nothing is binned.
   Optionally, without a CNN score, a per-lesion :class:`~dermctx.MetadataGBM` on the raw
   measurements (``lesion_model=True``, out of fold) takes the CNN's place;
2. **correction**: a :class:`~dermctx.MetadataGBM` boosted *from* that offset (LightGBM
   ``init_score``) on age, sex, site, the patient's lesion count and patient-relative features
   (:func:`~dermctx.patient_context_features`) of the declared inputs, with fixed conservative
   rounds (no early stopping on a handful of melanomas); without any offset the correction is
   the whole model, with larger steps and a round count chosen on the pooled inner folds;
3. **within-patient gate**: the correction is split into its patient mean (a prior that moves
   all of a patient's lesions together) and each lesion's deviation from it (what reorders the
   patient's lesions). The deviation is kept with a weight chosen on inner patient-grouped folds
   by within-patient AUC and top-1, a weight above 0 only on a significant gain (paired patient
   bootstrap); weight 0 leaves each patient's lesions in the order of the offset (the CNN's
   order), so the correction reorders lesions only where it earned it;
4. **calibration**: a Platt scaling fitted on patient-grouped out-of-fold logits of stage 3, so
   probabilities mean the same across fits.

:meth:`ContextRanker.feature_contributions` splits every score into the contributions of the
source columns (LightGBM ``pred_contrib`` through the gate and the calibration), and
:meth:`ContextRanker.score_patient` words them for a clinician.

Image width/height are an acquisition artefact in SIIM-ISIC 2020 (how the data was collected,
not the patient's skin); they are read only with ``use_image_size=True``.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import AgglomerativeClustering
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from dermctx._deprecation import warn_renamed
from dermctx.errors import (
    DermctxWarning,
    LeakageError,
    ModelError,
    TableError,
    error_record,
    errors_frame,
)
from dermctx.features import (
    context_scales,
    outlier_scales,
    patient_context_features,
    patient_outlier_features,
)
from dermctx.formatting import plural
from dermctx.input_shift import InputDistribution
from dermctx.label_guard import LABEL_COLUMNS, check_feature_columns, refuse_label_columns
from dermctx.models.folder import (
    MANIFEST,
    SET_RANKER_FILES,
    JsonFields,
    load_tensors,
    read_json,
    sha256_file,
    verify_folder,
    write_manifest,
)
from dermctx.models.gbm import MetadataGBM
from dermctx.table import (
    SEXES,
    SITES,
    as_texts,
    cell_text,
    describe_rows,
    embedding_columns,
    is_blank,
    is_missing_scalar,
    normalise_metadata,
    placeholder_patient_ids,
    refuse_duplicate_columns,
    repeated_image_rows,
    stripped_ids,
    to_numbers,
    unreadable_ids,
)

__all__ = ["ContextRanker"]


def __getattr__(name: str) -> Any:
    # deprecated: LABEL_DERIVED was this module's copy of the refused names, as a frozenset
    if name == "LABEL_DERIVED":
        warn_renamed("dermctx.models.ranker", "LABEL_DERIVED", "dermctx.label_guard.LABEL_COLUMNS",
                     kind="", stacklevel=3)
        return frozenset(LABEL_COLUMNS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_FORMAT = "dermctx.ContextRanker/1"
#: The set model's files in a ContextRanker folder: SetRanker's own names.
_SET_FILES = SET_RANKER_FILES
#: ... and their names in folders saved before that (still read).
_OLD_SET_FILES: tuple[str, str] = ("set_model.safetensors", "set_model.json")
_EPS = 1e-12  # probabilities are clipped here before the logit: ties only below 1e-12
#: Candidate weights of the within-patient part of the correction (``within_patient="auto"``).
GATE_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: A weight above 0 must earn its place: its gain over weight 0 on the inner folds' patients, in
#: within-patient AUC (or in pooled AUC, within-patient AUC no lower), must be positive in a
#: one-sided paired patient bootstrap at this level, split over the candidate weights above 0
#: (Bonferroni), with top-1 no lower.
GATE_LEVEL: float = 0.05
#: Patient resamples of that bootstrap.
GATE_BOOT: int = 400
#: A CNN score column with at least this share of its values in (1, 100] (and two or more) is
#: refused as percentages: its values below 1 would otherwise be read as probabilities.
PERCENT_SHARE: float = 0.05
#: The correction GBM's settings when ``gbm`` is None: fixed and conservative (no early stopping
#: on the few dozen melanomas of an inner fold).
CORRECTION_GBM: dict[str, Any] = {"n_estimators": 150, "learning_rate": 0.02, "num_leaves": 7,
                                  "min_child_samples": 100, "reg_lambda": 10.0}
#: The correction's settings when ``gbm`` is None and there is no offset (no CNN score, set model
#: or lesion model): the correction is then the whole model, so it takes larger steps with
#: LightGBM's usual L2, and its round count is chosen on the inner folds, at most
#: ``n_estimators`` (:meth:`MetadataGBM.fit_out_of_fold`): fewer rounds where the patient-relative
#: features carry the signal and more would overfit them. The cap keeps the cost of a fit that of
#: the fixed correction (400,000 lesions in under 5 minutes on 2 cores).
WHOLE_MODEL_GBM: dict[str, Any] = {**CORRECTION_GBM, "learning_rate": 0.06, "reg_lambda": 1.0}
#: Settings of the correction that the ranker sets itself, whatever ``gbm`` says.
_RANKER_OWNS = ("class_weight", "init_score_col", "guard_labels", "random_state", "n_jobs")
#: Patient-relative statistics of each context feature (with ``site_diff`` and ``site_z``): an
#: exact-equality rate means nothing for a continuous measurement, and the ratio to the mean is
#: kept as the ratio to the median (robust, and defined for skewed sizes).
CONTEXT_MEASURE_STATS: tuple[str, ...] = ("diff", "z", "rank", "med_diff", "med_ratio")
#: ``score_patient`` names a lesion in ``raised_by`` / ``lowered_by`` only when its presence moves
#: the score by more than this (probability units: 0.1 percentage points); below it, a change
#: means nothing to a reader (and may be LightGBM's rounding).
MIN_LOO_CHANGE: float = 1e-3
#: Context features whose Spearman correlations on the training rows are all at least this (in
#: absolute value, every pair) form one family in the worded explanations (``feature_families_``).
FAMILY_CORRELATION: float = 0.7
#: Columns never picked by ``context_features="auto"``: identity, metadata, the image's size and
#: file, fold and split bookkeeping.
_NOT_CONTEXT = frozenset({"patient_id", "image_id", "lesion_id", "target", "age", "sex", "site",
                          "width", "height", "path", "fold", "split"})


def _is_index_column(name: Any) -> bool:
    """A row index a spreadsheet or pandas wrote as a column (``Unnamed: 0``, ``index``, ``level_0``)."""
    text = str(name).strip().lower()
    return text.startswith("unnamed:") or text in ("index", "level_0", "row", "row_id", "row_index")


def _counts_rows(values: pd.Series) -> bool:
    """True for a column that numbers the rows: 0, 1, 2, ... or 1, 2, 3, ... in table order (10+
    rows), as numbers or as text."""
    if len(values) < 10 or pd.api.types.is_bool_dtype(values):
        return False
    v = to_numbers(values, booleans=False)[0].to_numpy(dtype=float)
    return bool(np.array_equal(v, np.arange(len(v))) or np.array_equal(v, np.arange(1, len(v) + 1)))


class _TextCells(NamedTuple):
    """How a column that is not numeric holds numbers (:func:`_text_cells`)."""

    numbers: pd.Series  # each cell as a number, NaN where it is not one
    not_number: np.ndarray  # (n,) bool: a cell given that is not a number
    example: str  # the first non-missing cell, stripped ("" when none)
    decimal_commas: bool  # most cells are numbers written with a decimal comma ('6,08')
    units: bool  # most cells are numbers followed by a unit ('4.2 mm2', '12%')
    mostly_numbers: bool  # at least half the cells given are numbers


_DECIMAL_COMMA = r"[-+]?\d+,\d+"
_WITH_UNIT = r"[-+]?\d+(?:[.,]\d+)?\s*(?:[^\W\d_]+[\d²³]?|%)"


def _text_cells(values: pd.Series) -> _TextCells:
    """Read a non-numeric column's cells as numbers, and the ways they can be numbers kept as text."""
    numbers, not_number = to_numbers(values, booleans=False)
    text = values.dropna().astype(str).str.strip()

    def most(pattern: str) -> bool:
        return bool(len(text)) and bool(text.str.fullmatch(pattern).mean() >= 0.5)

    given = int(values.notna().sum())
    return _TextCells(numbers, np.asarray(not_number), text.iloc[0] if len(text) else "", most(_DECIMAL_COMMA),
                      most(_WITH_UNIT), given > 0 and numbers.notna().sum() >= 0.5 * given)


def _names_patients(values: pd.Series, patient_id: pd.Series) -> bool:
    """True for a column of whole numbers that is one value per patient, a different one for each
    of 10+ patients: a patient identifier written as a number, not a measurement of the lesion (a
    patient-level measurement with a fraction, such as a skin-tone index, is not taken for one)."""
    numbers = to_numbers(values, booleans=False)[0]
    frame = pd.DataFrame({"p": patient_id.astype(str).to_numpy(), "v": numbers.to_numpy(dtype=float)}).dropna()
    n = frame["p"].nunique()
    if n < 10 or (frame["v"] != frame["v"].round()).any():
        return False
    per_patient = frame.groupby("p")["v"].nunique()
    return bool((per_patient == 1).all() and frame["v"].nunique() == n)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def preview_cells(value: Any) -> str:
    if is_missing_scalar(value):
        return "missing"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value.item() if hasattr(value, "item") else value)
    return repr(cell_text(value)[:40])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _patient_mean(v: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each row's patient mean of ``v`` (the last axis may be columns: ``v`` is (n,) or (n, k))."""
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    count = np.bincount(codes, minlength=n_groups).astype(float)
    if v.ndim == 1:
        return (np.bincount(codes, weights=v, minlength=n_groups) / count)[codes]
    sums = np.zeros((n_groups, v.shape[1]))
    np.add.at(sums, codes, v)
    return (sums / count[:, None])[codes]


def _families(values: pd.DataFrame, random_state: int) -> list[list[str]]:
    """Groups of columns whose every pair has |Spearman correlation| >= FAMILY_CORRELATION
    (complete-linkage clustering of 1 - |correlation|, on up to 100,000 training rows), so that a
    chain of pairwise links does not join unrelated measurements; singletons are left out."""
    cols = list(values.columns)
    if len(cols) < 2:
        return []
    sample = values.sample(n=min(len(values), 100_000), random_state=random_state) if len(values) else values
    corr = sample.rank().corr(min_periods=10).abs().to_numpy()
    distance = 1.0 - np.where(np.isfinite(corr), corr, 0.0)  # (F, F); no correlation: distance 1
    np.fill_diagonal(distance, 0.0)
    labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="complete",
                                     distance_threshold=1.0 - FAMILY_CORRELATION + 1e-9).fit(distance).labels_
    groups: dict[int, list[str]] = {}
    for label, col in zip(labels, cols, strict=True):
        groups.setdefault(int(label), []).append(col)
    return [g for g in groups.values() if len(g) > 1]


def _gate(correction: np.ndarray, codes: np.ndarray, weight: float) -> np.ndarray:
    """The correction with its within-patient part weighted: ``mean_p + weight * (c - mean_p)``."""
    mean = _patient_mean(correction, codes)
    return mean + weight * (correction - mean)


class ContextRanker(ClassifierMixin, BaseEstimator):
    """Melanoma probability of each lesion, judged with the patient's other lesions as context.

    Parameters
    ----------
    score_col : str or None
        Column with a per-lesion melanoma probability from any CNN, in [0, 1]. None: no CNN.
    embedding_prefix : str or None
        Appearance embeddings are the columns starting with this prefix (``emb_0000, ...``); when
        present (and ``use_set_model`` allows) a SetRanker is stacked in. None: no embeddings.
    use_image_size : bool
        Read ``width`` and ``height`` (pixels) and their patient-relative versions. Off by default:
        image size is an acquisition artefact, useful on SIIM-ISIC 2020, meaningless elsewhere.
    use_set_model : bool or "auto"
        Stack a :class:`~dermctx.SetRanker` on the embeddings (its out-of-fold logit joins the
        offset stage; "auto": whenever embeddings exist). Off by default: on the synthetic
        ugly-duckling data the embedding context features (centroid distance, kNN, LOF) already
        carry the signal, and the stack was no better and ~15x slower (docs/ranking.md).
    score_context : bool
        Add patient-relative features of the CNN logit (leave-one-out difference, z-score and
        rank within patient, and against same-site lesions). On SIIM-ISIC 2020 they left pooled
        AUC unchanged (within +-0.001) and raised within-patient AUC and top-1 in both settings
        when boosted from the logit offset (docs/ranking.md); set False for the plain model.
    extra_features : sequence of str
        Further per-lesion columns to use as they are (numeric or categorical); their order does
        not change the model. Label-derived names (:data:`dermctx.label_guard.LABEL_COLUMNS`)
        are refused.
    context_features : sequence of str or "auto"
        Per-lesion numeric columns (ISIC 2024's ``tbp_lv_*`` colour, size, border and symmetry
        measurements, or a clinic's own) used raw **and** relative to the patient's other
        lesions: leave-one-out difference, z-score and rank, difference and ratio to the median
        of the others, and difference and z against same-site lesions
        (:func:`dermctx.patient_context_features`), the ISIC 2024 winning recipe. A lesion's
        features depend on its own patient's lesions only. Label-derived names are refused.
        ``"auto"``: every numeric column of the training table that is not identity, metadata,
        image size, the CNN score, an embedding, an ``extra_features`` column, a written-out row
        index (``Unnamed: 0``, ``index``, ``row_index``...) or label-derived (the choice is
        ``context_features_``; columns that leak the label by their values are still refused;
        a mostly numeric column with some text cells is refused, not skipped).
    outlier_groups : mapping of str to sequence of str, or None
        Groups of numeric columns scored as one point per lesion (standardised by the training
        mean and std): distance to the centroid of the patient's other lesions, its rank, kNN
        distance and local outlier factor (:func:`dermctx.features.patient_outlier_features`).
        None: one group ``"context"`` of all the context features when there are two or more;
        ``{}``: none. Kept as ``outlier_groups_``, sorted by name (groups and columns): the
        order given does not change the model.
    lesion_model : bool
        Without a CNN score: fit a per-lesion :class:`~dermctx.MetadataGBM` (its default
        settings, unweighted classes) on age, sex, site, the raw context features and
        ``extra_features``, and use its out-of-fold logit as the offset, as a CNN's logit is
        used. Measured on generated ISIC 2024-style patients (docs/ranking.md): level with a
        per-lesion LightGBM where melanomas carry no patient-relative signal, as the default
        is, but with a fraction of the default's gain where they are outliers of their own
        patient; off by default.
    within_patient : "auto" or float in [0, 1]
        Weight of the part of the correction that reorders a patient's lesions (its deviation
        from the patient's mean correction). ``"auto"`` picks it from :data:`GATE_WEIGHTS` on
        the inner patient-grouped folds: the weight with the best within-patient AUC plus top-1
        among weight 0 and those whose gain over it is significant (:data:`GATE_LEVEL`, paired
        patient bootstrap) in within-patient AUC, or in pooled AUC with within-patient AUC no
        lower, with top-1 no lower (weight 0 keeps each
        patient's lesions in the order of the offset, the CNN's or the per-lesion model's; the
        patient-level part of the correction still applies). Without any offset (no CNN
        score, set model or lesion model), 1.0 (the correction is then all that orders a
        patient's lesions). 1.0 always uses the full correction.
    gbm : MetadataGBM or None
        The correction model's settings (its hyperparameters; the model itself is fitted
        anew). None: ``MetadataGBM(**CORRECTION_GBM)`` (150 rounds at 0.02, 7 leaves, 100 lesions
        per leaf, L2 10); without an offset (no CNN score, set model or lesion model) the
        correction is the whole model and None means :data:`WHOLE_MODEL_GBM` (learning rate
        0.04, L2 1, up to 150 rounds, the count chosen on the inner folds by pooled out-of-fold
        log loss, ``gbm_.n_rounds_``). A MetadataGBM given replaces all of these (its rounds fixed), so change one setting with
        ``MetadataGBM(**{**CORRECTION_GBM, "n_estimators": 300})``. The ranker sets
        ``class_weight=None`` (it calibrates), ``init_score_col``, ``guard_labels``,
        ``random_state`` and ``n_jobs`` itself.
    n_estimators, learning_rate, num_leaves, min_child_samples, reg_lambda :
        Deprecated: pass ``gbm=MetadataGBM(n_estimators=...)``. Given, they override ``gbm``'s
        and warn (FutureWarning).
    n_folds : int
        Patient-grouped folds for the out-of-fold stacking and calibration inside ``fit``.
    set_model_params : dict, optional
        Keyword arguments of the stacked SetRanker.
    random_state : int
    n_jobs : int
        LightGBM threads.

    Attributes
    ----------
    feature_names_in_ : ndarray of str
        Every input column the model reads (``patient_id`` first), nothing else is read.
    gbm_ : MetadataGBM
        The correction model; ``gbm_.feature_names_in_`` are its derived features.
    set_model_ : SetRanker or None
    lesion_model_ : MetadataGBM or None
        The per-lesion model whose logit stands in for the CNN's (``lesion_model``).
    offset_coef_ : ndarray
        Weights of the logistic offset stage: ``[intercept, cnn_logit or lesion-model logit,
        set_logit]`` (0 if unused).
    calibration_ : ndarray, (2,)
        Platt scaling ``[a, b]``: probability = sigmoid(a * logit + b).
    context_scales_ : dict of str to float
        Training std of each patient-context column (the z floor), fixed at fit.
    context_features_ : list of str
        The context feature columns used (``context_features`` resolved), sorted by name: neither
        the order of the list nor the table's column order changes the model.
    outlier_groups_ : dict of str to list of str
    outlier_scales_ : dict of str to (float, float)
        Training mean and std of each outlier-group column.
    within_patient_weight_ : float
        The weight of the within-patient part of the correction in use.
    feature_families_ : list of list of str
        Groups of context features whose every pair is correlated at |Spearman| >=
        :data:`FAMILY_CORRELATION` on the training rows (complete linkage: no chains); the
        explanations word each family's contribution by its most deviating member.
    gate_scores_ : list of dict
        Per candidate weight, on the inner folds: ``weight``, ``within_patient_auc`` and ``top1``
        (means over the patients they are defined on), ``p_no_gain`` and ``p_no_auc_gain`` (the
        bootstrap shares of resamples where its within-patient AUC, or pooled AUC, is no better
        than weight 0's), ``level`` (what a p must not exceed: :data:`GATE_LEVEL` split over the
        candidates) and ``passed`` (eligible: weight 0, or a significant gain with top-1 no
        lower).
    oof_proba_ : ndarray, (n,)
        Out-of-fold calibrated probabilities of the training lesions (inner patient folds).
    input_distribution_ : InputDistribution
        The training quantiles of the per-patient medians of the numeric measurement columns
        (CNN score, image size, age, context, outlier and numeric extra features) and of the
        embeddings' length (``"length of emb_*"``). Scoring warns (``DermctxWarning``) when a
        batch's column looks measured on another scale (:mod:`dermctx.input_shift`).
    """

    def __init__(
        self,
        *,
        score_col: str | None = "cnn_score",
        embedding_prefix: str | None = "emb_",
        use_image_size: bool = False,
        use_set_model: str | bool = False,
        score_context: bool = True,
        extra_features: Sequence[str] = (),
        context_features: Sequence[str] | str = (),
        outlier_groups: dict[str, Sequence[str]] | None = None,
        lesion_model: bool = False,
        within_patient: str | float = "auto",
        gbm: MetadataGBM | None = None,
        n_folds: int = 5,
        set_model_params: dict[str, Any] | None = None,
        random_state: int = 0,
        n_jobs: int = 1,
        n_estimators: Any = "deprecated",
        learning_rate: Any = "deprecated",
        num_leaves: Any = "deprecated",
        min_child_samples: Any = "deprecated",
        reg_lambda: Any = "deprecated",
    ) -> None:
        self.score_col = score_col
        self.embedding_prefix = embedding_prefix
        self.use_image_size = use_image_size
        self.use_set_model = use_set_model
        self.score_context = score_context
        self.extra_features = extra_features
        self.context_features = context_features
        self.outlier_groups = outlier_groups
        self.lesion_model = lesion_model
        self.within_patient = within_patient
        self.gbm = gbm
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.n_folds = n_folds
        self.set_model_params = set_model_params
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- declared inputs ---------------------------------------------------------------------
    def _context_columns(self, X: pd.DataFrame) -> list[str]:
        """``context_features`` resolved on the training table ``X`` (``"auto"`` picks columns)."""
        if isinstance(self.context_features, str):
            if self.context_features != "auto":
                raise TableError(f"ContextRanker: context_features={self.context_features!r}; "
                                 "expected a list of column names or 'auto'")
            taken = {*_NOT_CONTEXT, self.score_col, *self.extra_features}
            prefix = self.embedding_prefix or "\0"
            for c in X.columns:  # a measurement with a few text cells ('-', '6,08') is not skipped quietly
                if (c in taken or _is_index_column(c) or str(c).startswith(prefix) or str(c).lower() in LABEL_COLUMNS
                        or pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])):
                    continue
                cells = _text_cells(X[c])
                if cells.decimal_commas:
                    raise TableError(
                        f"ContextRanker: context_features='auto': column {str(c)!r} holds numbers written with "
                        f"decimal commas (e.g. {cells.example!r}); read the file with decimal=',' (pandas) or "
                        "convert the column, or list the context features yourself")
                if cells.not_number.any() and cells.mostly_numbers:
                    i = int(np.flatnonzero(cells.not_number)[0])
                    raise TableError(
                        f"ContextRanker: context_features='auto': column {str(c)!r} is mostly numbers but "
                        f"{int(cells.not_number.sum())} cell(s) are not (first: {preview_cells(X[c].iloc[i])} at "
                        f"{describe_rows(X, cells.not_number)}); clean them (missing is fine), or "
                        "list the context features yourself")
            return sorted(str(c) for c in X.columns
                          if c not in taken and not str(c).startswith(prefix) and not _is_index_column(c)
                          and str(c).lower() not in LABEL_COLUMNS
                          and pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])
                          and X[c].nunique(dropna=True) > 1 and not _counts_rows(X[c])
                          and not _names_patients(X[c], X["patient_id"]))
        declared = [str(c) for c in self.context_features]
        twice = sorted({c for c in declared if declared.count(c) > 1})
        if twice:
            raise TableError(f"ContextRanker: context_features lists {twice} more than once; list each column once")
        identity = [c for c in declared if c in ("patient_id", "image_id", "lesion_id", "path")]
        if identity:
            raise TableError(f"ContextRanker: context_features lists identity column(s) {identity}: they name a "
                             "patient, lesion or file, not a measurement; list measurement columns")
        refuse_label_columns(declared, who="ContextRanker")  # a label by name first: the gravest
        both = sorted(set(declared) & {str(c) for c in self.extra_features})
        if both:
            raise TableError(f"ContextRanker: {both} listed in both context_features and extra_features; list each "
                             "column once (a context feature's raw value is an input too)")
        for c in declared:
            if c not in X.columns:
                continue
            if _is_index_column(c) or _counts_rows(X[c]):
                raise TableError(f"ContextRanker: context_features column {c!r} numbers the rows (a row index), it "
                                 "is not a measurement; leave it out")
            if _names_patients(X[c], X["patient_id"]):
                raise TableError(f"ContextRanker: context_features column {c!r} holds one value per patient, a "
                                 "different one for each: it names the patient (an id written as a number), it is "
                                 "not a measurement of the lesion; leave it out")
            if X[c].nunique(dropna=True) == 1:  # (missing on every row: warned about as an empty input)
                raise TableError(f"ContextRanker: context_features column {c!r} holds one value "
                                 f"({preview_cells(X[c].dropna().iloc[0])}) on every training row that has "
                                 "one; it cannot tell lesions apart: leave it out")
        for c in declared:  # a text column is refused as a column, not as each of its rows
            if c in X.columns and pd.api.types.is_bool_dtype(X[c]):
                raise TableError(f"ContextRanker: context_features column {c!r} holds True/False, not a "
                                 "measurement; list it in extra_features (a yes/no property of the lesion), or "
                                 "convert it to 0/1 if its share among the patient's lesions matters")
            if c in X.columns and not pd.api.types.is_numeric_dtype(X[c]) and X[c].notna().any():
                cells = _text_cells(X[c])
                if not cells.mostly_numbers:
                    first = X[c][cells.not_number].iloc[0] if cells.not_number.any() else X[c].dropna().iloc[0]
                    raise TableError(f"ContextRanker: context_features column {c!r} holds text (e.g. "
                                     f"{preview_cells(first)}), not numbers; context features are numeric "
                                     "measurements: list it in extra_features to use it as a category")
        # sorted by name: neither the list's order nor the table's column order changes the model
        # (LightGBM samples and breaks ties between columns by position)
        return sorted(declared)

    def _outlier_groups(self) -> dict[str, list[str]]:
        if self.outlier_groups is None:
            cols = self.context_features_
            return {"context": list(cols)} if len(cols) >= 2 else {}
        if not isinstance(self.outlier_groups, dict):
            raise TableError(f"ContextRanker: outlier_groups must be a dict name -> columns or None, "
                             f"got {type(self.outlier_groups).__name__}")
        # sorted by name, as context_features: the dict's order does not change the model
        groups = {str(k): sorted(str(c) for c in v) for k, v in sorted(self.outlier_groups.items(), key=lambda kv: str(kv[0]))}
        refuse_label_columns([c for v in groups.values() for c in v], who="ContextRanker")
        return groups

    def _check_extra_features(self, X: pd.DataFrame) -> None:
        """Refuse extra features that would be misread: numbers written as text (read as a
        category of thousands of levels), a mostly numeric column with text cells (the numbers
        lost in a category), a row index or a patient id."""
        for c in sorted((c for c in self.extra_features if c in X.columns), key=str):
            v = X[c]
            if _is_index_column(c) or _counts_rows(v):
                raise TableError(f"ContextRanker: extra_features column {c!r} numbers the rows (a row index); "
                                 "leave it out")
            if _names_patients(v, X["patient_id"]):
                raise TableError(f"ContextRanker: extra_features column {c!r} holds one value per patient, a "
                                 "different one for each: it names the patient; leave it out")
            if pd.api.types.is_numeric_dtype(v) or isinstance(v.dtype, pd.CategoricalDtype) or not v.notna().any():
                continue
            cells = _text_cells(v)
            for found, what in ((cells.decimal_commas, "numbers written with decimal commas"),
                                (cells.units, "numbers written with units")):
                if found:
                    raise TableError(f"ContextRanker: extra_features column {c!r} holds {what} (e.g. "
                                     f"{cells.example!r}); read as a category its numbers would be lost: convert "
                                     "it to numbers (pandas: decimal=',' when reading, or strip the unit)")
            n_text = int(cells.not_number.sum())
            if cells.mostly_numbers:
                if n_text:
                    i = int(np.flatnonzero(cells.not_number)[0])
                    raise TableError(
                        f"ContextRanker: extra_features column {c!r} is mostly numbers but {n_text} cell(s) are "
                        f"not (first: {preview_cells(v.iloc[i])} at {describe_rows(X, cells.not_number)}); "
                        "read as a category its numbers would be lost: clean those cells (missing is fine)")
                raise TableError(
                    f"ContextRanker: extra_features column {c!r} holds numbers written as text (e.g. "
                    f"{preview_cells(v.dropna().iloc[0])}); convert it with pd.to_numeric, or, for a category "
                    "coded by numbers, make it a pandas Categorical")

    def _declare(self, X: pd.DataFrame) -> list[str]:
        """The input columns this configuration reads from ``X`` (checked against the labels)."""
        offered = [c for c in [self.score_col, *self.extra_features, *self.context_features_]
                   if c is not None]
        if self.embedding_prefix and self.embedding_prefix.lower().rstrip("_") in LABEL_COLUMNS:
            offered.append(self.embedding_prefix)
        refuse_label_columns(offered, who="ContextRanker")
        cols = ["patient_id"]
        if self.score_col is not None and self.score_col in X.columns:
            cols.append(self.score_col)
        emb = embedding_columns(X, self.embedding_prefix) if self.embedding_prefix else []
        if self.score_col is not None and self.score_col not in X.columns and not emb:
            raise TableError(
                f"ContextRanker: X has neither the CNN score column {self.score_col!r} nor "
                f"embedding columns '{self.embedding_prefix}*' (columns {list(X.columns)[:20]})"
            )
        if self.score_col is None and not emb and not self.context_features_ and not self.extra_features:
            raise TableError("ContextRanker: score_col=None, no embedding columns, no "
                             "context_features and no extra_features; nothing to rank on")
        cols += ["age", "sex", "site"]
        if self.use_image_size:
            cols += ["width", "height"]
        groups = [c for v in self.outlier_groups_.values() for c in v]
        cols += [c for c in dict.fromkeys([*self.extra_features, *self.context_features_, *groups])
                 if c not in cols]
        cols += emb
        missing = [c for c in cols if c not in X.columns]
        if missing:
            not_text = [c for c in X.columns if not isinstance(c, str) and str(c) in missing]
            if not_text:
                raise TableError(f"ContextRanker: X's column name(s) {not_text[:10]} are not text; dermctx reads "
                                 "columns by text name: rename them, e.g. X.columns = X.columns.astype(str)")
            shown = ", ".join(repr(str(c)) for c in list(X.columns)[:40])
            more = f" and {len(X.columns) - 40} more" if len(X.columns) > 40 else ""
            close = {m: difflib.get_close_matches(str(m), [str(c) for c in X.columns], n=1) for m in missing[:10]}
            hint = "".join(f"; did you mean {v[0]!r} for {k!r}?" for k, v in close.items() if v)
            raise TableError(
                f"ContextRanker: X lacks column(s) {missing[:10]}{hint} (X has {len(X.columns)} columns: "
                f"{shown}{more}); add them or change the settings"
            )
        return cols

    @staticmethod
    def _check_frame(X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TableError(
                f"ContextRanker: X must be a lesion table (DataFrame with patient_id), "
                f"got {type(X).__name__}"
            )
        refuse_duplicate_columns(X, "ContextRanker")
        if "patient_id" not in X.columns:
            raise TableError(f"ContextRanker: X has no 'patient_id' column (columns {list(X.columns)[:20]})")
        return stripped_ids(X)

    def _row_problems(self, X: pd.DataFrame) -> list[tuple[int, str]]:
        """(row position, message) of each row that cannot be scored."""
        problems: dict[int, str] = {}
        pid = X["patient_id"]
        for col in ("patient_id", "image_id"):  # never read as text and scored as another id
            if col in X.columns:
                for i in np.flatnonzero(unreadable_ids(X[col])):
                    problems[int(i)] = (f"{col} is {preview_cells(X[col].iloc[i])}; expected a text id (a "
                                        "list, dict, True/False, bytes that are not UTF-8 or a float too large "
                                        "for a whole number is no id)")
        # a copy of a row would count as another lesion of the patient; rows of one image that
        # differ cannot be told apart
        problems.update(repeated_image_rows(X)[1])
        if "image_id" in X.columns:
            for i in np.flatnonzero(is_blank(X["image_id"])):
                problems.setdefault(int(i), "image_id is missing or blank")
        for i in np.flatnonzero(is_blank(pid)):
            problems.setdefault(int(i), "patient_id is missing or blank")
        for i in np.flatnonzero(placeholder_patient_ids(pid)):  # never one pooled "patient"
            problems.setdefault(int(i), f"patient_id {str(pid.iloc[i])!r} is a placeholder for an "
                                "unknown patient; give the real id (or 'unknown:<image_id>')")
        gbm = getattr(self, "gbm_", None)  # fitted: extra features it reads as numbers, not categories
        numeric_extra = [] if gbm is None else [c for c in self.extra_features if str(c) not in gbm.categories_]
        numeric = dict.fromkeys([*self.context_features_, *(c for v in self.outlier_groups_.values() for c in v),
                                 *numeric_extra])
        for col in numeric:  # missing is fine; text, dates, booleans are never read as numbers
            _, not_number = to_numbers(X[col], booleans=False)
            for i in np.flatnonzero(not_number):
                problems.setdefault(int(i), f"column {col!r} is {preview_cells(X[col].iloc[i])}; expected a "
                                    "finite number or missing")
        if self.uses_cnn_:
            s = pd.to_numeric(X[self.score_col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            above = np.isfinite(s) & (s > 1)
            finite = s[np.isfinite(s)]
            # several values in (1, 100], at least PERCENT_SHARE of them: a percentage column, whose
            # values below 1 would be misread; a lone value above 1 is that row's error
            if (above.sum() >= 2 and above.sum() >= PERCENT_SHARE * len(finite)
                    and (finite <= 100).all() and (finite >= 0).all()):
                first = int(np.flatnonzero(above)[0])  # a percentage column: the values <= 1 would be misread
                raise TableError(
                    f"ContextRanker: column {self.score_col!r} has {int(above.sum())} value(s) above 1 "
                    f"(first: {preview_cells(X[self.score_col].iloc[first])} at {describe_rows(X, above)}), all "
                    "within [0, 100]: it looks like percentages, and its values below 1 would be misread; "
                    "divide the column by 100 if it holds percentages, or fix the rows if these are typos "
                    "(a probability in [0, 1] is expected)")
            bad = ~np.isfinite(s) | (s < 0) | (s > 1)
            for i in np.flatnonzero(bad):
                hint = " (a percentage? divide the column by 100)" if 1 < s[i] <= 100 else ""
                problems.setdefault(
                    int(i), f"column {self.score_col!r} is {preview_cells(X[self.score_col].iloc[i])}; "
                    f"expected a probability in [0, 1]{hint}"
                )
        if self.emb_cols_:
            e = X[self.emb_cols_].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            for i in np.flatnonzero(~np.isfinite(e).all(axis=1)):
                problems.setdefault(int(i), f"embedding columns {self.embedding_prefix}* are missing or not finite")
        for col in ("width", "height") if self.use_image_size else ():
            numbers, not_number = to_numbers(X[col], booleans=False)
            v = numbers.to_numpy(dtype=float)
            for i in np.flatnonzero(not_number | (v <= 0)):
                problems.setdefault(int(i), f"column {col!r} is {preview_cells(X[col].iloc[i])}; expected a "
                                    "positive pixel count or missing")
        # metadata: missing is fine (the model was fitted with missing values); a value outside the
        # vocabulary is an error, never silently read as missing
        _, bad = normalise_metadata(X)
        expected = {"age": "years in [0, 120]", "sex": f"one of {list(SEXES)}", "site": f"one of {list(SITES)}"}
        for col, mask in bad.items():
            for i in np.flatnonzero(mask):
                problems.setdefault(int(i), f"column {col!r} is {preview_cells(X[col].iloc[i])}; expected {expected[col]} or missing")
        return sorted(problems.items())

    def _raise_problems(self, X: pd.DataFrame, *, fitting: bool = False) -> None:
        problems = self._row_problems(X)
        if problems:
            mask = np.zeros(len(X), dtype=bool)
            mask[[i for i, _ in problems]] = True
            what, hint = (("cannot be used for fitting", "fix or drop these rows") if fitting else
                          ("cannot be scored", "fix or drop these rows (rank() scores the others and lists "
                                               "these as errors)"))
            raise TableError(
                f"ContextRanker: {len(problems)} row(s) {what}, e.g. {problems[0][1]}, at "
                f"{describe_rows(X, mask)}; {hint}"
            )

    # -- features ------------------------------------------------------------------------------
    def _features(self, X: pd.DataFrame, *, fit: bool = False) -> tuple[pd.DataFrame, np.ndarray | None]:
        """The correction GBM's features (n, p) and the CNN logit (n,) or None.

        ``fit=True`` records the training table's std of each context column
        (``context_scales_``); the z floor then uses those, so a lesion's features depend on its
        own patient's lesions only, never on the other patients scored in the same batch.
        """
        feats: dict[str, Any] = {}
        values, _ = normalise_metadata(X[["age", "sex", "site"]])  # the table's spelling of each value
        feats["age"] = values["age"].to_numpy(dtype=float, na_value=np.nan)
        for col in ("sex", "site"):
            v = values[col]
            feats[col] = v.where(v.notna(), None).to_numpy()
        work = pd.DataFrame({"patient_id": X["patient_id"].astype(str).to_numpy(), "site": feats["site"]})
        logit = None
        ctx_cols = []
        if self.uses_cnn_:
            s = pd.to_numeric(X[self.score_col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            logit = _logit(s)
            if self.score_context:
                work["cnn_logit"] = logit
                ctx_cols.append("cnn_logit")
        if self.use_image_size:
            for col in ("width", "height"):
                v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                feats[col] = v
            feats["area"] = np.log(feats["width"] * feats["height"])
            work["area"] = feats["area"]
            work["width"] = feats["width"]
            ctx_cols += ["area", "width"]
        for col in sorted(self.extra_features, key=str):  # by name: the list's order does not matter
            v = X[col]
            feats[col] = (v.to_numpy(dtype=float, na_value=np.nan) if pd.api.types.is_numeric_dtype(v)
                          else v.astype(object).where(v.notna(), None).to_numpy())
        if "image_id" in X.columns:  # large patients' kNN samples are drawn by lesion id
            work["image_id"] = X["image_id"].astype(str).to_numpy()
        numeric = {c: to_numbers(X[c], booleans=False)[0].to_numpy(dtype=float)
                   for c in dict.fromkeys([*self.context_features_,
                                           *(c for v in self.outlier_groups_.values() for c in v)])}
        for col in self.context_features_:
            feats[col] = numeric[col]
        measured = pd.DataFrame(numeric)  # context and outlier-group columns, (n, m)
        if self.emb_cols_:  # one concat, not a column at a time
            emb = pd.DataFrame(X[self.emb_cols_].to_numpy(dtype=np.float32), columns=self.emb_cols_)
            work = pd.concat([work, emb], axis=1)
        if fit:
            self.context_scales_ = context_scales(pd.concat([work, measured], axis=1),
                                                  [*ctx_cols, *self.context_features_])
            self.outlier_scales_ = outlier_scales(measured, list(measured.columns))
        scales = getattr(self, "context_scales_", None)
        parts = [pd.DataFrame(feats)]
        ctx = patient_context_features(
            work, ctx_cols, embedding_prefix=self.embedding_prefix if self.emb_cols_ else None,
            by_site=True, random_state=self.random_state, scales=scales,
        )
        # a ratio or an exact-equality rate of a signed logit means nothing
        parts.append(ctx.drop(columns=["cnn_logit__ratio", "cnn_logit__same"], errors="ignore"))
        if self.context_features_:
            measured_ctx = patient_context_features(
                pd.concat([work[["patient_id", "site"]], measured], axis=1), self.context_features_,
                embedding_prefix=None, by_site=True, scales=scales, stats=CONTEXT_MEASURE_STATS)
            parts.append(measured_ctx.drop(columns=["patient__count", "patient__site_count"]))
        if self.outlier_groups_:
            keyed = pd.concat([work[[c for c in ("patient_id", "image_id") if c in work.columns]],
                               measured], axis=1)
            parts.append(patient_outlier_features(keyed, self.outlier_groups_, scales=self.outlier_scales_,
                                                  random_state=self.random_state))
        frame = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
        return frame, logit

    def _offset_design(self, logit: np.ndarray | None, set_logit: np.ndarray | None, n: int) -> np.ndarray:
        cols = [np.ones(n)]
        cols.append(logit if logit is not None else np.zeros(n))
        cols.append(set_logit if set_logit is not None else np.zeros(n))
        return np.column_stack(cols)  # (n, 3)

    def _gbm_settings(self, *, warn: bool = False) -> dict[str, Any]:
        """The correction GBM's hyperparameters: ``gbm``'s (or :data:`CORRECTION_GBM`), then any
        deprecated per-setting parameter given."""
        if self.gbm is None:
            settings = MetadataGBM(**CORRECTION_GBM).get_params()
        elif isinstance(self.gbm, MetadataGBM):
            settings = self.gbm.get_params()
        else:
            raise ModelError(f"ContextRanker: gbm={self.gbm!r}; expected a MetadataGBM (its settings) or None")
        old = {name: getattr(self, name, "deprecated") for name in CORRECTION_GBM}
        old = {k: v for k, v in old.items() if not (isinstance(v, str) and v == "deprecated")}
        if old and warn:
            given = ", ".join(f"{k}={v!r}" for k, v in old.items())
            warnings.warn(f"ContextRanker: {', '.join(f'{k}=' for k in old)} deprecated: pass "
                          f"gbm=MetadataGBM(**{{**CORRECTION_GBM, ...}}) with {given} (the old parameters "
                          "will be removed in a future release)", FutureWarning, stacklevel=4)
        return {**settings, **old}

    def _whole_model(self) -> bool:
        """True when the correction is the whole model: no offset, and ``gbm`` left to the ranker."""
        deprecated = any(not (isinstance(getattr(self, k, "deprecated"), str)
                              and getattr(self, k, "deprecated") == "deprecated") for k in CORRECTION_GBM)
        return (self.gbm is None and not deprecated and not self.uses_cnn_ and not self.uses_set_
                and not self.uses_lesion_model_)

    def _make_gbm(self) -> MetadataGBM:
        settings = ({**MetadataGBM(**WHOLE_MODEL_GBM).get_params()} if self._whole_model()
                    else self._gbm_settings())
        settings.update(class_weight=None, init_score_col="__offset__",
                        guard_labels=False,  # its features derive from the columns _declare has checked
                        random_state=self.random_state, n_jobs=self.n_jobs)
        return MetadataGBM(**settings)

    def _make_set_model(self):
        from dermctx.models.set_transformer import SetRanker

        params = {"random_state": self.random_state,
                  "embedding_prefix": self.embedding_prefix if self.emb_cols_ else None,
                  "features": list(self.context_features_) or None,  # standardised, missing imputed
                  **(self.set_model_params or {})}
        return SetRanker(**params)

    def _folds(self, X: pd.DataFrame, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        from dermctx.splits import PatientKFold

        groups = X[["patient_id"]].astype(str).assign(
            image_id=X["image_id"].astype(str).to_numpy() if "image_id" in X.columns
            else np.arange(len(X)).astype(str))
        if "lesion_id" in X.columns:  # a lesion filed under two patient ids stays on one side
            groups["lesion_id"] = X["lesion_id"].to_numpy()
        cv = PatientKFold(self.n_folds, random_state=self.random_state)
        return list(cv.split(groups, y))

    # -- estimator API -------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> ContextRanker:
        """Fit on a lesion table.

        Parameters
        ----------
        X : DataFrame, n rows
            ``patient_id``, ``score_col`` and/or ``emb_*``, ``age``, ``sex``, ``site`` (and
            ``width``, ``height`` with ``use_image_size``). Other columns are not read.
        y : array-like of 0/1, length n, optional
            Melanoma labels; default ``X["target"]`` (read only as the label, never as input).

        Returns
        -------
        self
        """
        X = self._check_frame(X)
        if not len(X):
            raise TableError("ContextRanker.fit: X has no rows; expected a labelled lesion table")
        if y is None:
            if "target" not in X.columns:
                raise TableError("ContextRanker.fit: pass y or give X a 'target' column")
            y = X["target"]
        if isinstance(y, pd.Series) and not y.index.equals(X.index):
            raise TableError("ContextRanker.fit: y is a Series whose index differs from X's (labels would be "
                             "matched by position to rows they do not belong to); pass X['target'], "
                             "y.reindex(X.index), or y.to_numpy() if the order is right")
        y = np.asarray(y, dtype=object)
        if y.ndim != 1:
            raise TableError(f"ContextRanker.fit: y must be one label per row (1-d), got shape {y.shape}")
        y = pd.to_numeric(pd.Series(y), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if len(y) != len(X) or not np.isin(y, [0, 1]).all():
            raise TableError(f"ContextRanker.fit: y must be {len(X)} labels in {{0, 1}} (no missing)")
        y = y.astype(int)
        if y.min() == y.max():
            raise TableError("ContextRanker.fit: y has one class only; need melanomas and others")
        self._check_params()
        self._gbm_settings(warn=True)
        self.context_features_ = self._context_columns(X)
        self.outlier_groups_ = self._outlier_groups()
        cols = self._declare(X)
        self._check_extra_features(X)
        check_feature_columns(X, y, [c for c in cols if c != "patient_id"], who="ContextRanker")
        self.feature_names_in_ = np.asarray(cols, dtype=object)
        self.n_features_in_ = len(cols)
        self.uses_cnn_ = self.score_col is not None and self.score_col in cols
        self.uses_lesion_model_ = self._uses_lesion_model()
        self.emb_cols_ = embedding_columns(X[cols], self.embedding_prefix) if self.embedding_prefix else []
        set_inputs = bool(self.emb_cols_) or bool(self.context_features_)
        self.uses_set_ = set_inputs and self.use_set_model in ("auto", True)
        if self.use_set_model is True and not set_inputs:
            raise TableError(f"use_set_model=True needs embedding columns '{self.embedding_prefix}*' "
                             "or context_features")
        self._raise_problems(X, fitting=True)
        self._warn_empty_inputs(X, cols)
        self.input_distribution_ = InputDistribution.fit(self._with_embedding_length(X),
                                                         [*self._numeric_inputs(X), *self._embedding_length()])
        self._warn_repeated_lesions(X, "ContextRanker.fit")
        self.classes_ = np.array([0, 1])

        # one canonical row order (by patient, lesion id, then content): the model does not
        # depend on the order of the rows (LightGBM's row sampling goes by position)
        order = self._canonical_order(X, cols)
        X, y = X.iloc[order], y[order]
        folds = self._folds(X, y)
        frame, logit = self._features(X, fit=True)
        self.feature_families_ = _families(frame[self.context_features_], self.random_state)
        Xin = X[cols]
        set_logit = None
        if self.uses_set_:
            set_logit = np.zeros(len(X))
            for tr, te in folds:
                m = self._make_set_model().fit(Xin.iloc[tr], y[tr])
                set_logit[te] = m.decision_function(Xin.iloc[te])
            self.set_model_ = self._make_set_model().fit(Xin, y)
        else:
            self.set_model_ = None

        self.lesion_model_ = None
        if self.uses_lesion_model_:
            self.lesion_model_ = MetadataGBM(class_weight=None, random_state=self.random_state, n_jobs=self.n_jobs)
            logit = self.lesion_model_.fit_out_of_fold(frame[self._lesion_columns()], y, folds)
        design = self._offset_design(logit, set_logit, len(X))
        used = [0] + [j for j, v in ((1, logit), (2, set_logit)) if v is not None]
        coef = np.zeros(3)
        if len(used) > 1:
            lr = LogisticRegression(C=1e4, max_iter=1000).fit(design[:, used[1:]], y)
            coef[used[1:]] = lr.coef_[0]
            coef[0] = lr.intercept_[0]
        else:
            coef[0] = np.log(y.mean() / (1 - y.mean()))
        self.offset_coef_ = coef
        self.offset_mean_ = design.mean(axis=0)  # the explanations' reference lesion
        offset = design @ coef

        self.gbm_ = self._make_gbm()  # one set of LightGBM bins for the inner folds and the final fit
        oof = self.gbm_.fit_out_of_fold(frame.assign(__offset__=offset), y, folds,
                                        choose_rounds=self._whole_model())
        codes = pd.factorize(X["patient_id"].astype(str))[0]
        self.within_patient_weight_, self.gate_scores_ = self._choose_gate(oof, offset, y, codes)
        gated = offset + _gate(oof - offset, codes, self.within_patient_weight_)
        cal = LogisticRegression(C=1e4, max_iter=1000).fit(gated[:, None], y)
        self.calibration_ = np.array([cal.coef_[0, 0], cal.intercept_[0]])
        self.oof_proba_ = np.empty(len(X))
        self.oof_proba_[order] = _sigmoid(self.calibration_[0] * gated + self.calibration_[1])
        return self

    def _uses_lesion_model(self) -> bool:
        if self.lesion_model not in (True, False):
            raise ModelError(f"ContextRanker: lesion_model={self.lesion_model!r}; expected True or False")
        if self.lesion_model is True and (self.uses_cnn_ or not (self.context_features_ or self.extra_features)):
            raise TableError("ContextRanker: lesion_model=True needs score_col=None (no CNN score) and "
                             "context_features or extra_features to learn from")
        return self.lesion_model is True

    def _lesion_columns(self) -> list[str]:
        """The lesion model's inputs, as named in the correction GBM's feature frame."""
        return list(dict.fromkeys(["age", "sex", "site", *self.context_features_,
                                   *sorted(self.extra_features, key=str)]))

    @staticmethod
    def _warn_lost_lesions(X: pd.DataFrame, bad: np.ndarray) -> None:
        """Lesions refused by ``rank`` are missing from their patients' context: say whose (a
        refused copy of a scored row takes nothing from it)."""
        if not bad.any():
            return
        copies = repeated_image_rows(X)[0]
        lost = bad & ~copies
        if not lost.any():
            return
        pid = as_texts(X["patient_id"])
        hit = pid[lost].value_counts()
        total = pid[~copies].value_counts()
        partial = [p for p in hit.index if total[p] > hit[p]]
        if partial:
            named = ", ".join(f"{p!r} ({hit[p]} of {total[p]})" for p in partial[:5])
            more = f" and {len(partial) - 5} more" if len(partial) > 5 else ""
            warnings.warn(
                f"ContextRanker.rank: {plural(len(partial), 'patient')} lost lesions to the errors table: "
                f"{named}{more}; their other lesions are scored and ranked among themselves only, "
                "without the refused ones as context (the errors table names the rows)",
                DermctxWarning, stacklevel=3)

    @staticmethod
    def _warn_repeated_lesions(X: pd.DataFrame, who: str) -> None:
        """Several images of one lesion each count as a lesion of the patient's context: say so."""
        if "lesion_id" not in X.columns or not len(X):
            return
        known = X["lesion_id"].notna() & (as_texts(X["lesion_id"]).str.strip() != "")
        if "image_id" in X.columns:  # a copy of a row is refused on its own, not another image
            known &= ~as_texts(X["image_id"]).duplicated().to_numpy()
        keys = pd.DataFrame({c: as_texts(X.loc[known, c]) for c in ("patient_id", "lesion_id")})
        repeated = keys[keys.duplicated(keep=False)]
        if len(repeated):
            first = repeated.iloc[0]
            n = len(repeated.drop_duplicates())
            warnings.warn(f"{who}: {plural(n, 'lesion')} of the table {'has' if n == 1 else 'have'} several images "
                          f"(e.g. lesion_id {first['lesion_id']!r} of patient {first['patient_id']!r}); each image "
                          "counts as one of the patient's lesions in the context features, so a lesion's other "
                          "image is its closest neighbour. Keep one image per lesion for context scores",
                          DermctxWarning, stacklevel=3)

    @staticmethod
    def _warn_empty_inputs(X: pd.DataFrame, cols: list[str], when: str = "training") -> None:
        """A declared input missing on every row teaches (or tells) the model nothing: say so."""
        skip = {"patient_id"} if when == "training" else {"patient_id", "age", "sex", "site"}  # often unknown
        empty = [c for c in cols if c not in skip and X[c].isna().all()]
        if not empty or not len(X):
            return
        if when == "training":
            meta = [c for c in empty if c in ("age", "sex", "site")]
            hint = ("fill them in if you have them; age, sex and site are always read, so a table without "
                    "them needs nothing else" if meta else "fill them in, or leave them out of the settings")
            warnings.warn(f"ContextRanker.fit: column(s) {empty} are missing on all {len(X)} training rows; "
                          f"the model learns nothing from them ({hint})", DermctxWarning, stacklevel=3)
        else:
            warnings.warn(f"ContextRanker: column(s) {empty} are missing on all {len(X)} rows scored; the model "
                          "was fitted with them, so these scores rest on the other inputs alone and may "
                          "order the lesions differently (fill them in if you have them)",
                          DermctxWarning, stacklevel=3)

    def _numeric_inputs(self, X: pd.DataFrame) -> list[str]:
        """The numeric measurement columns read (CNN score, image size, extra and context ones)."""
        cols = [self.score_col] if self.uses_cnn_ else []
        cols += ["age", "width", "height"] if self.use_image_size else ["age"]
        cols += [*self.context_features_, *(c for v in self.outlier_groups_.values() for c in v)]
        cols += [c for c in self.extra_features if pd.api.types.is_numeric_dtype(X[c])]
        return [str(c) for c in dict.fromkeys(cols) if not isinstance(X[c].dtype, pd.CategoricalDtype)]

    def _embedding_length(self) -> list[str]:
        """The name of the embeddings' length column (:meth:`_with_embedding_length`), if any."""
        return [f"length of {self.embedding_prefix}*"] if getattr(self, "emb_cols_", None) else []

    def _with_embedding_length(self, X: pd.DataFrame) -> pd.DataFrame:
        """``patient_id``, the numeric inputs and the Euclidean length of each row's embedding: one
        number that moves when embeddings come from another backbone, checkpoint or scale."""
        names = self._embedding_length()
        cols = ["patient_id", *(c for c in self._numeric_inputs(X) if c in X.columns)]
        frame = X[list(dict.fromkeys(cols))]
        if names and all(c in X.columns for c in self.emb_cols_):
            emb = X[self.emb_cols_].to_numpy(dtype=float, na_value=np.nan)
            frame = frame.assign(**{names[0]: np.sqrt((emb ** 2).sum(axis=1))})
        return frame

    def _warn_shifted_inputs(self, X: pd.DataFrame, who: str) -> None:
        """Warn when a numeric input looks scored on another scale (:mod:`dermctx.input_shift`)."""
        found = getattr(self, "input_distribution_", None)
        messages = found.check(self._with_embedding_length(X)) if found is not None and len(X) else []
        if messages:
            warnings.warn(f"{who}: {'; '.join(messages)}. Another unit, scale or method? The model was not "
                          "fitted on values like these and their scores are unreliable: convert the column, or "
                          "refit", DermctxWarning, stacklevel=3)

    def _check_params(self) -> None:
        w = self.within_patient
        if not (w == "auto" or (isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w <= 1)):
            raise ModelError(f"ContextRanker: within_patient={w!r}; expected 'auto' or a number in [0, 1]")

    @staticmethod
    def _canonical_order(X: pd.DataFrame, cols: list[str]) -> np.ndarray:
        """Row positions sorted by patient, lesion id and row content (a stable, order-free key)."""
        pid = as_texts(X["patient_id"]).to_numpy(dtype=str)
        ids = as_texts(X["image_id"]).to_numpy(dtype=str) if "image_id" in X.columns else np.zeros(len(X), dtype=str)
        try:  # numbers and text hash as they are; odd cells (lists, arrays) by their text
            content = pd.util.hash_pandas_object(X[cols], index=False).to_numpy()
        except TypeError:
            content = pd.util.hash_pandas_object(X[cols].apply(as_texts), index=False).to_numpy()
        return np.lexsort((content, ids, pid))

    def _choose_gate(self, raw: np.ndarray, offset: np.ndarray, y: np.ndarray, codes: np.ndarray
                     ) -> tuple[float, list[dict[str, Any]]]:
        """The within-patient weight: fixed, or chosen on the out-of-fold logits ``raw``.

        A weight above 0 is eligible when, on the inner folds' patients, its gain over weight 0
        (the offset's order) is significant (one-sided paired patient bootstrap,
        :data:`GATE_LEVEL` split over the candidates) in within-patient AUC, or in pooled AUC
        with within-patient AUC no lower; in both cases top-1 must be no lower. Among weight 0
        and the eligible weights, the largest sum of within-patient AUC and top-1 wins (ties:
        the smaller weight). Choosing the best-looking weight without a test reordered lesions
        on noise: on SIIM-ISIC the inner folds' small gains did not carry over to the held-out
        patients (docs/ranking.md, ``benchmarks/gate_rules.py``).
        """
        if self.within_patient != "auto":
            return float(self.within_patient), []
        if np.ptp(offset) == 0:  # no CNN or set model: nothing orders a patient's lesions but the
            return 1.0, []  # correction, and every weight above 0 gives the same order
        from dermctx.metrics import paired_bootstrap, topk_rate, within_patient_auc

        level = GATE_LEVEL / (len(GATE_WEIGHTS) - 1)
        base_z = offset + _gate(raw - offset, codes, 0.0)
        scores: list[dict[str, Any]] = []
        for w in GATE_WEIGHTS:
            z = offset + _gate(raw - offset, codes, w)
            wp = float(np.nan_to_num(within_patient_auc(y, z, codes).value, nan=0.0))
            row: dict[str, Any] = {"weight": w, "within_patient_auc": wp, "top1": float(topk_rate(y, z, codes, 1)),
                                   "p_no_gain": 1.0, "p_no_auc_gain": 1.0}
            if w > 0:
                for key, metric in (("p_no_gain", "within_patient_auc"), ("p_no_auc_gain", "auc")):
                    gain = paired_bootstrap(metric, y, z, base_z, codes, n_boot=GATE_BOOT,
                                            random_state=self.random_state)
                    row[key] = float(np.nan_to_num(gain.p_le_0, nan=1.0))
            scores.append(row)
        base = scores[0]
        for r in scores:
            r["level"] = level
            ordered = r["p_no_gain"] <= level
            pooled = r["p_no_auc_gain"] <= level and r["within_patient_auc"] >= base["within_patient_auc"] - 1e-12
            r["passed"] = bool(r["weight"] == 0 or ((ordered or pooled) and r["top1"] >= base["top1"] - 1e-12))
        best = max((r for r in scores if r["passed"]), key=lambda r: (r["within_patient_auc"] + r["top1"], -r["weight"]))
        return float(best["weight"]), scores

    def _check_input(self, X: Any) -> pd.DataFrame:
        check_is_fitted(self, "gbm_")
        X = self._check_frame(X)
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise TableError(f"ContextRanker: X lacks column(s) {missing[:10]} the model was fitted on")
        return X

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated melanoma logit of each lesion, shape (n,), in input order.

        Context comes from the rows of ``X`` with the same ``patient_id``; score a patient's
        whole lesion set together.
        """
        X = self._check_input(X)
        self._raise_problems(X)
        self._warn_empty_inputs(X, list(self.feature_names_in_), when="scored")
        self._warn_shifted_inputs(X, "ContextRanker")
        if not len(X):  # no lesions, no scores
            return np.zeros(0)
        return self._logit_unchecked(X)

    def _stages(self, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
        """The GBM's features, the offset design (n, 3), the offset (n,) and patient codes (n,)."""
        frame, logit = self._features(X)
        lesion = getattr(self, "lesion_model_", None)
        if lesion is not None:
            logit = lesion.decision_function(frame[self._lesion_columns()])
        set_logit = None
        if self.set_model_ is not None:
            set_logit = self.set_model_.decision_function(X[list(self.feature_names_in_)])
        design = self._offset_design(logit, set_logit, len(X))
        codes = pd.factorize(X["patient_id"].astype(str))[0]
        return frame, design, design @ self.offset_coef_, codes

    def _logit_unchecked(self, X: pd.DataFrame) -> np.ndarray:
        frame, _, offset, codes = self._stages(X)
        raw = self.gbm_.decision_function(frame.assign(__offset__=offset))
        gated = offset + _gate(raw - offset, codes, self.within_patient_weight_)
        return self.calibration_[0] * gated + self.calibration_[1]

    def feature_contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each lesion's calibrated logit split by source column.

        The correction GBM's per-feature contributions (LightGBM ``pred_contrib``, SHAP values of
        the trees) are passed through the within-patient gate and the calibration, and summed
        over the features derived from one source column (``tbp_lv_H``, ``tbp_lv_H__z``,
        ``tbp_lv_H__site_rank``... -> ``tbp_lv_H``; see :mod:`dermctx.models.explanation`).

        Returns
        -------
        DataFrame, (n, k), on ``X.index``
            ``baseline`` (intercept and the trees' expected value), ``score_col`` (the CNN
            logit's offset term) and ``set_model`` when used, then one column per source (the
            lesion model's terms, when used, are added to their source columns). Each
            row sums to :meth:`decision_function` of that row (to float precision).

        Raises
        ------
        TableError
            As :meth:`decision_function`.
        """
        X = self._check_input(X)
        self._raise_problems(X)
        return self._contributions(X, *self._stages(X))

    def _contributions(self, X: pd.DataFrame, frame: pd.DataFrame, design: np.ndarray,
                       offset: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
        """:meth:`feature_contributions` from the outputs of :meth:`_stages`."""
        from dermctx.models.explanation import source_of

        phi = self.gbm_.contributions(frame.assign(__offset__=offset))  # (n, p + 1), raw logit units
        bias = phi.pop("bias").to_numpy()
        gated = _gate(phi.to_numpy(dtype=float), codes, self.within_patient_weight_) if len(X) else phi.to_numpy()
        a, b = self.calibration_
        # the CNN and set-model terms against their training means (an average lesion), as the
        # trees' contributions are against their expected value
        centre = getattr(self, "offset_mean_", np.zeros(3))
        out = {"baseline": a * (design[:, 0] * self.offset_coef_[0] + bias
                                + (centre[1:] * self.offset_coef_[1:]).sum()) + b}
        if self.uses_cnn_:
            out[str(self.score_col)] = a * (design[:, 1] - centre[1]) * self.offset_coef_[1]
        if self.set_model_ is not None:
            out["set_model"] = a * (design[:, 2] - centre[2]) * self.offset_coef_[2]
        sources: dict[str, np.ndarray] = {}
        lesion = getattr(self, "lesion_model_", None)
        if lesion is not None:  # its trees' terms, by source column
            lphi = lesion.contributions(frame[self._lesion_columns()])
            out["baseline"] = out["baseline"] + a * self.offset_coef_[1] * (lphi.pop("bias").to_numpy() - centre[1])
            for name in lphi.columns:
                key = source_of(str(name))
                sources[key] = sources.get(key, 0.0) + a * self.offset_coef_[1] * lphi[name].to_numpy()
        for j, name in enumerate(phi.columns):
            key = source_of(str(name))
            sources[key] = sources.get(key, 0.0) + a * gated[:, j]
        for key, value in sources.items():
            out[key] = out.get(key, 0.0) + value
        return pd.DataFrame(out, index=X.index)

    def explain(self, X: pd.DataFrame, *, labels: Any = None) -> list[str]:
        """One sentence per lesion (input order): the sources that raised and lowered its score,
        in the patient's terms (:func:`dermctx.models.explanation.describe`).

        ``labels`` words the columns: None (their names), ``"isic2024"`` (plain words for the
        ISIC 2024 measurements, :data:`dermctx.models.explanation.ISIC2024_LABELS`) or a dict of
        column -> words (``{"size_mm": "diameter (mm)"}``). Raises TableError for anything else.
        """
        from dermctx.models.explanation import ExplanationContext, describe, resolve_labels

        try:
            names = resolve_labels(labels)
        except ValueError as exc:
            raise TableError(f"ContextRanker.explain: {exc}") from exc
        X = self._check_input(X)
        self._raise_problems(X)
        if not len(X):
            return []
        frame, design, offset, codes = self._stages(X)
        contributions = self._contributions(X, frame, design, offset, codes)
        ctx = ExplanationContext(codes=codes, score_source=self.score_col if self.uses_cnn_ else None, names=names)
        if self.uses_cnn_:
            ctx.values[str(self.score_col)] = pd.to_numeric(X[self.score_col], errors="coerce").to_numpy(float)
        for col in self.context_features_:
            ctx.values[col] = frame[col].to_numpy(dtype=float)
            ctx.z[col] = frame[f"{col}__z"].to_numpy(dtype=float)
        emb_name = [(self.embedding_prefix or "").rstrip("_") or "emb"] if self.emb_cols_ else []
        for name in [*self.outlier_groups_, *emb_name]:
            ctx.distance[name] = frame[f"{name}__centroid_dist"].to_numpy(dtype=float)
        ctx.group_sizes = {k: len(v) for k, v in self.outlier_groups_.items()}
        ctx.families = [list(f) for f in getattr(self, "feature_families_", [])]
        ctx.values["patient"] = frame["patient__count"].to_numpy(dtype=float)
        ctx.values["age"] = frame["age"].to_numpy(dtype=float)
        for col in ("sex", "site"):
            ctx.labels[col] = frame[col].to_numpy()
        for col in self.extra_features:
            if pd.api.types.is_numeric_dtype(frame[col]):
                ctx.values[col] = frame[col].to_numpy(dtype=float)
            else:
                ctx.labels[col] = frame[col].to_numpy()
        return describe(contributions, ctx)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): columns other, melanoma; rows in input order."""
        p = _sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the melanoma probability exceeds 0.5 (rarely: use scores to rank), shape (n,)."""
        return (self.decision_function(X) > 0).astype(int)

    # -- batch and per-patient use -----------------------------------------------------------
    def rank(self, X: pd.DataFrame, *, explain: bool = False, labels: Any = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score a batch, keeping going past bad rows.

        With ``explain=True`` the scores have an ``explanation`` column (:meth:`explain`, worded
        with ``labels``).

        Returns
        -------
        scores : DataFrame
            One row per scorable lesion, in input order: ``image_id``, ``patient_id``, ``score``
            (calibrated probability) and ``patient_rank`` (1 = most suspicious of the patient).
            Context comes from the patient's *scorable* lesions only.
        errors : DataFrame
            The errors table (:func:`dermctx.errors_frame`): one row per lesion that could not be
            scored. ``len(scores) + len(errors) == len(X)``.
        """
        X = self._check_input(X)
        self._warn_empty_inputs(X, list(self.feature_names_in_), when="scored")
        self._warn_repeated_lesions(X, "ContextRanker.rank")
        ids = as_texts(X["image_id"]).to_numpy() if "image_id" in X.columns else np.arange(len(X)).astype(str)
        problems = self._row_problems(X)
        bad = np.zeros(len(X), dtype=bool)
        bad[[i for i, _ in problems]] = True
        paths = X["path"].to_numpy() if "path" in X.columns else [None] * len(X)
        errors = errors_frame(error_record(ids[i], i, paths[i], "rank", msg) for i, msg in problems)
        good = X.iloc[np.flatnonzero(~bad)]
        self._warn_shifted_inputs(good, "ContextRanker.rank")  # refused rows are the errors table's
        self._warn_lost_lesions(X, bad)
        score = _sigmoid(self._logit_unchecked(good)) if len(good) else np.zeros(0)
        scores = pd.DataFrame({
            "image_id": ids[~bad],
            "patient_id": good["patient_id"].astype(str).to_numpy(),
            "score": score,
        })
        scores["patient_rank"] = (
            scores.groupby("patient_id")["score"].rank(ascending=False, method="min").astype(int)
        )
        if explain:
            scores["explanation"] = self.explain(good, labels=labels) if len(good) else []
        return scores, errors

    def score_patient(self, X: pd.DataFrame, *, max_loo: int = 128, labels: Any = None) -> pd.DataFrame:
        """One patient's lesions sorted by score, with the context explanation.

        The explanation is leave-one-lesion-out: lesion ``j``'s effect on lesion ``i`` is
        ``score_i(all lesions) - score_i(all but j)``.

        Parameters
        ----------
        X : DataFrame
            One patient's lesions (one ``patient_id``).
        max_loo : int
            Patients with up to this many lesions get the exact leave-one-out explanation over
            every lesion. Above it, the lesions left out in turn are the ``max_loo`` most atypical
            ones (largest norm of the patient-relative features, centred within the patient),
            whose removal moves the others' context most; ``raised_by``/``lowered_by`` are then
            chosen among them. Time and memory grow as ``n * min(n, max_loo)`` (blocks of at most
            100,000 rows), so a 2,000-lesion patient takes seconds, not the ``n^2`` of exact.
        labels : None, "isic2024" or dict of str to str
            Words for the columns in the explanations (:meth:`explain`).

        Returns
        -------
        DataFrame
            Sorted by ``score`` (highest first): ``image_id``, ``score``, ``rank`` (1 = most
            suspicious), ``raised_by`` / ``raised_by_change`` (the lesion whose presence most
            raised this score, and by how much, in probability units; None/0 when none moved it
            by more than :data:`MIN_LOO_CHANGE`) and
            ``lowered_by`` / ``lowered_by_change`` (most lowered it; change < 0), and
            ``explanation``: the features that raised and lowered the score, worded against
            the patient's other lesions (:meth:`explain`).

        Raises
        ------
        TableError
            Lesions of several patients, or a row that cannot be scored.
        """
        X = self._check_input(X)
        self._raise_problems(X)
        pids = as_texts(X["patient_id"]).unique()
        if len(pids) != 1:
            raise TableError(f"score_patient: expected one patient's lesions, got {len(pids)} patients {list(pids[:5])}")
        self._warn_empty_inputs(X, list(self.feature_names_in_), when="scored")
        self._warn_shifted_inputs(X, "ContextRanker.score_patient")
        self._warn_repeated_lesions(X, "ContextRanker.score_patient")
        n = len(X)
        ids = X["image_id"].astype(str).to_numpy() if "image_id" in X.columns else np.arange(n).astype(str)
        full = _sigmoid(self._logit_unchecked(X))
        words = self.explain(X, labels=labels)
        left_out = np.arange(n) if n <= max_loo else self._most_atypical(X, max_loo)
        change = np.zeros((n, len(left_out)))  # change[i, k]: effect of lesion left_out[k] on lesion i
        per_block = max(1, 100_000 // max(n - 1, 1))  # leave-one-out sets scored per block
        for start in range(0, len(left_out) if n > 1 else 0, per_block):
            block = np.arange(start, min(start + per_block, len(left_out)))
            # each leave-one-out set (all lesions but one) scored as its own "patient"
            rows = np.concatenate([np.delete(np.arange(n), left_out[k]) for k in block])
            sets = np.repeat(block, n - 1)
            big = X.iloc[rows].reset_index(drop=True)
            big["patient_id"] = np.char.add("loo", sets.astype(str))
            change[rows, sets] = full[rows] - _sigmoid(self._logit_unchecked(big))
        order = np.argsort(-full, kind="stable")
        out = []
        for r, i in enumerate(order, start=1):
            hi, lo = (int(np.argmax(change[i])), int(np.argmin(change[i]))) if len(left_out) else (0, 0)
            up = change[i, hi] if len(left_out) else 0.0
            down = change[i, lo] if len(left_out) else 0.0
            out.append({
                "image_id": ids[i], "score": full[i], "rank": r,
                "raised_by": ids[left_out[hi]] if up > MIN_LOO_CHANGE else None,
                "raised_by_change": up if up > MIN_LOO_CHANGE else 0.0,
                "lowered_by": ids[left_out[lo]] if down < -MIN_LOO_CHANGE else None,
                "lowered_by_change": down if down < -MIN_LOO_CHANGE else 0.0,
                "explanation": words[i],
            })
        return pd.DataFrame(out)

    def _most_atypical(self, X: pd.DataFrame, k: int) -> np.ndarray:
        """Positions of the ``k`` lesions of one patient farthest from the patient's centre in
        the standardised patient-relative features (ties by position)."""
        frame, _ = self._features(X)
        rel = [c for c in frame.columns if "__" in str(c) and not str(c).startswith("patient__")]
        if not rel:
            return np.arange(k)
        v = frame[rel].to_numpy(dtype=float)
        counts = np.isfinite(v).sum(axis=0)  # a column missing on all of them centres at 0, silently
        centre = np.nansum(v, axis=0) / np.maximum(counts, 1)
        v = np.nan_to_num(v - centre, nan=0.0)
        sd = v.std(axis=0)
        norm = np.sqrt(((v / np.where(sd > 0, sd, 1.0)) ** 2).sum(axis=1))
        return np.sort(np.argsort(-norm, kind="stable")[:k])

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | PathLike[str]) -> None:
        """Write the fitted model to the folder ``path``.

        Files: ``context_ranker.json`` (settings, inputs, offset, gate and calibration weights),
        ``gbm.txt`` (LightGBM text model), with a lesion model ``lesion_model.txt``, with a set
        model the files of :meth:`SetRanker.save <dermctx.SetRanker.save>`
        (``set_ranker.safetensors`` and ``set_ranker.json``), and ``manifest.json`` (each file's
        size and SHA-256, :mod:`dermctx.models.folder`). No pickle: :meth:`load` parses data and
        executes no stored code.
        """
        check_is_fitted(self, "gbm_")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        gbm_text, gbm_meta = self.gbm_.to_state()
        params = self.get_params(deep=False)
        params["gbm"] = None if self.gbm is None else {str(k): v for k, v in self._gbm_settings().items()
                                                       if k not in _RANKER_OWNS}
        for name in CORRECTION_GBM:  # folded into gbm above
            params.pop(name, None)
        params["extra_features"] = list(params["extra_features"])
        if not isinstance(params["context_features"], str):
            params["context_features"] = list(params["context_features"])
        if params["outlier_groups"] is not None:
            params["outlier_groups"] = {str(k): list(v) for k, v in params["outlier_groups"].items()}
        meta = {
            "format": _FORMAT,
            "params": params,
            "feature_names_in": [str(c) for c in self.feature_names_in_],
            "uses_cnn": bool(self.uses_cnn_),
            "emb_cols": list(self.emb_cols_),
            "uses_set": bool(self.uses_set_),
            "uses_lesion_model": self.lesion_model_ is not None,
            "offset_coef": [float(v) for v in self.offset_coef_],
            "offset_mean": [float(v) for v in self.offset_mean_],
            "calibration": [float(v) for v in self.calibration_],
            "context_scales": {str(k): float(v) for k, v in self.context_scales_.items()},
            "context_features": list(self.context_features_),
            "outlier_groups": {k: list(v) for k, v in self.outlier_groups_.items()},
            "outlier_scales": {k: [float(m), float(sd)] for k, (m, sd) in self.outlier_scales_.items()},
            "within_patient_weight": float(self.within_patient_weight_),
            "feature_families": [list(f) for f in self.feature_families_],
            "input_distribution": self.input_distribution_.to_state(),
            "gbm": gbm_meta,
        }
        (folder / "gbm.txt").write_text(gbm_text)
        files = ["context_ranker.json", "gbm.txt"]
        if self.lesion_model_ is not None:
            lesion_text, meta["lesion_model"] = self.lesion_model_.to_state()
            (folder / "lesion_model.txt").write_text(lesion_text)
            files.append("lesion_model.txt")
        if self.set_model_ is not None:
            from safetensors.torch import save_file

            tensors, set_meta = self.set_model_.to_state()
            weights, description = _SET_FILES
            save_file(tensors, str(folder / weights))
            (folder / description).write_text(json.dumps(set_meta))
            files += list(_SET_FILES)
        (folder / "context_ranker.json").write_text(json.dumps(meta, indent=1))
        write_manifest(folder, files, "ContextRanker")

    @classmethod
    def load(cls, path: str | PathLike[str]) -> ContextRanker:
        """Read a folder written by :meth:`save` (JSON, LightGBM text, safetensors; no pickle).

        Folders saved before the set model's files were named ``set_ranker.*`` (with
        ``set_model.safetensors`` and ``set_model.json``) are read too.

        Every file is checked against ``manifest.json`` before it is parsed, every JSON value's
        type and length is checked, and the inputs are checked against the label-derived names
        again (an edited ``score_col`` cannot make the model read the label).

        Raises
        ------
        ModelError
            Naming the file (and the key): a missing, damaged or changed file, a value of the
            wrong type, length or range, a label-derived input.
        """
        folder = Path(path)
        meta_path = folder / "context_ranker.json"
        if not verify_folder(folder, "ContextRanker", ["context_ranker.json", "gbm.txt"]):
            _legacy_digests(folder)  # saved before manifests: the digests inside the JSON
        f = JsonFields(read_json(meta_path), meta_path)
        if f.text("format") != _FORMAT:
            raise ModelError(f"{meta_path}: not a {_FORMAT} file")
        p = JsonFields(f.mapping("params"), meta_path, where="params")
        allowed = set(cls().get_params())
        unknown = sorted(set(p.data) - allowed)
        if unknown:
            raise ModelError(f"{meta_path}: params has unknown setting(s) {unknown}")
        p.text("score_col", None, optional=True)
        p.text("embedding_prefix", None, optional=True)
        p.boolean("use_image_size", False)
        p.names("extra_features", [])
        p.integer("n_folds", 5, lo=2)
        data = dict(p.data)
        gbm = data.pop("gbm", None)
        if gbm is not None:
            g = JsonFields(p.mapping("gbm"), meta_path, where="params.gbm")
            unknown_gbm = sorted(set(g.data) - set(MetadataGBM().get_params()))
            if unknown_gbm:
                raise ModelError(f"{meta_path}: params.gbm has unknown setting(s) {unknown_gbm}")
            try:
                data["gbm"] = MetadataGBM(**g.data)
            except TypeError as exc:
                raise ModelError(f"{meta_path}: params.gbm: {exc}") from exc
        old = {k: data.pop(k) for k in list(data) if k in CORRECTION_GBM}  # folders saved before gbm=
        if old:
            data["gbm"] = MetadataGBM(**{**CORRECTION_GBM, **old})
        est = cls(**data)
        try:
            est._check_params()
        except ModelError as exc:
            raise ModelError(f"{meta_path}: {exc}") from exc
        est.feature_names_in_ = np.asarray(f.names("feature_names_in"), dtype=object)
        if not len(est.feature_names_in_) or est.feature_names_in_[0] != "patient_id":
            raise ModelError(f"{meta_path}: feature_names_in must start with 'patient_id'")
        try:
            refuse_label_columns([c for c in [est.score_col, *est.feature_names_in_[1:]] if c is not None],
                                 who=f"{meta_path}")
        except LeakageError as exc:
            raise ModelError(str(exc)) from exc
        est.n_features_in_ = len(est.feature_names_in_)
        est.uses_cnn_ = f.boolean("uses_cnn")
        est.emb_cols_ = f.names("emb_cols")
        est.uses_set_ = f.boolean("uses_set")
        est.offset_coef_ = np.asarray(f.numbers("offset_coef", length=3))
        est.offset_mean_ = np.asarray(f.numbers("offset_mean", [1.0, 0.0, 0.0], length=3))
        est.calibration_ = np.asarray(f.numbers("calibration", length=2))
        # folders saved before these keys existed: scales from the batch, no context features,
        # the full correction
        scales = JsonFields(f.mapping("context_scales", {}), meta_path, where="context_scales")
        est.context_scales_ = {k: scales.number(k, lo=0.0) for k in scales.data}
        est.context_features_ = f.names("context_features", [])
        groups = JsonFields(f.mapping("outlier_groups", {}), meta_path, where="outlier_groups")
        est.outlier_groups_ = {k: groups.names(k) for k in groups.data}
        o_scales = JsonFields(f.mapping("outlier_scales", {}), meta_path, where="outlier_scales")
        est.outlier_scales_ = {}
        for k in o_scales.data:
            mean, sd = o_scales.numbers(k, length=2)
            if not sd > 0:
                raise ModelError(f"{meta_path}: outlier_scales.{k} has std {sd}; expected a positive number")
            est.outlier_scales_[k] = (mean, sd)
        est.within_patient_weight_ = f.number("within_patient_weight", 1.0, lo=0.0, hi=1.0)
        families = f.get("feature_families", [])
        if not (isinstance(families, list) and all(
                isinstance(g, list) and all(isinstance(c, str) and c in est.context_features_ for c in g)
                for g in families)):
            raise ModelError(f"{meta_path}: feature_families is {str(families)[:60]!r}; expected lists "
                             "of context feature names")
        est.feature_families_ = [list(g) for g in families]
        try:  # folders saved before input distributions were kept: no shift check
            est.input_distribution_ = InputDistribution.from_state(f.mapping("input_distribution", {}))
        except ValueError as exc:
            raise ModelError(f"{meta_path}: input_distribution: {exc}") from exc
        if not set(est.input_distribution_.columns) <= {*map(str, est.feature_names_in_), *est._embedding_length()}:
            raise ModelError(f"{meta_path}: input_distribution names columns the model does not read")
        read = set(est.feature_names_in_)
        declared = [est.score_col] if est.uses_cnn_ else []
        declared += [*est.emb_cols_, *est.context_features_, *(c for v in est.outlier_groups_.values() for c in v)]
        if not set(declared) <= read or not set(est.outlier_scales_) >= {c for v in est.outlier_groups_.values() for c in v}:
            raise ModelError(f"{meta_path}: the inputs it declares (CNN score, embeddings, context and outlier "
                             "columns) are not all among feature_names_in, or an outlier column has no scale")
        est.classes_ = np.array([0, 1])
        est.gbm_ = MetadataGBM.from_state((folder / "gbm.txt").read_text(), f.mapping("gbm"))
        est.lesion_model_ = None
        est.uses_lesion_model_ = f.boolean("uses_lesion_model", False)
        if est.uses_lesion_model_:
            if est.uses_cnn_:
                raise ModelError(f"{meta_path}: uses_lesion_model with a CNN score; expected one or the other")
            est.lesion_model_ = MetadataGBM.from_state((folder / "lesion_model.txt").read_text(),
                                                       f.mapping("lesion_model"))
            if list(est.lesion_model_.feature_names_in_) != est._lesion_columns():
                raise ModelError(f"{meta_path}: lesion_model's columns do not match the context and extra features")
        est.set_model_ = None
        if est.uses_set_:
            from dermctx.models.set_transformer import SetRanker

            weights, description = _set_files(folder)
            est.set_model_ = SetRanker.from_state(load_tensors(folder / weights),
                                                  read_json(folder / description))
        return est


def _set_files(folder: Path) -> tuple[str, str]:
    """The set model's files (weights, description) in a saved ContextRanker folder:
    ``set_ranker.*``, or ``set_model.*`` in a folder saved before the rename; whichever pair its
    manifest lists (without a manifest: whichever pair it holds)."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        listed = set(JsonFields(read_json(manifest), manifest).mapping("files"))
        where = f"listed in {MANIFEST}"
    else:
        listed = {p.name for p in folder.iterdir() if p.is_file()}
        where = "in the folder"
    for names in (_SET_FILES, _OLD_SET_FILES):
        if set(names) <= listed:
            return names
    raise ModelError(f"{folder}: the model has a set model, but no {' and '.join(_SET_FILES)} "
                     f"{where}; copy the whole folder, or save the model again")


def _legacy_digests(folder: Path) -> None:
    """Folders saved before ``manifest.json``: the SHA-256 digests inside ``context_ranker.json``."""
    meta = read_json(folder / "context_ranker.json")
    if not isinstance(meta, dict):
        raise ModelError(f"{folder / 'context_ranker.json'}: expected a JSON object")
    digests = meta.get("sha256")
    needed = {"gbm.txt", *(_set_files(folder) if meta.get("uses_set") else [])}
    if not isinstance(digests, dict) or not needed <= set(digests):
        raise ModelError(f"{folder}: no manifest.json and no SHA-256 digests of {sorted(needed)} in "
                         "context_ranker.json, so its files cannot be checked; save the model again")
    for name, digest in digests.items():
        path = folder / str(name)
        if not isinstance(digest, str) or not path.is_file() or sha256_file(path) != digest:
            raise ModelError(f"{path}: missing, damaged or changed since it was saved (its "
                             "SHA-256 differs from context_ranker.json); save the model again")
