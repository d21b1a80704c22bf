"""Lesion CNN training: out-of-fold scores, patient honesty, external rows, resuming, learning.

Models are timm's ``test_efficientnet`` (100k parameters) with random weights; images are real
ISIC 2020 JPEGs where ``../shared/data`` holds them, generated PNGs otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import dermctx
from dermctx.explain import grad_cam
from dermctx.optim import (
    discriminative_param_groups,
    layer_groups,
    lr_range_test,
    sgdr_restarts,
    sgdr_schedule,
)
from dermctx.train import TrainResult, train_lesion_cnn

FAST = {"pretrained": False, "epochs": 1, "batch_size": 16, "progress": False}


def _square_task(folder: Path, n: int = 160, *, shuffle: bool = False, seed: int = 0) -> pd.DataFrame:
    """48x48 noise images; class 1 has a bright square in the top-left corner. Two per patient."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = rng.integers(60, 140, (48, 48, 3)).astype(np.uint8)
        if i % 2:
            image[6:18, 6:18] = 250
        Image.fromarray(image).save(folder / f"img{i}.png")
        rows.append({"image_id": f"img{i}", "patient_id": f"P{i // 2}", "target": i % 2,
                     "path": str(folder / f"img{i}.png")})
    table = pd.DataFrame(rows)
    if shuffle:
        table["target"] = rng.permutation(table["target"].to_numpy())
    return table


@pytest.fixture(scope="module")
def real_images(tmp_path_factory) -> pd.DataFrame:
    """36 real ISIC JPEGs (the melanoma patients' and others) as a lesion table, or generated
    images when the data is absent."""
    from conftest import SHARED_DATA

    folder = SHARED_DATA / "isic2020" / "images"
    if not (folder / "manifest.csv").exists():
        return _square_task(tmp_path_factory.mktemp("generated"), 36)
    man = pd.read_csv(folder / "manifest.csv")
    table = pd.DataFrame({"image_id": man["image_name"], "patient_id": man["patient_id"],
                          "target": man["target"], "diagnosis": man["diagnosis"],
                          "path": [str(folder / f) for f in man["file"]]})
    melanoma = table["patient_id"].isin(table.loc[table["target"] == 1, "patient_id"])
    return pd.concat([table[melanoma], table[~melanoma]]).head(36).reset_index(drop=True)


def test_oof_scores_every_image_and_never_its_own_patient(real_images, tmp_path):
    table = dermctx.validate_table(real_images)  # age, sex, site added (missing)
    ext = _square_task(tmp_path / "ext", 10).assign(patient_id=lambda t: "EXT" + t["patient_id"],
                                                   image_id=lambda t: "EXT" + t["image_id"])
    result = train_lesion_cnn(table, "test_efficientnet", image_size=32, external=ext, final_model=True,
                              folds=dermctx.PatientKFold(3, random_state=0), out_dir=tmp_path / "run", **FAST)
    oof = result.oof
    assert len(oof) + len(result.errors) == len(table) and len(result.errors) == 0
    assert oof["image_id"].tolist() == table["image_id"].tolist()  # table order
    assert oof["cnn_score"].between(0, 1).all()
    # each patient is scored by one fold model, which trained on the other folds only
    assert (oof.groupby("patient_id")["fold"].nunique() == 1).all()
    assert not set(ext["image_id"]) & set(oof["image_id"])  # external rows never scored
    assert [p.name for p in result.checkpoints] == ["fold0.safetensors", "fold1.safetensors",
                                                    "fold2.safetensors", "all.safetensors"]
    meta = dermctx.embed.checkpoint_metadata(result.checkpoints[0])
    assert meta["model"] == "test_efficientnet" and meta["settings"]["external_rows"] == 10
    # embeddings from the final model feed ContextRanker
    emb, errors = result.embedder(device="cpu").embed(table, progress=False)
    assert len(errors) == 0
    ranked = table.merge(oof[["image_id", "cnn_score"]], on="image_id").join(emb, on="image_id")
    ranker = dermctx.ContextRanker(gbm=dermctx.MetadataGBM(n_estimators=10, min_child_samples=2), n_folds=2).fit(ranked, ranked["target"])
    assert ranker.predict_proba(ranked).shape == (len(table), 2)
    # a finished run reads back, and predicts new images with the fold models
    again = TrainResult.load(tmp_path / "run")
    pd.testing.assert_frame_equal(again.oof, oof)
    scores, errs = again.predict(table.head(3))
    assert scores["cnn_score"].between(0, 1).all() and len(errs) == 0


def test_unreadable_images_are_error_rows(real_images, tmp_path):
    table = real_images.head(12).copy()
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    table.loc[3, "path"] = str(tmp_path / "bad.jpg")
    table.loc[5, "path"] = None
    settings = dict(FAST, image_size=32, folds=dermctx.PatientKFold(2, random_state=0), out_dir=tmp_path / "run")
    result = train_lesion_cnn(table, "test_efficientnet", **settings)
    assert len(result.oof) + len(result.errors) == 12
    assert result.errors["row"].tolist() == [3, 5]
    assert "bad.jpg" in result.errors["message"].iloc[0]
    resumed = train_lesion_cnn(table, "test_efficientnet", **settings)  # every fold read back
    pd.testing.assert_frame_equal(resumed.errors, result.errors)


def test_resume_after_a_killed_fold_gives_the_same_scores(tmp_path):
    table = _square_task(tmp_path / "img", 48)
    settings = dict(FAST, image_size=32, folds=dermctx.PatientKFold(3, random_state=0))
    whole = train_lesion_cnn(table, "test_efficientnet", out_dir=tmp_path / "a", **settings)
    partial = tmp_path / "b"
    shutil.copytree(tmp_path / "a", partial)
    for name in ("fold1", "fold2"):  # the run was killed after fold 0
        for path in partial.glob(f"{name}.*"):
            path.unlink()
    resumed = train_lesion_cnn(table, "test_efficientnet", out_dir=partial, **settings)
    pd.testing.assert_frame_equal(resumed.oof, whole.oof)
    with pytest.raises(dermctx.ModelError, match="other settings"):
        train_lesion_cnn(table, "test_efficientnet", out_dir=partial, **(settings | {"epochs": 2}))


def test_resuming_after_the_images_changed_is_refused(tmp_path):
    """A finished fold read back would score the old pixels: changed image files are refused."""
    import os
    import warnings

    table = _square_task(tmp_path / "img", 24)
    settings = dict(FAST, image_size=32, folds=dermctx.PatientKFold(2, random_state=0), out_dir=tmp_path / "run")
    first = train_lesion_cnn(table, "test_efficientnet", **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unchanged resume is quiet and reads every fold back
        again = train_lesion_cnn(table, "test_efficientnet", **settings)
    pd.testing.assert_frame_equal(again.oof, first.oof)
    target = Path(table["path"].iloc[5])
    data, stat = target.read_bytes(), target.stat()
    target.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(dermctx.ModelError, match=r"1 image file\(s\) changed.*img5\.png \(size") as refused:
        train_lesion_cnn(table, "test_efficientnet", **settings)
    assert "delete" not in str(refused.value)  # a size change is never offered as acceptable
    target.write_bytes(data)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same bytes and time, yet rewritten
    with pytest.raises(dermctx.ModelError, match=r"status-change time.*delete .*images\.parquet to accept"):
        train_lesion_cnn(table, "test_efficientnet", **settings)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    missing = tmp_path / "img" / "img7.png"
    kept = missing.read_bytes()
    missing.unlink()
    with pytest.raises(dermctx.ModelError, match=r"2 image file\(s\).*img5\.png \(modified\).*img7\.png \(now missing\)"):
        train_lesion_cnn(table, "test_efficientnet", **settings)
    missing.write_bytes(kept)
    # deleting the record accepts the files as they are (with a warning), and records them again
    (tmp_path / "run" / "images.parquet").unlink()
    with pytest.warns(dermctx.DermctxWarning, match="no images.parquet"):
        resumed = train_lesion_cnn(table, "test_efficientnet", **settings)
    pd.testing.assert_frame_equal(resumed.oof, first.oof)  # read back: the old images' scores
    assert (tmp_path / "run" / "images.parquet").exists()
    # ... but never a score of an image that no longer exists
    (tmp_path / "run" / "images.parquet").unlink()
    missing.unlink()
    with pytest.raises(dermctx.ModelError, match=r"fold\d is finished, but the image file\(s\) of 1 .*img7\.png"):
        train_lesion_cnn(table, "test_efficientnet", **settings)
    assert not (tmp_path / "run" / "images.parquet").exists()  # nothing recorded: restoring the file works
    missing.write_bytes(kept)
    with pytest.warns(dermctx.DermctxWarning, match="no images.parquet"):
        pd.testing.assert_frame_equal(train_lesion_cnn(table, "test_efficientnet", **settings).oof, first.oof)
    # images copied elsewhere: other paths, named
    shutil.copytree(tmp_path / "img", tmp_path / "copy")
    moved = table.assign(path=table["path"].str.replace(str(tmp_path / "img"), str(tmp_path / "copy")))
    with pytest.raises(dermctx.ModelError, match=r"other image paths \(24 row\(s\), e\.g\. .*img0\.png' -> .*copy"):
        train_lesion_cnn(moved, "test_efficientnet", **settings)


def test_learns_a_visual_signal_and_looks_at_it(tmp_path):
    """A check that can fail: a clear signal is learned, shuffled labels are not."""
    settings = dict(pretrained=False, image_size=48, epochs=4, batch_size=16, lr=3e-3, schedule="cosine",
                    lr_factors=None, augment=False, progress=False,
                    folds=dermctx.PatientKFold(2, random_state=0))
    table = _square_task(tmp_path / "signal")
    result = train_lesion_cnn(table, "test_efficientnet", **settings)
    y = table.set_index("image_id").loc[result.oof["image_id"], "target"]
    signal_auc = dermctx.auc(y, result.oof["cnn_score"])
    noise = _square_task(tmp_path / "noise", shuffle=True)
    shuffled = train_lesion_cnn(noise, "test_efficientnet", **settings)
    noise_auc = dermctx.auc(noise.set_index("image_id").loc[shuffled.oof["image_id"], "target"],
                            shuffled.oof["cnn_score"])
    assert signal_auc >= 0.95 and abs(noise_auc - 0.5) < 0.15, (signal_auc, noise_auc)
    # Grad-CAM of the fold model on held-out class-1 images falls mainly on the top-left quadrant,
    # which holds the square: at 48 px the network's last feature map is 2 x 2, so Grad-CAM
    # resolves quadrants (a map on that cell alone puts 0.77 of its mass there)
    model, masses = result.models[0].eval(), []
    mean, std = torch.tensor(result.settings["mean"]).view(3, 1, 1), torch.tensor(result.settings["std"]).view(3, 1, 1)
    for path in table.loc[(table["target"] == 1) & (result.oof["fold"] == 0), "path"][:10]:
        x = (torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1) - mean) / std
        cam = grad_cam(model, x, target_class=1)
        masses.append(cam[:24, :24].sum() / cam.sum())
    assert np.mean(masses) > 0.6, masses


def test_taxonomy_target_sums_the_melanoma_classes(real_images, tmp_path):
    table = real_images
    if "diagnosis" not in table.columns:
        pytest.skip("needs the real ISIC images with diagnoses")
    tax = dermctx.Taxonomy.builtin("isic2020-binary")
    result = train_lesion_cnn(table, "test_efficientnet", target=tax, image_size=32,
                              folds=dermctx.PatientKFold(2, random_state=0), **FAST)
    probs = result.oof[[f"prob_{c}" for c in tax.leaves]]
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(result.oof["cnn_score"], result.oof["prob_melanoma"], atol=1e-6)


# --- optim -------------------------------------------------------------------------------------


def test_discriminative_groups_have_the_rates_they_say():
    import timm

    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=2)
    groups = discriminative_param_groups(model, 1e-3, factors=(0.01, 0.1, 1.0), weight_decay=0.05)
    opt = torch.optim.AdamW(groups)
    rates = {g["name"]: g["lr"] for g in opt.param_groups}
    assert rates == {"part 1 of 3": pytest.approx(1e-5), "part 2 of 3": pytest.approx(1e-4),
                     "part 3 of 3": pytest.approx(1e-3)}
    owner = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert owner[id(model.conv_stem.weight)] == pytest.approx(1e-5)  # input side: slowest
    assert owner[id(model.classifier.weight)] == pytest.approx(1e-3)  # classifier: full rate
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 0 for g in groups for p in g["params"] if p.ndim == 1)
    assert len(layer_groups(model)) > 3


def test_sgdr_restarts_where_it_says_and_keeps_the_part_rates():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(discriminative_param_groups(model, 0.1, factors=(0.1, 1.0)))
    schedule = sgdr_schedule(opt, cycle_steps=10, cycle_mul=2.0)
    rates = []
    for step in range(1, 70):
        schedule.step_update(step)
        rates.append([g["lr"] for g in opt.param_groups])
    rates = np.asarray(rates)
    jumps = [i + 1 for i in range(1, len(rates)) if rates[i, -1] > rates[i - 1, -1] + 1e-9]
    assert jumps == sgdr_restarts(10, 2.0, 70) == [10, 30]  # cycles of 10, 20, 40 steps
    np.testing.assert_allclose(rates[:, 0], rates[:, -1] * 0.1)


def test_lr_range_test_suggests_a_rate_and_restores_the_model(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    result = lr_range_test(model, batches, start_lr=1e-5, end_lr=10, steps=80)
    assert 1e-5 <= result.suggested_lr <= 10 and len(result.lrs) == len(result.losses) > 10
    assert result.losses.min() < result.losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.plot(tmp_path / "lr.png").stat().st_size > 0


def test_cli_train_fit_score_and_explain(tmp_path, capsys):
    from dermctx.cli import main

    table = _square_task(tmp_path / "img", 40)
    table.drop(columns="path").to_csv(tmp_path / "table.csv", index=False)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "table.csv"), "--image-dir", str(tmp_path / "img"),
                 "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32", "--epochs", "1",
                 "--folds", "2", "--batch-size", "16", "--out", str(run), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "40 out-of-fold scores" in capsys.readouterr().err
    assert len(list((tmp_path / "cache").rglob("*.rgb"))) == 40
    assert main(["fit", str(tmp_path / "table.csv"), "--cnn", str(run), "--out", str(tmp_path / "ranker")]) == 0
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "table.csv"), "--image-dir", str(tmp_path / "img"), "--cnn", str(run),
                 "--model", str(tmp_path / "ranker"), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    assert len(scores) == 40 and scores["image_id"].isin(table["image_id"]).all()
    assert "40 image(s) were in its training table: their out-of-fold scores are used" in capsys.readouterr().err
    # new images without paths: the fold models cannot score any of them, every item failed
    table.drop(columns="path").assign(image_id="new" + table["image_id"]).to_csv(tmp_path / "new.csv", index=False)
    assert main(["score", str(tmp_path / "new.csv"), "--cnn", str(run),
                 "--model", str(tmp_path / "ranker"), "--out", str(tmp_path / "none.csv")]) == 1
    # images the run trained on, filed under another patient here: no score of the run is out of
    # patient for them; score lists them as errors, fit refuses
    moved = table.drop(columns="path").copy()
    moved.loc[:1, "patient_id"] = "someone_else"
    moved.to_csv(tmp_path / "moved.csv", index=False)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "moved.csv"), "--image-dir", str(tmp_path / "img"), "--cnn", str(run),
                 "--model", str(tmp_path / "ranker"), "--out", str(tmp_path / "moved_scores.csv")]) == 1
    errors = pd.read_csv(tmp_path / "moved_scores.errors.csv")
    assert sorted(errors["image_id"]) == sorted(moved["image_id"].iloc[:2])
    assert errors["message"].str.contains("filed under patient").all()
    assert len(pd.read_csv(tmp_path / "moved_scores.csv")) == 38
    assert main(["fit", str(tmp_path / "moved.csv"), "--cnn", str(run), "--out", str(tmp_path / "r2")]) == 2
    assert "filed under patient" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "img" / "img1.png"), str(tmp_path / "missing.png"),
                 "--checkpoint", str(run / "fold0.safetensors"), "--out", str(tmp_path / "why")]) == 1
    assert "1 of 2 items failed" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "why" / "errors.csv")["path"].str.endswith("missing.png").all()
    assert any(p.name.endswith("_gradcam.png") for p in (tmp_path / "why").iterdir())


def test_report_shows_gradcam_overlays_of_the_top_lesions(tmp_path):
    table = _square_task(tmp_path / "img", 24)
    result = train_lesion_cnn(table, "test_efficientnet", image_size=32, out_dir=tmp_path / "run",
                              folds=dermctx.PatientKFold(2, random_state=0), **FAST)
    scored = dermctx.validate_table(table).merge(result.oof[["image_id", "cnn_score"]], on="image_id")
    path = dermctx.write_report(scored, tmp_path / "report", score_cols=["cnn_score"], n_boot=20,
                                checkpoint=result.checkpoints[0], n_overlays=1, progress=False)
    html = path.read_text()
    assert html.count('alt="Grad-CAM ') == html.count('class="patient"') > 0


def test_runs_that_cannot_be_trained_or_resumed_are_refused(tmp_path):
    table = _square_task(tmp_path / "img", 24)
    settings = dict(FAST, image_size=32, out_dir=tmp_path / "run")
    train_lesion_cnn(table, "test_efficientnet", folds=dermctx.PatientKFold(2, random_state=0), **settings)
    for changed, why in (({"folds": dermctx.PatientKFold(3, random_state=0)}, "other settings"),  # other folds
                         ({"folds": dermctx.PatientKFold(2, random_state=5)},  # other split seed
                          "other rows")):
        with pytest.raises(dermctx.ModelError, match=why):
            train_lesion_cnn(table, "test_efficientnet", **(settings | changed))
    other = _square_task(tmp_path / "other", 24, seed=1).assign(patient_id=lambda t: "Q" + t["patient_id"])
    with pytest.raises(dermctx.ModelError, match="other rows"):  # another table, same size
        train_lesion_cnn(other, "test_efficientnet", folds=dermctx.PatientKFold(2, random_state=0), **settings)
    with pytest.raises(dermctx.ModelError, match="no row has a usable image"):
        train_lesion_cnn(table.assign(path=None), "test_efficientnet", **FAST)
    with pytest.raises(dermctx.ModelError, match="one class only"):
        train_lesion_cnn(table.assign(target=0), "test_efficientnet", **FAST)
    with pytest.raises(dermctx.TableError, match="target='diagnosis'"):
        train_lesion_cnn(table.assign(diagnosis="nevus"), "test_efficientnet", target="diagnosis", **FAST)
    ext = _square_task(tmp_path / "ext", 6).assign(image_id=lambda t: "E" + t["image_id"],
                                                  patient_id=lambda t: "E" + t["patient_id"], path=None)
    with pytest.warns(dermctx.DermctxWarning, match="external: 6 of 6 rows have no usable image"):
        train_lesion_cnn(table, "test_efficientnet", external=ext, image_size=32,
                         folds=dermctx.PatientKFold(2, random_state=0), **FAST)
    # a last training batch of one image (BatchNorm cannot train on it) is dropped, not fatal
    result = train_lesion_cnn(table.head(22), "test_efficientnet", image_size=32,
                              folds=dermctx.PatientKFold(2, random_state=0), **{**FAST, "batch_size": 10})
    assert len(result.oof) == 22


def test_training_starts_from_a_checkpoint(tmp_path):
    import timm

    torch.manual_seed(1)
    start = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)  # a backbone
    ckpt = dermctx.save_checkpoint(start, tmp_path / "backbone", model_name="test_efficientnet",
                                   image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    table = _square_task(tmp_path / "img", 24)
    result = train_lesion_cnn(table, "test_efficientnet", image_size=32, checkpoint=ckpt,
                              folds=dermctx.PatientKFold(2, random_state=0), **{**FAST, "epochs": 1})
    assert len(result.oof) == 24
    # a checkpoint of another architecture is refused, naming it
    other = dermctx.save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "other", model_name="x",
                                    image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(dermctx.ModelError, match="does not fit the model"):
        train_lesion_cnn(table, "test_efficientnet", image_size=32, checkpoint=other,
                         folds=dermctx.PatientKFold(2, random_state=0), **FAST)


def test_an_image_cache_changes_nothing_but_the_decoding(tmp_path):
    table = _square_task(tmp_path / "img", 40)
    settings = {**FAST, "image_size": 32, "epochs": 2, "folds": dermctx.PatientKFold(2, random_state=0)}
    plain = train_lesion_cnn(table, "test_efficientnet", **settings)
    cached = train_lesion_cnn(table, "test_efficientnet", cache_dir=tmp_path / "cache", **settings)
    pd.testing.assert_frame_equal(plain.oof, cached.oof)
    assert len(list((tmp_path / "cache").rglob("*.rgb"))) == 40  # each image decoded once, kept
    assert "cache_dir" not in cached.settings  # not a setting of the run: resuming ignores it
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(dermctx.ModelError, match=r"cache_dir .*afile.* is not a writable folder"):
        train_lesion_cnn(table, "test_efficientnet", cache_dir=tmp_path / "afile", out_dir=tmp_path / "run",
                         **settings)
    assert not (tmp_path / "run").exists()  # refused before anything was written
