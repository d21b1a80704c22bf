"""ContextRanker: the model users call to rank a patient's lesions for melanoma.

It takes what a clinic has per lesion (a CNN probability ``cnn_score`` and/or appearance
embeddings ``emb_*``, with age, sex and site) and scores each lesion *in the context of the
patient's other lesions*:

1. **offset**: a logistic stage on the raw CNN logit (and, with embeddings, the out-of-fold logit
   of a :class:`~dermctx.SetRanker`): the CNN keeps its full resolution, nothing is binned;
2. **correction**: a :class:`~dermctx.MetadataGBM` boosted *from* that offset (LightGBM
   ``init_score``) on age, sex, site, the patient's lesion count and patient-relative features
   (:func:`~dermctx.patient_context_features`) of the declared inputs, with fixed conservative
   rounds (no early stopping on a handful of melanomas);
3. **calibration**: a Platt scaling fitted on patient-grouped out-of-fold logits of stage 2, so
   probabilities mean the same across fits.

Image width/height are an acquisition artefact in SIIM-ISIC 2020 (how the data was collected,
not the patient's skin); they are read only with ``use_image_size=True``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from dermctx.errors import ModelError, TableError, error_record, errors_frame
from dermctx.features import context_scales, patient_context_features
from dermctx.label_guard import LABEL_COLUMNS, check_feature_columns, refuse_label_columns
from dermctx.models.gbm import MetadataGBM
from dermctx.table import (
    SEXES,
    SITES,
    describe_rows,
    embedding_columns,
    normalise_metadata,
    placeholder_patient_ids,
)

__all__ = ["LABEL_DERIVED", "ContextRanker"]

#: Columns refused as inputs (:data:`dermctx.label_guard.LABEL_COLUMNS`): the label and what is
#: derived from it or from the data split, for every registered source.
LABEL_DERIVED: frozenset[str] = frozenset(LABEL_COLUMNS)
_FORMAT = "dermctx.ContextRanker/1"
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _show(value: Any) -> str:
    if pd.isna(value):
        return "missing"
    return repr(value.item() if hasattr(value, "item") else value)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


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
        Further per-lesion columns to use as they are (numeric or categorical). Label-derived
        names (:data:`LABEL_DERIVED`) are refused.
    context_features : sequence of str
        Per-lesion numeric columns (ISIC 2024's ``tbp_lv_*`` colour, size, border and symmetry
        measurements, or a clinic's own) used raw **and** relative to the patient's other
        lesions: leave-one-out difference, z-score, rank, ratio, and the same against same-site
        lesions (:func:`dermctx.patient_context_features`), the ISIC 2024 winning recipe. A
        lesion's features depend on its own patient's lesions only. Label-derived names are
        refused.
    n_estimators, learning_rate, num_leaves, min_child_samples, reg_lambda :
        The correction GBM (fixed rounds, strong regularisation).
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
    offset_coef_ : ndarray
        Weights of the logistic offset stage: ``[intercept, cnn_logit, set_logit]`` (0 if unused).
    calibration_ : ndarray, (2,)
        Platt scaling ``[a, b]``: probability = sigmoid(a * logit + b).
    context_scales_ : dict of str to float
        Training std of each patient-context column (the z floor), fixed at fit.
    oof_proba_ : ndarray, (n,)
        Out-of-fold calibrated probabilities of the training lesions (inner patient folds).
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
        context_features: Sequence[str] = (),
        n_estimators: int = 150,
        learning_rate: float = 0.02,
        num_leaves: int = 7,
        min_child_samples: int = 100,
        reg_lambda: float = 10.0,
        n_folds: int = 5,
        set_model_params: dict[str, Any] | None = None,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.score_col = score_col
        self.embedding_prefix = embedding_prefix
        self.use_image_size = use_image_size
        self.use_set_model = use_set_model
        self.score_context = score_context
        self.extra_features = extra_features
        self.context_features = context_features
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
    def _declare(self, X: pd.DataFrame) -> list[str]:
        """The input columns this configuration reads from ``X`` (checked against the labels)."""
        offered = [c for c in [self.score_col, *self.extra_features, *self.context_features]
                   if c is not None]
        if self.embedding_prefix and self.embedding_prefix.lower().rstrip("_") in LABEL_DERIVED:
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
        if self.score_col is None and not emb and not self.context_features:
            raise TableError("ContextRanker: score_col=None, no embedding columns and no "
                             "context_features; nothing to rank on")
        cols += ["age", "sex", "site"]
        if self.use_image_size:
            cols += ["width", "height"]
        cols += [c for c in [*self.extra_features, *self.context_features] if c not in cols]
        cols += emb
        missing = [c for c in cols if c not in X.columns]
        if missing:
            raise TableError(
                f"ContextRanker: X lacks column(s) {missing[:10]} "
                f"(columns {list(X.columns)[:20]}); add them or change the settings"
            )
        return cols

    @staticmethod
    def _check_frame(X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TableError(
                f"ContextRanker: X must be a lesion table (DataFrame with patient_id), "
                f"got {type(X).__name__}"
            )
        if "patient_id" not in X.columns:
            raise TableError(f"ContextRanker: X has no 'patient_id' column (columns {list(X.columns)[:20]})")
        return X

    def _row_problems(self, X: pd.DataFrame) -> list[tuple[int, str]]:
        """(row position, message) of each row that cannot be scored."""
        problems: dict[int, str] = {}
        pid = X["patient_id"]
        for i in np.flatnonzero((pid.isna() | (pid.astype(str).str.strip() == "")).to_numpy()):
            problems.setdefault(int(i), "patient_id is missing or blank")
        for i in np.flatnonzero(placeholder_patient_ids(pid)):  # never one pooled "patient"
            problems.setdefault(int(i), f"patient_id {str(pid.iloc[i])!r} is a placeholder for an "
                                "unknown patient; give the real id (or 'unknown:<image_id>')")
        for col in self.context_features:  # missing is fine; text is never read as missing
            v = pd.to_numeric(X[col], errors="coerce")
            for i in np.flatnonzero((v.isna() & X[col].notna()).to_numpy() | np.isinf(v.to_numpy(float))):
                problems.setdefault(int(i), f"column {col!r} is {_show(X[col].iloc[i])}; expected a "
                                    "finite number or missing")
        if self.uses_cnn_:
            s = pd.to_numeric(X[self.score_col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = ~np.isfinite(s) | (s < 0) | (s > 1)
            for i in np.flatnonzero(bad):
                problems.setdefault(
                    int(i), f"column {self.score_col!r} is {_show(X[self.score_col].iloc[i])}; "
                    "expected a probability in [0, 1]"
                )
        if self.emb_cols_:
            e = X[self.emb_cols_].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            for i in np.flatnonzero(~np.isfinite(e).all(axis=1)):
                problems.setdefault(int(i), f"embedding columns {self.embedding_prefix}* are missing or not finite")
        for col in ("width", "height") if self.use_image_size else ():
            v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            for i in np.flatnonzero(v <= 0):
                problems.setdefault(int(i), f"column {col!r} is {v[i]}; expected a positive pixel count")
        # metadata: missing is fine (the model was fitted with missing values); a value outside the
        # vocabulary is an error, never silently read as missing
        _, bad = normalise_metadata(X)
        expected = {"age": "years in [0, 120]", "sex": f"one of {list(SEXES)}", "site": f"one of {list(SITES)}"}
        for col, mask in bad.items():
            for i in np.flatnonzero(mask):
                problems.setdefault(int(i), f"column {col!r} is {_show(X[col].iloc[i])}; expected {expected[col]} or missing")
        return sorted(problems.items())

    def _raise_problems(self, X: pd.DataFrame) -> None:
        problems = self._row_problems(X)
        if problems:
            mask = np.zeros(len(X), dtype=bool)
            mask[[i for i, _ in problems]] = True
            raise TableError(
                f"ContextRanker: {len(problems)} row(s) cannot be scored, e.g. {problems[0][1]}, at "
                f"{describe_rows(X, mask)}; fix or drop these rows (rank() scores the others and "
                "lists these as errors)"
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
        for col in self.extra_features:
            v = X[col]
            feats[col] = (v.to_numpy(dtype=float, na_value=np.nan) if pd.api.types.is_numeric_dtype(v)
                          else v.astype(object).where(v.notna(), None).to_numpy())
        for col in self.context_features:
            v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            feats[col] = work[col] = v
            ctx_cols.append(col)
        if self.emb_cols_:  # one concat, not a column at a time
            emb = pd.DataFrame(X[self.emb_cols_].to_numpy(dtype=np.float32), columns=self.emb_cols_)
            work = pd.concat([work, emb], axis=1)
        if fit:
            self.context_scales_ = context_scales(work, ctx_cols)
        ctx = patient_context_features(
            work, ctx_cols, embedding_prefix=self.embedding_prefix if self.emb_cols_ else None,
            by_site=True, random_state=self.random_state,
            scales=getattr(self, "context_scales_", None),
        )
        # a ratio or an exact-equality rate of a signed logit means nothing
        ctx = ctx.drop(columns=["cnn_logit__ratio", "cnn_logit__same"], errors="ignore")
        frame = pd.concat([pd.DataFrame(feats), ctx.reset_index(drop=True)], axis=1)
        return frame, logit

    def _offset_design(self, logit: np.ndarray | None, set_logit: np.ndarray | None, n: int) -> np.ndarray:
        cols = [np.ones(n)]
        cols.append(logit if logit is not None else np.zeros(n))
        cols.append(set_logit if set_logit is not None else np.zeros(n))
        return np.column_stack(cols)  # (n, 3)

    def _make_gbm(self) -> MetadataGBM:
        return MetadataGBM(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=self.min_child_samples,
            reg_lambda=self.reg_lambda, class_weight=None, init_score_col="__offset__",
            guard_labels=False,  # its features derive from the columns _declare has checked
            random_state=self.random_state, n_jobs=self.n_jobs,
        )

    def _make_set_model(self):
        from dermctx.models.set_transformer import SetRanker

        params = {"random_state": self.random_state, **(self.set_model_params or {})}
        return SetRanker(embedding_prefix=self.embedding_prefix, **params)

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
        y = pd.to_numeric(pd.Series(np.asarray(y)), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if len(y) != len(X) or not np.isin(y, [0, 1]).all():
            raise TableError(f"ContextRanker.fit: y must be {len(X)} labels in {{0, 1}} (no missing)")
        y = y.astype(int)
        if y.min() == y.max():
            raise TableError("ContextRanker.fit: y has one class only; need melanomas and others")
        cols = self._declare(X)
        check_feature_columns(X, y, [c for c in cols if c != "patient_id"], who="ContextRanker")
        self.feature_names_in_ = np.asarray(cols, dtype=object)
        self.n_features_in_ = len(cols)
        self.uses_cnn_ = self.score_col is not None and self.score_col in cols
        self.emb_cols_ = embedding_columns(X[cols], self.embedding_prefix) if self.embedding_prefix else []
        self.uses_set_ = bool(self.emb_cols_) and self.use_set_model in ("auto", True)
        if self.use_set_model is True and not self.emb_cols_:
            raise TableError(f"use_set_model=True needs embedding columns '{self.embedding_prefix}*'")
        self._raise_problems(X)
        self.classes_ = np.array([0, 1])

        folds = self._folds(X, y)
        frame, logit = self._features(X, fit=True)
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
        offset = design @ coef

        oof = np.zeros(len(X))
        for tr, te in folds:
            g = self._make_gbm().fit(frame.iloc[tr].assign(__offset__=offset[tr]), y[tr])
            oof[te] = g.decision_function(frame.iloc[te].assign(__offset__=offset[te]))
        self.gbm_ = self._make_gbm().fit(frame.assign(__offset__=offset), y)
        cal = LogisticRegression(C=1e4, max_iter=1000).fit(oof[:, None], y)
        self.calibration_ = np.array([cal.coef_[0, 0], cal.intercept_[0]])
        self.oof_proba_ = _sigmoid(self.calibration_[0] * oof + self.calibration_[1])
        return self

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
        if not len(X):  # no lesions, no scores
            return np.zeros(0)
        return self._logit_unchecked(X)

    def _logit_unchecked(self, X: pd.DataFrame) -> np.ndarray:
        frame, logit = self._features(X)
        set_logit = None
        if self.set_model_ is not None:
            set_logit = self.set_model_.decision_function(X[list(self.feature_names_in_)])
        offset = self._offset_design(logit, set_logit, len(X)) @ self.offset_coef_
        raw = self.gbm_.decision_function(frame.assign(__offset__=offset))
        return self.calibration_[0] * raw + self.calibration_[1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, shape (n, 2): columns other, melanoma; rows in input order."""
        p = _sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the melanoma probability exceeds 0.5 (rarely: use scores to rank), shape (n,)."""
        return (self.decision_function(X) > 0).astype(int)

    # -- batch and per-patient use -----------------------------------------------------------
    def rank(self, X: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score a batch, keeping going past bad rows.

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
        ids = X["image_id"].astype(str).to_numpy() if "image_id" in X.columns else np.arange(len(X)).astype(str)
        problems = self._row_problems(X)
        bad = np.zeros(len(X), dtype=bool)
        bad[[i for i, _ in problems]] = True
        paths = X["path"].to_numpy() if "path" in X.columns else [None] * len(X)
        errors = errors_frame(error_record(ids[i], i, paths[i], "rank", msg) for i, msg in problems)
        good = X.iloc[np.flatnonzero(~bad)]
        score = _sigmoid(self._logit_unchecked(good)) if len(good) else np.zeros(0)
        scores = pd.DataFrame({
            "image_id": ids[~bad],
            "patient_id": good["patient_id"].astype(str).to_numpy(),
            "score": score,
        })
        scores["patient_rank"] = (
            scores.groupby("patient_id")["score"].rank(ascending=False, method="min").astype(int)
        )
        return scores, errors

    def score_patient(self, X: pd.DataFrame) -> pd.DataFrame:
        """One patient's lesions sorted by score, with the context explanation.

        The explanation is leave-one-lesion-out: lesion ``j``'s effect on lesion ``i`` is
        ``score_i(all lesions) - score_i(all but j)``.

        Returns
        -------
        DataFrame
            Sorted by ``score`` (highest first): ``image_id``, ``score``, ``rank`` (1 = most
            suspicious), ``raised_by`` / ``raised_by_change`` (the lesion whose presence most
            raised this score, and by how much, in probability units; None/0 when none did) and
            ``lowered_by`` / ``lowered_by_change`` (most lowered it; change < 0).
        """
        X = self._check_input(X)
        pids = X["patient_id"].astype(str).unique()
        if len(pids) != 1:
            raise TableError(f"score_patient: expected one patient's lesions, got {len(pids)} patients {list(pids[:5])}")
        self._raise_problems(X)
        n = len(X)
        ids = X["image_id"].astype(str).to_numpy() if "image_id" in X.columns else np.arange(n).astype(str)
        full = _sigmoid(self._logit_unchecked(X))
        change = np.zeros((n, n))  # change[i, j]: effect of lesion j on lesion i
        if n > 1:
            # every leave-one-out set at once: set j = all lesions but j, as its own "patient"
            keep = ~np.eye(n, dtype=bool)
            rows = np.concatenate([np.flatnonzero(keep[j]) for j in range(n)])
            sets = np.repeat(np.arange(n), n - 1)
            big = X.iloc[rows].reset_index(drop=True)
            big["patient_id"] = np.char.add("loo", sets.astype(str))
            loo = _sigmoid(self._logit_unchecked(big))
            change[rows, sets] = full[rows] - loo
        order = np.argsort(-full, kind="stable")
        out = []
        for r, i in enumerate(order, start=1):
            hi, lo = int(np.argmax(change[i])), int(np.argmin(change[i]))
            out.append({
                "image_id": ids[i], "score": full[i], "rank": r,
                "raised_by": ids[hi] if change[i, hi] > 0 else None,
                "raised_by_change": max(change[i, hi], 0.0),
                "lowered_by": ids[lo] if change[i, lo] < 0 else None,
                "lowered_by_change": min(change[i, lo], 0.0),
            })
        return pd.DataFrame(out)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | PathLike[str]) -> None:
        """Write the fitted model to the folder ``path``.

        Files: ``context_ranker.json`` (settings, inputs, offset and calibration weights),
        ``gbm.txt`` (LightGBM text model) and, with a set model, ``set_model.safetensors`` and
        ``set_model.json``. No pickle: :meth:`load` parses data and executes no stored code.
        """
        check_is_fitted(self, "gbm_")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        gbm_text, gbm_meta = self.gbm_.to_state()
        params = self.get_params()
        params["extra_features"] = list(params["extra_features"])
        params["context_features"] = list(params["context_features"])
        meta = {
            "format": _FORMAT,
            "params": params,
            "feature_names_in": [str(c) for c in self.feature_names_in_],
            "uses_cnn": bool(self.uses_cnn_),
            "emb_cols": list(self.emb_cols_),
            "uses_set": bool(self.uses_set_),
            "offset_coef": [float(v) for v in self.offset_coef_],
            "calibration": [float(v) for v in self.calibration_],
            "context_scales": {str(k): float(v) for k, v in self.context_scales_.items()},
            "gbm": gbm_meta,
        }
        (folder / "gbm.txt").write_text(gbm_text)
        files = ["gbm.txt"]
        if self.set_model_ is not None:
            from safetensors.torch import save_file

            tensors, set_meta = self.set_model_.to_state()
            save_file(tensors, str(folder / "set_model.safetensors"))
            (folder / "set_model.json").write_text(json.dumps(set_meta))
            files += ["set_model.safetensors", "set_model.json"]
        meta["sha256"] = {name: _sha256(folder / name) for name in files}
        (folder / "context_ranker.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | PathLike[str]) -> ContextRanker:
        """Read a folder written by :meth:`save` (JSON, LightGBM text, safetensors; no pickle)."""
        folder = Path(path)
        for name in ("context_ranker.json", "gbm.txt"):
            if not (folder / name).is_file():
                raise ModelError(f"{folder}: missing {name}; expected a folder written by ContextRanker.save")
        try:
            meta = json.loads((folder / "context_ranker.json").read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{folder / 'context_ranker.json'}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ModelError(f"{folder / 'context_ranker.json'}: not a {_FORMAT} file")
        # a truncated or altered model file is refused before LightGBM or safetensors parse it
        # (LightGBM aborts the whole process on some damaged files); folders saved before the
        # digests were recorded have none to check
        digests = meta.get("sha256", {})
        for name, digest in (digests.items() if isinstance(digests, dict) else [("", None)]):
            path = folder / str(name)
            if not isinstance(digest, str) or not path.is_file() or _sha256(path) != digest:
                raise ModelError(f"{path}: missing, damaged or changed since it was saved (its "
                                 "SHA-256 differs from context_ranker.json); save the model again")
        try:
            est = cls(**meta["params"])
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
            est.n_features_in_ = len(est.feature_names_in_)
            est.uses_cnn_ = bool(meta["uses_cnn"])
            est.emb_cols_ = list(meta["emb_cols"])
            est.uses_set_ = bool(meta["uses_set"])
            est.offset_coef_ = np.asarray(meta["offset_coef"], dtype=float)
            est.calibration_ = np.asarray(meta["calibration"], dtype=float)
            # files saved before the scales were recorded: z floors from the scored batch
            est.context_scales_ = {str(k): float(v) for k, v in meta.get("context_scales", {}).items()}
            est.classes_ = np.array([0, 1])
            est.gbm_ = MetadataGBM.from_state((folder / "gbm.txt").read_text(), meta["gbm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{folder}: context_ranker.json does not describe a ContextRanker ({exc})") from exc
        est.set_model_ = None
        if est.uses_set_:
            from safetensors.torch import load_file

            from dermctx.models.set_transformer import SetRanker

            set_meta = json.loads((folder / "set_model.json").read_text())
            est.set_model_ = SetRanker.from_state(load_file(str(folder / "set_model.safetensors")), set_meta)
        return est
