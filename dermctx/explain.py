"""Where a lesion CNN looked: Grad-CAM, guided backpropagation, and the most-confused label pairs.

The interpretation figures of Mishra et al. (lesion CNNs explained with Grad-CAM and guided
backpropagation, and their Table 3 of most-confused diagnosis pairs), for any timm CNN or hand-made
torch CNN:

* :func:`grad_cam` -- Selvaraju et al. (2017), "Grad-CAM: Visual Explanations from Deep Networks
  via Gradient-based Localization": a coarse (H, W) map of the image regions whose features raised
  the chosen class score;
* :func:`guided_backprop` -- Springenberg et al. (2015), "Striving for Simplicity: The All
  Convolutional Net": a fine (H, W, 3) map of the input pixels to which the class score is
  positively sensitive;
* :func:`overlay`, :func:`save_explanations`, :func:`explain_checkpoint` -- PNG figures, for one
  image or a dermctx ``.safetensors`` checkpoint and a list of image files;
* :func:`confusion_pairs` -- which label pairs a classifier confuses most, both directions summed.

Every function leaves the model as it found it: train/eval mode of every module, ``requires_grad``
of every parameter, no hooks, no ``.grad``. A map shows where the model's evidence for a class
lies, not whether the lesion is that class (see ``docs/explain.md``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from dermctx._deprecation import renamed_parameters
from dermctx.errors import DermctxError, ImageError, ModelError, error_record, errors_frame
from dermctx.io.images import load_image

__all__ = [
    "GUIDED_FUNCTIONS",
    "GUIDED_MODULES",
    "confusion_pairs",
    "explain_checkpoint",
    "grad_cam",
    "gradcam_overlay",
    "guided_backprop",
    "jet",
    "load_classifier",
    "overlay",
    "save_explanations",
]

#: Activation modules whose backward pass :func:`guided_backprop` replaces (matched by class name,
#: so timm's own classes are covered without importing them): torch's ReLU family and smooth
#: ReLU-like units, and timm's ``Swish``, ``Mish``, ``HardSwish``, ``GELU``... (and ``*Me`` twins).
GUIDED_MODULES: frozenset[str] = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
    "Hardswish",  # torch.nn
    "Swish", "SwishMe", "MishMe", "HardSwish", "HardSwishMe", "HardMish", "HardMishMe",
    "GELUTanh", "QuickGELU",  # timm.layers
})

#: Functional activations :func:`guided_backprop` intercepts when a model calls them directly
#: (``F.relu(x)``, ``x.relu()``, ``torch.relu_(x)``...) outside the modules above.
GUIDED_FUNCTIONS: tuple[str, ...] = (
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu",
    "gelu", "silu", "mish", "hardswish",
)


# --- inputs and model state -------------------------------------------------------------------


def _as_batch(image: Any, model: nn.Module) -> torch.Tensor:
    """``image`` (3, H, W) or (1, 3, H, W) float tensor -> a (1, 3, H, W) float32 copy on the model's device."""
    if not isinstance(image, torch.Tensor):
        raise ImageError(f"image must be a torch.Tensor of shape (3, H, W) or (1, 3, H, W), "
                         f"got {type(image).__name__}")
    if not image.is_floating_point():
        raise ImageError(f"image must be a float tensor already normalised with the model's mean/std, "
                         f"got dtype {image.dtype} (convert and normalise first)")
    x = image.unsqueeze(0) if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ImageError(f"image must have shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if not torch.isfinite(x).all():
        raise ImageError("image contains NaN or infinite values")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return x.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; every flag restored afterwards.

    Parameters do not require grad inside, so no ``.grad`` is created on the model; gradients
    reach only the (copied) input image and the hooked tensors.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


def _logits(out: Any, who: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{who} must return class logits of shape (1, n_classes), got {shape}")
    return out


def _target(target_class: Any, logits: torch.Tensor) -> int:
    k = logits.shape[1]
    if target_class is None:
        return int(logits[0].argmax())
    if isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)) or not (
        0 <= int(target_class) < k
    ):
        raise ModelError(f"target_class must be an integer class index in [0, {k}), "
                         f"got {target_class!r}")
    return int(target_class)


def _resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError as exc:
            raise ModelError(f"layer {layer!r} is not a submodule of the model; "
                             "expected a name from dict(model.named_modules())") from exc
    if isinstance(layer, nn.Module) and any(m is layer for m in model.modules()):
        return layer
    if isinstance(layer, nn.Module):
        raise ModelError(f"layer {type(layer).__name__} is not a submodule of the model; expected "
                         "one of model.modules() or its dotted name")
    raise ModelError(f"layer must be a submodule of the model or its dotted name, got "
                     f"{type(layer).__name__}")


def _is_timm_cnn(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(
        getattr(model, "forward_head", None))


# --- Grad-CAM ---------------------------------------------------------------------------------


def _grad_cam(model: nn.Module, x: torch.Tensor, target_class: Any,
              layer: nn.Module | str | None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM map (H, W) and the logits (n_classes,); ``x`` is (1, 3, H, W), grad-enabled."""
    acts: list[torch.Tensor] = []  # feature maps, one per call of the hooked layer(s), (1, C, h, w)
    grads: dict[int, torch.Tensor] = {}  # call index -> d score / d feature map
    handles: list[Any] = []

    def keep(output: Any, who: str) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ModelError(f"{who} gave {shape}; Grad-CAM needs a (1, C, h, w) convolutional "
                             "feature map (pass layer= a convolutional layer)")
        i = len(acts)
        acts.append(output.detach().clone())  # before any in-place change downstream
        if output.requires_grad:
            handles.append(output.register_hook(lambda g: grads.__setitem__(i, g.detach())))

    try:
        if layer is not None:
            module = _resolve_layer(model, layer)
            handles.append(module.register_forward_hook(
                lambda m, i, o: keep(o, f"layer {type(m).__name__}")))
            out = model(x)
            where = f"layer {layer if isinstance(layer, str) else type(module).__name__}"
        elif _is_timm_cnn(model):
            feats = model.forward_features(x)  # type: ignore[operator]
            keep(feats, "model.forward_features")
            out = model.forward_head(feats)  # type: ignore[operator]
            where = "model.forward_features"
        else:
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    handles.append(m.register_forward_hook(lambda m, i, o: keep(o, "a Conv2d")))
            out = model(x)
            where = "the last nn.Conv2d"
        logits = _logits(out, "the model")
        if not acts:
            raise ModelError(f"{where} was never run in the model's forward pass; "
                             "pass layer= a module the forward pass uses")
        target = _target(target_class, logits)
        logits[0, target].backward()
    finally:
        for h in handles:
            h.remove()
    last = len(acts) - 1
    if last not in grads:
        raise ModelError(f"the class score does not depend on {where}; pass layer= a module "
                         "between the input and the classifier")
    a, g = acts[last], grads[last]  # (1, C, h, w) each
    weights = g.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1): global-average-pooled gradients
    cam = (weights * a).sum(dim=1, keepdim=True).relu()  # (1, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    cam = cam / top if top > 0 else torch.zeros_like(cam)
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32), logits.detach()[0]


def grad_cam(
    model: nn.Module,
    image: torch.Tensor,
    *,
    target_class: int | None = None,
    layer: nn.Module | str | None = None,
) -> np.ndarray:
    """Grad-CAM map of one image (Selvaraju et al. 2017).

    The feature map ``A`` (C, h, w) of a convolutional layer is weighted by the spatial mean of
    the gradient of the class logit with respect to it, summed over channels and rectified:
    ``relu(sum_c mean_ij(d y_c / d A_cij) * A_c)``, then upsampled (bilinear) to the input size
    and divided by its maximum.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape (1, n_classes): any timm CNN, or any torch CNN.
    image : torch.Tensor, float, shape (3, H, W) or (1, 3, H, W)
        One image, already normalised as the model expects (not modified).
    target_class : int, optional
        Index of the class to explain; default the predicted (argmax) class.
    layer : torch.nn.Module or str, optional
        The layer whose output is the feature map (a submodule or its dotted name, e.g.
        ``"conv_head"``). Default: for a timm model (one with ``forward_features`` and
        ``forward_head``) the output of ``forward_features`` -- the last feature map, after its
        normalisation and activation, computed as ``forward_head(forward_features(x))``;
        for any other model the output of the last ``nn.Conv2d`` run in the forward pass (before
        any normalisation or activation that follows it). A layer run several times: its last call.

    Returns
    -------
    ndarray, float32, shape (H, W)
        In [0, 1]; 1 at the strongest evidence for ``target_class``. All zeros when nothing at
        that layer raises the class score.

    Raises
    ------
    ImageError
        ``image`` is not a finite float tensor of shape (3, H, W) or (1, 3, H, W).
    ModelError
        ``target_class`` is out of range, ``layer`` is not a submodule or gives no 4-D feature
        map, or the model does not return (1, n_classes) logits.

    Notes
    -----
    Computed in eval mode with the parameters frozen, via a forward hook on the layer (or the
    ``forward_features`` output) and ``Tensor.register_hook`` on its output; all hooks are
    removed, each module's train/eval mode and each parameter's ``requires_grad`` restored, and no
    ``.grad`` is written to the parameters, also when an error is raised.
    """
    x = _as_batch(image, model)
    with _frozen_eval(model):
        cam, _ = _grad_cam(model, x, target_class, layer)
    return cam


# --- guided backpropagation -------------------------------------------------------------------


class _GuidedGrad(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through (placed before an activation)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def _functional_table() -> dict[Any, tuple[Callable[..., Any], bool]]:
    """Functional activation -> (its out-of-place version, whether it always works in place)."""
    table: dict[Any, tuple[Callable[..., Any], bool]] = {}
    for name in GUIDED_FUNCTIONS:
        inplace = name.endswith("_")
        base = name.rstrip("_")
        plain = getattr(F, base, None) or getattr(torch, base)
        for owner in (F, torch, torch.Tensor, torch._C._nn):
            fn = getattr(owner, name, None)
            if fn is not None:
                table[fn] = (plain, inplace)
    return table


class _GuidedFunctions(TorchFunctionMode):
    """Apply the guided rule to functional activations called outside a hooked activation module."""

    def __init__(self, depth: list[int]) -> None:
        super().__init__()
        self.depth = depth  # [n]: how many hooked activation modules are running now
        self.table = _functional_table()

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        spec = self.table.get(func)
        if spec is None or self.depth[0] or (not args and "input" not in kwargs):
            return func(*args, **kwargs)
        plain, inplace = spec
        try:  # Python functionals (F.relu, F.silu...): bind to find `input` and `inplace`
            bound = inspect.signature(plain).bind(*args, **kwargs)
            x = bound.arguments.pop("input")
            inplace = inplace or bool(bound.arguments.pop("inplace", False))
            rest, extra = bound.args, dict(bound.kwargs)
            extra.pop("input", None)
            extra.pop("inplace", None)
        except (TypeError, ValueError):  # builtins (torch.relu, F.gelu, Tensor.relu_): input first
            x, rest, extra = args[0], tuple(args[1:]), kwargs
        if not isinstance(x, torch.Tensor) or not x.requires_grad:
            return func(*args, **kwargs)
        out = plain(_GuidedGrad.apply(x), *rest, **extra)
        return x.copy_(out) if inplace else out


def _clamp_grad_input(module: nn.Module, grad_input: Any, grad_output: Any) -> tuple[Any, ...]:
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


@contextmanager
def _guided(model: nn.Module) -> Iterator[None]:
    """Guided backward rule on every activation module (full backward hooks) and functional call."""
    depth = [0]
    handles: list[Any] = []
    inplace: list[tuple[nn.Module, bool]] = []

    def enter(m: nn.Module, args: Any) -> None:
        depth[0] += 1

    def leave(m: nn.Module, args: Any, out: Any) -> None:
        depth[0] -= 1

    try:
        for m in model.modules():
            if type(m).__name__ not in GUIDED_MODULES:
                continue
            if isinstance(getattr(m, "inplace", None), bool):  # hooks cannot wrap in-place outputs
                inplace.append((m, bool(m.inplace)))
                setattr(m, "inplace", False)  # noqa: B010 (typed as Tensor | Module on nn.Module)
            handles.append(m.register_full_backward_hook(_clamp_grad_input))
            handles.append(m.register_forward_pre_hook(enter))
            handles.append(m.register_forward_hook(leave, always_call=True))
        with _GuidedFunctions(depth):
            yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in inplace:
            setattr(m, "inplace", flag)  # noqa: B010


def _guided_gradient(model: nn.Module, x: torch.Tensor, target_class: Any) -> torch.Tensor:
    """Signed guided-backprop gradient (3, H, W) of the class logit w.r.t. ``x`` (1, 3, H, W)."""
    with _guided(model):
        logits = _logits(model(x), "the model")
        logits[0, _target(target_class, logits)].backward()
    if x.grad is None:
        raise ModelError("the class score does not depend on the image")
    return x.grad[0].detach()


def guided_backprop(
    model: nn.Module,
    image: torch.Tensor,
    *,
    target_class: int | None = None,
) -> np.ndarray:
    """Guided-backpropagation saliency of one image (Springenberg et al. 2015).

    The gradient of the class logit with respect to the input pixels, where every ReLU-like
    activation passes back only positive gradients: at each activation the gradient with respect
    to its input is clamped to >= 0. For ReLU this is exactly the guided rule (only positive
    gradients through positive activations); for smooth units (SiLU/Swish, GELU, Mish,
    Hardswish, ELU...) it is the same rule applied to the unit's own derivative.

    Covered: the activation modules named in :data:`GUIDED_MODULES` (torch's and timm's, matched
    by class name), through full backward hooks, with their ``inplace`` flag switched off for the
    call; and the functional calls named in :data:`GUIDED_FUNCTIONS` (``F.relu``, ``x.relu()``,
    ``torch.relu_``, ``F.silu``, ``F.gelu``...) made anywhere else in ``forward``, through a
    ``TorchFunctionMode``. Not covered: activations written out as arithmetic (e.g.
    ``x * torch.sigmoid(x)``), and gates such as the sigmoid of squeeze-excitation, which are
    left as they are on purpose.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape (1, n_classes).
    image : torch.Tensor, float, shape (3, H, W) or (1, 3, H, W)
        One image, already normalised as the model expects (not modified).
    target_class : int, optional
        Class to explain; default the predicted (argmax) class.

    Returns
    -------
    ndarray, float32, shape (H, W, 3)
        ``abs(gradient)`` per RGB channel divided by its maximum, in [0, 1] (all zeros for a zero
        gradient).

    Raises
    ------
    ImageError, ModelError
        As :func:`grad_cam`.

    Notes
    -----
    Eval mode, frozen parameters; hooks removed and every flag (train/eval, ``requires_grad``,
    ``inplace``) restored afterwards, also on error; no ``.grad`` on the parameters.
    """
    x = _as_batch(image, model)
    with _frozen_eval(model):
        grad = _guided_gradient(model, x, target_class)  # (3, H, W)
    sal = grad.abs().permute(1, 2, 0)  # (H, W, 3)
    top = float(sal.max())
    sal = sal / top if top > 0 else torch.zeros_like(sal)
    return sal.cpu().numpy().astype(np.float32)


# --- figures ----------------------------------------------------------------------------------


def jet(values: np.ndarray) -> np.ndarray:
    """A 'jet'-like colormap: values in [0, 1], any shape (...) -> RGB floats in [0, 1], (..., 3).

    Dark blue (0) -> blue -> cyan -> yellow -> red -> dark red (1), piecewise linear.
    """
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]  # (..., 1)
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # where R, G, B peak
    return np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)  # (..., 3)


def overlay(image_rgb_uint8: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap, coloured with :func:`jet`, over an RGB image.

    Parameters
    ----------
    image_rgb_uint8 : ndarray, uint8, shape (H, W, 3)
    heatmap : ndarray, float, shape (H, W)
        Values in [0, 1] (e.g. :func:`grad_cam`'s output).
    alpha : float
        Weight of the colour map, in [0, 1]: ``(1 - alpha) * image + alpha * 255 * jet(heatmap)``.

    Returns
    -------
    ndarray, uint8, shape (H, W, 3)

    Raises
    ------
    DermctxError
        Wrong dtype or shapes, a heatmap with NaN or values outside [0, 1], or ``alpha`` outside
        [0, 1].
    """
    img = np.asarray(image_rgb_uint8)
    heat = np.asarray(heatmap)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DermctxError(f"image_rgb_uint8 must be a uint8 array of shape (H, W, 3), got "
                           f"{img.dtype} {img.shape}")
    if heat.shape != img.shape[:2]:
        raise DermctxError(f"heatmap must have shape {img.shape[:2]} (the image's H, W), got "
                           f"{heat.shape}" + (" (reduce a (H, W, 3) map with .max(axis=2))"
                                              if heat.shape == img.shape else ""))
    heat = heat.astype(np.float32)
    if not np.isfinite(heat).all() or heat.min(initial=0) < -1e-6 or heat.max(initial=0) > 1 + 1e-6:
        raise DermctxError("heatmap must hold finite values in [0, 1] (normalise it first)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise DermctxError(f"alpha must be a number in [0, 1], got {alpha!r}")
    out = (1 - alpha) * img.astype(np.float32) + alpha * 255.0 * jet(heat)  # (H, W, 3)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _normalise(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (S, S, 3) -> float32 tensor (3, S, S), ``(rgb / 255 - mean) / std``."""
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    if m.shape != (3,) or s.shape != (3,) or not np.isfinite(m).all() or not (s > 0).all():
        raise ModelError(f"mean and std must be 3 RGB values on the 0-1 scale (std > 0), got "
                         f"mean={list(np.ravel(m))}, std={list(np.ravel(s))}")
    x = (rgb.astype(np.float32) / 255.0 - m) / s  # (S, S, 3)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (3, S, S)


def _write_explanations(model: nn.Module, rgb: np.ndarray, x: torch.Tensor, out_dir: Path,
                        name: str, target_class: Any, layer: nn.Module | str | None
                        ) -> tuple[dict[str, Path], int, torch.Tensor]:
    """Write both PNGs; returns their paths, the explained class and the logits (n_classes,)."""
    from PIL import Image

    xb = _as_batch(x, model)
    with _frozen_eval(model):
        cam, logits = _grad_cam(model, xb, target_class, layer)
        target = _target(target_class, logits[None])
        xb.grad = None
        grad = _guided_gradient(model, xb, target)  # (3, H, W)
    sal = grad.abs().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    sal = sal / sal.max() if sal.max() > 0 else np.zeros_like(sal)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"gradcam": out_dir / f"{name}_gradcam.png", "guided": out_dir / f"{name}_guided.png"}
    Image.fromarray(overlay(rgb, cam)).save(paths["gradcam"])
    Image.fromarray(np.rint(sal * 255).astype(np.uint8)).save(paths["guided"])
    return paths, target, logits


def save_explanations(
    model: nn.Module,
    image_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    target_class: int | None = None,
    prefix: str | None = None,
    layer: nn.Module | str | None = None,
) -> dict[str, Path]:
    """Write the Grad-CAM overlay and the guided-backprop saliency of one image file as PNGs.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (see :func:`grad_cam`).
    image_path : path
        Any image :func:`dermctx.load_image` reads; loaded at ``image_size`` (centre crop).
    out_dir : path
        Folder for the PNGs (created if missing).
    image_size : int
        Side in pixels the model expects.
    mean, std : sequence of 3 floats
        RGB normalisation on the 0-1 scale (``(rgb / 255 - mean) / std``).
    target_class : int, optional
        Class to explain; default the predicted class.
    prefix : str, optional
        File name prefix; default the image's stem.
    layer : torch.nn.Module or str, optional
        Grad-CAM layer (see :func:`grad_cam`).

    Returns
    -------
    dict
        ``{"gradcam": out_dir / "<prefix>_gradcam.png", "guided": out_dir / "<prefix>_guided.png"}``,
        each an RGB PNG of ``image_size`` x ``image_size`` pixels: the image with the Grad-CAM map
        over it (:func:`overlay`), and the guided-backprop saliency (``abs`` per channel,
        max-scaled to 0-255).

    Raises
    ------
    ImageError
        The image file is missing or unreadable (named in the message).
    ModelError
        Bad ``mean``/``std``/``target_class``/``layer``, or a model that does not return logits.
    """
    rgb = load_image(image_path, image_size)  # (S, S, 3) uint8
    x = _normalise(rgb, mean, std)
    name = prefix if prefix is not None else Path(image_path).stem
    paths, _, _ = _write_explanations(model, rgb, x, Path(out_dir), name, target_class, layer)
    return paths


def _num_classes(state: dict[str, torch.Tensor], classifier: Any) -> int | None:
    names = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in [*names, "classifier", "fc", "head.fc", "head"]:
        weight = state.get(f"{name}.weight")
        if weight is not None and weight.ndim >= 2:
            return int(weight.shape[0])
    return None


def _load_model(checkpoint: Path) -> tuple[nn.Module, dict[str, Any], int]:
    """Rebuild the timm classifier of a dermctx ``.safetensors`` checkpoint (eval mode, CPU)."""
    import timm
    from safetensors.torch import load_file

    from dermctx.embed import checkpoint_metadata

    if checkpoint.is_dir():
        raise ModelError(f"checkpoint {checkpoint}: is a folder; pass one checkpoint file, e.g. "
                         f"{checkpoint / 'fold0.safetensors'}")
    if not checkpoint.is_file():
        raise ModelError(f"checkpoint {checkpoint}: no such file")
    meta = checkpoint_metadata(checkpoint)
    if not meta.get("model"):
        raise ModelError(f"checkpoint {checkpoint}: expected a dermctx .safetensors checkpoint "
                         "with a model name (written by dermctx.embed.save_checkpoint)")
    try:
        state = load_file(str(checkpoint))
    except Exception as exc:
        raise ModelError(f"checkpoint {checkpoint}: not a readable safetensors file ({exc})") from exc
    name = str(meta["model"])
    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    n = len(meta.get("class_names") or []) or _num_classes(state, getattr(cfg, "classifier", None))
    if not n:
        raise ModelError(f"checkpoint {checkpoint}: no class_names and no classifier weights; "
                         "Grad-CAM needs a classifier (save the model with its head)")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=n)
    except Exception as exc:
        raise ModelError(f"checkpoint {checkpoint}: cannot build timm model {name!r} ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {checkpoint} does not fit {name!r} with {n} classes: {exc}"
                         ) from exc
    return model.eval(), meta, n


@renamed_parameters(checkpoint="path")
def load_classifier(path: str | PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The timm classifier of a dermctx ``.safetensors`` checkpoint ``path`` (eval mode, CPU) and
    its metadata. (``checkpoint=`` is a deprecated alias of ``path=``.)

    Raises :class:`ModelError` naming the file when it is missing, not a dermctx checkpoint, or
    does not fit its model.
    """
    model, meta, _ = _load_model(Path(path))
    return model, meta


def gradcam_overlay(model: nn.Module, meta: dict[str, Any], image: Any, *,
                    target_class: int | None = None, size: int | None = None) -> np.ndarray:
    """Grad-CAM overlay of one image for a checkpoint's model: uint8 (S, S, 3).

    ``image`` is anything :func:`dermctx.load_image` reads, loaded at the checkpoint's image
    size (or ``size``) and normalised with its mean and std; ``target_class`` defaults to
    "melanoma" when the checkpoint names its classes, else the predicted class.
    """
    from dermctx.io.images import load_image

    side = int(size or meta.get("image_size") or 224)
    rgb = load_image(image, side)
    names = list(meta.get("class_names") or [])
    if target_class is None and "melanoma" in names:
        target_class = names.index("melanoma")
    x = _normalise(rgb, meta.get("mean") or (0.485, 0.456, 0.406), meta.get("std") or (0.229, 0.224, 0.225))
    return overlay(rgb, grad_cam(model, x, target_class=target_class))


def explain_checkpoint(
    checkpoint: str | PathLike[str],
    image_paths: str | PathLike[str] | Sequence[str | PathLike[str]],
    out_dir: str | PathLike[str],
    *,
    target_class: int | None = None,
    layer: str | None = None,
    image_size: int | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grad-CAM and guided-backprop PNGs for image files, from a dermctx classifier checkpoint.

    The model is rebuilt from the checkpoint's metadata (:func:`dermctx.embed.checkpoint_metadata`:
    timm ``model`` name, ``image_size``, ``mean``, ``std``, ``class_names``) as
    ``timm.create_model(model, pretrained=False, num_classes=len(class_names))`` (or the row count
    of the checkpoint's classifier weights when it has no class names), and its weights are loaded
    with ``safetensors.torch.load_file`` (nothing is unpickled). Each image is explained as by
    :func:`save_explanations`.

    Parameters
    ----------
    checkpoint : path
        A ``.safetensors`` file written by :func:`dermctx.embed.save_checkpoint`, with the head.
    image_paths : path or sequence of paths
        Image files (any :func:`dermctx.load_image` reads).
    out_dir : path
        Folder for ``<stem>_gradcam.png`` and ``<stem>_guided.png`` (``<stem>_<row>_...`` for a
        stem already used by an earlier image).
    target_class : int, optional
        Class to explain in every image; default each image's predicted class.
    layer : str, optional
        Grad-CAM layer name (see :func:`grad_cam`).
    image_size : int, optional
        Input side in pixels; default the checkpoint's.
    device : str
        Torch device to run on.

    Returns
    -------
    paths : DataFrame
        One row per explained image: ``image_id`` (file stem), ``row`` (0-based input position),
        ``path``, ``target_class``, ``target_name`` (from ``class_names``, else the index as text),
        ``probability`` (softmax of the logits at ``target_class``; sigmoid for one output),
        ``gradcam``, ``guided`` (the written PNG paths).
    errors : DataFrame
        The errors table (:func:`dermctx.errors.errors_frame`): one row per image that could not
        be read (stage ``"load"``) or explained (stage ``"explain"``).
        ``len(paths) + len(errors) == len(image_paths)``.

    Raises
    ------
    ModelError
        The checkpoint is missing, not a dermctx checkpoint, or does not fit its model; no image
        size is known; bad ``target_class``.
    """
    checkpoint = Path(checkpoint)
    model, meta, n_classes = _load_model(checkpoint)
    model = model.to(device)
    size = image_size or meta.get("image_size")
    if not size:
        raise ModelError(f"checkpoint {checkpoint} records no image_size; pass image_size=")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean: Sequence[float] = meta.get("mean") or cfg.get("mean") or ()
    std: Sequence[float] = meta.get("std") or cfg.get("std") or ()
    names = list(meta.get("class_names") or [])
    if target_class is not None:
        _target(target_class, torch.zeros(1, n_classes))
    if layer is not None:
        _resolve_layer(model, layer)
    items = [image_paths] if isinstance(image_paths, (str, PathLike)) else list(image_paths)
    out, rows, errors, used = Path(out_dir), [], [], set()
    for row, item in enumerate(items):
        path = Path(item)
        stem = path.stem
        try:
            rgb = load_image(path, int(size))
        except ImageError as exc:
            errors.append(error_record(stem, row, str(path), "load", exc))
            continue
        name = stem if stem not in used else f"{stem}_{row}"
        used.add(name)
        try:
            x = _normalise(rgb, mean, std)
            paths, target, logits = _write_explanations(model, rgb, x, out, name, target_class, layer)
        except DermctxError as exc:
            errors.append(error_record(stem, row, str(path), "explain", exc))
            continue
        probs = logits.float().softmax(0) if logits.numel() > 1 else logits.float().sigmoid()
        rows.append({
            "image_id": stem, "row": row, "path": str(path), "target_class": target,
            "target_name": names[target] if target < len(names) else str(target),
            "probability": float(probs[target]),
            "gradcam": paths["gradcam"], "guided": paths["guided"],
        })
    columns = ["image_id", "row", "path", "target_class", "target_name", "probability", "gradcam",
               "guided"]
    return pd.DataFrame(rows, columns=columns), errors_frame(errors)


# --- confusion pairs --------------------------------------------------------------------------


def confusion_pairs(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> pd.DataFrame:
    """The label pairs a classifier confuses most, both directions summed (Mishra et al., Table 3).

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        True and predicted labels (any hashable values, e.g. diagnosis names).
    labels : sequence, optional
        The label vocabulary and its order; default the sorted union of ``y_true`` and ``y_pred``.

    Returns
    -------
    DataFrame
        One row per unordered pair with at least one confusion: ``label_a``, ``label_b`` (in the
        order of ``labels``), ``a_as_b`` (true ``label_a`` predicted ``label_b``), ``b_as_a``,
        ``total`` (their sum) and ``share`` (``total`` / number of misclassified items). Sorted by
        ``total`` descending, then by the labels' order. Empty when nothing is misclassified.

    Raises
    ------
    DermctxError
        ``y_true`` and ``y_pred`` differ in length or are not 1-D, ``labels`` repeats a value, or a
        label is not in ``labels`` (named in the message).
    """
    if np.ndim(y_true) != 1 or np.ndim(y_pred) != 1:
        raise DermctxError(f"y_true and y_pred must be 1-D, got shapes {np.shape(y_true)} and "
                           f"{np.shape(y_pred)}")
    t, p = list(np.asarray(y_true, dtype=object)), list(np.asarray(y_pred, dtype=object))
    if len(t) != len(p):
        raise DermctxError(f"y_true and y_pred must have the same length, got {len(t)} and {len(p)}")
    for name, values in (("y_true", t), ("y_pred", p)):
        missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise DermctxError(f"{name} is missing at positions {missing[:5]}; expected a label everywhere")
    kinds = {"text" if isinstance(v, str) else "number" for v in [*t, *p]}
    if len(kinds) > 1:
        first = next(i for i, v in enumerate([*t, *p]) if isinstance(v, str))
        raise DermctxError(f"y_true and y_pred mix text and number labels (e.g. position {first % len(t)} "
                           f"of {'y_true' if first < len(t) else 'y_pred'}); expected one kind, so that "
                           "'1' and 1 are never two labels")
    if labels is None:
        union = set(t) | set(p)
        try:
            labels = sorted(union)
        except TypeError:
            labels = sorted(union, key=str)
    index = pd.Index(list(labels), dtype=object)
    if index.has_duplicates:
        raise DermctxError(f"labels must be distinct, got repeats {list(index[index.duplicated()])}")
    ti, pi = index.get_indexer(t), index.get_indexer(p)
    unknown = sorted({str(v) for v, i in [*zip(t, ti, strict=True), *zip(p, pi, strict=True)] if i < 0})
    if unknown:
        raise DermctxError(f"labels {unknown} of y_true/y_pred are not in labels={list(index)}")
    k = len(index)
    cm = np.zeros((k, k), dtype=np.int64)  # (true, predicted)
    np.add.at(cm, (ti, pi), 1)
    wrong = int(cm.sum() - np.trace(cm))
    a, b = np.nonzero(np.triu(cm + cm.T, k=1))  # pairs i < j with a confusion
    frame = pd.DataFrame({
        "label_a": pd.Series(index[a], dtype=object), "label_b": pd.Series(index[b], dtype=object),
        "a_as_b": cm[a, b], "b_as_a": cm[b, a], "total": cm[a, b] + cm[b, a],
    })
    frame["share"] = (frame["total"] / max(wrong, 1)).astype(np.float64)
    order = np.lexsort((b, a, -frame["total"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)
