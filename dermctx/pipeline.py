"""LesionPipeline: from one patient's images to their lesions ranked in context, in one folder.

A :class:`LesionPipeline` holds everything needed from pixels to a ranked list:

* the **lesion CNN**: the fold models of a :func:`~dermctx.train_lesion_cnn` run (their
  probabilities averaged, as :meth:`~dermctx.TrainResult.predict` does: for a new patient every
  fold model is out of sample), or one timm model with a ``.safetensors`` checkpoint; and the
  run's final model when embeddings are used;
* its **preprocessing**: the image size and colour constancy it was trained with, and the
  test-time augmentation (TTA) setting;
* **which of its outputs feed the ranker**: ``cnn_score`` always; ``emb_*`` (the final model's
  pooled features, one embedding space for every patient) with ``use_embeddings=True``;
* the fitted :class:`~dermctx.ContextRanker`, and the provenance of it all.

``fit`` stacks the ranker on the trainer's **out-of-fold** scores (each image scored by the
fold model that never saw its patient), never in-fold ones. ``save``/``load`` use one folder of
safetensors and JSON with a manifest of SHA-256 digests (:mod:`dermctx.models.folder`); nothing
is unpickled. ``score_images`` scores a folder, a list of files or DICOM files of one patient.

The ranking is a research aid, not a diagnosis: see ``docs/pipeline.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from dermctx.errors import (
    DermctxError,
    DermctxWarning,
    ModelError,
    TableError,
    error_record,
    errors_frame,
)
from dermctx.models.folder import (
    JsonFields,
    load_tensors,
    read_json,
    sha256_file,
    verify_folder,
    write_manifest,
)
from dermctx.table import embedding_column_names, validate_table

__all__ = ["SCORE_COLUMNS", "LesionPipeline"]

_FORMAT = "dermctx.LesionPipeline/1"
_KIND = "LesionPipeline"
_SCORE = "cnn_score"
_PREFIX = "emb_"
_FOLD_FILE = re.compile(r"fold\d{1,3}\.safetensors")
_FINAL_FILE = "final.safetensors"
_RANKER_DIR = "ranker"
_META = ("image_id", "patient_id", "age", "sex", "site")

#: Columns of :meth:`LesionPipeline.score_images`' scores, in order.
SCORE_COLUMNS: tuple[str, ...] = (
    "rank", "image_id", "score", "cnn_score", "cnn_rank", "explanation",
    "raised_by", "raised_by_change", "lowered_by", "lowered_by_change",
    "most_similar", "most_similar_distance", "least_similar", "least_similar_distance",
    "patient_id", "age", "sex", "site", "path",
)


@dataclass
class _CNN:
    """The lesion CNN: its models and everything needed to feed them pixels."""

    model: str
    image_size: int
    mean: list[float]
    std: list[float]
    classes: list[str]
    melanoma_idx: list[int]
    colour_constancy: str | None
    folds: list[Any]  # torch modules whose probabilities are averaged
    final: Any  # the final model (one embedding space), or None

    def describe(self) -> str:
        n = len(self.folds)
        return (f"{self.model} at {self.image_size} px, "
                + (f"{n} fold models averaged" if n > 1 else "one model")
                + (f", colour constancy {self.colour_constancy}" if self.colour_constancy else ""))


class LesionPipeline(BaseEstimator):
    """A lesion CNN, its preprocessing and a fitted ContextRanker: pixels in, ranked lesions out.

    Parameters
    ----------
    use_embeddings : bool
        Also feed the ranker the pooled features (``emb_*``) of the CNN run's final model (one
        embedding space for every patient; needs ``train_lesion_cnn(..., final_model=True)``).
        Off by default: for the training images those embeddings are in-sample (the final model
        saw them with their labels), see ``docs/training.md``.
    tta : bool or {1, 2, 4, 8}
        Test-time augmentation: average the CNN's probabilities and features over this many
        flips and transposes (True = 8). The trainer's out-of-fold scores, on which the ranker is
        fitted, have none, so views other than 1 change the scores the ranker sees.
    ranker : ContextRanker, optional
        The (unfitted) ranker to fit; it is cloned. Default ``ContextRanker(random_state=...,
        n_jobs=...)``. It may read only what the pipeline computes from an image and the
        patient's facts: ``cnn_score``, ``emb_*``, ``age``, ``sex``, ``site``.
    n_boot : int
        Patient-bootstrap resamples of the AUCs stored in :attr:`provenance_`.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default CUDA when available. On CUDA the CNN runs under
        float16 autocast in channels_last layout (``tests/test_gpu.py`` checks the CNN scores
        against the CPU's within 2e-3).
    batch_size : int
        Images per forward pass (small batches are faster per image on a CPU).
    n_jobs : int
        Threads: the CNN's torch threads while it scores (restored after), image-decoding
        threads, and the default ranker's LightGBM threads. More than the free cores slows torch
        down several times.
    random_state : int
        Seeds the default ranker and the bootstrap.

    Attributes
    ----------
    cnn_ : object
        The CNN: ``model`` (timm name), ``image_size``, ``mean``, ``std``, ``classes``,
        ``melanoma_idx``, ``colour_constancy``, ``folds`` (modules) and ``final`` (module or None).
    ranker_ : ContextRanker
        The fitted ranker; ``ranker_.feature_names_in_`` are the inputs it reads.
    provenance_ : dict
        What the pipeline was made from: the CNN, the training table (patients, lesions,
        melanomas), the ranker's and the CNN's out-of-fold AUC with patient-bootstrap 95% CIs,
        dates, the dermctx version. Shown on the patient page.
    """

    def __init__(
        self,
        *,
        use_embeddings: bool = False,
        tta: bool | int = False,
        ranker: Any = None,
        n_boot: int = 1000,
        device: str | None = None,
        batch_size: int = 8,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.use_embeddings = use_embeddings
        self.tta = tta
        self.ranker = ranker
        self.n_boot = n_boot
        self.device = device
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- settings ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.tta not in (False, True, 1, 2, 4, 8):
            raise ModelError(f"LesionPipeline: tta={self.tta!r}; expected True/False or 1, 2, 4, 8 views")
        for name in ("batch_size", "n_jobs", "n_boot"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelError(f"LesionPipeline: {name}={v!r}; expected a whole number >= 1")
        if not isinstance(self.use_embeddings, (bool, np.bool_)):
            raise ModelError(f"LesionPipeline: use_embeddings={self.use_embeddings!r}; expected True or False")

    def _views(self) -> int:
        return 8 if self.tta is True else max(1, int(self.tta))

    def _device(self) -> Any:
        import torch

        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _check_fitted(self) -> None:
        if not hasattr(self, "ranker_"):
            raise ModelError("this LesionPipeline is not fitted: call fit(table, cnn) or LesionPipeline.load(dir)")

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame, cnn: Any, *, progress: bool = False) -> LesionPipeline:
        """Fit the ranker on a labelled table with the CNN's out-of-fold scores.

        Parameters
        ----------
        table : DataFrame, n rows
            A labelled lesion table (``image_id``, ``patient_id``, ``target``, ``age``, ``sex``,
            ``site``; ``path`` with ``use_embeddings``): the images the CNN was trained on.
        cnn : TrainResult, path
            * a :class:`~dermctx.TrainResult` or the ``out_dir`` of a :func:`train_lesion_cnn`
              run: its out-of-fold ``cnn_score`` of each row (from the fold model that never saw
              the row's patient) feeds the ranker, and its fold models score new images;
            * a ``.safetensors`` checkpoint of one timm classifier (written by
              :func:`dermctx.save_checkpoint`, naming the model and its classes; a checkpoint of
              2 outputs without class names is read as other/melanoma). The table must then hold
              ``cnn_score``: out-of-fold scores of the same network (e.g. your own
              cross-validation), which the pipeline cannot check; the checkpoint scores new
              images only.
        progress : bool
            Progress bars (embeddings only).

        Returns
        -------
        self

        Raises
        ------
        TableError
            The table is not a labelled lesion table.
        ModelError
            Naming the row or file: a row the CNN run has no out-of-fold score for (and did not
            list as an error), a row the run filed under another patient, a table without
            ``cnn_score`` for a single checkpoint, ``use_embeddings`` without a final model or
            without image paths, a ranker that reads inputs the pipeline cannot compute, bad
            settings.

        Warns
        -----
        DermctxWarning
            Rows left out because the CNN run could not read their images, or (with
            ``use_embeddings``) because they cannot be decoded now.
        """
        from dermctx.models.ranker import ContextRanker

        self._check_params()
        table = validate_table(table, labelled=True, name="LesionPipeline.fit")
        table = table.drop(columns=[c for c in table.columns if str(c).startswith(_PREFIX)])  # ours only
        cnn_, oof, failed, source, settings = _load_cnn(cnn)
        if self.use_embeddings and cnn_.final is None:
            raise ModelError(f"{source}: use_embeddings=True needs the run's final model "
                             "(train_lesion_cnn(..., final_model=True) with an out_dir)")
        lesions = _with_oof_scores(table, oof, failed, source)
        if self.use_embeddings:
            lesions = self._with_embeddings(lesions, cnn_, progress)
        ranker = clone(self.ranker) if self.ranker is not None else ContextRanker(
            random_state=self.random_state, n_jobs=self.n_jobs)
        _check_ranker(ranker)
        ranker.set_params(embedding_prefix=_PREFIX if self.use_embeddings else None)
        emb = [c for c in lesions.columns if str(c).startswith(_PREFIX)] if self.use_embeddings else []
        X = lesions[["image_id", "patient_id", "lesion_id", "age", "sex", "site", _SCORE, *emb]]
        y = lesions["target"].to_numpy(dtype=int)
        ranker.fit(X, y)
        self.cnn_, self.ranker_ = cnn_, ranker
        self._check_inputs(str(source))
        self.provenance_ = self._provenance(lesions, y, cnn_, source, settings, _trained_date(cnn))
        return self

    def _with_embeddings(self, lesions: pd.DataFrame, cnn_: _CNN, progress: bool) -> pd.DataFrame:
        if lesions["path"].isna().any():
            raise ModelError("LesionPipeline.fit: use_embeddings=True needs an image path on every row "
                             f"(e.g. {lesions.loc[lesions['path'].isna(), 'image_id'].iloc[0]!r} has none); "
                             "read the table with image_dir=")
        out = _infer(cnn_, lesions["path"].astype(str).tolist(), self._infer_settings(), progress,
                     folds=False)
        if out.failed:
            first = next(iter(out.failed.values()))
            warnings.warn(f"LesionPipeline.fit: {len(out.failed)} of {len(lesions)} image(s) cannot be decoded "
                          f"for embeddings and are left out (e.g. {first})", DermctxWarning, stacklevel=3)
        keep = np.array([i not in out.failed for i in range(len(lesions))], dtype=bool)
        feats = out.final_feats if out.final_feats is not None else np.zeros((len(lesions), 0), np.float32)
        emb = pd.DataFrame(feats[keep], columns=embedding_column_names(feats.shape[1]))
        return pd.concat([lesions[keep].reset_index(drop=True), emb], axis=1)

    def _infer_settings(self) -> dict[str, Any]:
        return {"views": self._views(), "device": self._device(), "batch_size": int(self.batch_size),
                "n_jobs": int(self.n_jobs)}

    def _check_inputs(self, where: str) -> None:
        """The ranker reads only what the pipeline computes (refused naming the others)."""
        producible = {"patient_id", _SCORE, "age", "sex", "site"}
        emb = list(getattr(self.ranker_, "emb_cols_", []))
        if self.use_embeddings:
            dim = int(self.cnn_.final.num_features) if self.cnn_.final is not None else -1
            if emb != embedding_column_names(dim):
                raise ModelError(f"{where}: the ranker reads {len(emb)} embedding columns, the final model "
                                 f"gives {dim}; the folder mixes two models")
            producible |= set(emb)
        other = [str(c) for c in self.ranker_.feature_names_in_ if c not in producible]
        if other or (emb and not self.use_embeddings):
            raise ModelError(f"{where}: the ranker reads {other or emb[:3]}, which the pipeline does not "
                             "compute from an image (it gives cnn_score, emb_* with use_embeddings, and "
                             "the patient's age, sex and site)")

    def _provenance(self, lesions: pd.DataFrame, y: np.ndarray, cnn_: _CNN, source: str,
                    settings: Mapping[str, Any], trained: str | None) -> dict[str, Any]:
        from dermctx import __version__
        from dermctx.metrics import patient_bootstrap

        pid = lesions["patient_id"].to_numpy()

        def auc(scores: np.ndarray, what: str) -> dict[str, Any]:
            r = patient_bootstrap("auc", y, scores, pid, n_boot=int(self.n_boot), random_state=self.random_state)
            return {"estimate": _finite(r.estimate), "low": _finite(r.low), "high": _finite(r.high),
                    "level": r.level, "n_boot": r.n_boot, "n_patients": r.n_patients, "what": what}

        from dermctx.formatting import plural
        from dermctx.metrics import MIN_MELANOMAS

        notes = []
        if self.use_embeddings:
            notes.append("The ranker read final-model embeddings that are in-sample for the training images: "
                         "its out-of-fold AUC is optimistic.")
        if int(y.sum()) < MIN_MELANOMAS:
            notes.append(f"Fitted on {plural(int(y.sum()), 'melanoma')}, fewer than {MIN_MELANOMAS}: its AUC figures "
                         "measure nothing, and the model is for trying the plumbing only.")
        if not settings.get("pretrained", True) and not settings.get("checkpoint"):
            notes.append("The lesion CNN was trained from random weights (no pretrained start).")
        return {
            "dermctx_version": __version__,
            "fitted": _now(),
            "cnn": cnn_.describe(),
            "cnn_model": cnn_.model,
            "cnn_source": source,
            "cnn_trained": trained,
            "cnn_training": {k: settings[k] for k in ("epochs", "n_folds", "pretrained", "checkpoint",
                                                        "image_size", "colour_constancy", "n_rows",
                                                        "external_rows", "target") if k in settings},
            "training_table": {"patients": int(lesions["patient_id"].nunique()), "lesions": len(lesions),
                               "melanomas": int(y.sum())},
            "ranker_auc": auc(self.ranker_.oof_proba_, "ContextRanker, out of fold (its inner patient folds, "
                              "on the CNN's out-of-fold scores), over the training patients"),
            "cnn_auc": auc(lesions[_SCORE].to_numpy(dtype=float), "the CNN alone, out of fold, over the "
                           "training patients"),
            "inputs": [str(c) for c in self.ranker_.feature_names_in_],
            "tta_views": self._views(),
            "notes": notes,
        }

    # -- scoring -------------------------------------------------------------------------------
    def score_images(
        self,
        images: Any,
        *,
        patient_id: str | None = None,
        age: float | None = None,
        sex: str | None = None,
        sites: Any = None,
        progress: bool = False,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score one patient's images: ranked, explained, with the lesions each resembles.

        Parameters
        ----------
        images : path, list of paths, or DataFrame
            A folder of the patient's images (see :func:`dermctx.table_from_folder`), a list of
            image files, or a lesion table of one patient with ``path``. DICOM files give their
            patient id, age, sex and site from their headers.
        patient_id : str, optional
            The patient (default: the DICOM headers', else the folder's name; needed for a list of
            non-DICOM files).
        age, sex : optional
            The patient's age (years) and sex ("male"/"female"), for every image.
        sites : path, DataFrame or mapping, optional
            Each image's site: a CSV of image id (or file name) and site; see
            :func:`dermctx.table_from_folder`.
        progress : bool
            Progress bar of the CNN.

        Returns
        -------
        scores : DataFrame
            One row per scored image, most suspicious first (:data:`SCORE_COLUMNS`): ``rank``
            (1 = most suspicious in context), ``image_id``, ``score`` (the ranker's calibrated
            melanoma probability, 0-1), ``cnn_score`` (the CNN's probability, the fold models'
            mean) and ``cnn_rank`` (its rank by the CNN alone), ``explanation``,
            ``raised_by``/``raised_by_change`` and ``lowered_by``/``lowered_by_change`` (the
            lesion whose presence most raised/lowered the score, in probability units;
            :meth:`ContextRanker.score_patient`), ``most_similar``/``least_similar`` (the image
            id of the patient's other lesion this one resembles most/least) with their
            ``*_distance``, then ``patient_id``, ``age``, ``sex``, ``site``, ``path``.

            Resemblance is the cosine distance (0 = same direction, up to 2) between the CNN's
            pooled penultimate features of two images (averaged over the TTA views): those of the
            final model when the pipeline has one (the ``emb_*`` space), else the mean over the
            fold models of the distance in each one's own feature space. None for a patient of
            one image. A single readable image is still scored (a context of one).
        errors : DataFrame
            The errors table (:func:`dermctx.errors_frame`): one row per file that is not a
            readable image (``stage`` ``"table_from_folder"``) or cannot be decoded (``"load"``);
            ``row`` is its position among the files tried. ``len(scores) + len(errors)`` is the
            number of files tried.

        Raises
        ------
        TableError
            No image files, images of several patients, a list of non-DICOM files without
            ``patient_id``, metadata or a sites table that disagrees with the folder or the
            DICOM headers (see :func:`dermctx.table_from_folder`).
        ImageError
            ``images`` is not a folder, a list of paths or a lesion table.
        ModelError
            The pipeline is not fitted.
        """
        self._check_fitted()
        scan = _scan_input(images, patient_id=patient_id, age=age, sex=sex, sites=sites)
        table = scan.table
        patients = table["patient_id"].astype(str).unique()
        if len(patients) > 1:
            raise TableError(f"score_images: images of {len(patients)} patients ({list(patients[:5])}); "
                             "score one patient's images at a time")
        out = _infer(self.cnn_, table["path"].astype(str).tolist(), self._infer_settings(), progress,
                     folds=True)
        records = scan.errors.to_dict("records") + [
            error_record(table["image_id"].iloc[i], scan.rows[i], table["path"].iloc[i], "load", m)
            for i, m in out.failed.items()]
        errors = errors_frame(sorted(records, key=lambda r: int(r["row"])))
        keep = np.array([i not in out.failed for i in range(len(table))], dtype=bool)
        good = table[keep].reset_index(drop=True)
        if not len(good):
            return pd.DataFrame(columns=list(SCORE_COLUMNS)), errors
        frame = good[list(_META)].assign(**{_SCORE: out.cnn_score[keep]})
        if self.use_embeddings and out.final_feats is not None:
            emb = out.final_feats[keep]
            frame = pd.concat([frame, pd.DataFrame(emb, columns=embedding_column_names(emb.shape[1]))], axis=1)
        ranked = self.ranker_.score_patient(frame)
        feats = [out.final_feats[keep]] if out.final_feats is not None else [f[keep] for f in out.fold_feats]
        similar = _similarity(feats, good["image_id"].astype(str).tolist())
        scores = ranked.merge(good[[*_META[1:], "image_id", "path"]], on="image_id", how="left")
        scores = scores.merge(similar, on="image_id", how="left")
        scores["cnn_score"] = frame.set_index("image_id").loc[scores["image_id"], _SCORE].to_numpy()
        scores["cnn_rank"] = scores["cnn_score"].rank(ascending=False, method="min").astype(int)
        return scores[list(SCORE_COLUMNS)].reset_index(drop=True), errors

    def write_page(
        self,
        scores: pd.DataFrame,
        errors: pd.DataFrame | None,
        path: str | PathLike[str],
        *,
        title: str | None = None,
        thumb_size: int = 320,
    ) -> Path:
        """Write the patient page (``patient.html``) of :meth:`score_images`' result.

        Calls :func:`dermctx.patient_page.write_patient_page` with the scores, the image files,
        the errors, the patient's facts (id, age, sex, images scored and failed) and
        :attr:`provenance_`.

        Parameters
        ----------
        scores, errors : DataFrame
            As :meth:`score_images` returns them.
        path : path
            The HTML file to write (a folder: ``<folder>/patient.html``).
        title : str, optional
            The page's title.
        thumb_size : int
            Thumbnail side in pixels.

        Returns
        -------
        Path of the page.
        """
        from dermctx.patient_page import write_patient_page

        self._check_fitted()
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            path = path / "patient.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        images = {str(i): str(p) for i, p in zip(scores["image_id"], scores["path"], strict=True)
                  if isinstance(p, str)}
        return write_patient_page(scores, path, images=images, errors=errors, patient=patient_facts(scores),
                                  provenance=page_provenance(self.provenance_), title=title,
                                  thumb_size=thumb_size)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | PathLike[str]) -> Path:
        """Write the fitted pipeline to the folder ``path`` (self-contained; no pickle).

        Files: ``fold<k>.safetensors`` (each fold model, classifier included, with the model
        name, image size, normalisation and classes as metadata), ``final.safetensors`` (with
        ``use_embeddings`` or when the run had a final model), ``ranker/`` (the ContextRanker's
        folder, with its own manifest), ``pipeline.json`` (settings, the CNN's preprocessing,
        provenance, and the SHA-256 of ``ranker/manifest.json``) and ``manifest.json`` (each
        file's size and SHA-256). Returns the folder.
        """
        from dermctx.embed import save_checkpoint

        self._check_fitted()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        c = self.cnn_
        names = []
        for k, net in enumerate([*c.folds, *([c.final] if c.final is not None else [])]):
            name = f"fold{k}.safetensors" if k < len(c.folds) else _FINAL_FILE
            save_checkpoint(net, folder / name, model_name=c.model, image_size=c.image_size, mean=c.mean,
                            std=c.std, class_names=c.classes)
            names.append(name)
        for stale in folder.glob("fold*.safetensors"):  # of an earlier save with more folds
            if stale.name not in names:
                stale.unlink()
        self.ranker_.save(folder / _RANKER_DIR)
        params = {k: v for k, v in self.get_params().items() if k != "ranker"}
        params["tta"] = self._views()
        meta = {
            "format": _FORMAT,
            "params": params,
            "cnn": {"model": c.model, "image_size": c.image_size, "mean": c.mean, "std": c.std,
                    "classes": c.classes, "melanoma_idx": c.melanoma_idx,
                    "colour_constancy": c.colour_constancy, "aspect": "crop",
                    "folds": names[:len(c.folds)], "final": _FINAL_FILE if c.final is not None else None},
            "ranker": {"folder": _RANKER_DIR, "manifest_sha256": sha256_file(folder / _RANKER_DIR / "manifest.json")},
            "provenance": self.provenance_,
        }
        (folder / "pipeline.json").write_text(json.dumps(meta, indent=1, allow_nan=False))
        write_manifest(folder, ["pipeline.json", *names], _KIND)
        return folder

    @classmethod
    def load(cls, path: str | PathLike[str]) -> LesionPipeline:
        """Read a folder written by :meth:`save`.

        Every file is checked against ``manifest.json`` (and the ranker's files against its own
        manifest, whose digest ``pipeline.json`` holds) before it is parsed; every JSON value's
        type and range is checked; weights are read with safetensors; nothing is unpickled.

        Raises
        ------
        ModelError
            Naming the file (and the key): a missing, damaged or changed file, a folder that is
            not a LesionPipeline, a value of the wrong type or range, weights that do not fit
            the model, a ranker that reads inputs the pipeline cannot compute.
        """
        from dermctx.io.images import COLOUR_CONSTANCY
        from dermctx.models.ranker import ContextRanker

        folder = Path(path)
        if not verify_folder(folder, _KIND, ["pipeline.json"]):
            raise ModelError(f"{folder}: no manifest.json; not a folder written by LesionPipeline.save")
        meta_path = folder / "pipeline.json"
        f = JsonFields(read_json(meta_path), meta_path)
        if f.text("format") != _FORMAT:
            raise ModelError(f"{meta_path}: format {f.text('format')!r}; expected {_FORMAT!r}")
        p = JsonFields(f.mapping("params"), meta_path, where="params")
        allowed = set(cls().get_params()) - {"ranker"}
        unknown = sorted(set(p.data) - allowed)
        if unknown:
            raise ModelError(f"{meta_path}: params has unknown setting(s) {unknown}")
        pipe = cls(use_embeddings=p.boolean("use_embeddings"), tta=p.integer("tta", 1, lo=1),
                   n_boot=p.integer("n_boot", 1000, lo=1), device=p.text("device", None, optional=True),
                   batch_size=p.integer("batch_size", 8, lo=1), n_jobs=p.integer("n_jobs", 1, lo=1),
                   random_state=p.integer("random_state", 0))
        try:
            pipe._check_params()
        except ModelError as exc:
            raise ModelError(f"{meta_path}: {exc}") from exc
        c = JsonFields(f.mapping("cnn"), meta_path, where="cnn")
        classes = c.names("classes")
        mel = c.get("melanoma_idx")
        if not (isinstance(mel, list) and mel and all(isinstance(i, int) and not isinstance(i, bool)
                                                      and 0 <= i < len(classes) for i in mel)):
            raise ModelError(f"{meta_path}: cnn.melanoma_idx is {str(mel)[:60]}; expected indices of classes")
        cc = c.text("colour_constancy", None, optional=True)
        if cc is not None and cc not in COLOUR_CONSTANCY:
            raise ModelError(f"{meta_path}: cnn.colour_constancy is {cc!r}; expected one of {list(COLOUR_CONSTANCY)}")
        if c.text("aspect", "crop") != "crop":
            raise ModelError(f"{meta_path}: cnn.aspect is {c.text('aspect')!r}; expected 'crop'")
        folds, final = c.names("folds"), c.text("final", None, optional=True)
        listed = set(JsonFields(read_json(folder / "manifest.json"), folder / "manifest.json").mapping("files"))
        for name in [*folds, *([final] if final else [])]:
            if not (_FOLD_FILE.fullmatch(name) or name == _FINAL_FILE) or name not in listed:
                raise ModelError(f"{meta_path}: cnn names weights {name!r}, which manifest.json does not list "
                                 "as a fold*.safetensors or final.safetensors of the folder")
        if not folds:
            raise ModelError(f"{meta_path}: cnn.folds is empty; expected at least one model")
        model = c.text("model")
        size = c.integer("image_size", lo=8)
        cnn_ = _CNN(model=model, image_size=size, mean=c.numbers("mean", length=3), std=c.numbers("std", length=3),
                    classes=classes, melanoma_idx=list(mel), colour_constancy=cc,
                    folds=[_build(model, len(classes), folder / n) for n in folds],
                    final=_build(model, len(classes), folder / final) if final else None)
        r = JsonFields(f.mapping("ranker"), meta_path, where="ranker")
        if r.text("folder") != _RANKER_DIR:
            raise ModelError(f"{meta_path}: ranker.folder is {r.text('folder')!r}; expected {_RANKER_DIR!r}")
        ranker_manifest = folder / _RANKER_DIR / "manifest.json"
        if not ranker_manifest.is_file() or sha256_file(ranker_manifest) != r.text("manifest_sha256"):
            raise ModelError(f"{ranker_manifest}: missing, or not the ranker this pipeline was saved with "
                             "(its SHA-256 differs from pipeline.json); copy the whole folder")
        pipe.cnn_, pipe.ranker_ = cnn_, ContextRanker.load(folder / _RANKER_DIR)
        pipe.provenance_ = dict(f.mapping("provenance"))
        pipe._check_inputs(str(meta_path))
        return pipe


# --- the CNN ----------------------------------------------------------------------------------


def _build(model: str, n_classes: int, path: Path) -> Any:
    """A timm classifier with the weights of ``path`` (every weight must fit), in eval mode."""
    import timm

    if not timm.is_model(model):
        raise ModelError(f"{path}: model {model!r} is not a timm model; see timm.list_models()")
    net = timm.create_model(model, pretrained=False, num_classes=n_classes)
    try:
        net.load_state_dict(load_tensors(path))
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit {model!r} with {n_classes} classes "
                         f"({' '.join(str(exc).split())[:300]})") from exc
    return net.eval()


def _load_cnn(cnn: Any) -> tuple[_CNN, pd.DataFrame | None, pd.DataFrame | None, str, dict[str, Any]]:
    """The CNN, the run's out-of-fold scores and errors (None for a checkpoint), its name and the
    settings it was trained with (empty when unknown)."""
    from dermctx.train import TrainResult

    if isinstance(cnn, (str, PathLike)):
        path = Path(cnn)
        if path.is_dir():
            cnn = TrainResult.load(path)
        elif path.is_file() and path.suffix == ".safetensors":
            net, settings = _checkpoint_cnn(path)
            return net, None, None, f"checkpoint {path}", settings
        else:
            raise ModelError(f"{path}: not a train_lesion_cnn output folder or a .safetensors checkpoint")
    if not isinstance(cnn, TrainResult):
        raise ModelError(f"cnn: expected a TrainResult, a train_lesion_cnn output folder or a .safetensors "
                         f"checkpoint, got {type(cnn).__name__}")
    s = cnn.settings
    if not cnn.models:
        raise ModelError("cnn: the TrainResult holds no fold models")
    where = f"train_lesion_cnn run {cnn.checkpoints[0].parent}" if cnn.checkpoints else "train_lesion_cnn run (in memory)"
    net = _CNN(model=s["model"], image_size=int(s["image_size"]), mean=[float(v) for v in s["mean"]],
               std=[float(v) for v in s["std"]], classes=list(s["classes"]),
               melanoma_idx=[int(i) for i in s["melanoma_idx"]], colour_constancy=s.get("colour_constancy"),
               folds=[m.cpu().eval() for m in cnn.models],
               final=cnn.final_model.cpu().eval() if cnn.final_model is not None else None)
    return net, cnn.oof, cnn.errors, where, dict(s)


def _checkpoint_cnn(path: Path) -> tuple[_CNN, dict[str, Any]]:
    """One timm classifier from a ``.safetensors`` checkpoint and its dermctx metadata."""
    import timm

    from dermctx.embed import checkpoint_metadata

    meta = checkpoint_metadata(path)
    model = meta.get("model")
    if not model:
        raise ModelError(f"{path}: the checkpoint does not name its timm model; write it with "
                         "dermctx.save_checkpoint(model, path, model_name=...)")
    if not timm.is_model(model):
        raise ModelError(f"{path}: model {model!r} is not a timm model")
    tensors = load_tensors(path)
    cfg: Any = timm.create_model(model, pretrained=False).pretrained_cfg
    head = cfg.get("classifier")
    head = head if isinstance(head, str) else (head or [""])[0]
    weight = tensors.get(f"{head}.weight")
    if weight is None:
        raise ModelError(f"{path}: no classifier weights ({head}.weight); expected a trained classifier")
    n = int(weight.shape[0])
    settings = meta.get("settings") or {}
    classes = list(meta.get("class_names") or ([] if n != 2 else ["other", "melanoma"]))
    if len(classes) != n:
        raise ModelError(f"{path}: {n} classifier outputs and class names {classes}; write the checkpoint with "
                         "dermctx.save_checkpoint(..., class_names=[...])")
    mel = settings.get("melanoma_idx") or [i for i, c in enumerate(classes) if c.lower() in ("melanoma", "mel")]
    if not mel:
        raise ModelError(f"{path}: no class of {classes} is melanoma; expected one named 'melanoma'")
    cfg = timm.data.resolve_data_config({}, model=timm.create_model(model, pretrained=False, num_classes=0))
    return _CNN(model=model, image_size=int(meta.get("image_size") or cfg["input_size"][-1]),
                mean=[float(v) for v in meta.get("mean") or cfg["mean"]],
                std=[float(v) for v in meta.get("std") or cfg["std"]], classes=classes,
                melanoma_idx=[int(i) for i in mel], colour_constancy=settings.get("colour_constancy"),
                folds=[_build(model, n, path)], final=None), dict(settings)


@dataclass
class _Inference:
    cnn_score: np.ndarray  # (n,), NaN where failed
    fold_feats: list[np.ndarray]  # per fold model, (n, D)
    final_feats: np.ndarray | None  # (n, D) of the final model
    failed: dict[int, str]  # position -> message


def _infer(cnn: _CNN, paths: list[str], settings: dict[str, Any], progress: bool, *, folds: bool) -> _Inference:
    """Decode ``paths`` and run the fold models (``folds``) and the final model (if any).

    Images are normalised exactly as the trainer feeds them; probabilities are averaged over
    the TTA views and then over the fold models (as ``TrainResult.predict``). ``n_jobs``
    decoding threads run ahead of the network, which uses ``n_jobs`` torch threads (restored
    after): more threads than free cores slow torch down several times on a shared machine.
    """
    import torch
    from tqdm.auto import tqdm

    from dermctx.io.images import load_image

    n, device, views, bs = len(paths), settings["device"], settings["views"], settings["batch_size"]
    mean = torch.tensor(cnn.mean).view(1, 3, 1, 1)
    std = torch.tensor(cnn.std).view(1, 3, 1, 1)
    cuda = torch.device(device).type == "cuda"
    layout = torch.channels_last if cuda else torch.contiguous_format
    nets = [m.to(device, memory_format=layout).eval() for m in cnn.folds] if folds else []
    final = cnn.final.to(device, memory_format=layout).eval() if cnn.final is not None else None
    probs = np.full((n, len(cnn.classes)), np.nan)
    fold_feats: list[np.ndarray | None] = [None] * len(nets)
    final_feats: np.ndarray | None = None
    failed: dict[int, str] = {}

    def load(path: str) -> np.ndarray | str:
        try:
            return load_image(path, cnn.image_size, colour_constancy=cnn.colour_constancy)
        except Exception as exc:  # ImageError, or a decoder bug: kept per image
            return str(exc) if isinstance(exc, DermctxError) else f"{type(exc).__name__}: {exc}"

    threads = torch.get_num_threads()
    torch.set_num_threads(settings["n_jobs"])
    try:
        with (cf.ThreadPoolExecutor(max_workers=settings["n_jobs"]) as pool, torch.inference_mode(),
              torch.autocast("cuda", dtype=torch.float16, enabled=cuda)):  # float16 on CUDA, as Embedder
            ahead = pool.map(load, paths)  # in order, decoded ahead of the network
            for start in tqdm(range(0, n, bs), disable=not progress, desc="CNN", unit="batch"):
                decoded = [next(ahead) for _ in range(min(bs, n - start))]
                failed.update({start + j: d for j, d in enumerate(decoded) if isinstance(d, str)})
                ok = [start + j for j, d in enumerate(decoded) if not isinstance(d, str)]
                if not ok:
                    continue
                x = torch.from_numpy(np.stack([decoded[i - start] for i in ok])).permute(0, 3, 1, 2)
                x = ((x.float() / 255 - mean) / std).to(device)  # (B, 3, S, S), as the trainer normalises
                x = x.contiguous(memory_format=layout)
                total = np.zeros((len(ok), len(cnn.classes)))
                for k, net in enumerate(nets):
                    p, f = _forward(net, x, views)
                    total += p
                    fold_feats[k] = _put(fold_feats[k], ok, f, n)
                if nets:
                    probs[ok] = total / len(nets)
                if final is not None:
                    final_feats = _put(final_feats, ok, _forward(final, x, views)[1], n)
    finally:
        torch.set_num_threads(threads)
    cnn_score = probs[:, cnn.melanoma_idx].sum(axis=1)
    return _Inference(cnn_score, [f for f in fold_feats if f is not None], final_feats, failed)


def _put(store: np.ndarray | None, rows: list[int], values: np.ndarray, n: int) -> np.ndarray:
    if store is None:
        store = np.full((n, values.shape[1]), np.nan, dtype=np.float32)
    store[rows] = values
    return store


def _forward(net: Any, x: Any, views: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (B, C) and pooled penultimate features (B, D), each averaged over
    ``views`` flips/transposes of ``x`` (B, 3, S, S)."""
    import torch

    from dermctx.embed import dihedral_views

    probs, feats = [], []
    for v in dihedral_views(x, views):
        pooled = net.forward_head(net.forward_features(v), pre_logits=True)  # pooled once per view
        probs.append(torch.softmax(net.get_classifier()(pooled).float(), dim=1))
        feats.append(pooled.float().flatten(1))
    return (torch.stack(probs).mean(0).cpu().numpy().astype(np.float64),
            torch.stack(feats).mean(0).cpu().numpy())


def _similarity(feats: list[np.ndarray], ids: list[str]) -> pd.DataFrame:
    """Per image, the other image with the smallest / largest cosine distance (mean over spaces)."""
    n = len(ids)
    out = pd.DataFrame({"image_id": ids, "most_similar": [None] * n, "most_similar_distance": np.nan,
                        "least_similar": [None] * n, "least_similar_distance": np.nan})
    if n < 2 or not feats:
        return out
    dist = np.zeros((n, n))
    for f in feats:
        u = f.astype(np.float64)
        u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        dist += 1.0 - u @ u.T
    dist /= len(feats)
    near = np.where(np.eye(n, dtype=bool), np.inf, dist)
    far = np.where(np.eye(n, dtype=bool), -np.inf, dist)
    lo, hi = near.argmin(axis=1), far.argmax(axis=1)
    out["most_similar"] = [ids[j] for j in lo]
    out["most_similar_distance"] = near[np.arange(n), lo]
    out["least_similar"] = [ids[j] for j in hi]
    out["least_similar_distance"] = far[np.arange(n), hi]
    return out


# --- fitting helpers ----------------------------------------------------------------------------


def _with_oof_scores(table: pd.DataFrame, oof: pd.DataFrame | None, failed: pd.DataFrame | None,
                     source: str) -> pd.DataFrame:
    """The table with the run's out-of-fold ``cnn_score`` (its own column for a checkpoint)."""
    if oof is None:
        if _SCORE not in table.columns:
            raise ModelError(f"{source}: a single checkpoint has no out-of-fold scores; the table needs "
                             f"'{_SCORE}' from models that never saw each row's patient (e.g. your own "
                             "cross-validation), or pass a train_lesion_cnn run instead")
        s = pd.to_numeric(table[_SCORE], errors="coerce")
        bad = ~(s >= 0) | ~(s <= 1)
        if bad.any():
            raise ModelError(f"LesionPipeline.fit: column {_SCORE!r} is {table[_SCORE][bad].iloc[0]!r} at row "
                             f"{int(np.flatnonzero(bad.to_numpy())[0])}; expected a probability in [0, 1]")
        return table.assign(**{_SCORE: s.to_numpy(dtype=float)}).reset_index(drop=True)
    scores = oof[["image_id", "patient_id", _SCORE]].rename(columns={"patient_id": "_run_patient"})
    known = table["image_id"].isin(scores["image_id"])
    run_failed = table["image_id"].isin(failed["image_id"].astype(str) if failed is not None else [])
    unknown = ~known & ~run_failed
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise ModelError(f"{source}: {int(unknown.sum())} row(s) of the table have no out-of-fold score "
                         f"(first: row {i}, image_id {table['image_id'].iloc[i]!r}); fit on the rows the "
                         "CNN was trained on (a fold model that saw a patient never scores it)")
    if (~known).any():
        warnings.warn(f"LesionPipeline.fit: {int((~known).sum())} row(s) are left out: the CNN run could not "
                      f"read their images (its errors table), e.g. {table['image_id'][~known].iloc[0]!r}",
                      DermctxWarning, stacklevel=3)
    merged = table[known].drop(columns=[_SCORE], errors="ignore").merge(scores, on="image_id", validate="1:1")
    moved = merged["patient_id"] != merged["_run_patient"].astype(str)
    if moved.any():
        r = merged[moved].iloc[0]
        raise ModelError(f"{source}: image {r['image_id']!r} is filed under patient {r['_run_patient']!r} in "
                         f"the run and {r['patient_id']!r} in the table; out-of-fold scores are out of "
                         "patient only for the patients the run was split by")
    return merged.drop(columns="_run_patient").reset_index(drop=True)


def _check_ranker(ranker: Any) -> None:
    from dermctx.models.ranker import ContextRanker

    if not isinstance(ranker, ContextRanker):
        raise ModelError(f"ranker: expected a dermctx.ContextRanker, got {type(ranker).__name__}")
    p = ranker.get_params()
    bad = [k for k, ok in (("use_image_size", not p["use_image_size"]), ("context_features", not p["context_features"]),
                           ("extra_features", not p["extra_features"]), ("score_col", p["score_col"] == _SCORE))
           if not ok]
    if bad:
        raise ModelError(f"ranker: {', '.join(f'{k}={p[k]!r}' for k in bad)}; a LesionPipeline computes "
                         f"'{_SCORE}' (and emb_*) from the image and takes age, sex and site from the "
                         "patient: its ranker can read nothing else")


def _scan_input(images: Any, *, patient_id: Any, age: Any, sex: Any, sites: Any) -> Any:
    """The lesion table of ``images`` (folder, list of files, or lesion table) and its errors."""
    from dermctx.errors import ImageError
    from dermctx.io.image_folder import ImageScan, scan_folder, scan_paths

    if isinstance(images, pd.DataFrame):
        if any(v is not None for v in (patient_id, age, sex, sites)):
            raise TableError("score_images: a lesion table carries its own patient_id, age, sex and site; "
                             "pass them in the table, not as arguments")
        table = validate_table(images, name="score_images")
        if table["path"].isna().any():
            raise TableError("score_images: every row of the lesion table needs an image 'path'")
        return ImageScan(table, errors_frame(), list(range(len(table))), [])
    if isinstance(images, (str, PathLike)):
        if Path(images).is_file():
            return scan_paths([images], patient_id=patient_id, age=age, sex=sex, sites=sites)
        return scan_folder(images, patient_id=patient_id, sites=sites, age=age, sex=sex, recursive=False)
    if isinstance(images, Sequence):
        return scan_paths(list(images), patient_id=patient_id, age=age, sex=sex, sites=sites)
    raise ImageError(f"score_images: expected a folder, a list of image files or a lesion table, got "
                     f"{type(images).__name__}")


def patient_facts(scores: pd.DataFrame) -> dict[str, Any]:
    """The patient's facts for the page: ``patient_id``, ``age``, ``sex`` (None where unknown);
    the page adds how many images were scored and failed."""

    def first(col: str) -> Any:
        v = scores[col].dropna() if col in scores.columns else pd.Series([], dtype=object)
        if not len(v):
            return None
        return v.iloc[0].item() if hasattr(v.iloc[0], "item") else v.iloc[0]

    return {"patient_id": first("patient_id"), "age": first("age"), "sex": first("sex")}


def page_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """:attr:`LesionPipeline.provenance_` as the patient page shows it: ``model``, ``cnn``,
    ``trained_on``, ``held_out_auc`` (estimate, low, high), ``created``, ``version``, ``notes``."""
    from dermctx.formatting import format_ci, plural

    def ci(key: str) -> tuple[Any, Any, Any] | None:
        a = provenance.get(key) or {}
        return (a.get("estimate"), a.get("low"), a.get("high")) if a else None

    t = provenance.get("training_table") or {}
    inputs = [c for c in provenance.get("inputs", []) if c != "patient_id"]
    emb = [c for c in inputs if str(c).startswith(_PREFIX)]
    named = {_SCORE: "the CNN's score"}
    words = [named.get(c, c) for c in inputs if c not in emb] + ([f"{len(emb)} embedding features"] if emb else [])
    cnn_ci = ci("cnn_auc")
    out: dict[str, Any] = {
        "model": "ContextRanker on " + ", ".join(words) if words else "ContextRanker",
        "cnn": str(provenance.get("cnn", "unknown"))
        + (f"; its own out-of-fold AUC {format_ci(*cnn_ci)}" if cnn_ci else ""),
        "trained_on": (f"{plural(t.get('patients'), 'patient')}, {plural(t.get('lesions'), 'lesion')}, "
                       f"{plural(t.get('melanomas'), 'melanoma')}" if t else "unknown"),
    }
    from dermctx.metrics import MIN_MELANOMAS

    few = int(t.get("melanomas") or 0) < MIN_MELANOMAS
    if few:
        out["held_out_auc"] = f"n/a: too few melanomas ({t.get('melanomas')}; need >= {MIN_MELANOMAS})"
        out["cnn"] = str(provenance.get("cnn", "unknown"))
    elif ci("ranker_auc"):
        out["held_out_auc"] = ci("ranker_auc")  # out of fold over the training patients
    out["created"] = provenance.get("fitted")
    out["version"] = provenance.get("dermctx_version")
    notes = provenance.get("notes") or []
    if notes:
        out["notes"] = " ".join(str(n) for n in notes)
    return {k: v for k, v in out.items() if v is not None}


# --- small helpers ------------------------------------------------------------------------------


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _trained_date(cnn: Any) -> str | None:
    """When the CNN's weights were written (the newest checkpoint file), or None."""
    paths = [Path(cnn)] if isinstance(cnn, (str, PathLike)) and Path(cnn).is_file() else \
        [p for p in getattr(cnn, "checkpoints", []) or [] if Path(p).is_file()]
    if not paths and isinstance(cnn, (str, PathLike)):
        paths = sorted(Path(cnn).glob("*.safetensors"))
    if not paths:
        return None
    stamp = max(p.stat().st_mtime for p in paths)
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provenance_lines(provenance: Mapping[str, Any]) -> list[str]:
    """The provenance as a few lines of text (the command line's summary)."""
    from dermctx.formatting import format_ci, plural

    t = provenance.get("training_table") or {}
    lines = [f"CNN: {provenance.get('cnn', 'unknown')}"]
    if t:
        lines.append(f"trained on {plural(t.get('patients'), 'patient')}, {plural(t.get('lesions'), 'lesion')}, "
                     f"{plural(t.get('melanomas'), 'melanoma')}")
    from dermctx.metrics import MIN_MELANOMAS

    for key, label in (("ranker_auc", "ranker"), ("cnn_auc", "CNN alone")):
        a = provenance.get(key) or {}
        if a and int(t.get("melanomas") or 0) < MIN_MELANOMAS:
            lines.append(f"{label}: out-of-fold AUC n/a (too few melanomas: {t.get('melanomas')}; "
                         f"need >= {MIN_MELANOMAS})")
        elif a:
            lines.append(f"{label}: out-of-fold AUC {format_ci(a.get('estimate'), a.get('low'), a.get('high'))} "
                         f"(95% CI, {plural(a.get('n_boot'), 'patient resample')})")
    return lines + [str(n) for n in provenance.get("notes") or []]
