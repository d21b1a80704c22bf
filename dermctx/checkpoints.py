"""Model weights on disk: dermctx checkpoints, local state dicts, and pretrained weights offline.

:func:`save_checkpoint` writes a network's weights as ``.safetensors`` with the metadata
(model name, input size, normalisation, class names, settings) that :func:`checkpoint_metadata`
reads back and :class:`dermctx.Embedder` and :func:`dermctx.train_cnn` use.
:func:`load_backbone_weights` loads a ``.safetensors`` file or a plain state-dict ``.pth`` into a
timm model: ``.pth`` files are read with ``torch.load(weights_only=True)``, never unpickled.
:func:`check_pretrained_available` fails at once, with advice, when timm's pretrained weights are
neither cached nor downloadable (offline), instead of after a minute of hub retries.
:func:`state_dict_hash` is the short identity of a set of weights that embedding stores record.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from dermctx.errors import ModelError

__all__ = [
    "check_pretrained_available",
    "checkpoint_metadata",
    "load_backbone_weights",
    "save_checkpoint",
    "state_dict_hash",
]

_CKPT_PREFIX = "dermctx."  # prefix of dermctx's keys in a safetensors header


# --- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(
    model: Any,
    path: str | PathLike[str],
    *,
    model_name: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write a model's weights as ``.safetensors`` with the metadata :class:`Embedder` reads.

    Parameters
    ----------
    model : torch.nn.Module or dict of tensors
        The network (or its state dict).
    path : path
        Output file; ``.safetensors`` is appended if missing.
    model_name : str
        The timm architecture name (``timm.create_model(model_name)`` must rebuild it).
    image_size : int
        Input side in pixels the model was trained at.
    mean, std : sequence of 3 floats
        RGB normalisation on the 0-1 scale.
    class_names : sequence of str, optional
        Names of the classifier outputs, in order.
    settings : dict, optional
        Other settings that produced the weights (JSON-serialisable; e.g. the trainer's), stored
        as ``dermctx.settings`` and returned by :func:`checkpoint_metadata` as a dict.

    Returns
    -------
    Path of the written file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    meta = {
        f"{_CKPT_PREFIX}model": str(model_name),
        f"{_CKPT_PREFIX}image_size": str(int(image_size)),
        f"{_CKPT_PREFIX}mean": json.dumps([float(v) for v in mean]),
        f"{_CKPT_PREFIX}std": json.dumps([float(v) for v in std]),
        f"{_CKPT_PREFIX}class_names": json.dumps(list(class_names) if class_names else []),
    }
    if settings:
        meta[f"{_CKPT_PREFIX}settings"] = json.dumps(settings, sort_keys=True, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def checkpoint_metadata(path: str | PathLike[str]) -> dict[str, Any]:
    """The dermctx metadata of a ``.safetensors`` checkpoint (empty for other files).

    Returns a dict with any of ``model`` (str), ``image_size`` (int), ``mean``, ``std`` (lists of
    3 floats), ``class_names`` (list of str) and ``settings`` (dict).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:
        raise ModelError(f"{path}: cannot read safetensors header ({exc})") from exc
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith(_CKPT_PREFIX):
            continue
        name = key[len(_CKPT_PREFIX):]
        out[name] = int(value) if name == "image_size" else (
            json.loads(value) if name in ("mean", "std", "class_names", "settings") else value)
    return out


def _load_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file or a state-dict ``.pth`` (``weights_only=True``)."""
    import torch

    if not path.exists():
        raise ModelError(f"checkpoint {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"checkpoint {path}: cannot be loaded with torch.load(weights_only=True) ({exc}); "
            "expected a .safetensors file or a plain state dict (.pth)"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint {path}: expected a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone_weights(net: Any, path: str | PathLike[str]) -> None:
    """Load the weights of checkpoint ``path`` into the timm model ``net``, in place.

    ``path`` is a ``.safetensors`` file or a state-dict ``.pth`` (read with
    ``torch.load(weights_only=True)``; a ``state_dict``/``model``/``model_state_dict``/
    ``state_dict_ema`` entry is unwrapped and a ``module.`` prefix dropped). The checkpoint's
    classifier weights (``net.pretrained_cfg["classifier"]``) are ignored, and a classifier of
    ``net`` missing from the checkpoint keeps its new weights.

    Raises
    ------
    ModelError
        Naming the file: missing, unreadable, not a state dict, or not fitting ``net`` (missing or
        unexpected keys, wrong shapes).
    """
    path = Path(path)
    state = _load_state_dict(path)
    head = set()
    classifier = getattr(net, "pretrained_cfg", {}).get("classifier")
    heads = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in heads:
        head |= {k for k in state if k == name or k.startswith(name + ".")}
    state = {k: v for k, v in state.items() if k not in head}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not fit model: {exc}") from exc
    # a model with a classifier (the trainer's) starts that classifier new
    missing = [k for k in missing if not any(k == h or k.startswith(h + ".") for h in heads)]
    if missing or unexpected:
        raise ModelError(
            f"checkpoint {path} does not fit the model: missing keys {list(missing)[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {list(unexpected)[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )


def state_dict_hash(model: Any) -> str:
    """A short SHA-256 identity of a model's weights (names, dtypes, shapes and values)."""
    import torch

    state = model.state_dict() if hasattr(model, "state_dict") else model
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# --- pretrained weights without a network -----------------------------------------------------


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` resolves and accepts a TCP connection within ``timeout`` seconds."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(2 * timeout)
    return bool(result and result[0])


def _pretrained_cached(model_name: str) -> bool:
    """Whether timm would find ``model_name``'s pretrained weights without downloading."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        return False
    file = getattr(cfg, "file", None)
    if file and Path(file).exists():
        return True
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        filename = getattr(cfg, "hf_hub_filename", None)
        names: list[str] = [filename] if filename else []
        names += ["model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(hit, str):
                return True
    url = getattr(cfg, "url", None)
    if url:
        import torch.hub

        if (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists():
            return True
    return False


def check_pretrained_available(model_name: str) -> None:
    """Fail at once (not after a minute of hub retries) when weights can be neither read nor fetched."""
    if _pretrained_cached(model_name):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "DERMCTX_OFFLINE", ""
    ).lower() in ("1", "true", "yes")
    if offline or not _host_reachable("huggingface.co"):
        why = "offline mode is set (HF_HUB_OFFLINE)" if offline else "huggingface.co cannot be reached"
        raise ModelError(
            f"pretrained weights for {model_name!r} are not in the local cache and {why}. "
            "Supply weights by one of: run once with network access to fill the cache "
            "(HF_HOME, default ~/.cache/huggingface) and copy it here; pass "
            "checkpoint='weights.safetensors' (or a state-dict .pth); or pass pretrained=False "
            "for random weights (tests only)"
        )
