"""MetadataGBM: LightGBM behind the scikit-learn classifier contract.

A binary classifier on a table of lesion features (age, sex, site, patient-context features...).
String/categorical columns (sex, site) become LightGBM categorical features with the categories
seen in ``fit`` (an unseen category at predict time is treated as missing). It can boost *from*
an offset column (``init_score_col``, e.g. a CNN logit): the trees then learn a correction to that
logit from the other features, instead of re-learning the logit from binned values.
"""

from __future__ import annotations

import json
import re
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from dermctx.errors import ModelError
from dermctx.label_guard import check_feature_columns
from dermctx.table import refuse_duplicate_columns

__all__ = ["MetadataGBM"]

_STATE_FORMAT = "dermctx.MetadataGBM/1"


#: ``fit_out_of_fold(choose_rounds=True)``: rounds between checks of the pooled log loss ...
ROUND_STEP: int = 10
#: ... and checks without a better loss before the fold models stop growing.
ROUND_PATIENCE: int = 5

def _lgb_name(name: str) -> str:
    """A feature name as LightGBM stores it (it replaces spaces and JSON characters)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", str(name))


def _lgb_names(columns: Any) -> list[str]:
    """The names MetadataGBM gives LightGBM: :func:`_lgb_name` of each column, made unique (LightGBM
    refuses JSON characters such as ``[ ] : ,`` in names, and ``Area [mm2]`` and ``Area_mm2_``
    must stay two features)."""
    out: list[str] = []
    seen: set[str] = set()
    for i, c in enumerate(columns):
        name = _lgb_name(c)
        if name in seen:
            name = f"{name}__{i}"
        seen.add(name)
        out.append(name)
    return out


class MetadataGBM(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees (LightGBM) for melanoma vs other, scikit-learn style.

    Parameters
    ----------
    n_estimators : int
        Boosting rounds, fixed (no early stopping: on ~70 melanomas per validation fold it is noise).
    learning_rate, num_leaves, min_child_samples, reg_lambda, subsample, colsample_bytree :
        The usual LightGBM regularisation; the defaults are conservative for a few hundred positives.
    class_weight : "balanced", dict or None
        ``"balanced"`` weights each class by ``n / (2 * n_class)`` (better ranking of rare positives,
        probabilities no longer calibrated); ``None`` keeps the raw class frequencies.
    init_score_col : str or None
        Column of ``X`` holding an offset logit to boost from; it is not used as a feature and the
        model's logit is ``offset + trees``. Needs ``X`` to be a DataFrame.
    guard_labels : bool
        Refuse label-derived feature columns of a DataFrame ``X``
        (:func:`dermctx.label_guard.check_feature_columns`). :class:`ContextRanker` turns it off
        for its own derived features, having checked the columns they are derived from.
    random_state : int
        Seed of LightGBM's row and column sampling; results are deterministic for a seed.
    n_jobs : int
        LightGBM threads.

    Attributes
    ----------
    booster_ : lightgbm.Booster
    n_rounds_ : int
        Boosting rounds of ``booster_`` (``n_estimators``, or the count chosen by
        ``fit_out_of_fold(choose_rounds=True)``).
    classes_ : ndarray of shape (2,)
    feature_names_in_ : ndarray of str
        Feature columns (the offset column excluded).
    n_features_in_ : int
    categories_ : dict
        Column name -> list of categories seen in fit (for categorical columns).
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        reg_lambda: float = 5.0,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        class_weight: str | None = "balanced",
        init_score_col: str | None = None,
        guard_labels: bool = True,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.class_weight = class_weight
        self.init_score_col = init_score_col
        self.guard_labels = guard_labels
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- input handling ---------------------------------------------------------------------
    def _lgb_params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "min_sum_hessian_in_leaf": 1e-3,
            "lambda_l2": self.reg_lambda,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample_bytree,
            "cat_smooth": 10.0,
            "min_data_per_group": 50,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.n_jobs,
            "verbosity": -1,
        }

    def _split_offset(self, X: Any) -> tuple[Any, np.ndarray | None]:
        if self.init_score_col is None:
            return X, None
        if not isinstance(X, pd.DataFrame) or self.init_score_col not in X.columns:
            raise ModelError(
                f"init_score_col={self.init_score_col!r}: X must be a DataFrame with that column"
            )
        offset = pd.to_numeric(X[self.init_score_col], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(offset).all():
            bad = np.flatnonzero(~np.isfinite(offset))[:5]
            raise ModelError(
                f"column {self.init_score_col!r} (the offset logit) must be finite; "
                f"not at rows {list(bad)}"
            )
        return X.drop(columns=[self.init_score_col]), offset

    def _frame(self, X: Any, *, fit: bool) -> pd.DataFrame:
        """X as a DataFrame of numeric and pandas-categorical columns in fit order."""
        if isinstance(X, pd.DataFrame):
            refuse_duplicate_columns(X, "MetadataGBM")
            if fit:
                cols = list(X.columns)
                if len({str(c) for c in cols}) != len(cols):
                    raise ModelError(f"X has duplicate column names: {cols}")
                self._columns = cols
                if all(isinstance(c, str) for c in cols):
                    self.feature_names_in_ = np.asarray(cols, dtype=object)
                elif hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
                self.n_features_in_ = len(cols)
                self._array_input = False
                self.categories_ = {}
                for c in X.columns:
                    if not pd.api.types.is_numeric_dtype(X[c]) or isinstance(
                        X[c].dtype, pd.CategoricalDtype
                    ):
                        if pd.api.types.is_bool_dtype(X[c]):
                            continue
                        vals = X[c].astype(object).where(X[c].notna(), None).dropna()
                        self.categories_[str(c)] = sorted({str(v) for v in vals})
            else:
                missing = [c for c in self._columns if c not in X.columns]
                if missing:
                    raise ModelError(
                        f"X lacks feature column(s) {missing} that the model was fitted on"
                    )
            frame = X[list(self._columns)].copy()
            frame.columns = [str(c) for c in self._columns]
        else:
            arr = validate_data(self, X, reset=fit, dtype=np.float64, ensure_all_finite="allow-nan")
            if fit:
                self._array_input = True
                self.categories_ = {}
                self._names = [f"x{i}" for i in range(arr.shape[1])]
            return pd.DataFrame(arr, columns=self._names)
        plain = [c for c in frame.columns if c not in self.categories_
                 and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
        if plain:  # numeric columns in one block: a wide frame converts column by column slowly
            frame[plain] = frame[plain].astype(float)
        for c in frame.columns:
            if c in plain:
                continue
            if c in self.categories_:
                vals = frame[c].astype(object).where(frame[c].notna(), None)
                known = set(self.categories_[c])
                vals = vals.map(lambda v, known=known: str(v) if v is not None and str(v) in known else None)
                frame[c] = pd.Categorical(vals, categories=self.categories_[c])
            else:
                try:
                    frame[c] = pd.to_numeric(frame[c], errors="raise").astype(float)
                except (ValueError, TypeError) as exc:
                    raise ModelError(f"feature column {c!r} must be numeric ({exc})") from exc
        return frame

    # -- estimator API -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MetadataGBM:
        """Fit on ``X`` (DataFrame or array, (n, p)) and binary labels ``y`` (n,). Returns self."""
        frame, y_enc, base, offset = self._prepare(X, y, sample_weight)
        w = self._class_weights(y_enc, base)
        self.booster_ = lgb.train(self._lgb_params(), self._dataset(frame, y_enc, w, offset),
                                  num_boost_round=self.n_estimators)
        self.n_rounds_ = int(self.n_estimators)
        return self

    def fit_out_of_fold(self, X: Any, y: Any, folds: Any, sample_weight: Any = None, *,
                        choose_rounds: bool = False) -> np.ndarray:
        """Fit on all rows and return each row's :meth:`decision_function` from the fold model
        that did not see it.

        The same as fitting a clone per fold and predicting its held-out rows, except that
        LightGBM's feature bins are computed once, on all rows' features (never their labels),
        as ``lightgbm.cv`` does: on a wide table this saves most of the time of building the
        per-fold datasets.

        Parameters
        ----------
        X, y, sample_weight
            As :meth:`fit`.
        folds : iterable of (train_positions, test_positions)
            Row positions, e.g. ``PatientKFold.split``; every row must be held out at most once.
        choose_rounds : bool
            False: ``n_estimators`` rounds. True: ``n_estimators`` is the most; the fold models
            grow together and every :data:`ROUND_STEP` rounds the pooled out-of-fold log loss
            (all held-out rows at once, with the training weights) is measured; growth stops
            after :data:`ROUND_PATIENCE` checks without a better loss, and the final model gets
            the best count (``n_rounds_``). Pooling the folds' rows is steadier than stopping
            each fold on its own few positives.

        Returns
        -------
        ndarray, shape (n,)
            Out-of-fold logits (at the chosen round count); NaN for a row no fold held out.
        """
        frame, y_enc, base, offset = self._prepare(X, y, sample_weight)
        weight = self._class_weights(y_enc, base)
        full = self._dataset(frame, y_enc, weight, offset).construct()
        pairs = [(np.sort(np.asarray(tr, dtype=int)), np.asarray(te, dtype=int)) for tr, te in folds]
        held = np.concatenate([te for _, te in pairs]) if pairs else np.empty(0, dtype=int)
        if len(np.unique(held)) != len(held):
            raise ModelError("fit_out_of_fold: a row is held out by two folds")
        parts = []
        for train, _ in pairs:
            part = full.subset(train.tolist())
            part.construct()
            part.set_weight(self._class_weights(y_enc[train], base[train]))
            parts.append(part)
        oof = np.full(len(frame), np.nan)
        if choose_rounds and pairs:
            self.n_rounds_, oof = self._grow_together(frame, y_enc, weight, offset, parts, pairs)
        else:
            self.n_rounds_ = int(self.n_estimators)
            for part, (_, test) in zip(parts, pairs, strict=True):
                booster = lgb.train(self._lgb_params(), part, num_boost_round=self.n_estimators)
                raw = np.asarray(booster.predict(frame.iloc[test], raw_score=True, num_threads=self.n_jobs))
                oof[test] = raw + (offset[test] if offset is not None else 0.0)
        self.booster_ = lgb.train(self._lgb_params(), full, num_boost_round=self.n_rounds_)
        return oof

    def _grow_together(self, frame: pd.DataFrame, y_enc: np.ndarray, weight: np.ndarray,
                       offset: np.ndarray | None, parts: list[lgb.Dataset],
                       pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray]:
        """(best round count, out-of-fold logits at it): fold models grown in step (``choose_rounds``)."""
        boosters = [lgb.Booster(self._lgb_params(), part) for part in parts]
        tests = [frame.iloc[test] for _, test in pairs]
        held = np.concatenate([test for _, test in pairs])
        z = np.zeros(len(frame)) if offset is None else offset.astype(float).copy()
        grown = [0] * len(boosters)
        best_loss, best_rounds, best_z, since = np.inf, 0, z.copy(), 0
        done = 0
        while done < self.n_estimators and since < ROUND_PATIENCE:
            step = min(ROUND_STEP, int(self.n_estimators) - done)
            for i, booster in enumerate(boosters):
                for _ in range(step):
                    if booster.update():  # nothing left to split: the model stays as it is
                        break
                now = booster.current_iteration()
                if now > grown[i]:
                    z[pairs[i][1]] += booster.predict(tests[i], raw_score=True, start_iteration=grown[i],
                                                      num_iteration=now - grown[i], num_threads=self.n_jobs)
                    grown[i] = now
            done += step
            zh, yh, wh = z[held], y_enc[held], weight[held]
            loss = float(np.sum(wh * (np.logaddexp(0.0, zh) - yh * zh)) / np.sum(wh))
            if loss < best_loss - 1e-9:
                best_loss, best_rounds, best_z, since = loss, done, z.copy(), 0
            else:
                since += 1
        oof = np.full(len(frame), np.nan)
        oof[held] = best_z[held]
        return max(best_rounds, 1), oof

    def _prepare(self, X: Any, y: Any, sample_weight: Any
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray | None]:
        """Checked training inputs: feature frame, encoded labels, sample weights (default 1), offset."""
        if isinstance(X, pd.DataFrame):
            X, offset = self._split_offset(X)
            frame = self._frame(X, fit=True)
            y_arr = np.asarray(y)
            if y_arr.ndim != 1 or len(y_arr) != len(frame):
                raise ModelError(f"y must be 1-d with {len(frame)} labels, got shape {y_arr.shape}")
            if self.guard_labels:
                check_feature_columns(X, y_arr, list(X.columns), who="MetadataGBM")
        else:
            if self.init_score_col is not None:
                self._split_offset(X)  # raises: an offset needs a DataFrame
            arr, y_arr = validate_data(
                self, X, y, dtype=np.float64, ensure_all_finite="allow-nan", y_numeric=False
            )
            self._array_input = True
            self.categories_ = {}
            self._names = [f"x{i}" for i in range(arr.shape[1])]
            frame = pd.DataFrame(arr, columns=self._names)
            offset = None
        check_classification_targets(y_arr)
        self.classes_, y_enc = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) != 2:
            raise ModelError(
                f"y has {len(self.classes_)} class(es) {list(self.classes_)[:5]}; "
                "Only binary classification is supported (melanoma vs other), one class is not enough"
            )
        w = np.ones(len(y_enc)) if sample_weight is None else np.asarray(sample_weight, float)
        if w.shape != (len(y_enc),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ModelError(
                f"sample_weight must be {len(y_enc)} finite non-negative numbers, not all weights zero"
            )
        return frame, y_enc, w, offset

    def _class_weights(self, y_enc: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Row weights: the sample weights ``w`` times ``class_weight`` of the row's class."""
        if self.class_weight == "balanced":
            counts = np.bincount(y_enc, minlength=2).astype(float)
            w = w * (len(y_enc) / (2.0 * np.maximum(counts, 1.0)))[y_enc]
        elif isinstance(self.class_weight, dict):
            w = w * np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])[y_enc]
        elif self.class_weight is not None:
            raise ModelError(
                f"class_weight must be 'balanced', a dict class -> weight, or None; got {self.class_weight!r}"
            )
        return w

    def _dataset(self, frame: pd.DataFrame, y_enc: np.ndarray, w: np.ndarray, offset: np.ndarray | None
                 ) -> lgb.Dataset:
        names = dict(zip(frame.columns, _lgb_names(frame.columns), strict=True))
        frame = frame.rename(columns=names)  # the user's names stay in _columns
        return lgb.Dataset(frame, label=y_enc, weight=w, init_score=offset,
                           categorical_feature=[names[c] for c in self.categories_] or "auto",
                           free_raw_data=True,
                           params=self._lgb_params())

    def decision_function(self, X: Any) -> np.ndarray:
        """The logit of melanoma, shape (n,): offset (if any) plus the trees' raw score."""
        check_is_fitted(self, "booster_")
        offset = None
        if isinstance(X, pd.DataFrame) and not getattr(self, "_array_input", False):
            X, offset = self._split_offset(X)
        elif self.init_score_col is not None:
            self._split_offset(X)
        frame = self._frame(X, fit=False)
        raw = np.asarray(self.booster_.predict(frame, raw_score=True, num_threads=self.n_jobs), dtype=float)
        return raw + offset if offset is not None else raw

    def contributions(self, X: Any) -> pd.DataFrame:
        """Each feature's contribution to each row's logit (LightGBM ``pred_contrib``, the exact
        SHAP values of the trees), shape (n, p + 1): the feature columns then ``bias`` (the trees'
        expected value). A row sums to :meth:`decision_function` minus the offset (if any)."""
        check_is_fitted(self, "booster_")
        if isinstance(X, pd.DataFrame) and not getattr(self, "_array_input", False):
            X, _ = self._split_offset(X)
        frame = self._frame(X, fit=False)
        names = [str(c) for c in frame.columns]
        if not len(frame):
            return pd.DataFrame(np.zeros((0, len(names) + 1)), columns=[*names, "bias"])
        phi = np.asarray(self.booster_.predict(frame, pred_contrib=True, num_threads=self.n_jobs), dtype=float)
        return pd.DataFrame(phi, columns=[*names, "bias"], index=frame.index)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, 2), columns in ``classes_`` order."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels, shape (n,)."""
        logit = self.decision_function(X)
        return self.classes_[(logit > 0).astype(int)]

    def to_state(self) -> tuple[str, dict[str, Any]]:
        """The fitted model as ``(model_text, meta)``: LightGBM's text model and a JSON-able dict.

        ``MetadataGBM.from_state(*to_state())`` predicts exactly as this model does.
        """
        check_is_fitted(self, "booster_")
        meta = {
            "format": _STATE_FORMAT,
            "params": self.get_params(),
            "columns": [str(c) for c in self._columns] if not self._array_input else None,
            "n_features_in": int(self.n_features_in_),
            "categories": self.categories_,
            "classes": [c.item() if hasattr(c, "item") else c for c in self.classes_],
        }
        return self.booster_.model_to_string(), json.loads(json.dumps(meta))

    @classmethod
    def from_state(cls, model_text: str, meta: dict[str, Any]) -> MetadataGBM:
        """Rebuild a fitted model from :meth:`to_state` output. Parses text; executes no code."""
        if not isinstance(meta, dict) or meta.get("format") != _STATE_FORMAT:
            raise ModelError(f"MetadataGBM.from_state: expected meta with format {_STATE_FORMAT!r}")
        columns, categories = meta.get("columns"), meta.get("categories")
        if not (columns is None or (isinstance(columns, list) and all(isinstance(c, str) for c in columns))):
            raise ModelError(f"MetadataGBM.from_state: columns is {str(columns)[:60]!r}; expected a list of names")
        if not (isinstance(categories, dict) and all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in categories.values())):
            raise ModelError("MetadataGBM.from_state: categories must map column names to lists of text")
        if not isinstance(meta.get("params"), dict):
            raise ModelError("MetadataGBM.from_state: params must be a JSON object")
        try:
            est = cls(**meta["params"])
            est.booster_ = lgb.Booster(model_str=model_text)
            if columns is not None and (len(columns) != int(meta["n_features_in"])
                                        or [_lgb_name(c) for c in est.booster_.feature_name()]
                                        not in ([_lgb_name(c) for c in columns], _lgb_names(columns))):
                raise ValueError(f"columns {columns[:3]}... do not match the {est.booster_.num_feature()} "
                                 f"features named in the LightGBM model {est.booster_.feature_name()[:3]}...")
            est.n_features_in_ = int(meta["n_features_in"])
            est.n_rounds_ = int(est.booster_.current_iteration())
            est.categories_ = {str(k): list(v) for k, v in meta["categories"].items()}
            est.classes_ = np.asarray(meta["classes"])
            if meta["columns"] is None:
                est._array_input = True
                est._names = [f"x{i}" for i in range(est.n_features_in_)]
            else:
                est._array_input = False
                est._columns = list(meta["columns"])
                est.feature_names_in_ = np.asarray(est._columns, dtype=object)
        except (KeyError, TypeError, ValueError, lgb.basic.LightGBMError) as exc:
            raise ModelError(f"MetadataGBM.from_state: not a MetadataGBM state ({exc})") from exc
        return est

    @property
    def feature_importances_(self) -> np.ndarray:
        """Total gain of each feature, shape (n_features_in_,)."""
        check_is_fitted(self, "booster_")
        return self.booster_.feature_importance(importance_type="gain")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        return tags
