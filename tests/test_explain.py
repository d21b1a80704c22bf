"""Tests of dermctx.explain: Grad-CAM, guided backprop, figures, checkpoints, confusion pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dermctx.embed import save_checkpoint
from dermctx.errors import DermctxError, ImageError, ModelError
from dermctx.explain import (
    confusion_pairs,
    explain_checkpoint,
    grad_cam,
    guided_backprop,
    jet,
    overlay,
    save_explanations,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _timm_model(num_classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=num_classes)


def _state(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _assert_clean(model: nn.Module, before: tuple[list[bool], list[bool]]) -> None:
    """No hook of any kind left, modes and requires_grad as before, no .grad on parameters."""
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks", "_forward_hooks_always_called"):
            assert not getattr(m, attr, {}), f"{name or 'model'}.{attr} not empty"
    assert _state(model) == before
    assert all(p.grad is None for p in model.parameters())


# --- a tiny CNN and data whose evidence is known -----------------------------------------------

SIZE, QUAD, SQ = 32, 16, 10  # image side; the square lies inside the top-left QUAD x QUAD quadrant


class TinyCNN(nn.Module):
    """Two 3x3 convolutions (the last at 16 x 16), global average pooling, a linear classifier."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.functional = functional
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.act1, self.act2 = nn.ReLU(inplace=True), nn.ReLU()
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, 2)
        if self.functional:
            h = F.max_pool2d(F.relu(self.conv1(x), inplace=True), 2)  # (B, 8, 16, 16)
            h = self.conv2(h).relu()  # (B, 16, 16, 16)
        else:
            h = F.max_pool2d(self.act1(self.conv1(x)), 2)
            h = self.act2(self.conv2(h))
        return self.fc(h.mean(dim=(2, 3)))


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noise images (3, 32, 32); class 1 has a bright 10 x 10 square somewhere in the top-left quadrant.

    Returns images (n, 3, 32, 32), labels (n,) and the square's top-left corner (n, 2).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, (n, 3, SIZE, SIZE)).astype(np.float32)
    y = rng.integers(0, 2, n)
    corners = np.zeros((n, 2), dtype=int)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, QUAD - SQ + 1, 2)
        x[i, :, r : r + SQ, c : c + SQ] += 1.5
        corners[i] = r, c
    return torch.from_numpy(x), torch.from_numpy(y), corners


def _train(x: torch.Tensor, y: torch.Tensor, steps: int) -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def squares() -> dict[str, object]:
    xtr, ytr, _ = _squares(512, seed=0)
    xva, yva, corners = _squares(200, seed=1)
    return {"xtr": xtr, "ytr": ytr, "xva": xva, "yva": yva, "corners": corners}


@pytest.fixture(scope="module")
def trained(squares: dict) -> TinyCNN:
    torch.set_num_threads(1)
    return _train(squares["xtr"], squares["ytr"], steps=150)


@pytest.fixture(scope="module")
def control(squares: dict) -> TinyCNN:
    """The same network trained on shuffled labels: it cannot learn where the evidence is."""
    torch.set_num_threads(1)
    perm = torch.randperm(len(squares["ytr"]), generator=torch.Generator().manual_seed(1))
    return _train(squares["xtr"], squares["ytr"][perm], steps=150)


def _accuracy(model: nn.Module, squares: dict) -> float:
    with torch.no_grad():
        return float((model(squares["xva"]).argmax(1) == squares["yva"]).float().mean())


def _in_square(maps: list[np.ndarray], corners: np.ndarray) -> list[float]:
    """Share of each map's total inside its square (maps (H, W))."""
    out = []
    for m, (r, c) in zip(maps, corners, strict=True):
        total = float(m.sum())
        out.append(float(m[r : r + SQ, c : c + SQ].sum()) / total if total > 0 else 0.0)
    return out


# --- Grad-CAM ---------------------------------------------------------------------------------


def test_grad_cam_shape_range_and_model_left_as_found() -> None:
    model = _timm_model().train()
    model.conv_stem.weight.requires_grad_(False)  # a mixed state must come back as it was
    model.bn2.eval()
    before = _state(model)
    torch.manual_seed(1)
    image = torch.randn(3, 64, 48)
    copy = image.clone()
    for kwargs in ({}, {"target_class": 1}, {"layer": "conv_head"}, {"layer": model.blocks[-1]}):
        cam = grad_cam(model, image, **kwargs)
        assert cam.shape == (64, 48) and cam.dtype == np.float32, kwargs
        assert cam.min() >= 0 and cam.max() == pytest.approx(1.0), kwargs
        _assert_clean(model, before)
    assert torch.equal(image, copy) and image.grad is None
    np.testing.assert_allclose(grad_cam(model, image[None]), grad_cam(model, image), atol=1e-6)
    # the default target is the predicted class
    with torch.no_grad():
        predicted = int(model.eval()(image[None]).argmax())
    model.train()
    model.bn2.eval()
    np.testing.assert_allclose(grad_cam(model, image), grad_cam(model, image,
                                                                 target_class=predicted))


def test_grad_cam_default_layers() -> None:
    model = _timm_model().eval()
    image = torch.randn(3, 64, 64)
    # timm: the output of forward_features, i.e. after bn2 (BatchNormAct2d) at the end of it
    np.testing.assert_allclose(grad_cam(model, image), grad_cam(model, image, layer="bn2"),
                               atol=1e-6)
    # another torch CNN: the last nn.Conv2d run in the forward pass
    torch.manual_seed(0)
    net = TinyCNN().eval()
    x = torch.randn(3, SIZE, SIZE)
    np.testing.assert_allclose(grad_cam(net, x, target_class=1),
                               grad_cam(net, x, target_class=1, layer=net.conv2), atol=1e-6)
    assert not np.allclose(grad_cam(net, x, target_class=1),
                           grad_cam(net, x, target_class=1, layer="conv1"))


def test_grad_cam_errors_leave_no_hooks() -> None:
    model = _timm_model().eval()
    before = _state(model)
    image = torch.randn(3, 32, 32)
    with pytest.raises(ImageError, match=r"shape \(3, H, W\)"):
        grad_cam(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(ImageError, match="float tensor"):
        grad_cam(model, torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ImageError, match=r"torch\.Tensor"):
        grad_cam(model, np.zeros((3, 32, 32), np.float32))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"target_class .* \[0, 2\)"):
        grad_cam(model, image, target_class=2)
    with pytest.raises(ModelError, match="not a submodule"):
        grad_cam(model, image, layer="no_such_layer")
    with pytest.raises(ModelError, match="not a submodule"):
        grad_cam(model, image, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ModelError, match=r"gave \(1, 2\).*convolutional"):
        grad_cam(model, image, layer="classifier")  # hook raised during the forward pass
    _assert_clean(model, before)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=2, img_size=32)
    with pytest.raises(ModelError, match=r"forward_features gave \(1, \d+, \d+\)"):
        grad_cam(vit, image)


# --- guided backpropagation -------------------------------------------------------------------


def test_guided_backprop_shape_range_and_restored() -> None:
    model = _timm_model().train()
    inplace_before = {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")}
    assert any(inplace_before.values())  # timm's SiLU(inplace=True): switched off only inside
    before = _state(model)
    image = torch.randn(3, 64, 64)
    sal = guided_backprop(model, image, target_class=0)
    assert sal.shape == (64, 64, 3) and sal.dtype == np.float32
    assert sal.min() >= 0 and sal.max() == pytest.approx(1.0)
    _assert_clean(model, before)
    assert {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")} == inplace_before
    # the guided rule changes the answer: compare with the plain input gradient
    x = image[None].clone().requires_grad_(True)
    model.eval()
    model(x)[0, 0].backward()
    plain = x.grad[0].abs().permute(1, 2, 0).numpy()
    model.zero_grad(set_to_none=True)
    assert np.abs(plain / plain.max() - sal).max() > 0.1


def _hand_guided(net: nn.Module, x: torch.Tensor, act: str) -> np.ndarray:
    """Guided backprop of a conv -> activation -> linear net by hand: clamp(f'(z) * w, 0) at z."""
    conv, fc = net[0], net[3]
    x = x[None].clone().requires_grad_(True)
    z = conv(x)  # (1, 4, 8, 8)
    w = fc.weight[1].reshape(z.shape)  # d logit_1 / d act(z)
    zz = z.detach().requires_grad_(True)
    fn = F.relu if act == "relu" else F.silu
    (fprime,) = torch.autograd.grad(fn(zz).sum(), zz)  # f'(z), elementwise
    (grad,) = torch.autograd.grad(z, x, grad_outputs=(fprime * w).clamp(min=0))
    sal = grad[0].abs().permute(1, 2, 0).detach().numpy()  # (8, 8, 3)
    return sal / sal.max()


class _Functional(nn.Module):
    def __init__(self, call: str) -> None:
        super().__init__()
        self.call = call

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.call == "F.relu":
            return F.relu(z)
        if self.call == "relu_":
            z = z * 1.0
            torch.relu_(z)  # in place, result used through z
            return z
        if self.call == "Tensor.relu":
            return z.relu()
        return F.silu(z, inplace=True)


@pytest.mark.parametrize("act, layer", [
    ("relu", nn.ReLU()), ("relu", nn.ReLU(inplace=True)), ("relu", _Functional("F.relu")),
    ("relu", _Functional("relu_")), ("relu", _Functional("Tensor.relu")),
    ("silu", nn.SiLU(inplace=True)), ("silu", _Functional("F.silu_inplace")),
])
def test_guided_rule_matches_hand_computation(act: str, layer: nn.Module) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), layer, nn.Flatten(), nn.Linear(4 * 64, 2))
    x = torch.randn(3, 8, 8)
    sal = guided_backprop(net, x, target_class=1)
    np.testing.assert_allclose(sal, _hand_guided(net, x, act), atol=1e-5)
    # and it is not the plain gradient
    xg = x[None].clone().requires_grad_(True)
    net(xg)[0, 1].backward()
    plain = xg.grad[0].abs().permute(1, 2, 0).numpy()
    assert np.abs(plain / plain.max() - sal).max() > 0.05
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())


def test_guided_modules_and_functional_activations_agree() -> None:
    torch.manual_seed(0)
    modules, functional = TinyCNN(), TinyCNN(functional=True)
    functional.load_state_dict(modules.state_dict())
    x = torch.randn(3, SIZE, SIZE)
    np.testing.assert_allclose(guided_backprop(modules, x, target_class=1),
                               guided_backprop(functional, x, target_class=1), atol=1e-6)


# --- the check that can fail: does the map find the evidence? ----------------------------------


def _untrained(seed: int) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN().eval()


def test_grad_cam_mass_is_on_the_square(squares: dict, trained: TinyCNN, control: TinyCNN) -> None:
    ones = np.flatnonzero(squares["yva"].numpy())[:30]
    corners = squares["corners"][ones]

    def mass(model: nn.Module) -> float:
        maps = [grad_cam(model, squares["xva"][i], target_class=1) for i in ones]
        return float(np.mean(_in_square(maps, corners)))

    masses = {"trained": mass(trained), "control": mass(control),
              "untrained": float(np.mean([mass(_untrained(s)) for s in range(3)]))}
    acc = {"trained": _accuracy(trained, squares), "control": _accuracy(control, squares)}
    summary = (f"Grad-CAM mass in the square: trained {masses['trained']:.3f} (val acc "
               f"{acc['trained']:.3f}), shuffled-label control {masses['control']:.3f} (val acc "
               f"{acc['control']:.3f}), untrained (3 seeds, not asserted) {masses['untrained']:.3f}; "
               f"the square covers {SQ * SQ / SIZE**2:.3f} of the image")
    print(summary)
    assert acc["trained"] > 0.95, summary
    assert masses["trained"] > 0.6, summary
    assert masses["control"] < masses["trained"] - 0.3 and abs(acc["control"] - 0.5) < 0.1, summary


def test_guided_backprop_concentrates_on_the_square(squares: dict, trained: TinyCNN,
                                                    control: TinyCNN) -> None:
    ones = np.flatnonzero(squares["yva"].numpy())[:30]
    corners = squares["corners"][ones]

    def density(model: nn.Module, target: int = 1) -> float:
        """Saliency share in the square divided by the square's share of the image (1 = uniform)."""
        maps = [guided_backprop(model, squares["xva"][i], target_class=target).sum(axis=2)
                for i in ones]
        return float(np.mean(_in_square(maps, corners))) / (SQ * SQ / SIZE**2)

    ratios = {"trained": density(trained), "trained, class 0": density(trained, 0),
              "untrained": float(np.mean([density(_untrained(s)) for s in range(3)])),
              "shuffled": density(control)}
    summary = ("guided-backprop saliency density in the square relative to a uniform map: "
               + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(summary)
    assert ratios["trained"] > 2.5, summary
    assert ratios["untrained"] < 1.5 and ratios["trained, class 0"] < 1.0, summary


# --- figures ----------------------------------------------------------------------------------


def test_jet_and_overlay() -> None:
    np.testing.assert_allclose(jet(np.array([0.0, 0.5, 1.0])),
                               [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]], atol=1e-6)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (20, 30))
    out = overlay(img, heat)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(img, heat, alpha=0.0), img)
    np.testing.assert_array_equal(overlay(img, np.ones((20, 30)), alpha=1.0)[0, 0], [128, 0, 0])
    expected = np.rint(0.55 * img[3, 4] + 0.45 * 255 * jet(heat[3, 4]))
    np.testing.assert_array_equal(out[3, 4], expected)
    with pytest.raises(DermctxError, match=r"uint8 array of shape \(H, W, 3\)"):
        overlay(img.astype(np.float32), heat)
    with pytest.raises(DermctxError, match=r"\.max\(axis=2\)"):
        overlay(img, np.zeros((20, 30, 3)))
    with pytest.raises(DermctxError, match=r"\[0, 1\]"):
        overlay(img, heat * 2)
    with pytest.raises(DermctxError, match=r"\[0, 1\]"):
        overlay(img, np.full((20, 30), np.nan))
    with pytest.raises(DermctxError, match="alpha"):
        overlay(img, heat, alpha=1.5)


def _write_image(path: Path, w: int = 80, h: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(40, 200, (h, w, 3), dtype=np.uint8)
    arr[20:40, 30:50] = (90, 50, 30)  # a dark "lesion"
    Image.fromarray(arr).save(path)
    return path


def _check_pngs(paths: dict[str, Path], size: int) -> None:
    assert set(paths) == {"gradcam", "guided"}
    for path in paths.values():
        assert path.suffix == ".png" and path.is_file()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (size, size) and im.mode == "RGB"


def test_save_explanations_generated_image(tmp_path: Path) -> None:
    model = _timm_model().eval()
    before = _state(model)
    src = _write_image(tmp_path / "lesion.png")
    paths = save_explanations(model, src, tmp_path / "out", image_size=64, mean=MEAN, std=STD)
    assert paths == {"gradcam": tmp_path / "out" / "lesion_gradcam.png",
                     "guided": tmp_path / "out" / "lesion_guided.png"}
    _check_pngs(paths, 64)
    _assert_clean(model, before)
    paths = save_explanations(model, src, tmp_path / "out", image_size=48, mean=MEAN, std=STD,
                              target_class=1, prefix="p1")
    assert paths["gradcam"].name == "p1_gradcam.png"
    _check_pngs(paths, 48)
    with pytest.raises(ImageError, match=r"missing\.png"):
        save_explanations(model, tmp_path / "missing.png", tmp_path, image_size=64, mean=MEAN,
                          std=STD)
    with pytest.raises(ModelError, match="mean and std"):
        save_explanations(model, src, tmp_path, image_size=64, mean=MEAN, std=(0.2, 0.0, 0.2))


def test_save_explanations_real_isic_jpeg(isic_images: Path, tmp_path: Path) -> None:
    src = sorted(isic_images.glob("*.jpg"))[0]
    paths = save_explanations(_timm_model().eval(), src, tmp_path, image_size=64, mean=MEAN,
                              std=STD)
    assert paths["gradcam"].name == f"{src.stem}_gradcam.png"
    _check_pngs(paths, 64)


# --- checkpoints ------------------------------------------------------------------------------


def test_explain_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _timm_model().eval()
    ckpt = save_checkpoint(model, tmp_path / "clf", model_name="test_efficientnet", image_size=64,
                           mean=MEAN, std=STD, class_names=["other", "melanoma"])
    good = _write_image(tmp_path / "a.png", seed=1)
    other = tmp_path / "sub"
    other.mkdir()
    same_stem = _write_image(other / "a.png", seed=2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "figs"
    paths, errors = explain_checkpoint(ckpt, [good, broken, same_stem], out)
    assert len(paths) + len(errors) == 3
    assert list(paths["row"]) == [0, 2] and list(paths["image_id"]) == ["a", "a"]
    assert [p.name for p in paths["gradcam"]] == ["a_gradcam.png", "a_2_gradcam.png"]
    for _, row in paths.iterrows():
        _check_pngs({"gradcam": row["gradcam"], "guided": row["guided"]}, 64)
    assert list(errors["row"]) == [1] and errors.loc[0, "stage"] == "load"
    assert errors.loc[0, "image_id"] == "broken" and "broken.jpg" in errors.loc[0, "message"]
    # the rebuilt model is the saved one: same prediction and probability
    from dermctx.io.images import load_image

    rgb = load_image(good, 64).astype(np.float32) / 255
    x = torch.from_numpy(((rgb - MEAN) / STD).transpose(2, 0, 1).astype(np.float32))[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert paths.loc[0, "target_class"] == int(probs.argmax())
    assert paths.loc[0, "target_name"] == ["other", "melanoma"][int(probs.argmax())]
    assert paths.loc[0, "probability"] == pytest.approx(float(probs.max()), abs=1e-5)
    # explaining a given class
    paths, errors = explain_checkpoint(ckpt, str(good), tmp_path / "figs1", target_class=1)
    assert list(paths["target_name"]) == ["melanoma"] and errors.empty
    with pytest.raises(ModelError, match=r"target_class .* \[0, 2\)"):
        explain_checkpoint(ckpt, [good], out, target_class=5)


def test_explain_checkpoint_without_class_names_and_errors(tmp_path: Path) -> None:
    model = _timm_model(num_classes=3)
    ckpt = save_checkpoint(model, tmp_path / "clf3", model_name="test_efficientnet", image_size=32,
                           mean=MEAN, std=STD)
    good = _write_image(tmp_path / "b.png")
    paths, errors = explain_checkpoint(ckpt, [good], tmp_path / "out")
    assert len(paths) == 1 and errors.empty
    assert paths.loc[0, "target_name"] == str(paths.loc[0, "target_class"])
    with pytest.raises(ModelError, match="no such file"):
        explain_checkpoint(tmp_path / "nope.safetensors", [good], tmp_path)
    pth = tmp_path / "weights.pth"
    torch.save(model.state_dict(), pth)
    with pytest.raises(ModelError, match=r"dermctx \.safetensors checkpoint"):
        explain_checkpoint(pth, [good], tmp_path)
    wrong = save_checkpoint(model, tmp_path / "wrong", model_name="test_efficientnet",
                            image_size=32, mean=MEAN, std=STD, class_names=["a", "b"])
    with pytest.raises(ModelError, match="does not fit 'test_efficientnet' with 2 classes"):
        explain_checkpoint(wrong, [good], tmp_path)


# --- confusion pairs --------------------------------------------------------------------------


def test_confusion_pairs_hand_made_counts() -> None:
    pairs = [("mel", "nev", 3), ("nev", "mel", 1), ("mel", "bkl", 1), ("bkl", "nev", 2),
             ("nev", "bkl", 2), ("mel", "mel", 5), ("nev", "nev", 7), ("bkl", "bkl", 4)]
    y_true = [t for t, _, n in pairs for _ in range(n)]
    y_pred = [p for _, p, n in pairs for _ in range(n)]
    got = confusion_pairs(y_true, y_pred, labels=["mel", "nev", "bkl", "scc"])
    expected = pd.DataFrame({
        "label_a": ["mel", "nev", "mel"], "label_b": ["nev", "bkl", "bkl"],
        "a_as_b": [3, 2, 1], "b_as_a": [1, 2, 0], "total": [4, 4, 1],
        "share": [4 / 9, 4 / 9, 1 / 9],
    })
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert list(got.columns) == ["label_a", "label_b", "a_as_b", "b_as_a", "total", "share"]
    # default labels: the sorted union (bkl < mel < nev); directions follow that order
    got = confusion_pairs(np.array(y_true), pd.Series(y_pred))
    assert list(zip(got["label_a"], got["label_b"], got["a_as_b"], got["b_as_a"], strict=True)) == [
        ("bkl", "nev", 2, 2), ("mel", "nev", 3, 1), ("bkl", "mel", 0, 1)]
    assert got["share"].sum() == pytest.approx(1.0)
    assert confusion_pairs([0, 1, 1], [0, 1, 1]).empty
    assert confusion_pairs([0, 1, 2], [2, 1, 0])[["label_a", "label_b", "total"]].values.tolist() \
        == [[0, 2, 2]]


def test_confusion_pairs_errors() -> None:
    with pytest.raises(DermctxError, match="same length, got 3 and 2"):
        confusion_pairs(["a", "b", "a"], ["a", "b"])
    with pytest.raises(DermctxError, match=r"\['zzz'\] .* not in labels"):
        confusion_pairs(["a", "b"], ["a", "zzz"], labels=["a", "b"])
    with pytest.raises(DermctxError, match="distinct"):
        confusion_pairs(["a"], ["a"], labels=["a", "a"])
    with pytest.raises(DermctxError, match="1-D"):
        confusion_pairs(np.zeros((2, 2)), np.zeros((2, 2)))


def test_confusion_pairs_refuses_missing_and_mixed_labels():
    with pytest.raises(DermctxError, match="mix text and number labels"):
        confusion_pairs([0, 1, 1], ["0", "1", "0"])
    with pytest.raises(DermctxError, match="y_true is missing at positions \\[2\\]"):
        confusion_pairs([1.0, 0, float("nan")], [1, 1, 0])
    with pytest.raises(DermctxError, match="y_true is missing"):
        confusion_pairs([1, 0, None], [1, 1, 0])
