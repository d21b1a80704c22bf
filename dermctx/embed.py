"""Per-lesion image embeddings from any timm backbone, written to a resumable Parquet store.

:class:`Embedder` turns the images of a lesion table into one pooled feature vector per image
(``emb_0000, emb_0001, ...`` float32 columns indexed by ``image_id``). Images are decoded with
:func:`dermctx.load_image` in a thread pool that runs ahead of the network (Pillow releases the
GIL while decoding and resizing), so decoding overlaps compute.

With ``store=`` the embeddings are appended to a Parquet store as they are computed: a folder of
part files (``part-*.parquet``, columns ``image_id`` and ``emb_*``) whose schema metadata records
the settings that produced them (model, weights hash, image size, aspect, TTA, colour constancy,
normalisation, precision). A re-run skips the images already stored; a store made with other
settings is refused with :class:`~dermctx.errors.ModelError`, never mixed. Read a store with
:func:`read_embeddings`. The store itself is :mod:`dermctx.embedding_store`; checkpoints
(:func:`save_checkpoint`, :func:`checkpoint_metadata`, :func:`state_dict_hash`) and offline
pretrained weights are :mod:`dermctx.checkpoints`; both are re-exported here.

``backend="ray"`` runs the same step on Ray Data (``pip install "dermctx[ray]"``): one model per
actor, results streamed back and written to the same store.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
from collections import deque
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dermctx._deprecation import renamed_kwargs, warn_renamed
from dermctx.checkpoints import (
    check_pretrained_available,
    checkpoint_metadata,
    load_backbone_weights,
    save_checkpoint,
    state_dict_hash,
)
from dermctx.embedding_store import read_embeddings, resume_store, settings_differences, write_part
from dermctx.errors import ImageError, ModelError, TableError, error_record, errors_frame
from dermctx.io.images import ASPECTS, COLOUR_CONSTANCY, file_stamps, load_image
from dermctx.table import (
    as_texts,
    cell_text,
    embedding_column_names,
    is_blank,
    refuse_duplicate_columns,
)

__all__ = [
    "Embedder",
    "checkpoint_metadata",
    "read_embeddings",
    "save_checkpoint",
    "state_dict_hash",
]

# --- the embedder -----------------------------------------------------------------------------


def _default_jobs() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))



def dihedral_views(x: Any, n: int) -> list[Any]:
    """The test-time views of a batch ``x`` (B, 3, S, S): 1 (as is), 2 (+ left-right flip), 4
    (+ up-down, 180 degrees) or 8 (+ the four of its transpose): the dihedral group of the square."""
    views = [x] if n == 1 else [x, x.flip(3)]
    if n >= 4:
        views += [x.flip(2), x.flip(2).flip(3)]
    if n == 8:
        t = x.transpose(2, 3)
        views += [t, t.flip(3), t.flip(2), t.flip(2).flip(3)]
    return views

class Embedder:
    """Pooled image features from a timm backbone, one row per lesion image.

    Construction is cheap: the network is built on first use (:attr:`model_`, :meth:`fit` or
    :meth:`embed`).

    Parameters
    ----------
    model : str
        Any timm model name (``timm.list_models()``); built with ``num_classes=0`` so the output
        is the pooled feature vector of width ``num_features``.
    pretrained : bool
        Load timm's pretrained weights (from the local cache or the hub). Offline without cached
        weights this raises :class:`ModelError` at once. ``False`` gives random weights drawn
        with a fixed seed (the same on every run), for tests.
    checkpoint : path, optional
        Weights to load instead: ``.safetensors`` (those written by :func:`save_checkpoint`
        also supply model name, image size and normalisation) or a state-dict ``.pth`` read with
        ``torch.load(weights_only=True)``. Classifier weights in it are ignored.
    image_size : int, optional
        Input side in pixels; default: the checkpoint's, else the model's pretrained input size.
    aspect : {"crop", "pad", "squash"}
        How a non-square image is fitted (see :func:`dermctx.load_image`).
    colour_constancy : {"shades_of_grey", "grey_world"}, optional
        Colour correction applied to every image before the network.
    tta : bool or {2, 4, 8}
        Average the features over a group of flips and transposes, so that the embedding is
        exactly invariant to them: 2 = {as is, left-right flip}; 4 = {as is, left-right flip,
        up-down flip, 180-degree rotation}; 8 or ``True`` = all eight flips, transposes and
        90-degree rotations (dermoscopy has no preferred orientation). Costs that many forward
        passes per image.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available. On CUDA the forward
        pass runs under float16 autocast (features are returned as float32).
    batch_size : int
        Images per forward pass.
    n_jobs : int, optional
        Decoding threads (a thread pool in this process, not DataLoader worker processes);
        default ``min(8, cpu_count - 1)``, at least 1. (``num_workers=`` is a deprecated alias.)

    Attributes
    ----------
    model_ : torch.nn.Module
        The network, in eval mode, channels_last, on ``device_``.
    image_size_ : int
    mean_, std_ : tuple of 3 floats
        Normalisation on the 0-1 scale.
    num_features_ : int
        Embedding width.
    weights_id_ : str
        Hash of the weights (see :func:`state_dict_hash`).
    settings_ : dict
        Everything that determines the embeddings; written to and checked against stores.
    """

    def __init__(
        self,
        model: str = "efficientnet_b0",
        *,
        pretrained: bool = True,
        checkpoint: str | PathLike[str] | None = None,
        image_size: int | None = None,
        aspect: Literal["crop", "pad", "squash"] = "crop",
        colour_constancy: str | None = None,
        tta: bool | int = False,
        device: str | None = None,
        batch_size: int = 32,
        n_jobs: int | None = None,
        **deprecated: Any,
    ) -> None:
        self.model = model
        self.pretrained = pretrained
        self.checkpoint = checkpoint
        self.image_size = image_size
        self.aspect = aspect
        self.colour_constancy = colour_constancy
        self.tta = tta
        self.device = device
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        if deprecated:  # num_workers= (deprecated): the decoding threads are n_jobs
            if n_jobs is not None and deprecated.get("num_workers", n_jobs) != n_jobs:
                raise TypeError("Embedder: got both num_workers= and n_jobs=; num_workers= is "
                                "deprecated, pass n_jobs= only")
            self.n_jobs = renamed_kwargs("Embedder", deprecated, {"num_workers": "n_jobs"},
                                         strict=True)["n_jobs"]

    @property
    def num_workers(self) -> int | None:
        """Deprecated alias of :attr:`n_jobs` (the decoding threads)."""
        warn_renamed("Embedder", "num_workers", "n_jobs", kind="", stacklevel=3)
        return self.n_jobs

    @num_workers.setter
    def num_workers(self, value: int | None) -> None:
        warn_renamed("Embedder", "num_workers", "n_jobs", kind="", stacklevel=3)
        self.n_jobs = value

    # scikit-learn style parameter access (the __init__ arguments, nothing else)
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in (
            "model", "pretrained", "checkpoint", "image_size", "aspect", "colour_constancy",
            "tta", "device", "batch_size", "n_jobs")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"Embedder({args})"

    # -- building ---------------------------------------------------------------------------

    def _validate(self) -> None:
        if self.aspect not in ASPECTS:
            raise ModelError(f"aspect must be one of {list(ASPECTS)}, got {self.aspect!r}")
        if self.colour_constancy is not None and self.colour_constancy not in COLOUR_CONSTANCY:
            raise ModelError(f"colour_constancy must be one of {list(COLOUR_CONSTANCY)} or None, "
                             f"got {self.colour_constancy!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ModelError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.image_size is not None and (
            not isinstance(self.image_size, (int, np.integer)) or self.image_size < 8
        ):
            raise ModelError(f"image_size must be an integer >= 8 pixels, got {self.image_size!r}")
        if self.tta not in (False, True, 0, 1, 2, 4, 8):
            raise ModelError(f"tta must be True/False or one of 2, 4, 8 views, got {self.tta!r}")
        if self.n_jobs is not None and (
            not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs < 1
        ):
            raise ModelError(f"n_jobs must be a positive integer (decoding threads), got "
                             f"{self.n_jobs!r}")

    def fit(self, X: Any = None, y: Any = None) -> Embedder:
        """Build the network and resolve its settings (nothing is learned). Returns ``self``."""
        import timm
        import torch

        self._validate()
        name = str(self.model)
        meta: dict[str, Any] = {}
        ckpt = Path(self.checkpoint) if self.checkpoint is not None else None
        if ckpt is not None:
            meta = checkpoint_metadata(ckpt)
            if meta.get("model") and meta["model"] != name:
                raise ModelError(
                    f"checkpoint {ckpt} was written for model {meta['model']!r}, not {name!r}; "
                    f"pass model={meta['model']!r}"
                )
        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
            raise ModelError(f"unknown timm model {name!r}"
                             + (f"; did you mean one of {close}?" if close else
                                "; see timm.list_models()"))
        use_pretrained = bool(self.pretrained) and ckpt is None
        if use_pretrained:
            check_pretrained_available(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # pretrained=False: the same random weights on every run
            try:
                net = timm.create_model(name, pretrained=use_pretrained, num_classes=0)
            except Exception as exc:
                raise ModelError(f"cannot build timm model {name!r}: {exc}") from exc
        if ckpt is not None:
            load_backbone_weights(net, ckpt)

        cfg = timm.data.resolve_data_config({}, model=net)
        size = int(self.image_size or meta.get("image_size") or cfg["input_size"][-1])
        mean = tuple(float(v) for v in (meta.get("mean") or cfg["mean"]))
        std = tuple(float(v) for v in (meta.get("std") or cfg["std"]))
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net = net.eval().to(device).to(memory_format=torch.channels_last)

        self._built_model = net
        self.device_ = device
        self.image_size_ = size
        self.mean_, self.std_ = mean, std
        self.num_features_ = int(net.num_features)  # type: ignore[arg-type]
        self.weights_id_ = state_dict_hash(net)
        self.settings_ = {
            "model": name,
            "weights": self.weights_id_,
            "image_size": size,
            "aspect": self.aspect,
            "tta": self._n_views(),
            "colour_constancy": self.colour_constancy,
            "mean": list(mean),
            "std": list(std),
            "precision": "float16-autocast" if device.type == "cuda" else "float32",
            "dim": self.num_features_,
        }
        return self

    def _n_views(self) -> int:
        return 8 if self.tta is True else max(1, int(self.tta))

    @property
    def model_(self) -> Any:
        """The network (built on first access)."""
        if getattr(self, "_built_model", None) is None:
            self.fit()
        return self._built_model

    def _ensure_built(self) -> None:
        if getattr(self, "_built_model", None) is None:
            self.fit()

    # -- computing --------------------------------------------------------------------------

    def _load(self, path: Any) -> np.ndarray:
        """One image, decoded and normalised: float32 (S, S, 3). Runs in the decoding threads."""
        return self._normalise(load_image(path, self.image_size_, aspect=self.aspect,
                                          colour_constancy=self.colour_constancy))

    def _normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB (..., S, S, 3) -> float32 ``(x / 255 - mean) / std``, same shape."""
        mean = np.asarray(self.mean_, np.float32) * np.float32(255.0)
        std = np.asarray(self.std_, np.float32) * np.float32(255.0)
        return (images.astype(np.float32) - mean) / std

    def forward_images(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch of decoded images.

        Parameters
        ----------
        images : ndarray, uint8, shape (B, S, S, 3)
            RGB images at ``image_size_``.

        Returns
        -------
        ndarray, float32, shape (B, num_features_)
        """
        self._ensure_built()
        return self._forward(self._normalise(np.asarray(images)))

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Normalised float32 (B, S, S, 3) -> pooled features float32 (B, D)."""
        import torch

        net = self.model_
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device_, non_blocking=True)
        x = x.permute(0, 3, 1, 2)  # (B, 3, S, S), channels_last in memory
        views = dihedral_views(x, self._n_views())
        amp = (torch.autocast("cuda", dtype=torch.float16) if self.device_.type == "cuda"
               else contextlib.nullcontext())
        with torch.inference_mode(), amp:
            feats = sum(net(v.contiguous(memory_format=torch.channels_last)).float()
                        for v in views) / len(views)  # (B, D)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def _local_batches(self, rows: pd.DataFrame
                       ) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """Yield ``(image_ids, embeddings (B, D), error records)`` batch by batch."""
        for ids, images, errors in self._decoded_batches(rows):
            yield ids, (self._forward(images) if ids else
                        np.empty((0, self.num_features_), np.float32)), errors

    def _decoded_batches(self, rows: pd.DataFrame
                         ) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        """Yield ``(image_ids, normalised images float32 (B, S, S, 3), error records)`` batch by
        batch, decoding ahead of the consumer in a thread pool (up to two batches in flight)."""
        threads = int(self.n_jobs or _default_jobs())
        size = self.image_size_
        with cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dermctx-decode") as pool:
            pending: deque[tuple[int, str, Any, cf.Future | None]] = deque()
            it = iter(zip(rows["_row"], rows["image_id"], rows["path"], strict=True))
            window = 2 * self.batch_size
            try:
                while True:
                    while len(pending) < window:
                        nxt = next(it, None)
                        if nxt is None:
                            break
                        row, image_id, path = nxt
                        fut = pool.submit(self._load, path) if path is not None else None
                        pending.append((row, image_id, path, fut))
                    if not pending:
                        return
                    ids: list[str] = []
                    batch: list[np.ndarray] = []
                    errors: list[dict[str, Any]] = []
                    while pending and len(batch) + len(errors) < self.batch_size:
                        row, image_id, path, fut = pending.popleft()
                        if fut is None:
                            errors.append(error_record(image_id, row, None, "load",
                                                       "no image path in the table"))
                            continue
                        try:
                            batch.append(fut.result())
                            ids.append(image_id)
                        except Exception as exc:  # ImageError, or a decoder bug: kept per image
                            errors.append(error_record(image_id, row, str(path), "load", exc))
                    images = (np.stack(batch) if batch
                              else np.empty((0, size, size, 3), np.float32))  # (B, S, S, 3)
                    yield ids, images, errors
            finally:
                for *_, fut in pending:
                    if fut is not None:
                        fut.cancel()

    def embed(
        self,
        table: pd.DataFrame,
        *,
        store: str | PathLike[str] | None = None,
        progress: bool = True,
        backend: Literal["local", "ray"] = "local",
        chunk_size: int = 1024,
        ray_actors: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Embed every image of a lesion table.

        Parameters
        ----------
        table : DataFrame
            A lesion table; needs ``image_id`` (unique) and ``path``.
        store : path, optional
            A Parquet store folder. Images already in it are read, not recomputed; new ones are
            appended every ``chunk_size`` images, so an interrupted run keeps what it did.
        progress : bool
            Show a tqdm progress bar.
        backend : {"local", "ray"}
            ``"ray"`` runs decoding and the network on Ray Data actors (one model per actor);
            it uses the Ray cluster ``ray.init`` connects to (see ``docs/embeddings.md``).
        chunk_size : int
            Images per store part file.
        ray_actors : int, optional
            Number of Ray actors (default: 1 per GPU when ``device`` is CUDA, else 2).

        Returns
        -------
        embeddings : DataFrame
            ``emb_*`` float32 columns indexed by ``image_id``, in table order, one row per image
            that was stored or computed.
        errors : DataFrame
            The errors table (:func:`dermctx.errors.errors_frame`): one row per image that could
            not be read; ``len(embeddings) + len(errors) == len(table)``.

        Raises
        ------
        TableError
            ``table`` lacks ``image_id``/``path``, has duplicate image ids, or names a column
            twice.
        ModelError
            ``store`` was made with other settings (model, weights, size, aspect, ...).
        """
        rows = _embed_rows(table)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                or chunk_size < 1:
            raise ModelError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self._ensure_built()
        store_path = Path(store) if store is not None else None
        files = file_stamps(rows["path"]).set_index(rows["image_id"].to_numpy()) if store_path is not None else None
        done = resume_store(store_path, self.settings_, files) if store_path is not None else pd.DataFrame()
        todo = rows[~rows["image_id"].isin(done.index)] if len(done) else rows

        new_ids: list[str] = []
        new_emb: list[np.ndarray] = []
        error_records: list[dict[str, Any]] = []
        buffer_ids: list[str] = []
        buffer_emb: list[np.ndarray] = []

        def flush() -> None:
            if store_path is not None and buffer_ids:
                write_part(store_path, buffer_ids, np.concatenate(buffer_emb), self.settings_,
                           files.loc[buffer_ids] if files is not None else None)
            buffer_ids.clear()
            buffer_emb.clear()

        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), disable=not progress or len(todo) == 0, unit="img",
                   desc=f"embed {self.model}")
        try:
            batches = (self._local_batches(todo) if backend == "local"
                       else self._ray_batches(todo, ray_actors) if backend == "ray"
                       else None)
            if batches is None:
                raise ModelError(f"backend must be 'local' or 'ray', got {backend!r}")
            for ids, emb, errors in batches:
                error_records.extend(errors)
                if ids:
                    new_ids.extend(ids)
                    new_emb.append(emb)
                    buffer_ids.extend(ids)
                    buffer_emb.append(emb)
                    if len(buffer_ids) >= chunk_size:
                        flush()
                bar.update(len(ids) + len(errors))
        finally:
            flush()  # keep what was computed, even when interrupted
            bar.close()

        out = self._in_table_order(rows, done, new_ids, new_emb)
        errors = errors_frame(sorted(error_records, key=lambda r: r["row"]))
        return out, errors

    def _in_table_order(self, rows: pd.DataFrame, done: pd.DataFrame, new_ids: list[str],
                        new_emb: list[np.ndarray]) -> pd.DataFrame:
        """The stored (``done``) and new embeddings of ``rows``' images, in table order: ``emb_*``
        float32 columns indexed by ``image_id``, with the settings in ``attrs["dermctx"]``."""
        dim = self.num_features_
        fresh = pd.DataFrame(np.concatenate(new_emb) if new_emb else np.empty((0, dim), np.float32),
                             index=pd.Index(new_ids, dtype=object, name="image_id"),
                             columns=embedding_column_names(dim))
        parts = [f for f in (done, fresh) if len(f)]
        allemb = pd.concat(parts) if len(parts) > 1 else (parts[0] if parts else fresh)
        keep = rows["image_id"][rows["image_id"].isin(allemb.index)]
        out = allemb.loc[keep.to_numpy()].astype(np.float32)
        out.index = pd.Index(out.index.to_numpy(dtype=object), name="image_id")
        out.attrs["dermctx"] = dict(self.settings_)
        return out

    # -- Ray Data backend -------------------------------------------------------------------

    def _ray_batches(self, todo: pd.DataFrame, actors: int | None
                     ) -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise ModelError('backend="ray" needs Ray Data: pip install "dermctx[ray]"') from exc
        if len(todo) == 0:
            return
        if not ray.is_initialized():
            ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        on_gpu = self.device_.type == "cuda"
        n = int(actors or (max(1, int(ray.cluster_resources().get("GPU", 1))) if on_gpu else 2))
        params = self.get_params()
        params["device"] = "cuda" if on_gpu else "cpu"
        params["n_jobs"] = 1
        source = pd.DataFrame({
            "row": todo["_row"].to_numpy(dtype=np.int64),
            "image_id": todo["image_id"].astype(str).to_numpy(dtype=object),
            "path": todo["path"].map(lambda p: "" if p is None else str(p)).to_numpy(dtype=object),
        })
        ds = ray.data.from_pandas(source).map_batches(
            _RayEmbedActor,
            fn_constructor_args=(params, self.settings_),
            batch_size=self.batch_size,
            batch_format="numpy",
            concurrency=n,
            num_gpus=1 if on_gpu else 0,
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            ok = np.asarray(batch["ok"], dtype=bool)
            errors = [
                error_record(str(i), int(r), str(p) or None, "load", str(m))
                for i, r, p, m in zip(batch["image_id"][~ok], batch["row"][~ok],
                                      batch["path"][~ok], batch["message"][~ok], strict=True)
            ]
            emb = np.asarray(batch["embedding"], dtype=np.float32)[ok]
            yield [str(i) for i in batch["image_id"][ok]], emb, errors


class _RayEmbedActor:
    """A Ray Data actor: builds the network once, then embeds batches of (row, image_id, path)."""

    def __init__(self, params: dict[str, Any], settings: dict[str, Any]) -> None:
        self.embedder = Embedder(**params).fit()
        mine = {**self.embedder.settings_, "precision": settings.get("precision")}
        if settings_differences(mine, settings):
            raise ModelError("a Ray actor built a different model than the driver "
                             f"({settings_differences(mine, settings)}); "
                             "is the checkpoint the same file on every node?")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, ok, messages = [], [], []
        for path in batch["path"]:
            try:
                if not path:
                    raise ImageError("no image path in the table")
                images.append(self.embedder._load(str(path)))  # normalised (S, S, 3)
                ok.append(True)
                messages.append("")
            except Exception as exc:
                ok.append(False)
                messages.append(f"{type(exc).__name__}: {exc}")
        flags = np.asarray(ok, dtype=bool)
        emb = np.zeros((len(flags), self.embedder.num_features_), np.float32)  # (B, D), 0 = failed
        if images:
            emb[flags] = self.embedder._forward(np.stack(images))
        return {"row": np.asarray(batch["row"]), "image_id": np.asarray(batch["image_id"]),
                "path": np.asarray(batch["path"]), "ok": flags,
                "message": np.asarray(messages, dtype=object), "embedding": emb}


def _embed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``_row`` (input position), ``image_id`` (str) and ``path`` (str or None) of a table."""
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"expected a lesion table (pandas DataFrame), got {type(table).__name__}")
    refuse_duplicate_columns(table, "Embedder.embed")
    missing = [c for c in ("image_id", "path") if c not in table.columns]
    if missing:
        raise TableError(f"the table has no column(s) {missing}; embedding needs 'image_id' and "
                         "'path' (read it with dermctx.read_table, passing image_dir)")
    ids = as_texts(table["image_id"]).str.strip()
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        from dermctx.table import describe_rows

        raise TableError(f"column 'image_id' has duplicate values at {describe_rows(table, dup)}; "
                         "each image must appear once")
    blank = is_blank(table["path"])
    paths = pd.Series([None if b else cell_text(p)
                       for p, b in zip(table["path"].to_numpy(dtype=object), blank, strict=True)],
                      index=table.index, dtype=object)
    return pd.DataFrame({
        "_row": np.arange(len(table)),
        "image_id": ids.to_numpy(dtype=object),
        "path": paths.to_numpy(dtype=object),
    })
