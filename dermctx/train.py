"""Fine-tune a lesion CNN on patient-grouped folds: out-of-fold scores, checkpoints, embeddings.

:func:`train_lesion_cnn` trains one timm network per fold of a patient-level split and scores each
image with the model that never saw its patient (out-of-fold, "OOF"), so the scores can feed
:class:`~dermctx.ContextRanker` without leaking. The recipes are those of the field:

* every layer of an ImageNet network is fine-tuned (Esteva et al. 2017), optionally on the fine
  classes of a :class:`~dermctx.Taxonomy` whose probabilities are summed into melanoma;
* discriminative learning rates (0.01x / 0.1x / 1x from input to output) and cosine annealing
  with warm restarts whose cycles double (Mishra et al.; :mod:`dermctx.optim`);
* external rows without patient context (ISIC 2019, HAM10000) join every training fold but are
  never validated or scored (the SIIM-ISIC 2020 winners);
* dermoscopy augmentations: flips, 90-degree rotations, a small affine, colour jitter; colour
  constancy optional; class imbalance by class-weighted loss.

Images are decoded with :func:`dermctx.load_image` (DCT-scaled JPEG decoding) in torch DataLoader
workers. Each fold's model is written as ``fold<k>.safetensors`` with its settings as metadata;
a run whose output folder already holds finished folds resumes after them (same settings only).
A final model trained on every patient gives embeddings in one shared space
(:meth:`TrainResult.embedder`).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dermctx._deprecation import renamed_parameters
from dermctx.checkpoints import check_pretrained_available, load_backbone_weights, save_checkpoint
from dermctx.embed import Embedder
from dermctx.errors import (
    DermctxError,
    DermctxWarning,
    ModelError,
    TableError,
    error_record,
    errors_frame,
)
from dermctx.io.images import ImageCache, file_stamps, load_image
from dermctx.metrics import auc
from dermctx.optim import discriminative_param_groups, sgdr_schedule
from dermctx.splits import PatientKFold
from dermctx.table import validate_table
from dermctx.taxonomy import Taxonomy

__all__ = ["TrainResult", "train_lesion_cnn"]

SCHEDULES = ("sgdr", "cosine", "constant")


class _Images(torch.utils.data.Dataset):
    """Rows of a lesion table as (image (3, S, S) uint8, label, position, error message).

    Images stay uint8 until :class:`_ToInput` normalises a batch on the model's device: a
    quarter of the bytes through the DataLoader's shared memory and the copy to a GPU.
    """

    def __init__(self, paths: Sequence[str], labels: np.ndarray, spec: dict[str, Any], augment: bool):
        self.paths, self.labels, self.spec, self.augment = list(paths), labels, spec, augment
        self.jitter = _augmentations() if augment else None
        self.read = ImageCache(spec["cache_dir"]).load if spec.get("cache_dir") else load_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str]:
        size = self.spec["image_size"]
        try:
            image = self.read(self.paths[i], size, colour_constancy=self.spec["colour_constancy"])
        except DermctxError as exc:
            return torch.zeros(3, size, size, dtype=torch.uint8), int(self.labels[i]), i, str(exc)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)  # (3, S, S) uint8
        if self.jitter is not None:
            x = torch.rot90(self.jitter(x), int(torch.randint(4, ())), dims=(1, 2))
        return x.contiguous(), int(self.labels[i]), i, ""


class _ToInput:
    """uint8 batches (B, 3, S, S) as the network's float32 input on its device, normalised (the
    mean and std are put on the device once, not per batch)."""

    def __init__(self, spec: dict[str, Any]):
        self.device = torch.device(spec["device"])
        self.mean = torch.tensor(spec["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec["std"], device=self.device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.device, non_blocking=True).float() / 255 - self.mean) / self.std


def _augmentations() -> Any:
    """Flips, a small affine and colour jitter (dermoscopy has no 'up'); 90-degree turns apart."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
    ])


def _loader(rows: pd.DataFrame, labels: np.ndarray, spec: dict[str, Any], *, train: bool,
            seed: int) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        _Images(rows["path"].astype(str).tolist(), labels, spec, augment=train and spec["augment"]),
        batch_size=spec["batch_size"], shuffle=train, num_workers=spec["num_workers"],
        generator=generator, worker_init_fn=_seed_worker,
        drop_last=train and len(rows) % spec["batch_size"] == 1 and len(rows) > 1,  # BatchNorm needs 2
        persistent_workers=False, pin_memory=spec["device"].startswith("cuda"))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def _build(spec: dict[str, Any], n_classes: int, weights: Path | None = None) -> nn.Module:
    """The network: ImageNet weights, the user's ``checkpoint`` (new classifier), or ``weights``."""
    import timm

    start = weights is None and spec["checkpoint"] is None and spec["pretrained"]
    if start:
        check_pretrained_available(spec["model"])
    model = timm.create_model(spec["model"], pretrained=start, num_classes=n_classes)
    if weights is not None:  # a finished fold: every weight, classifier included
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)))
    elif spec["checkpoint"] is not None:  # start from the user's weights; a new classifier
        load_backbone_weights(model, Path(spec["checkpoint"]))
    model = model.to(spec["device"])
    if spec["device"].startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    return model


def _predict(model: nn.Module, rows: pd.DataFrame, spec: dict[str, Any], desc: str,
             progress: bool) -> tuple[np.ndarray, dict[int, str]]:
    """Softmax probabilities (n, C) of ``rows`` (NaN where the image failed) and the failures."""
    probs = np.full((len(rows), int(model.num_classes)), np.nan)  # type: ignore[arg-type]
    failed: dict[int, str] = {}
    model.eval()
    cuda = spec["device"].startswith("cuda")
    to_input = _ToInput(spec)
    with torch.inference_mode(), torch.autocast("cuda", enabled=cuda and spec["amp"]):
        for x, _, pos, err in tqdm(_loader(rows, np.zeros(len(rows), int), spec, train=False, seed=0),
                                   desc=desc, disable=not progress, leave=False):
            ok = np.array([e == "" for e in err])
            failed.update({int(p): e for p, e in zip(pos.tolist(), err, strict=True) if e})
            if ok.any():
                out = model(to_input(x[ok]))
                probs[pos.numpy()[ok]] = torch.softmax(out.float(), dim=1).cpu().numpy()
    return probs, failed


def train_step(net: Any, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, *, amp: bool) -> float:
    """One optimiser step on a batch (x (B, 3, H, W), y (B,)); channels_last and AMP on CUDA.

    Returns the batch loss (read every step, as the trainer logs it).
    """
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", enabled=amp):
        loss = loss_fn(net(x), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.item()


def _train_fold(rows: pd.DataFrame, labels: np.ndarray, val: pd.DataFrame | None,
                val_labels: np.ndarray | None, spec: dict[str, Any], n_classes: int, seed: int,
                desc: str, progress: bool) -> tuple[nn.Module, list[dict[str, Any]], dict[int, str]]:
    """Train one model; returns it, its history (one dict per epoch) and training-image failures."""
    torch.manual_seed(seed)
    model = _build(spec, n_classes)
    lr, wd = spec["lr"], spec["weight_decay"]
    groups = (discriminative_param_groups(model, lr, factors=spec["lr_factors"], weight_decay=wd)
              if spec["lr_factors"] else [{"params": list(model.parameters()), "lr": lr, "weight_decay": wd}])
    opt = (torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True) if spec["optimizer"] == "sgd"
           else torch.optim.AdamW(groups, lr=lr))
    loader = _loader(rows, labels, spec, train=True, seed=seed)
    steps = len(loader) * spec["epochs"]
    schedule = None
    if spec["schedule"] != "constant":
        cycle = len(loader) * spec["cycle_epochs"] if spec["schedule"] == "sgdr" else steps
        sgdr = spec["schedule"] == "sgdr"
        schedule = sgdr_schedule(opt, cycle_steps=max(1, cycle), cycle_mul=spec["cycle_mul"] if sgdr else 1.0,
                                 lr_min=lr * 1e-3, cycles=10_000 if sgdr else 1)
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weight = len(labels) / (n_classes * np.maximum(counts, 1)) if spec["class_weight"] == "balanced" else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else torch.tensor(weight, dtype=torch.float32,
                                                                                   device=spec["device"]))
    cuda = spec["device"].startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and spec["amp"])
    net: Any = torch.compile(model) if spec["compile"] else model
    to_input = _ToInput(spec)
    history, failed, step = [], {}, 0
    for epoch in range(spec["epochs"]):
        start, total, seen = time.perf_counter(), 0.0, 0
        net.train()
        for x, y, pos, err in tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{spec['epochs']}",
                                   disable=not progress, leave=False):
            ok = torch.tensor([e == "" for e in err])
            failed.update({int(p): e for p, e in zip(pos.tolist(), err, strict=True) if e})
            if not ok.any():
                continue
            x, y = to_input(x[ok]), y[ok].to(spec["device"])
            loss = train_step(net, x, y, loss_fn, opt, scaler, amp=cuda and spec["amp"])
            step += 1
            if schedule is not None:
                schedule.step_update(step)
            total, seen = total + loss * len(y), seen + len(y)
        row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "lr": opt.param_groups[-1]["lr"],
               "seconds": time.perf_counter() - start, "val_auc": np.nan}
        if val is not None and val_labels is not None and len(val):
            probs, _ = _predict(model, val, spec, f"{desc} validate", progress)
            ok = ~np.isnan(probs[:, 0])
            melanoma = probs[:, spec["melanoma_idx"]].sum(axis=1)
            y_val = np.isin(val_labels, spec["melanoma_idx"]).astype(int)
            if ok.any() and len(np.unique(y_val[ok])) == 2:
                row["val_auc"] = auc(y_val[ok], melanoma[ok])
        history.append(row)
    return model, history, failed


@dataclass
class TrainResult:
    """What :func:`train_lesion_cnn` produced.

    Attributes
    ----------
    oof : DataFrame
        One row per scored image of the table: ``image_id``, ``patient_id``, ``fold``,
        ``cnn_score`` (melanoma probability from the fold model that never saw the patient) and
        ``prob_<class>`` per training class. In table order.
    history : DataFrame
        ``fold`` (``"all"`` for the final model), ``epoch``, ``train_loss``, ``val_auc``
        (out-of-fold AUC after the epoch; NaN for the final model), ``lr``, ``seconds``.
    errors : DataFrame
        The errors table: rows that could not be scored (no image, an unreadable image).
        ``len(oof) + len(errors) == len(table)``.
    checkpoints : list of Path
        ``fold<k>.safetensors`` per fold, then ``all.safetensors`` (the final model) if trained;
        empty without ``out_dir``.
    settings : dict
        Everything that determines the result (written to ``settings.json``).
    """

    oof: pd.DataFrame = field(repr=False)
    history: pd.DataFrame = field(repr=False)
    errors: pd.DataFrame = field(repr=False)
    checkpoints: list[Path]
    settings: dict[str, Any] = field(repr=False)
    models: list[nn.Module] = field(repr=False, default_factory=list)
    final_model: nn.Module | None = field(repr=False, default=None)

    @classmethod
    @renamed_parameters(out_dir="path")
    def load(cls, path: str | PathLike[str]) -> TrainResult:
        """Read a finished run back from its folder ``path`` (the ``out_dir`` of
        :func:`train_lesion_cnn`; fold models included, no pickle). ``out_dir=`` is a deprecated
        alias of ``path=``.

        Raises :class:`ModelError` naming the folder when a file is missing or unreadable.
        """
        out = Path(path)
        needed = [out / n for n in ("settings.json", "oof.parquet", "history.csv", "errors.csv")]
        missing = [p.name for p in needed if not p.is_file()]
        if missing:
            raise ModelError(f"{out}: not a finished train_lesion_cnn folder (missing {missing})")
        try:
            settings = json.loads((out / "settings.json").read_text())
            folds = sorted(out.glob("fold*.safetensors"), key=lambda p: int(p.stem[4:]))
            spec = _runtime_spec(settings) | {"device": "cpu"}
            models = [_build(spec, len(settings["classes"]), weights=p).eval() for p in folds]
            final = out / "all.safetensors"
            return cls(oof=pd.read_parquet(out / "oof.parquet"), history=pd.read_csv(out / "history.csv"),
                       errors=errors_frame(pd.read_csv(out / "errors.csv").to_dict("records")),
                       checkpoints=folds + ([final] if final.exists() else []), settings=settings,
                       models=models,
                       final_model=_build(spec, len(settings["classes"]), weights=final).eval()
                       if final.exists() else None)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"{out}: cannot read the training run ({type(exc).__name__}: {exc})") from exc

    def predict(self, table: pd.DataFrame, *, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score new images with the average of the fold models' probabilities.

        Returns ``(scores, errors)``: ``scores`` has ``image_id``, ``cnn_score`` and
        ``prob_<class>`` for each readable image, ``errors`` one row per other row.
        """
        table = validate_table(table)
        spec = _runtime_spec(self.settings)
        usable, errors = _usable_rows(table, "predict")
        total = np.zeros((len(usable), len(self.settings["classes"])))
        failed: dict[int, str] = {}
        for k, model in enumerate(self.models):
            probs, bad = _predict(model.to(spec["device"]), usable, spec, f"predict fold {k}", progress)
            total += np.nan_to_num(probs)
            failed.update(bad)
        errors += [error_record(usable["image_id"].iloc[p], int(usable.index[p]), usable["path"].iloc[p],
                                "predict", m) for p, m in sorted(failed.items())]
        keep = np.array([p not in failed for p in range(len(usable))], dtype=bool)
        scores = _score_frame(usable[keep], total[keep] / max(len(self.models), 1), self.settings)
        return scores.drop(columns=["fold", "patient_id"]), errors_frame(sorted(errors, key=lambda r: r["row"]))

    def embedder(self, **kwargs: Any) -> Embedder:
        """An :class:`~dermctx.Embedder` on the final model (all patients): one embedding space.

        Needs ``final_model=True`` and an ``out_dir``. Fold models each embed in their own
        space, so their embeddings must not be mixed across folds; use this one for
        patient-relative embedding features, and :attr:`oof` scores for stacking. ``kwargs`` go
        to :class:`~dermctx.Embedder` (``device=``, ``batch_size=``, ``n_jobs=`` decoding
        threads...).
        """
        final = [p for p in self.checkpoints if p.name == "all.safetensors"]
        if not final:
            raise ModelError("no final model: train with final_model=True and an out_dir")
        return Embedder(self.settings["model"], pretrained=False, checkpoint=final[0],
                        image_size=self.settings["image_size"], **kwargs)


def _check_writable(folder: Path, name: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ModelError(f"{name} {str(folder)!r} is not a writable folder ({exc.strerror or exc})") from exc


def _runtime_spec(settings: dict[str, Any]) -> dict[str, Any]:
    spec = dict(settings)
    spec["device"] = settings.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return spec


def _usable_rows(table: pd.DataFrame, stage: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Rows with an image path (index = 0-based input position) and error records for the rest."""
    table = table.reset_index(drop=True)
    image_error = table["image_error"] if "image_error" in table.columns else pd.Series(None, index=table.index)
    bad = table["path"].isna() | image_error.notna()
    errors = [error_record(r.image_id, int(i), r.path, stage, image_error.iloc[i] if pd.notna(image_error.iloc[i])
                           else "the row has no image path (read the table with image_dir=)")
              for i, r in table[bad].iterrows()]
    return table[~bad], errors


def _score_frame(rows: pd.DataFrame, probs: np.ndarray, settings: dict[str, Any]) -> pd.DataFrame:
    out = pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "patient_id": rows["patient_id"].to_numpy(),
                        "fold": rows["fold"].to_numpy() if "fold" in rows.columns else -1,
                        "cnn_score": probs[:, settings["melanoma_idx"]].sum(axis=1)})
    for j, name in enumerate(settings["classes"]):
        out[f"prob_{name}"] = probs[:, j]
    return out


def _labels(table: pd.DataFrame, target: str | Taxonomy, name: str) -> tuple[np.ndarray, list[str], list[int]]:
    """Class index per row, the class names, and the indices of the melanoma classes."""
    if isinstance(target, Taxonomy):
        classes = target.leaves
        dx = table["diagnosis"].astype(object)
        unknown = ~dx.isin(classes)
        if unknown.any():
            raise TableError(f"{name}: 'diagnosis' values {sorted(set(map(str, dx[unknown])))[:5]} are not "
                             f"training classes of taxonomy {target.name!r} ({classes})")
        y = dx.map({c: i for i, c in enumerate(classes)}).to_numpy(int)
        mel = sorted({int(i) for i in y[table["target"].to_numpy() == 1]})
        if not mel:
            raise TableError(f"{name}: no melanoma (target 1) among the rows: no class to read melanoma from")
        return y, classes, mel
    if target != "target":
        raise TableError(f"{name}: target={target!r}; expected 'target' (melanoma 0/1) or a "
                         "dermctx.Taxonomy whose training classes are the 'diagnosis' values")
    if table[target].isna().any():
        raise TableError(f"{name}: column {target!r} needs a 0/1 label on every row")
    return table[target].to_numpy(int), ["other", "melanoma"], [1]


def train_lesion_cnn(
    table: pd.DataFrame,
    model: str = "efficientnet_b0",
    *,
    folds: Any = None,
    target: str | Taxonomy = "target",
    image_size: int | None = None,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 3e-4,
    optimizer: str = "adamw",
    weight_decay: float = 1e-4,
    schedule: str = "sgdr",
    cycle_epochs: int = 1,
    cycle_mul: float = 2.0,
    lr_factors: Sequence[float] | None = (0.01, 0.1, 1.0),
    augment: bool = True,
    colour_constancy: str | None = None,
    class_weight: str | None = "balanced",
    pretrained: bool = True,
    checkpoint: str | PathLike[str] | None = None,
    out_dir: str | PathLike[str] | None = None,
    external: pd.DataFrame | None = None,
    final_model: bool = False,
    device: str | None = None,
    amp: bool = True,
    compile: bool = False,
    num_workers: int = 0,
    cache_dir: str | PathLike[str] | None = None,
    random_state: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a timm CNN per patient-grouped fold; out-of-fold melanoma scores per image.

    Parameters
    ----------
    table : DataFrame
        A labelled lesion table with image paths (``read_table(..., image_dir=...)``).
    model : str
        A timm model name.
    folds : splitter, optional
        Anything with ``split(table, y)`` (default ``PatientKFold(5, random_state=random_state)``).
        The validation side of each fold is scored by the model trained on the other side.
    target : str or Taxonomy
        ``"target"`` (0/1, melanoma vs other) or a :class:`Taxonomy` whose training classes
        (leaves) are the ``diagnosis`` values: the model learns the fine classes and
        ``cnn_score`` sums the probabilities of the classes holding the melanomas.
    image_size : int, optional
        Input side in pixels (default: the model's own).
    epochs, batch_size, lr, optimizer, weight_decay
        Training length and optimiser (``"adamw"`` or ``"sgd"`` with Nesterov momentum 0.9).
    schedule : {"sgdr", "cosine", "constant"}
        ``"sgdr"``: cosine annealing restarting after ``cycle_epochs`` epochs, each cycle
        ``cycle_mul`` times longer; ``"cosine"``: one cycle over the run.
    lr_factors : sequence of float or None
        Discriminative rates: the network's layers cut into parts from input to output, part
        ``i`` at ``lr * lr_factors[i]`` (:func:`dermctx.optim.discriminative_param_groups`);
        None: one rate.
    augment, colour_constancy, class_weight
        Training augmentations; colour constancy ("shades_of_grey", "grey_world") applied to
        every image; ``"balanced"`` class weights in the loss, or None.
    pretrained, checkpoint
        ImageNet weights (downloaded by timm; offline it fails with a clear message), or start
        from a ``.safetensors``/state-dict file (its classifier is replaced).
    out_dir : path, optional
        Where to write ``fold<k>.safetensors``, ``oof.parquet``, ``history.csv``, ``errors.csv``
        and ``settings.json``; a re-run with the same settings resumes after the finished folds,
        and other settings are refused. ``images.parquet`` there records each image file's size
        and modification and status-change times; a resume finding any of them changed is
        refused, naming the files (a finished fold would otherwise return scores of the old
        images). Use a new ``out_dir``, or, when only times or permissions changed and the
        pixels are known to be the same, delete ``images.parquet`` to accept the files as they
        are now. A run folder written without that file resumes with a warning; a finished
        fold whose scored images are missing now is refused either way.
    external : DataFrame, optional
        Labelled rows with image paths added to every training fold (and the final model), never
        validated or scored, e.g. ISIC 2019. They may not share image or patient ids with
        ``table``.
    final_model : bool
        Also train one model on every patient (and ``external``): its checkpoint
        ``all.safetensors`` gives embeddings in one space (:meth:`TrainResult.embedder`).
    device, amp, compile
        ``"cpu"``, ``"cuda"``... (default: CUDA if available); mixed precision and channels_last
        on CUDA; ``torch.compile``.
    num_workers : int
        The torch ``DataLoader``'s worker *processes* that decode and augment images (0 = in the
        training process). This is torch's name for torch's setting; it is not a thread count
        (dermctx calls thread counts ``n_jobs``, e.g. :class:`~dermctx.Embedder`'s decoding
        threads).
    cache_dir : path, optional
        Keep each decoded, resized image in this folder (:class:`~dermctx.io.images.ImageCache`)
        so that later epochs and folds read it instead of decoding the original again; results
        are identical with or without it. Worth it on a GPU, where decoding large originals is
        slower than the network's step (``benchmarks/results/train_throughput_gpu.md``); about
        432 KiB per image at 384 px.
    random_state : int
        Seeds the split, the weights of new layers, the shuffling and the augmentations: a CPU
        run with ``num_workers=0`` repeats exactly.
    progress : bool
        Progress bars.

    Returns
    -------
    TrainResult

    Raises
    ------
    TableError
        A row without a label, classes missing from the taxonomy, overlapping external rows.
    ModelError
        Bad settings, unknown model, weights unavailable offline, or an ``out_dir`` written with
        other settings.
    """
    table = validate_table(table, labelled=True, name="train_lesion_cnn")
    if schedule not in SCHEDULES or optimizer not in ("adamw", "sgd") or epochs < 1 or batch_size < 1:
        raise ModelError(f"schedule must be one of {SCHEDULES}, optimizer 'adamw' or 'sgd', epochs and "
                         f"batch_size >= 1; got {schedule!r}, {optimizer!r}, {epochs}, {batch_size}")
    import timm

    if not timm.is_model(model):
        raise ModelError(f"unknown timm model {model!r}; see timm.list_models()")
    y, classes, melanoma_idx = _labels(table, target, "train_lesion_cnn")
    cfg = timm.data.resolve_data_config({}, model=timm.create_model(model, pretrained=False, num_classes=0))
    settings: dict[str, Any] = {
        "model": model, "classes": classes, "melanoma_idx": melanoma_idx,
        "target": target.name if isinstance(target, Taxonomy) else target,
        "image_size": int(image_size or cfg["input_size"][-1]), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "weight_decay": weight_decay,
        "schedule": schedule, "cycle_epochs": cycle_epochs, "cycle_mul": cycle_mul,
        "lr_factors": list(lr_factors) if lr_factors else None, "augment": augment,
        "colour_constancy": colour_constancy, "class_weight": class_weight, "pretrained": pretrained,
        "checkpoint": str(checkpoint) if checkpoint else None, "random_state": random_state,
        "final_model": final_model, "amp": amp, "compile": compile, "num_workers": num_workers,
        "n_rows": len(table), "external_rows": 0 if external is None else len(external),
    }
    spec = _runtime_spec(settings | {"device": device}) | {"cache_dir": None if cache_dir is None else str(cache_dir)}
    if cache_dir is not None:
        if not str(cache_dir).strip():
            raise ModelError("cache_dir is empty; give a folder, or None for no cache")
        _check_writable(Path(cache_dir), "cache_dir")
    usable, errors = _usable_rows(table, "train")
    y_usable = y[usable.index.to_numpy()]
    ext, y_ext = _external(external, table, target, classes)
    splitter = folds if folds is not None else PatientKFold(5, random_state=random_state)
    fold_of = np.full(len(table), -1)
    for k, (_, te) in enumerate(splitter.split(table, table["target"].to_numpy())):
        fold_of[te] = k
    usable = usable.assign(fold=fold_of[usable.index.to_numpy()])
    # a resumed run must be the same rows, labels, folds and external rows, not just the settings
    rows = table[["image_id", "patient_id"]].assign(y=y, fold=fold_of, path=table["path"])
    settings["rows_sha1"] = _fingerprint(rows)
    settings["external_sha1"] = _fingerprint(ext[["image_id", "patient_id"]].assign(y=y_ext))
    settings["n_folds"] = int(fold_of.max()) + 1
    _check_training_folds(usable, y_usable, y_ext, settings["n_folds"], errors)
    image_rows = pd.concat([table[["image_id", "path"]], ext[["image_id", "path"]]])
    out = _prepare_out_dir(out_dir, settings, rows)
    if out is not None:
        _check_image_files(out, image_rows)

    oof_parts, history, models, checkpoints = [], [], [], []
    failures: dict[int, str] = {}
    for k in range(int(fold_of.max()) + 1):
        val = usable[usable["fold"] == k]
        train_rows = pd.concat([usable[usable["fold"] != k], ext])
        train_y = np.concatenate([y_usable[usable["fold"].to_numpy() != k], y_ext])
        done = out / f"fold{k}.safetensors" if out else None
        if out is not None and done is not None and done.exists() and (out / f"fold{k}.oof.parquet").exists():
            net = _build(spec, len(classes), weights=done)
            part = pd.read_parquet(out / f"fold{k}.oof.parquet")
            hist = pd.read_csv(out / f"fold{k}.history.csv").to_dict("records")
            failed = pd.read_csv(out / f"fold{k}.failed.csv", dtype={"message": str})
            failures.update(zip(failed["row"].astype(int), failed["message"], strict=True))
        else:
            net, hist, bad = _train_fold(train_rows, train_y, val, y_usable[usable["fold"].to_numpy() == k],
                                         spec, len(classes), random_state * 1000 + k, f"fold {k}", progress)
            _warn_external_failures(bad, len(train_rows) - len(ext), f"fold {k}")
            probs, bad_val = _predict(net, val, spec, f"fold {k} score", progress)
            failures.update({int(val.index[p]): m for p, m in bad_val.items()})
            keep = ~np.isnan(probs[:, 0])
            part = _score_frame(val[keep], probs[keep], settings).assign(row=val.index.to_numpy()[keep])
            hist = [dict(h, fold=str(k)) for h in hist]
            if out is not None and done is not None:
                save_checkpoint(net, done, model_name=model, image_size=settings["image_size"],
                                mean=settings["mean"], std=settings["std"], class_names=classes, settings=settings)
                pd.DataFrame(hist).to_csv(out / f"fold{k}.history.csv", index=False)
                pd.DataFrame({"row": [int(val.index[p]) for p in bad_val], "message": list(bad_val.values())}
                             ).to_csv(out / f"fold{k}.failed.csv", index=False)
                part.to_parquet(out / f"fold{k}.oof.parquet", index=False)  # written last: the fold is done
        if done is not None:
            checkpoints.append(done)
        models.append(net.cpu().eval())
        oof_parts.append(part)
        history += hist

    final = None
    if final_model:
        done = out / "all.safetensors" if out is not None else None
        if out is not None and done is not None and done.exists() and (out / "all.history.csv").exists():
            final = _build(spec, len(classes), weights=done)
            history += pd.read_csv(out / "all.history.csv").to_dict("records")
        else:
            final, hist, bad = _train_fold(pd.concat([usable, ext]), np.concatenate([y_usable, y_ext]), None,
                                           None, spec, len(classes), random_state * 1000 + 999, "all patients",
                                           progress)
            _warn_external_failures(bad, len(usable), "the final model")
            hist = [dict(h, fold="all") for h in hist]
            history += hist
            if out is not None and done is not None:
                save_checkpoint(final, done, model_name=model, image_size=settings["image_size"],
                                mean=settings["mean"], std=settings["std"], class_names=classes, settings=settings)
                pd.DataFrame(hist).to_csv(out / "all.history.csv", index=False)
        if done is not None:
            checkpoints.append(done)
        final = final.cpu().eval()

    oof = pd.concat(oof_parts).sort_values("row")
    unsplit = usable.index[usable["fold"] < 0]
    failures.update({int(r): "the splitter put this row in no validation fold" for r in unsplit})
    errors += [error_record(table["image_id"].iloc[r], int(r), table["path"].iloc[r], "train", m)
               for r, m in failures.items() if r not in set(oof["row"])]
    result = TrainResult(oof=oof.drop(columns="row").reset_index(drop=True),
                         history=pd.DataFrame(history)[["fold", "epoch", "train_loss", "val_auc", "lr", "seconds"]],
                         errors=errors_frame(sorted(errors, key=lambda r: r["row"])), checkpoints=checkpoints,
                         settings=settings, models=models, final_model=final)
    if out is not None:
        result.oof.to_parquet(out / "oof.parquet", index=False)
        result.history.to_csv(out / "history.csv", index=False)
        result.errors.to_csv(out / "errors.csv", index=False)
    return result


def _fingerprint(frame: pd.DataFrame) -> str:
    import hashlib

    return hashlib.sha1(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes()).hexdigest()


def _check_training_folds(usable: pd.DataFrame, y: np.ndarray, y_ext: np.ndarray, n_folds: int,
                          errors: list[dict[str, Any]]) -> None:
    """Refuse folds whose training side has no usable image or one class only, before training."""
    if not len(usable):
        first = errors[0]["message"] if errors else "no rows"
        raise ModelError(f"train_lesion_cnn: no row has a usable image (first: {first}); read the "
                         "table with image_dir= (CLI: --image-dir)")
    for k in range(n_folds):
        classes = np.unique(np.concatenate([y[usable["fold"].to_numpy() != k], y_ext]))
        if len(classes) < 2:
            raise ModelError(f"train_lesion_cnn: the training side of fold {k} holds one class only "
                             f"(class index {classes.tolist()}); it needs melanomas and others")


def _external(external: pd.DataFrame | None, table: pd.DataFrame, target: str | Taxonomy,
              classes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """External training rows (usable ones only) and their class indices."""
    if external is None:
        return table.iloc[:0].assign(fold=-1), np.zeros(0, int)
    ext = validate_table(external, labelled=True, name="external")
    for col in ("image_id", "patient_id"):
        shared = set(ext[col]) & set(table[col])
        if shared:
            raise TableError(f"external: {col} values {sorted(shared)[:3]} are also in the table; external "
                             "rows must be other images of other patients")
    y, ext_classes, _ = _labels(ext, target, "external")
    if ext_classes != classes:
        raise TableError(f"external: classes {ext_classes} differ from the table's {classes}")
    usable, dropped = _usable_rows(ext, "external")
    if dropped:
        warnings.warn(f"external: {len(dropped)} of {len(ext)} rows have no usable image and are left "
                      f"out of training, e.g. {dropped[0]['message']}", DermctxWarning, stacklevel=3)
    return usable.assign(fold=-1).set_index(pd.RangeIndex(10**9, 10**9 + len(usable))), y[usable.index.to_numpy()]


def _rows_difference(out: Path, rows: pd.DataFrame | None, run_sha1: str) -> str:
    """How the table's ``rows`` (image id, patient, label, fold, path) differ from the run's: only
    in their image paths (from the run's ``images.parquet``), or otherwise."""
    generic = "other rows (image ids, patients, labels, folds or image paths differ from the run's)"
    if rows is None or not (out / "images.parquet").exists():
        return generic
    old = pd.read_parquet(out / "images.parquet", columns=["image_id", "path"]).head(len(rows))
    if old["image_id"].tolist() != rows["image_id"].astype(str).tolist():
        return generic
    old_paths = old["path"].where(old["path"] != "", None).to_numpy(dtype=object)
    if _fingerprint(rows.assign(path=old_paths)) != run_sha1:
        return generic
    now = rows["path"].map(lambda v: str(v) if isinstance(v, str | PathLike) else "").to_numpy()
    moved = np.flatnonzero(old["path"].to_numpy() != now)
    i = int(moved[0]) if len(moved) else 0
    return (f"other image paths ({len(moved)} row(s), e.g. {old['path'].iloc[i]!r} -> {now[i]!r}): a run is tied "
            "to its image files (images moved or copied elsewhere)")


def _prepare_out_dir(out_dir: str | PathLike[str] | None, settings: dict[str, Any],
                     rows: pd.DataFrame | None = None) -> Path | None:
    """Create ``out_dir``; refuse one written with other settings (never mix two runs).

    ``rows``: the frame fingerprinted as ``rows_sha1``, to say when only image paths changed."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "settings.json"
    text = json.dumps(settings, sort_keys=True, indent=1, default=str)
    if path.exists() and json.loads(path.read_text()) != json.loads(text):
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), settings.get(k)) for k in set(old) | set(settings) if old.get(k) != settings.get(k)}
        changed_rows = diff.pop("rows_sha1", None)
        what = [f"other settings ({diff})"] if diff else []
        if changed_rows is not None:
            what.append(_rows_difference(out, rows, old["rows_sha1"]))
        raise ModelError(f"{out}: holds a run with {' and '.join(what)}; use another out_dir")
    path.write_text(text)
    return out


def _image_stamps(rows: pd.DataFrame) -> pd.DataFrame:
    """``image_id``, ``path`` and the :func:`~dermctx.io.images.file_stamps` of each row's image."""
    frame = file_stamps(rows["path"])
    frame.insert(0, "image_id", rows["image_id"].astype(str).to_numpy())
    return frame


def _refuse_missing_images(out: Path, stamps: pd.DataFrame) -> None:
    """Finished folds read back must not return scores of images that no longer exist."""
    for part_path in sorted(out.glob("fold*.oof.parquet")):
        gone = stamps.iloc[pd.read_parquet(part_path, columns=["row"])["row"].to_numpy(int)]
        gone = gone[gone["size"] < 0]
        if len(gone):
            fold = part_path.name.split(".")[0]
            raise ModelError(f"{out}: {fold} is finished, but the image file(s) of {len(gone)} of its scored row(s) "
                             f"are missing now, e.g. {gone['path'].iloc[0] or gone['image_id'].iloc[0]!r}: its "
                             "scores would be of images that no longer exist. Restore them, or use a new out_dir")


def _check_image_files(out: Path, rows: pd.DataFrame) -> None:
    """Refuse to resume a run whose image files changed since it started; record them otherwise."""
    path = out / "images.parquet"
    now = _image_stamps(rows)
    if not path.exists():
        _refuse_missing_images(out, now)  # before anything is recorded
        if any(out.glob("fold*.oof.parquet")) or (out / "all.safetensors").exists():
            warnings.warn(f"{out}: this run folder has no images.parquet (written by an older dermctx, or "
                          "deleted): finished folds are read back without checking that their images are "
                          "unchanged; the image files as they are now are recorded for later resumes",
                          DermctxWarning, stacklevel=3)
        now.to_parquet(path, index=False)
        return
    old = pd.read_parquet(path)
    both = old.merge(now, on=["image_id", "path"], how="outer", suffixes=("_run", "_now"), indicator=True)
    if (both["_merge"] != "both").any():  # the settings fingerprint already covers ids and paths
        raise ModelError(f"{path}: lists other images than the table; use another out_dir")
    changed = both[(both["size_run"] != both["size_now"]) | (both["mtime_ns_run"] != both["mtime_ns_now"])
                   | (both["ctime_ns_run"] != both["ctime_ns_now"])]
    if len(changed):
        def what(r: Any) -> str:
            if r.size_now < 0:
                return "now missing"
            if r.size_run < 0:
                return "missing when the run started, present now"
            if r.size_run != r.size_now:
                return f"size {r.size_run} -> {r.size_now} bytes"
            if r.mtime_ns_run != r.mtime_ns_now:
                return "modified"
            return "rewritten or its permissions changed (status-change time)"

        shown = "; ".join(f"{r.path} ({what(r)})" for r in changed.head(5).itertuples())
        times_only = bool(((changed["size_run"] == changed["size_now"]) & (changed["size_now"] >= 0)).all())
        accept = (f"; if their pixels are known to be unchanged (only times or permissions changed), delete {path} "
                  "to accept the files as they are now" if times_only else "")
        raise ModelError(f"{out}: {len(changed)} image file(s) changed since this run started, e.g. {shown}. "
                         f"Its finished folds would return scores of the old images. Use a new out_dir{accept}")


def _warn_external_failures(bad: dict[int, str], n_table: int, where: str) -> None:
    """Images of the table that fail are error rows when scored; say so for external ones."""
    ext = {p: m for p, m in bad.items() if p >= n_table}
    if ext:
        warnings.warn(f"{where}: {len(ext)} external image(s) could not be read and were left out of "
                      f"training, e.g. {next(iter(ext.values()))}", DermctxWarning, stacklevel=3)
