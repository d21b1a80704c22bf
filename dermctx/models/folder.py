"""Model folders: what ``save`` writes and what ``load`` trusts.

A saved model is a folder of data files (JSON, LightGBM text, safetensors) and ``manifest.json``
listing each file with its size and SHA-256. :func:`verify_folder` checks the manifest before any
file reaches LightGBM or safetensors: a truncated, bit-flipped, swapped or missing file is refused
with a :class:`~dermctx.ModelError` naming it (LightGBM aborts the whole process on some damaged
model files, so nothing after that point could catch the fault). :class:`JsonFields` reads the
JSON values with their types and lengths checked, so an edited value is refused by name instead of
surfacing later as an ``AttributeError`` or a silently different model. Nothing is unpickled and no
stored code is executed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dermctx.errors import ModelError

__all__ = [
    "MANIFEST",
    "SET_RANKER_FILES",
    "JsonFields",
    "load_tensors",
    "read_json",
    "verify_folder",
    "write_manifest",
]

MANIFEST = "manifest.json"
#: The files of a :class:`~dermctx.SetRanker` (weights, description): written by
#: ``SetRanker.save`` and, under the same names, by ``ContextRanker.save`` for its set model.
SET_RANKER_FILES: tuple[str, str] = ("set_ranker.safetensors", "set_ranker.json")
_FORMAT = "dermctx.model-folder/1"
#: JSON files larger than this are refused before parsing (a model's JSON is a few hundred KB).
MAX_JSON_BYTES = 64 * 2**20
_REQUIRED = object()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, files: Sequence[str], kind: str) -> None:
    """Write ``folder/manifest.json``: the format, the model ``kind`` and each file's size and SHA-256."""
    entries = {name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
               for name in files}
    (folder / MANIFEST).write_text(json.dumps({"format": _FORMAT, "kind": kind, "files": entries}, indent=1))


def read_json(path: Path) -> Any:
    """Parse a JSON file, refusing unreadable, oversized or malformed files with ``ModelError``."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ModelError(f"{path}: {size} bytes, more than a model file holds ({MAX_JSON_BYTES}); "
                             "expected a folder written by dermctx")
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: missing; expected a folder written by dermctx's save") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from exc


def load_tensors(path: Path) -> dict[str, Any]:
    """safetensors' tensors of ``path``; its parse errors as ``ModelError`` naming the file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError, and OSError
        raise ModelError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def verify_folder(folder: Path, kind: str, required: Sequence[str]) -> bool:
    """Check ``folder`` against its manifest. Returns False when there is no manifest (a folder
    saved before manifests existed; the caller decides what it still checks).

    Raises
    ------
    ModelError
        Naming the file: the manifest malformed or of another model kind, a required file not
        listed, a listed file missing, of another size or with another SHA-256.
    """
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ModelError(f"{folder}: missing or not a folder; expected a folder written by {kind}.save")
    if not path.is_file():
        return False
    fields = JsonFields(read_json(path), path)
    if fields.text("format") != _FORMAT or fields.text("kind") != kind:
        raise ModelError(f"{path}: a manifest of {fields.text('kind')!r} ({fields.text('format')!r}); "
                         f"expected {kind!r} ({_FORMAT!r})")
    files = fields.mapping("files")
    for name in required:
        if name not in files:
            raise ModelError(f"{path}: does not list {name}; the folder is incomplete or not a {kind}")
    for name, entry in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in (".", "..", MANIFEST):
            raise ModelError(f"{path}: lists {name!r}; expected plain file names in the folder")
        one = JsonFields(entry, path, where=f"files[{name!r}]")
        size, digest = one.integer("size", lo=0), one.text("sha256")
        file = folder / name
        if not file.is_file():
            raise ModelError(f"{file}: missing (listed in {MANIFEST}); copy the whole folder")
        if file.stat().st_size != size or sha256_file(file) != digest:
            raise ModelError(f"{file}: damaged or changed since it was saved (its size or SHA-256 differs "
                             f"from {MANIFEST}); save the model again")
    return True


class JsonFields:
    """Typed reads from one JSON object; a wrong type or length raises ``ModelError`` naming the
    file and the key."""

    def __init__(self, data: Any, path: Path, *, where: str = "") -> None:
        self.path, self.where = path, where
        if not isinstance(data, dict):
            raise ModelError(f"{self._name()}: expected a JSON object, got {type(data).__name__}")
        self.data = data

    def _name(self, key: str | None = None) -> str:
        inner = ".".join(x for x in (self.where, key) if x)
        return f"{self.path}" + (f": {inner!s}" if inner else "")

    def _bad(self, key: str, value: Any, expected: str) -> ModelError:
        shown = repr(value)
        return ModelError(f"{self._name(key)} is {shown[:80]}{'...' if len(shown) > 80 else ''}; "
                          f"expected {expected}")

    def get(self, key: str, default: Any = _REQUIRED) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise ModelError(f"{self._name(key)}: missing; the file does not describe a dermctx model")
            return default
        return self.data[key]

    def text(self, key: str, default: Any = _REQUIRED, *, optional: bool = False) -> Any:
        v = self.get(key, default)
        if isinstance(v, str) or (optional and v is None) or (v is default and default is not _REQUIRED):
            return v
        raise self._bad(key, v, "text" + (" or null" if optional else ""))

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        v = self.get(key, default)
        if isinstance(v, bool):
            return v
        raise self._bad(key, v, "true or false")

    def number(self, key: str, default: Any = _REQUIRED, *, lo: float = -math.inf, hi: float = math.inf) -> float:
        v = self.get(key, default)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi:
            return float(v)
        raise self._bad(key, v, f"a finite number in [{lo}, {hi}]")

    def integer(self, key: str, default: Any = _REQUIRED, *, lo: int = -(2**63)) -> int:
        v = self.get(key, default)
        if isinstance(v, int) and not isinstance(v, bool) and v >= lo:
            return v
        raise self._bad(key, v, f"a whole number >= {lo}")

    def numbers(self, key: str, default: Any = _REQUIRED, *, length: int | None = None) -> list[float]:
        v = self.get(key, default)
        if (isinstance(v, list) and (length is None or len(v) == length)
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            return [float(x) for x in v]
        raise self._bad(key, v, "a list of finite numbers" + (f" of length {length}" if length is not None else ""))

    def names(self, key: str, default: Any = _REQUIRED) -> list[str]:
        v = self.get(key, default)
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return list(v)
        raise self._bad(key, v, "a list of column names")

    def mapping(self, key: str, default: Any = _REQUIRED) -> dict[str, Any]:
        v = self.get(key, default)
        if isinstance(v, dict):
            return v
        raise self._bad(key, v, "a JSON object")
