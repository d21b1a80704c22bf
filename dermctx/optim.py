"""Learning rates for fine-tuning a lesion CNN: discriminative groups, SGDR, the range test.

After Mishra et al. (fast.ai recipes for skin-lesion classification) and the papers they build on:

* :func:`discriminative_param_groups`: lower learning rates for the early, generic layers of an
  ImageNet network than for its late, task-specific ones (by default 0.01x for the first third,
  0.1x for the middle third, 1x for the last third and the classifier; Howard & Ruder 2018);
* :func:`sgdr_schedule`: cosine annealing with warm restarts whose cycle length doubles
  (Loshchilov & Hutter 2017), timm's ``CosineLRScheduler``, stepped per batch;
* :func:`lr_range_test`: raise the rate exponentially over a few hundred batches and watch the
  loss (Smith 2017); the suggested rate is where the smoothed loss falls fastest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dermctx.errors import ModelError

__all__ = ["LRRangeResult", "discriminative_param_groups", "layer_groups", "lr_range_test",
           "sgdr_restarts", "sgdr_schedule"]


def layer_groups(model: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """The trainable parameters of ``model`` in layer order, input side first.

    timm models are grouped by their own ``group_matcher`` (stem, each block, head; the
    classifier last); other modules by their top-level children, in registration order.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        matched = group_parameters(model, model.group_matcher(coarse=False))  # type: ignore[operator]
        by_name = dict(named)
        ordered = [[(n, by_name[n]) for n in names if n in by_name] for _, names in sorted(matched.items())]
        ordered = [g for g in ordered if g]
        seen = {n for g in ordered for n, _ in g}
        rest = [(n, p) for n, p in named if n not in seen]  # e.g. the classifier
        return ordered + ([rest] if rest else [])
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for n, p in named:
        groups.setdefault(n.split(".")[0], []).append((n, p))
    return list(groups.values())


def discriminative_param_groups(
    model: nn.Module,
    lr: float,
    *,
    factors: Sequence[float] = (0.01, 0.1, 1.0),
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups with a learning rate that grows with depth.

    The layers of :func:`layer_groups` are cut into ``len(factors)`` consecutive parts of
    (nearly) equal numbers of layers; part ``i`` gets ``lr * factors[i]``. Biases and norm
    weights get no weight decay.

    Returns
    -------
    list of dict
        Groups for any ``torch.optim`` optimiser: ``params``, ``lr`` (already scaled),
        ``lr_factor`` (the factor, for reference; timm's schedulers scale each group from its
        own starting rate, so the factors hold throughout), ``weight_decay`` and ``name``
        (``"part 1 of 3"``...). Empty groups are left out.
    """
    if lr <= 0 or not factors or any(f <= 0 for f in factors):
        raise ModelError(f"lr must be > 0 and factors positive, got lr={lr}, factors={list(factors)}")
    layers = layer_groups(model)
    if not layers:
        raise ModelError("discriminative_param_groups: the model has no trainable parameters")
    cuts = np.array_split(np.arange(len(layers)), len(factors))
    out: list[dict[str, Any]] = []
    for i, (part, factor) in enumerate(zip(cuts, factors, strict=True)):
        params = [p for j in part for _, p in layers[j]]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                out.append({"params": chosen, "lr": lr * factor, "lr_factor": float(factor),
                            "weight_decay": weight_decay if decay else 0.0,
                            "name": f"part {i + 1} of {len(factors)}"})
    return out


def sgdr_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    cycle_steps: int,
    cycle_mul: float = 2.0,
    lr_min: float = 0.0,
    warmup_steps: int = 0,
    cycles: int = 10_000,
) -> Any:
    """Cosine annealing with warm restarts (SGDR), each cycle ``cycle_mul`` times the last.

    timm's ``CosineLRScheduler`` stepped per batch: call ``schedule.step_update(n)`` after the
    ``n``-th optimiser step. Each group's rate restarts at its starting rate after ``cycle_steps``, ``cycle_steps * (1 + cycle_mul)``, ... steps
    (:func:`sgdr_restarts`), for at most ``cycles`` cycles (then it stays at ``lr_min``).
    """
    from timm.scheduler import CosineLRScheduler

    if cycle_steps < 1 or cycle_mul < 1:
        raise ModelError(f"cycle_steps must be >= 1 and cycle_mul >= 1, got {cycle_steps}, {cycle_mul}")
    return CosineLRScheduler(optimizer, t_initial=int(cycle_steps), cycle_mul=float(cycle_mul),
                             lr_min=lr_min, cycle_limit=int(cycles), warmup_t=int(warmup_steps),
                             warmup_lr_init=lr_min, t_in_epochs=False)


def sgdr_restarts(cycle_steps: int, cycle_mul: float, total_steps: int) -> list[int]:
    """The steps at which an SGDR schedule restarts, up to ``total_steps``."""
    out, start, length = [], 0, float(cycle_steps)
    while start + length < total_steps:
        start += round(length)
        out.append(start)
        length *= cycle_mul
    return out


@dataclass
class LRRangeResult:
    """What :func:`lr_range_test` measured.

    Attributes
    ----------
    lrs, losses : ndarray, shape (n,)
        The rate of each step and the smoothed training loss after it.
    suggested_lr : float
        The rate where the smoothed loss fell fastest (steepest negative slope against log rate)
        before its minimum; the usual choice is this value or up to 10x lower. Read the plot.
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggested_lr: float

    def plot(self, path: str | PathLike[str]) -> Path:
        """Write the loss against the learning rate (log scale) as a PNG, the suggestion marked."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses)
        ax.axvline(self.suggested_lr, color="tab:red", linestyle="--",
                   label=f"suggested {self.suggested_lr:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)",
               title="learning-rate range test")
        ax.legend()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path


def lr_range_test(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer] | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 100,
    smooth: float = 0.9,
    diverge: float = 4.0,
    device: str | torch.device = "cpu",
) -> LRRangeResult:
    """The learning-rate range test (Smith 2017): train with an exponentially rising rate.

    The model is trained for at most ``steps`` batches, the rate rising from ``start_lr`` to
    ``end_lr``; the test stops early once the smoothed loss exceeds ``diverge`` times its best.
    The model's weights are restored afterwards.

    Parameters
    ----------
    model : nn.Module
        The network (its weights and train/eval mode are restored on return).
    batches : iterable of (images, labels)
        Training batches, cycled if shorter than ``steps``: images (B, 3, H, W) float, labels (B,)
        int64.
    loss_fn : callable, optional
        Default cross-entropy.
    optimizer : callable, optional
        ``params -> optimiser``; default AdamW. Parameter groups keep their ``lr_factor``.
    start_lr, end_lr : float
        The range (start_lr < end_lr).
    steps : int
        Batches at most.
    smooth : float
        Exponential smoothing of the loss, in [0, 1).
    diverge : float
        Stop when the smoothed loss exceeds this multiple of the lowest smoothed loss.
    device : str or torch.device
        Where to train.

    Returns
    -------
    LRRangeResult
        Rates, smoothed losses and the suggested rate; ``.plot(path)`` draws them.
    """
    if not 0 < start_lr < end_lr or steps < 3 or not 0 <= smooth < 1:
        raise ModelError(f"need 0 < start_lr < end_lr, steps >= 3, 0 <= smooth < 1; got "
                         f"{start_lr}, {end_lr}, {steps}, {smooth}")
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    opt = (optimizer or (lambda p: torch.optim.AdamW(p, lr=start_lr)))(model.parameters())
    scales = [g.get("lr_factor", 1.0) for g in opt.param_groups]
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, avg, best = [], [], 0.0, np.inf
    model.to(device).train()
    try:
        batch_list = list(batches)
        if not batch_list:
            raise ModelError("lr_range_test: no training batches")
        for step in range(steps):
            x, y = batch_list[step % len(batch_list)]
            if y.dtype not in (torch.int64, torch.int32, torch.uint8):
                raise ModelError(f"lr_range_test: labels are {y.dtype}; expected class indices (int64)")
            lr = start_lr * factor**step
            for g, s in zip(opt.param_groups, scales, strict=True):
                g["lr"] = lr * s
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x.to(device)), y.to(device))
            loss.backward()
            opt.step()
            avg = smooth * avg + (1 - smooth) * loss.item()
            value = avg / (1 - smooth ** (step + 1))  # bias-corrected
            lrs.append(lr)
            losses.append(value)
            best = min(best, value)
            if not np.isfinite(value) or value > diverge * best:
                break
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    lr_arr, loss_arr = np.asarray(lrs), np.asarray(losses)
    # the steepest fall before the loss's minimum (past it the run is already diverging)
    stop = int(np.argmin(loss_arr)) + 1
    slope = np.gradient(loss_arr, np.log(lr_arr)) if len(lr_arr) > 2 else np.zeros(len(lr_arr))
    return LRRangeResult(lr_arr, loss_arr, float(lr_arr[int(np.argmin(slope[:stop]))]))
