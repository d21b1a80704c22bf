"""The ``SetRanker`` estimator: melanoma probability of each lesion against the patient's others.

:class:`SetRanker` is the scikit-learn estimator around the torch module
:class:`dermctx.models.set_modules.SetTransformer`: it reads a lesion table, groups rows by
``patient_id`` into sets, standardises features, trains with an imbalance-weighted loss and early
stopping on held-out patients, and returns per-lesion probabilities in input order. It saves to a
folder of safetensors + JSON (never pickle). See ``docs/set_transformer.md``.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from dermctx._deprecation import renamed_kwargs, warn_renamed
from dermctx.errors import ModelError, TableError
from dermctx.label_guard import LABEL_COLUMNS, check_feature_columns, refuse_label_columns
from dermctx.models.folder import (
    SET_RANKER_FILES,
    load_tensors,
    read_json,
    verify_folder,
    write_manifest,
)
from dermctx.models.set_modules import SetTransformer, SetTransformerConfig
from dermctx.table import describe_rows, embedding_columns, refuse_duplicate_columns

__all__ = ["SetRanker"]

_STATE_FORMAT = "dermctx.SetRanker/1"
_MIN_STEPS = 20  # optimisation steps per epoch, at least: early stopping needs epochs that learn
_FILES = SET_RANKER_FILES  # what save writes and load reads
_RENAMED = {"n_threads": "n_jobs"}  # deprecated parameter names -> their new names


# --- sets of rows: splitting, batching, padding -----------------------------------------------


def _pad_index(sets: list[np.ndarray], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of ``sets`` padded with ``fill``: ``(B, N_max)`` long and its mask (True = real)."""
    width = max(len(s) for s in sets)
    idx = np.full((len(sets), width), fill, dtype=np.int64)
    for i, s in enumerate(sets):
        idx[i, : len(s)] = s
    idx_t = torch.from_numpy(idx)
    return idx_t, idx_t != fill


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _split_large(sets: list[np.ndarray], max_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split every set larger than ``max_size`` at random into ceil(n / max_size) near-equal parts."""
    out: list[np.ndarray] = []
    for s in sets:
        if len(s) <= max_size:
            out.append(s)
        else:
            parts = math.ceil(len(s) / max_size)
            out.extend(np.array_split(rng.permutation(s), parts))
    return out


def _size_batches(sets: list[np.ndarray], batch_size: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Shuffled batches of sets of similar size (less padding): sets are shuffled, sorted by size
    within pools of 16 batches, cut into batches, and the batches shuffled."""
    order = rng.permutation(len(sets))
    pool = 16 * batch_size
    batches = []
    for start in range(0, len(order), pool):
        members = sorted(order[start : start + pool], key=lambda i: len(sets[i]))
        batches += [[sets[i] for i in members[b : b + batch_size]] for b in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _with_pad_row(z: np.ndarray) -> torch.Tensor:
    """``z`` ``(n, F)`` float32 with one zero row appended: ``(n+1, F)``; row ``n`` is what the
    padded slots of :func:`_pad_index` (``fill=n``) read."""
    return torch.from_numpy(np.concatenate([z, np.zeros((1, z.shape[1]), np.float32)]))


def _inference_batches(sets: list[np.ndarray], batch_lesions: int) -> list[list[np.ndarray]]:
    """``sets`` grouped for scoring: ascending size, each batch at most ``batch_lesions`` padded
    slots (a single set larger than that is a batch of its own)."""
    order = np.argsort([len(s) for s in sets], kind="stable")  # similar sizes share a batch
    batches: list[list[np.ndarray]] = []
    batch: list[np.ndarray] = []
    for i in order:  # ascending size: a batch's padded size is (len(batch) + 1) * len(sets[i])
        if batch and (len(batch) + 1) * len(sets[i]) > batch_lesions:
            batches.append(batch)
            batch = []
        batch.append(sets[i])
    batches.append(batch)
    return batches


def _train_epoch(model: SetTransformer, opt: torch.optim.Optimizer, batches: list[list[np.ndarray]],
                 z_t: torch.Tensor, y_t: torch.Tensor, pos_weight: torch.Tensor, n: int) -> float:
    """One optimisation step per batch of sets; returns the mean training loss per lesion."""
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        idx, mask = _pad_index(batch, n)  # (B, N) each
        logits = model(z_t[idx], mask)  # (B, N)
        loss = F.binary_cross_entropy_with_logits(logits[mask], y_t[idx][mask], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * int(mask.sum())
        count += int(mask.sum())
    return total / max(count, 1)


# --- the estimator ----------------------------------------------------------------------------


class SetRanker(ClassifierMixin, BaseEstimator):
    """Melanoma probability of each lesion, judged against the patient's other lesions.

    A :class:`SetTransformer` over each patient's lesion set, behind the scikit-learn estimator
    contract. ``X`` is a lesion table: a DataFrame with ``patient_id`` and numeric feature
    columns; a lesion's context is the other rows of ``X`` with the same ``patient_id``.

    Parameters
    ----------
    embedding_prefix : str or None
        Columns starting with this prefix are features (default the ``emb_*`` columns); None for
        none.
    features : list of str, optional
        Extra numeric columns used as features (for example ``["age", "cnn_logit"]``).
    context : bool
        False gives the per-lesion baseline of the same size (no attention, no patient mean).
    d_model, n_heads, n_inducing, n_blocks, dropout, linear_skip
        Sizes and options of the :class:`SetTransformerConfig`.
    max_set_size : int
        Sets with more lesions are split at random into ``ceil(n / max_set_size)`` near-equal parts,
        each scored as its own set (redrawn each epoch in fit; drawn once from ``random_state`` when
        predicting). The largest SIIM-ISIC 2020 patient has 115 images, so the default of 256
        never splits there.
    batch_size : int
        Sets (patients) per optimisation step.
    max_epochs : int
        Upper bound on epochs. An epoch is one pass over the training patients, or as many
        passes as make at least 20 optimisation steps (small tables).
    learning_rate, weight_decay : float
        AdamW settings.
    pos_weight : None, float or "balanced"
        Weight of melanomas in the binary cross-entropy: None = 1 (the default), "balanced" =
        n_negative / n_positive. Class imbalance is otherwise handled by starting the output
        bias at the base-rate logit. Weighting did not help ranking on ISIC 2020 (see
        ``docs/set_transformer.md``). With a weight, the logit is shifted back by
        log(pos_weight) in :meth:`decision_function`, so probabilities stay on the scale of the
        data's base rate (ranking is unchanged).
    early_stopping : bool
        Hold out ``validation_fraction`` of the patients (stratified by whether the patient has a
        melanoma), keep the epoch with the best AUC on them, stop after ``n_iter_no_change``
        epochs without improvement. The model is not refitted on the held-out patients.
    validation_fraction : float
        Fraction of patients held out for early stopping.
    n_iter_no_change : int
        Patience of early stopping, in epochs.
    random_state : int
        Seed of weights, batches, dropout and the inner split: the same seed and data give the
        same model (on the same torch build and thread count). The global torch RNG is left as
        it was.
    n_jobs : int or None
        Torch intra-op threads while fitting and predicting (the previous setting is restored
        afterwards). The default 1 is as fast as more threads for these small models, does not
        fight other processes for cores, and makes results independent of the core count.
        None leaves torch's setting alone. (``n_threads=`` is a deprecated alias.)
    verbose : bool
        Print one line per epoch.

    Attributes
    ----------
    feature_names_in_ : ndarray of str
        The input columns used, in order (embedding columns, then ``features``).
    n_features_in_ : int
    classes_ : ndarray, [0, 1]
    model_ : SetTransformer
        The trained module (in eval mode).
    config_ : SetTransformerConfig
    median_, mean_, scale_ : ndarray
        Imputation medians (per input column) and standardisation (per model input column).
    missing_indicator_ : ndarray of int
        Input columns that had missing values in fit; each gets a 0/1 indicator column.
    pos_weight_ : float
    best_epoch_, n_epochs_ : int
        The epoch kept (1-based) and the number of epochs run.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss`` and ``val_auc`` (NaN without early stopping).
    """

    def __init__(
        self,
        *,
        embedding_prefix: str | None = "emb_",
        features: list[str] | None = None,
        context: bool = True,
        d_model: int = 32,
        n_heads: int = 4,
        n_inducing: int = 8,
        n_blocks: int = 1,
        dropout: float = 0.1,
        linear_skip: bool = True,
        max_set_size: int = 256,
        batch_size: int = 64,
        max_epochs: int = 40,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        pos_weight: str | float | None = None,
        early_stopping: bool = True,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 6,
        random_state: int = 0,
        n_jobs: int | None = 1,
        verbose: bool = False,
        **deprecated: Any,
    ) -> None:
        self.embedding_prefix = embedding_prefix
        self.features = features
        self.context = context
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_inducing = n_inducing
        self.n_blocks = n_blocks
        self.dropout = dropout
        self.linear_skip = linear_skip
        self.max_set_size = max_set_size
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.pos_weight = pos_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        if deprecated:  # n_threads= (deprecated): not a parameter, so get_params has n_jobs only
            if n_jobs != 1 and deprecated.get("n_threads", n_jobs) != n_jobs:
                raise TypeError("SetRanker: got both n_threads= and n_jobs=; n_threads= is "
                                "deprecated, pass n_jobs= only")
            self.n_jobs = renamed_kwargs("SetRanker", deprecated, _RENAMED, strict=True)["n_jobs"]

    def set_params(self, **params: Any) -> SetRanker:
        """Set parameters, as scikit-learn's ``set_params`` (``n_threads=`` is a deprecated alias
        of ``n_jobs=``)."""
        params.update(renamed_kwargs("SetRanker.set_params", params, _RENAMED))
        return super().set_params(**params)

    @property
    def n_threads(self) -> int | None:
        """Deprecated alias of :attr:`n_jobs`."""
        warn_renamed("SetRanker", "n_threads", "n_jobs", kind="", stacklevel=3)
        return self.n_jobs

    @n_threads.setter
    def n_threads(self, value: int | None) -> None:
        warn_renamed("SetRanker", "n_threads", "n_jobs", kind="", stacklevel=3)
        self.n_jobs = value

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "n_threads" in state:  # pickled before the rename
            state = {**state}
            state.setdefault("n_jobs", state.pop("n_threads"))
        super().__setstate__(state)

    # -- input handling ------------------------------------------------------------------------

    def _feature_columns(self, X: pd.DataFrame) -> list[str]:
        cols = embedding_columns(X, self.embedding_prefix) if self.embedding_prefix else []
        refuse_label_columns(list(self.features or []), who="SetRanker")
        for col in self.features or []:
            if col not in X.columns:
                raise TableError(f"SetRanker: feature column {col!r} is not in the table "
                                 f"(columns {list(X.columns)[:20]})")
            if col not in cols:
                cols.append(col)
        if not cols:
            raise TableError(
                f"SetRanker: no feature columns: none start with {self.embedding_prefix!r} and "
                f"features={self.features!r} (columns {list(X.columns)[:20]})"
            )
        return cols

    @staticmethod
    def _patient_codes(X: pd.DataFrame) -> np.ndarray:
        if not isinstance(X, pd.DataFrame):
            raise TableError(
                f"SetRanker: X must be a lesion table (pandas DataFrame with 'patient_id'), "
                f"got {type(X).__name__}"
            )
        refuse_duplicate_columns(X, "SetRanker")
        if "patient_id" not in X.columns:
            raise TableError(
                f"SetRanker: X has no 'patient_id' column (columns {list(X.columns)[:20]}); "
                "lesions are grouped into sets by patient"
            )
        pid = X["patient_id"]
        blank = (pid.isna() | (pid.astype(str).str.strip() == "")).to_numpy()
        if blank.any():
            raise TableError(
                f"SetRanker: column 'patient_id' is missing or blank at {describe_rows(X, blank)}; "
                "every lesion needs a patient"
            )
        codes, _ = pd.factorize(pid.astype(str).str.strip())
        return codes

    def _matrix(self, X: pd.DataFrame, cols: list[str]) -> np.ndarray:
        """The raw feature matrix ``(n, len(cols))`` float64 (NaN = missing)."""
        missing = [c for c in cols if c not in X.columns]
        if missing:
            raise TableError(f"SetRanker: X lacks the feature column(s) {missing[:10]} it was fitted on")
        out = np.empty((len(X), len(cols)), dtype=np.float64)
        for j, col in enumerate(cols):
            values = X[col]
            if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
                raise TableError(
                    f"SetRanker: feature column {col!r} is not numeric (dtype {values.dtype}); "
                    "encode it as numbers first"
                )
            out[:, j] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
        inf = np.isinf(out)
        if inf.any():
            rows, js = np.nonzero(inf)
            raise TableError(
                f"SetRanker: feature column {cols[js[0]]!r} is infinite at "
                f"{describe_rows(X, np.isin(np.arange(len(X)), rows))}; expected finite numbers or missing"
            )
        return out

    def _impute(self, raw: np.ndarray) -> np.ndarray:
        """Medians for missing values, then the 0/1 missing indicators: ``(n, n_model_inputs)``."""
        nan = np.isnan(raw)
        filled = np.where(nan, self.median_[None, :], raw)
        return np.concatenate([filled, nan[:, self.missing_indicator_].astype(np.float64)], axis=1)

    def _transform(self, raw: np.ndarray) -> np.ndarray:
        """Impute, add missing indicators, standardise: ``(n, n_model_inputs)`` float32."""
        return ((self._impute(raw) - self.mean_) / self.scale_).astype(np.float32)

    @staticmethod
    def _sets(codes: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        return np.split(order, bounds)

    @staticmethod
    def _labels(X: pd.DataFrame, y: Any) -> np.ndarray:
        if y is None:
            if "target" not in X.columns:
                raise TableError("SetRanker.fit: y is None and X has no 'target' column")
            y = X["target"]
        values = pd.to_numeric(pd.Series(np.asarray(y, dtype=object)), errors="coerce").to_numpy(dtype=float)
        if len(values) != len(X):
            raise ModelError(f"SetRanker.fit: y has {len(values)} values for {len(X)} rows of X")
        bad = np.isnan(values) | ~np.isin(values, (0.0, 1.0))
        if bad.any():
            raise ModelError(
                f"SetRanker.fit: y must be 0/1 on every row; bad at {describe_rows(X, bad)}"
            )
        if values.min() == values.max():
            raise ModelError(f"SetRanker.fit: y has one class only ({int(values[0])}); need 0 and 1")
        return values.astype(np.float32)

    # -- fitting -------------------------------------------------------------------------------

    def _config(self, d_in: int) -> SetTransformerConfig:
        return SetTransformerConfig(
            d_in=d_in, d_model=self.d_model, n_heads=self.n_heads, n_inducing=self.n_inducing,
            n_blocks=self.n_blocks, dropout=self.dropout, context=self.context,
            linear_skip=self.linear_skip,
        )

    def _inner_split(self, sets: list[np.ndarray], y: np.ndarray, rng: np.random.Generator
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Patients split into (train, validation), stratified by "has a melanoma"."""
        if not self.early_stopping:
            return sets, []
        has_pos = np.array([y[s].max() > 0 for s in sets])
        val = np.zeros(len(sets), dtype=bool)
        for stratum in (has_pos, ~has_pos):
            members = rng.permutation(np.flatnonzero(stratum))
            val[members[: round(self.validation_fraction * len(members))]] = True
        train = [s for s, v in zip(sets, val, strict=True) if not v]
        held = [s for s, v in zip(sets, val, strict=True) if v]
        y_val = np.concatenate([y[s] for s in held]) if held else y[:0]
        if not train or y_val.size == 0 or y_val.min() == y_val.max():
            return sets, []  # too few patients to hold out both classes: no early stopping
        return train, held

    def fit(self, X: pd.DataFrame, y: Any = None) -> SetRanker:
        """Fit on a lesion table.

        Parameters
        ----------
        X : DataFrame, n rows
            ``patient_id`` and the feature columns (``emb_*`` and/or ``features``).
        y : array-like of 0/1, length n, optional
            Melanoma labels; default ``X["target"]``.

        Returns
        -------
        self
        """
        codes = self._patient_codes(X)
        cols = self._feature_columns(X)
        y_arr = self._labels(X, y)
        check_feature_columns(X, y_arr, cols, who="SetRanker")
        raw = self._matrix(X, cols)
        self._check_training_params()
        z = self._fit_standardisation(raw)  # (n, F) float32, standardised
        self.pos_weight_ = self._resolve_pos_weight(y_arr)

        self.feature_names_in_ = np.asarray(cols, dtype=object)
        self.n_features_in_ = len(cols)
        self.classes_ = np.array([0, 1])
        self.config_ = self._config(z.shape[1])

        rng = np.random.default_rng(self.random_state)
        train_sets, val_sets = self._inner_split(self._sets(codes), y_arr, rng)
        with torch.random.fork_rng(devices=[]), _torch_threads(self.n_jobs):
            torch.manual_seed(int(self.random_state))
            self._train(z, y_arr, train_sets, val_sets, rng)
        return self

    def _check_training_params(self) -> None:
        """Refuse sizes, seed or validation fraction out of range (ModelError naming them)."""
        if self.max_set_size < 1 or self.batch_size < 1 or self.max_epochs < 1:
            raise ModelError("SetRanker: max_set_size, batch_size and max_epochs must be >= 1")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise ModelError(f"SetRanker: random_state must be an int, got {self.random_state!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ModelError(f"SetRanker: validation_fraction must be in (0, 1), got {self.validation_fraction}")

    def _fit_standardisation(self, raw: np.ndarray) -> np.ndarray:
        """Learn ``median_``, ``missing_indicator_``, ``mean_`` and ``scale_`` from the raw matrix
        ``(n, F)``; returns it transformed: ``(n, n_model_inputs)`` float32."""
        nan = np.isnan(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: median 0
            self.median_ = np.nan_to_num(np.nanmedian(raw, axis=0), nan=0.0)
        self.missing_indicator_ = np.flatnonzero(nan.any(0))
        filled = self._impute(raw)  # (n, F)
        self.mean_ = filled.mean(0)
        scale = filled.std(0)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)  # a constant column stays 0
        return self._transform(raw)

    def _resolve_pos_weight(self, y: np.ndarray) -> float:
        """The melanoma weight of the loss from ``pos_weight`` (None, a number or "balanced")."""
        if self.pos_weight == "balanced":
            n_pos = float(y.sum())
            return (len(y) - n_pos) / n_pos
        if self.pos_weight is None:
            return 1.0
        if isinstance(self.pos_weight, (int, float)) and self.pos_weight > 0:
            return float(self.pos_weight)
        raise ModelError(f"SetRanker: pos_weight must be 'balanced', a positive number or None, "
                         f"got {self.pos_weight!r}")

    def _new_model(self, rate: float) -> SetTransformer:
        """A fresh :class:`SetTransformer` whose output starts at the weighted base rate ``rate``."""
        model = SetTransformer(self.config_)
        with torch.no_grad():  # start at the weighted base rate, not at p = 0.5
            model.head.bias.fill_(math.log(self.pos_weight_ * rate / (1.0 - rate)))
        return model

    def _epoch_batches(self, train_sets: list[np.ndarray], rng: np.random.Generator) -> list[list[np.ndarray]]:
        """The batches of one epoch: large sets split anew, batches of similar-sized sets, and on
        small tables several passes so that an epoch has at least ``_MIN_STEPS`` steps."""
        batches: list[list[np.ndarray]] = []
        while len(batches) < _MIN_STEPS:  # small tables: several passes make one epoch
            sets = _split_large(train_sets, self.max_set_size, rng)
            batches += _size_batches(sets, self.batch_size, rng)
        return batches

    def _train(self, z: np.ndarray, y: np.ndarray, train_sets: list[np.ndarray],
               val_sets: list[np.ndarray], rng: np.random.Generator) -> None:
        """Train a new model on ``train_sets`` (rows of ``z`` ``(n, F)``), keeping the epoch with
        the best AUC on ``val_sets``; sets ``model_``, ``history_``, ``best_epoch_``, ``n_epochs_``."""
        n = len(z)
        z_t = _with_pad_row(z)  # (n+1, F)
        y_t = torch.from_numpy(np.concatenate([y, np.zeros(1, np.float32)]))  # (n+1,)
        model = self._new_model(float(y.mean()))
        opt = torch.optim.AdamW(model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        pos_weight = torch.tensor(self.pos_weight_)
        val_rows = np.concatenate(val_sets) if val_sets else np.zeros(0, dtype=np.int64)
        val_split = _split_large(val_sets, self.max_set_size, np.random.default_rng(self.random_state))

        best_auc, best_state, best_epoch, stale = -np.inf, None, 0, 0
        self.history_: list[dict[str, float]] = []
        for epoch in range(1, self.max_epochs + 1):
            train_loss = _train_epoch(model, opt, self._epoch_batches(train_sets, rng), z_t, y_t, pos_weight, n)
            val_auc = float("nan")
            if val_sets:
                scores = self._logits(model, z_t, val_split, n)
                val_auc = float(roc_auc_score(y[val_rows], scores[val_rows]))
                if val_auc > best_auc:
                    best_auc, best_state, best_epoch, stale = val_auc, copy.deepcopy(model.state_dict()), epoch, 0
                else:
                    stale += 1
            self.history_.append({"epoch": epoch, "train_loss": train_loss, "val_auc": val_auc})
            if self.verbose:
                print(f"SetRanker epoch {epoch}: train loss {train_loss:.4f}, val AUC {val_auc:.4f}")
            if val_sets and stale >= self.n_iter_no_change:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = len(self.history_)
        self.model_ = model.eval()
        self.best_epoch_, self.n_epochs_ = best_epoch, len(self.history_)

    def _logits(self, model: SetTransformer, z_t: torch.Tensor, sets: list[np.ndarray], n: int,
                batch_lesions: int = 4096) -> np.ndarray:
        """Raw logits ``(n,)`` of the rows covered by ``sets`` (others 0), in eval mode."""
        was_training = model.training
        model.eval()
        out = torch.zeros(n + 1)
        with torch.no_grad():
            for batch in _inference_batches(sets, batch_lesions):
                idx, mask = _pad_index(batch, n)
                out[idx[mask]] = model(z_t[idx], mask)[mask]  # (B, N) -> real rows
        model.train(was_training)
        return out[:n].numpy().astype(np.float64)

    # -- prediction ----------------------------------------------------------------------------

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Per-lesion logit ``(n,)`` in input order, shifted by ``-log(pos_weight_)`` so that its
        sigmoid is on the training base-rate scale. Each lesion is scored within the rows of ``X``
        that share its ``patient_id``."""
        check_is_fitted(self, "model_")
        codes = self._patient_codes(X)
        z = self._transform(self._matrix(X, list(self.feature_names_in_)))
        n = len(z)
        if n == 0:
            return np.zeros(0)
        sets = self._prediction_sets(X, codes)
        with _torch_threads(self.n_jobs):
            logits = self._logits(self.model_, _with_pad_row(z), sets, n)
        return logits - math.log(self.pos_weight_)

    def _prediction_sets(self, X: pd.DataFrame, codes: np.ndarray) -> list[np.ndarray]:
        """Row sets to score: one per patient, a large one split at random, seeded by the
        patient's own id (so a patient's scores do not depend on the other patients in ``X``)."""
        pid = X["patient_id"].astype(str).str.strip().to_numpy()
        sets: list[np.ndarray] = []
        for s in self._sets(codes):
            rng = np.random.default_rng([int(self.random_state), zlib.crc32(str(pid[s[0]]).encode())])
            sets += _split_large([s], self.max_set_size, rng)
        return sets

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, 2)`` probabilities of [benign, melanoma] per row of ``X``, in input order."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """``(n,)`` 0/1: melanoma where its probability exceeds 0.5."""
        return (self.decision_function(X) > 0).astype(int)

    # -- state without pickle ------------------------------------------------------------------

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The fitted model as ``(tensors, meta)``: tensors for safetensors, meta JSON-able.

        ``from_state(*to_state())`` gives an estimator with the same predictions.
        """
        check_is_fitted(self, "model_")
        tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in self.model_.state_dict().items()}
        tensors["median"] = torch.from_numpy(self.median_.astype(np.float64))
        tensors["mean"] = torch.from_numpy(np.asarray(self.mean_, dtype=np.float64))
        tensors["scale"] = torch.from_numpy(np.asarray(self.scale_, dtype=np.float64))
        meta = {
            "format": _STATE_FORMAT,
            "params": self.get_params(),
            "config": asdict(self.config_),
            "feature_names_in": [str(c) for c in self.feature_names_in_],
            "missing_indicator": [int(i) for i in self.missing_indicator_],
            "pos_weight": float(self.pos_weight_),
            "best_epoch": int(self.best_epoch_),
            "n_epochs": int(self.n_epochs_),
            "history": self.history_,
        }
        return tensors, json.loads(json.dumps(meta))  # a plain JSON tree, checked serialisable

    @staticmethod
    def _state_feature_names(meta: Any) -> list[str]:
        """The input columns named by a state's ``meta``, after checking its format and that no
        column holds or derives from the label (ModelError otherwise)."""
        if not isinstance(meta, dict) or meta.get("format") != _STATE_FORMAT:
            raise ModelError(f"SetRanker.from_state: expected meta with format {_STATE_FORMAT!r}, "
                             f"got {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r}")
        names = meta.get("feature_names_in")
        if not (isinstance(names, list) and names and all(isinstance(c, str) for c in names)):
            raise ModelError(f"SetRanker.from_state: feature_names_in is {str(names)[:60]!r}; expected column names")
        refuse = [c for c in names if c.lower() in LABEL_COLUMNS]
        if refuse:
            raise ModelError(f"SetRanker.from_state: input column(s) {refuse} hold or derive from the label")
        return names

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> SetRanker:
        """Rebuild a fitted SetRanker from :meth:`to_state` output. Executes no stored code."""
        names = cls._state_feature_names(meta)
        try:
            if not isinstance(meta["params"], dict) or not isinstance(meta["config"], dict):
                raise TypeError("params and config must be JSON objects")
            params = dict(meta["params"])
            if "n_threads" in params:  # saved before the rename to n_jobs
                params.setdefault("n_jobs", params.pop("n_threads"))
            est = cls(**params)
            est.config_ = SetTransformerConfig(**meta["config"])
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
            est.n_features_in_ = len(est.feature_names_in_)
            est.missing_indicator_ = np.asarray(meta["missing_indicator"], dtype=np.int64)
            est.pos_weight_ = float(meta["pos_weight"])
            est.best_epoch_, est.n_epochs_ = int(meta["best_epoch"]), int(meta["n_epochs"])
            est.history_ = list(meta.get("history", []))
            est.median_ = tensors["median"].numpy().astype(np.float64)
            est.mean_ = tensors["mean"].numpy().astype(np.float64)
            est.scale_ = tensors["scale"].numpy().astype(np.float64)
            n_inputs = len(names) + len(est.missing_indicator_)
            if (est.median_.shape != (len(names),) or est.mean_.shape != (n_inputs,)
                    or est.scale_.shape != (n_inputs,) or est.config_.d_in != n_inputs
                    or not (est.scale_ > 0).all() or not np.isfinite(est.mean_).all()):
                raise ValueError(f"standardisation tensors do not fit {len(names)} input columns")
            est.classes_ = np.array([0, 1])
            model = SetTransformer(est.config_)
            model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"SetRanker.from_state: state does not match a SetRanker ({exc})") from exc
        est.model_ = model.eval()
        return est

    def save(self, path: str | PathLike[str]) -> None:
        """Write ``path`` (a folder): ``set_ranker.safetensors`` and ``set_ranker.json``."""
        from safetensors.torch import save_file

        tensors, meta = self.to_state()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        weights, description = _FILES
        save_file(tensors, str(folder / weights))
        (folder / description).write_text(json.dumps(meta, indent=1))
        write_manifest(folder, list(_FILES), "SetRanker")

    @classmethod
    def load(cls, path: str | PathLike[str]) -> SetRanker:
        """Read a folder written by :meth:`save` (safetensors + JSON; no pickle), each file checked
        against ``manifest.json`` first (:mod:`dermctx.models.folder`).

        Raises
        ------
        ModelError
            Naming the file: missing, damaged or changed, or not describing a SetRanker.
        """
        folder = Path(path)
        files = list(_FILES)
        verify_folder(folder, "SetRanker", files)  # folders saved before manifests: parsed as they are
        for name in files:
            if not (folder / name).is_file():
                raise ModelError(f"{folder}: missing {name}; expected a folder written by SetRanker.save")
        weights, description = _FILES
        meta = read_json(folder / description)
        return cls.from_state(load_tensors(folder / weights), meta)
