"""The Parquet embedding store: per-image embeddings on disk, resumable, tied to their settings.

A store is a folder of part files (``part-*.parquet``, columns ``image_id``, ``emb_*`` float32
and the image file's ``file_size``, ``file_mtime_ns``, ``file_ctime_ns`` and ``file_path``) whose schema metadata records the
settings that produced them (model, weights hash, image size, aspect, TTA, colour constancy,
normalisation, precision, width: :data:`SETTINGS_KEYS`). :class:`dermctx.Embedder` appends
parts as it computes them (:func:`write_part`, each written atomically) and, on a re-run, reads
what is already there (:func:`resume_store`); a store made with other settings is refused with
:class:`~dermctx.errors.ModelError`, never mixed. An image whose file changed size,
modification or status-change time, or whose row names another file, since it was stored is
embedded again (with a warning), and the newer part wins. Read a store with :func:`read_embeddings`; :func:`stored_files` and
:func:`changed_files` tell whether a table's images are still the ones embedded.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermctx._deprecation import renamed_parameters
from dermctx.errors import DermctxWarning, ModelError
from dermctx.table import as_texts, embedding_column_names

__all__ = [
    "SETTINGS_KEYS",
    "changed_files",
    "read_embeddings",
    "resume_store",
    "settings_differences",
    "store_settings",
    "stored_files",
    "write_part",
]

_META_KEY = b"dermctx.embeddings"  # the schema metadata key of a part's settings (JSON)
#: Each stored image file's stamp when it was embedded (-1: not recorded).
_FILE_COLUMNS = ("file_size", "file_mtime_ns", "file_ctime_ns")
#: Settings that must match for a store to be resumed (or its parts read together).
SETTINGS_KEYS: tuple[str, ...] = ("model", "weights", "image_size", "aspect", "tta",
                                  "colour_constancy", "mean", "std", "precision", "dim")


def _settings_from_schema(schema: Any, part: Path) -> dict[str, Any] | None:
    meta = schema.metadata or {}
    raw = meta.get(_META_KEY)
    if not raw:
        return None
    try:
        settings = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{part}: its dermctx settings metadata is not valid JSON ({exc})") from exc
    if not isinstance(settings, dict):
        raise ModelError(f"{part}: its dermctx settings metadata is a {type(settings).__name__}; "
                         "expected a JSON object")
    return settings


def _read_schema(part: Path) -> Any:
    """The Arrow schema of a store part (ModelError naming the part when it is not Parquet)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(part)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on a damaged file
        raise ModelError(f"{part}: not a readable Parquet file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); expected a dermctx embedding store part") from exc


def _store_parts(store: Path) -> list[Path]:
    try:
        if store.is_file():
            return [store]
        if not store.exists():
            return []
    except (OSError, ValueError):  # a name the OS refuses (too long)
        return []
    return sorted(p for p in store.glob("*.parquet") if not p.name.startswith("."))


def store_settings(store: Path) -> dict[str, Any] | None:
    """Settings of an existing store (ModelError if its parts disagree or are not dermctx's)."""

    found: dict[str, Any] | None = None
    for part in _store_parts(store):
        settings = _settings_from_schema(_read_schema(part), part)
        if settings is None:
            raise ModelError(f"{part}: not a dermctx embedding store part (no settings metadata)")
        if found is not None and settings_differences(found, settings):
            raise ModelError(f"store {store}: part {part.name} was made with other settings "
                             f"({settings_differences(found, settings)})")
        found = found or settings
    return found


def settings_differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The :data:`SETTINGS_KEYS` on which ``a`` and ``b`` differ, as ``"key: a vs b; ..."``
    (empty when they agree)."""
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in SETTINGS_KEYS if a.get(k) != b.get(k)]
    return "; ".join(diffs)


def write_part(store: Path, image_ids: Sequence[str], emb: np.ndarray,
               settings: dict[str, Any], files: pd.DataFrame | None = None) -> Path:
    """Append one part file atomically (write to a hidden temporary name, then rename).

    ``files``: the images' ``size``, ``mtime_ns`` and ``ctime_ns``
    (:func:`dermctx.io.images.file_stamps`), one row per image id in order; without it the part
    records -1 (not checked on resume).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"image_id": pa.array([str(i) for i in image_ids], pa.string())}
    for j, name in enumerate(embedding_column_names(emb.shape[1])):
        columns[name] = pa.array(emb[:, j], pa.float32())
    for column, field in zip(_FILE_COLUMNS, ("size", "mtime_ns", "ctime_ns"), strict=True):
        values = np.full(len(image_ids), -1, np.int64) if files is None else files[field].to_numpy(np.int64)
        columns[column] = pa.array(values, pa.int64())
    columns["file_path"] = pa.array([""] * len(image_ids) if files is None else
                                    [str(v) for v in files["path"]], pa.string())
    table = pa.table(columns).replace_schema_metadata({_META_KEY: json.dumps(settings).encode()})
    store.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[5:10]) for p in _store_parts(store) if p.name[:5] == "part-" and p.name[5:10].isdigit()]
    # numbered after the last part, so that a part superseding an older one is read after it
    name = f"part-{max(numbers, default=-1) + 1:05d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = store / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, store / name)
    return store / name


def resume_store(store: Path, settings: dict[str, Any], files: pd.DataFrame | None = None) -> pd.DataFrame:
    """The embeddings already in ``store``, for a run with ``settings`` to continue.

    Returns an empty DataFrame when the store does not exist yet (or has no parts), else
    :func:`read_embeddings` of it. With ``files`` (``size`` and ``mtime_ns`` indexed by image id,
    the images as they are now), stored images whose file changed since are left out, so that
    they are embedded again, with a :class:`~dermctx.errors.DermctxWarning` naming them; images
    stored without a file stamp (by an older dermctx) are kept, with a warning.

    Raises
    ------
    ModelError
        ``store`` is a file, not a folder, or was made with other settings.
    """
    if store.exists() and store.is_file():
        raise ModelError(f"store {store} is a file; a store is a folder of part files "
                         "(give a new path, or read it with read_embeddings)")
    found = store_settings(store)
    if found is not None and settings_differences(found, settings):
        raise ModelError(
            f"store {store} was made with other settings "
            f"({settings_differences(found, settings)}); use a new store path"
        )
    if found is None:
        return pd.DataFrame()
    done, stored = _read_store(store)
    if files is None or not len(done):
        return done
    stamps = stored.loc[files.index.intersection(done.index)]
    unknown = stamps["file_size"] < 0
    changed = changed_files(stamps, files)
    if unknown.any():
        warnings.warn(f"store {store}: {int(unknown.sum())} stored image(s) have no file record (stored by an "
                      "older dermctx), so an edit of their files since cannot be seen; they are read back "
                      "as stored", DermctxWarning, stacklevel=3)
    if changed.any():
        ids = list(stamps.index[changed])
        warnings.warn(f"store {store}: {len(ids)} image file(s) changed (size, modification or status-change "
                      f"time, or another file path) or went missing since they were stored, e.g. {ids[:5]}; they "
                      "are embedded again "
                      "(the new part supersedes the old; a file that cannot be read is an error row)",
                      DermctxWarning, stacklevel=3)
        done = done.drop(index=ids)
    return done


def stored_files(path: str | PathLike[str]) -> pd.DataFrame:
    """Each stored image's ``file_size``, ``file_mtime_ns``, ``file_ctime_ns`` and ``file_path``
    when it was embedded (-1 / "": not recorded, parts written by an older dermctx), indexed by
    ``image_id``."""
    return _read_store(Path(path))[1]


def changed_files(stored: pd.DataFrame, now: pd.DataFrame) -> pd.Series:
    """Per image id of ``stored`` (:func:`stored_files`): True where the file now differs.

    ``now`` holds ``path``, ``size``, ``mtime_ns`` and ``ctime_ns``
    (:func:`dermctx.io.images.file_stamps`, -1 for a missing file) indexed by image id, covering
    ``stored``'s ids. A stamp not recorded (-1, "") is not compared; an image id whose row now
    names another file path counts as changed.
    """
    now = now.loc[stored.index]
    out = pd.Series(False, index=stored.index)
    for column, field in zip(_FILE_COLUMNS, ("size", "mtime_ns", "ctime_ns"), strict=True):
        recorded = stored[column] >= 0
        out |= recorded & (stored[column] != now[field])
    if "file_path" in stored.columns and "path" in now.columns:  # the row now names another file
        out |= (stored["file_path"] != "") & (stored["file_path"] != now["path"])
    return out


@renamed_parameters(store="path")
def read_embeddings(path: str | PathLike[str]) -> pd.DataFrame:
    """Read an embedding store written by :meth:`Embedder.embed`.

    Parameters
    ----------
    path : path
        The store folder (or a single Parquet part file). (``store=`` is a deprecated alias.)

    Returns
    -------
    DataFrame
        ``emb_*`` float32 columns indexed by ``image_id``, in the order the images were stored
        (an image stored twice, after its file changed: the later part). ``frame.attrs["dermctx"]``
        holds the settings that produced them (model, weights hash, image size, aspect, ...).

    Raises
    ------
    ModelError
        Naming the path or the part file: the path does not exist, is not a dermctx store, holds
        parts made with other settings, or a part is not readable Parquet, has its settings
        metadata damaged, lacks ``image_id``, repeats a column, or holds embedding values that
        are not numbers.
    """
    if not isinstance(path, (str, PathLike)):
        raise ModelError(f"expected an embedding store folder (a path), got {type(path).__name__}")
    return _read_store(Path(path))[0]


def _read_store(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`read_embeddings`, and each image file's ``file_size``, ``file_mtime_ns``, ``file_ctime_ns`` when
    it was embedded (-1: not recorded), both indexed by ``image_id``."""
    parts = _store_parts(store)
    if not parts:
        raise ModelError(f"{str(store)[:300]}: no embedding store here (expected a folder of part-*.parquet)")
    settings = store_settings(store)
    frames = [_read_part(p) for p in parts]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.drop_duplicates("image_id", keep="last").set_index("image_id")
    frame.index = pd.Index(frame.index.astype(object), name="image_id")
    files = frame[[*_FILE_COLUMNS, "file_path"]]
    frame = frame.drop(columns=[*_FILE_COLUMNS, "file_path"])
    frame.attrs["dermctx"] = settings
    return frame, files


def _read_part(part: Path) -> pd.DataFrame:
    """One store part: ``image_id`` (text) and float32 ``emb_*`` columns (ModelError naming it)."""
    import pyarrow.parquet as pq

    names = _read_schema(part).names
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup or "image_id" not in names:
        problem = f"repeats column(s) {dup}" if dup else "has no 'image_id' column"
        raise ModelError(f"{part}: {problem}; expected image_id and emb_0000, emb_0001, ...")
    try:
        frame = pq.read_table(part).to_pandas()
    except Exception as exc:  # a damaged body behind a readable footer
        raise ModelError(f"{part}: not a readable Parquet file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from exc
    ids = frame.pop("image_id")
    if ids.isna().any():
        raise ModelError(f"{part}: 'image_id' is missing on {int(ids.isna().sum())} row(s)")
    stamps = {c: frame.pop(c) if c in frame.columns else pd.Series(-1, index=frame.index) for c in _FILE_COLUMNS}
    file_path = frame.pop("file_path") if "file_path" in frame.columns else pd.Series("", index=frame.index)
    try:
        values = frame.astype(np.float32)
        for column, stamp in stamps.items():
            values[column] = stamp.fillna(-1).astype(np.int64)
        values["file_path"] = file_path.fillna("").astype(str).to_numpy(dtype=object)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{part}: embedding or file columns hold values that are not numbers "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    values.insert(0, "image_id", as_texts(ids).to_numpy(dtype=object))
    return values
