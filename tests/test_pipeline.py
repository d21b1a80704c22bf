"""LesionPipeline and table_from_folder: from a folder of one patient's images to ranked lesions.

The pipeline tests train timm's ``test_efficientnet`` (random weights, 32 px, 2 folds, 1 epoch)
on 24 real ISIC 2020 JPEGs of ``../shared/data`` (skipped with a reason without it): plumbing,
not accuracy. The table_from_folder tests use small generated images and DICOM files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import dermctx
from dermctx import LesionPipeline, ModelError, TableError, table_from_folder
from dermctx.cli import main as cli
from dermctx.pipeline import SCORE_COLUMNS

# --- table_from_folder (no network, generated images) ------------------------------------------


def _jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def _dicom(folder: Path, image_id: str, **row) -> Path:
    jpeg = _jpeg(folder.parent / "src" / f"{image_id}.jpg", seed=len(image_id))
    return dermctx.write_dicom(jpeg, {"image_id": image_id, **row}, folder / f"{image_id}.dcm")


def test_one_patient_folder_named_by_the_folder_and_non_images_skipped(tmp_path):
    folder = tmp_path / "IP_0001"
    for i in range(3):
        _jpeg(folder / f"img{i}.jpg", i)
    _jpeg(folder / "img3.png", 3)
    (folder / "notes.txt").write_text("seen on 2024-01-02")
    (folder / "list.csv").write_text("a,b\n")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "scan.heic").write_bytes(b"\0" * 64)  # not clearly a non-image: tried, and an error row
    table, errors = table_from_folder(folder, age=41, sex="F")
    assert table["image_id"].tolist() == ["img0", "img1", "img2", "img3"]
    assert set(table["patient_id"]) == {"IP_0001"} and set(table["sex"]) == {"female"}
    assert (table["age"] == 41).all() and table["width"].tolist() == [40] * 4
    assert sorted(Path(p).name for p in table.attrs["skipped"]) == ["list.csv", "notes.txt"]
    assert errors["image_id"].tolist() == ["broken", "scan"]
    assert all("not a readable image" in m for m in errors["message"])
    assert len(table) + len(errors) == 6  # the files tried
    table, _ = table_from_folder(folder, patient_id="P9")
    assert set(table["patient_id"]) == {"P9"}


def test_one_patient_per_subfolder(tmp_path):
    for patient, n in (("A", 2), ("B", 3)):
        for i in range(n):
            _jpeg(tmp_path / patient / ("visit1" if i == 2 else "") / f"{patient}{i}.jpg", i)
    _jpeg(tmp_path / "stray.jpg")
    table, errors = table_from_folder(tmp_path, recursive=True)
    assert table.groupby("patient_id").size().to_dict() == {"A": 2, "B": 3}
    assert errors["image_id"].tolist() == ["stray"] and "sub-folder" in errors["message"].iloc[0]
    with pytest.raises(TableError, match="recursive=True"):
        table_from_folder(tmp_path, recursive=True, patient_id="X")
    table, errors = table_from_folder(tmp_path)  # the top only is one patient; every image below it
    assert table["image_id"].tolist() == ["stray"]  # is an error row naming it, never left out silently
    assert sorted(errors["image_id"]) == ["A0", "A1", "B0", "B1", "B2"]
    assert all("not read: it is in the sub-folder" in m for m in errors["message"])


def test_dicom_headers_give_the_patient_and_a_conflicting_id_is_refused(tmp_path):
    folder = tmp_path / "whatever"
    meta = {"patient_id": "IP_77", "age": 62.0, "sex": "male", "site": "torso"}
    _dicom(folder, "lesA", **meta)
    _dicom(folder, "lesB", **{**meta, "site": "head/neck"})
    table, errors = table_from_folder(folder)
    assert len(errors) == 0 and set(table["source"]) == {"dicom"}
    assert table[["image_id", "patient_id", "age", "sex", "site"]].values.tolist() == [
        ["lesA", "IP_77", 62.0, "male", "torso"], ["lesB", "IP_77", 62.0, "male", "head/neck"]]
    table, _ = table_from_folder(folder, patient_id="IP_77", age=62.4)  # agreeing values are fine
    with pytest.raises(TableError, match=r"lesA\.dcm: its DICOM header gives patient id 'IP_77'"):
        table_from_folder(folder, patient_id="IP_78")
    with pytest.raises(TableError, match="sex"):
        table_from_folder(folder, sex="female")


def test_sites_csv_must_match_the_folder(tmp_path):
    folder = tmp_path / "P1"
    for i in range(3):
        _jpeg(folder / f"img{i}.jpg", i)
    good = tmp_path / "sites.csv"
    pd.DataFrame({"image_id": ["img0", "img1.jpg", "img2"],
                  "site": ["anterior torso", "", "palms/soles"]}).to_csv(good, index=False)
    table, _ = table_from_folder(folder, sites=good)
    assert table["site"].tolist() == ["torso", None, "palms/soles"]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"image_name": ["img0", "img1", "img9"], "site": ["torso"] * 3}).to_csv(bad, index=False)
    with pytest.raises(TableError, match=r"names 1 image\(s\) not in the folder \(\['img9'\]\) and has no row "
                                         r"for 1 image\(s\) of the folder \(\['img2.jpg'\]\)"):
        table_from_folder(folder, sites=bad)
    with pytest.raises(TableError, match="'elbow'"):
        table_from_folder(folder, sites={"img0": "torso", "img1": "elbow", "img2": None})


def test_duplicate_stems_and_empty_folders_are_refused(tmp_path):
    folder = tmp_path / "P1"
    _jpeg(folder / "les1.jpg")
    _jpeg(folder / "les1.png")
    with pytest.raises(TableError, match=r"les1\.jpg and .*les1\.png: two files with image id 'les1'"):
        table_from_folder(folder)
    empty = tmp_path / "P2"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(TableError, match=r"no image files \(1 file\(s\) skipped as not images"):
        table_from_folder(empty)
    with pytest.raises(dermctx.ImageError, match="no such folder"):
        table_from_folder(tmp_path / "missing")
    with pytest.raises(TableError, match="age=150"):
        table_from_folder(folder, age=150)


# --- the pipeline on real JPEGs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """24 small real JPEGs (both melanomas) for training; 5 others as one new patient's folder,
    with a corrupt .jpg and a note."""
    from conftest import SHARED_DATA

    folder = SHARED_DATA / "isic2020" / "images"
    if not (folder / "manifest.csv").exists():
        pytest.skip(f"real data not available: {folder / 'manifest.csv'} is missing (set DERMCTX_SHARED_DATA)")
    man = pd.read_csv(folder / "manifest.csv").sort_values(["bytes", "image_name"])
    others = man[man["target"] == 0]
    train = pd.concat([man[man["target"] == 1], others.head(22)])
    table = pd.DataFrame({"image_id": train["image_name"], "patient_id": train["patient_id"],
                          "target": train["target"], "path": [str(folder / f) for f in train["file"]],
                          "age": 55.0, "sex": "female", "site": "torso"}).reset_index(drop=True)
    patient = tmp_path_factory.mktemp("clinic") / "IP_NEW"
    patient.mkdir()
    for f in others["file"].iloc[22:27]:
        shutil.copy(folder / f, patient / f)
    (patient / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (patient / "notes.txt").write_text("five lesions, one photo broken")
    return {"table": table, "patient": patient, "folder": folder,
            "spare": [folder / f for f in others["file"].iloc[27:29]]}


@pytest.fixture(scope="module")
def run_dir(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cnn") / "run"
    dermctx.train_lesion_cnn(images["table"], "test_efficientnet", image_size=32, epochs=1, batch_size=16,
                             pretrained=False, folds=dermctx.PatientKFold(2, random_state=0), out_dir=out,
                             final_model=True, device="cpu", progress=False)
    return out


@pytest.fixture(scope="module")
def fitted(images, run_dir, tmp_path_factory) -> tuple[LesionPipeline, Path]:
    """A pipeline of the run's fold models only (as a run without final_model=True)."""
    run = dermctx.TrainResult.load(run_dir)
    folds_only = dataclasses.replace(run, final_model=None,
                                     checkpoints=[p for p in run.checkpoints if p.name != "all.safetensors"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few melanomas for the ranker's inner folds
        pipe = LesionPipeline(n_boot=100, device="cpu").fit(images["table"], folds_only)
    return pipe, pipe.save(tmp_path_factory.mktemp("model") / "pipeline")


def test_fit_records_out_of_fold_provenance(images, run_dir, fitted):
    pipe, folder = fitted
    run = dermctx.TrainResult.load(run_dir)
    # the ranker was fitted on the trainer's out-of-fold scores
    prov = pipe.provenance_
    assert prov["training_table"] == {"patients": 24, "lesions": 24, "melanomas": 2}
    assert prov["cnn_model"] == "test_efficientnet" and "2 fold models averaged" in prov["cnn"]
    y = images["table"]["target"].to_numpy()
    expected = dermctx.auc(y, images["table"].merge(run.oof, on="image_id")["cnn_score"])
    assert prov["cnn_auc"]["estimate"] == pytest.approx(expected)
    assert prov["ranker_auc"]["estimate"] == pytest.approx(dermctx.auc(y, pipe.ranker_.oof_proba_))
    assert prov["ranker_auc"]["low"] <= prov["ranker_auc"]["estimate"] <= prov["ranker_auc"]["high"]
    assert prov["dermctx_version"] == dermctx.__version__ and prov["fitted"].endswith("UTC")
    assert list(pipe.ranker_.feature_names_in_) == ["patient_id", "cnn_score", "age", "sex", "site"]
    assert sorted(p.name for p in folder.iterdir()) == ["fold0.safetensors", "fold1.safetensors",
                                                       "manifest.json", "pipeline.json", "ranker"]
    # from the run's folder, its final model comes along (the similarities' one feature space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert LesionPipeline(n_boot=10).fit(images["table"], run_dir).cnn_.final is not None


def test_score_patient_in_a_fresh_process_matches_python(images, fitted, tmp_path):
    _, folder = fitted
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "dermctx.cli", "score-patient", str(images["patient"]),
                           "--model", str(folder), "--out", str(out), "--age", "60", "--sex", "male"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 1, done.stderr  # one image failed
    scores = pd.read_csv(out / "scores.csv")
    errors = pd.read_csv(out / "errors.csv")
    assert scores["rank"].tolist() == [1, 2, 3, 4, 5] and scores["patient_id"].eq("IP_NEW").all()
    assert errors["image_id"].tolist() == ["corrupt"] and errors["path"].str.endswith("corrupt.jpg").all()
    assert "ISIC_" in done.stdout and "%" in done.stdout and "(see " in done.stdout

    page = (out / "patient.html").read_text()
    assert len(re.findall(r'<img[^>]*class="thumb"', page)) == 5
    for image_id in scores["image_id"]:
        assert image_id in page
    text = re.sub(r"<style>.*?</style>|<script>.*?</script>", " ", page, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)  # the visible text (data URIs live in attributes)
    assert not re.search(r"(?<![\w#.])\d+(?:\.\d+)?[eE][-+]?\d+\b", text)
    assert "not a diagnosis" in text
    assert "too few melanomas" in text and "measure nothing" in text  # 2 melanomas: no AUC claimed

    # the same scores as score_images in this process
    py, py_errors = LesionPipeline.load(folder).score_images(images["patient"], age=60, sex="male")
    assert py["image_id"].tolist() == scores["image_id"].tolist()
    np.testing.assert_allclose(scores["score"], py["score"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores["cnn_score"], py["cnn_score"], rtol=0, atol=1e-6)
    assert py_errors["row"].tolist() == errors["row"].tolist()


def test_loaded_pipeline_scores_like_the_saved_one(images, run_dir, fitted):
    pipe, folder = fitted
    loaded = LesionPipeline.load(folder)
    a, a_err = pipe.score_images(images["patient"], patient_id="P1", age=60)
    b, b_err = loaded.score_images(images["patient"], patient_id="P1", age=60)
    assert list(a.columns) == list(SCORE_COLUMNS) and len(a) == 5 and len(a_err) == 1
    assert a["image_id"].tolist() == b["image_id"].tolist()
    for col in ("score", "cnn_score", "raised_by_change", "lowered_by_change", "most_similar_distance"):
        np.testing.assert_allclose(a[col].astype(float), b[col].astype(float), rtol=0, atol=1e-6)
    assert a["explanation"].tolist() == b["explanation"].tolist()
    assert a["most_similar"].tolist() == b["most_similar"].tolist()
    pd.testing.assert_frame_equal(a_err, b_err)
    # cnn_score is the fold models' mean, as TrainResult.predict gives it
    run = dermctx.TrainResult.load(run_dir)
    table = dermctx.validate_table(pd.DataFrame({"image_id": a["image_id"], "patient_id": "P1", "path": a["path"]}))
    predicted, _ = run.predict(table)
    np.testing.assert_allclose(predicted["cnn_score"], a["cnn_score"], rtol=0, atol=1e-6)
    assert sorted(a["cnn_rank"]) == [1, 2, 3, 4, 5]
    assert set(a["most_similar"]) <= set(a["image_id"]) and (a["most_similar"] != a["image_id"]).all()
    assert (a["most_similar_distance"] <= a["least_similar_distance"]).all()


def test_single_image_and_a_truncated_one(images, fitted, tmp_path):
    pipe, _ = fitted
    one, errors = pipe.score_images([images["spare"][0]], patient_id="P2")
    assert len(one) == 1 and len(errors) == 0 and one["rank"].tolist() == [1]
    assert 0 < one["score"].iloc[0] < 1 and one["most_similar"].isna().all()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(images["spare"][1].read_bytes()[:3000])  # a valid header, truncated data
    scores, errors = pipe.score_images([images["spare"][0], cut], patient_id="P2")
    assert len(scores) == 1 and errors[["image_id", "row", "stage"]].values.tolist() == [["cut", 1, "load"]]
    with pytest.raises(TableError, match="patient_id"):
        pipe.score_images([images["spare"][0]])  # a JPEG has no patient id of its own


def test_tampered_folders_are_refused(fitted, tmp_path):
    _, folder = fitted
    cases = {
        "fold1.safetensors": lambda f: f.write_bytes(f.read_bytes()[:-8] + b"\0" * 8),
        "pipeline.json": lambda f: f.write_text(f.read_text().replace('"image_size": 32', '"image_size": 64')),
        "ranker/gbm.txt": lambda f: f.unlink(),
        "ranker/manifest.json": lambda f: f.write_text(f.read_text() + " "),
    }
    for name, damage in cases.items():
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(folder, copy)
        damage(copy / name)
        with pytest.raises(ModelError, match=re.escape(Path(name).name)):
            LesionPipeline.load(copy)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "LesionPipeline" and "pipeline.json" in manifest["files"]
    with pytest.raises(ModelError, match=r"not a folder written by LesionPipeline\.save"):
        LesionPipeline.load(tmp_path)


def test_fit_uses_out_of_fold_scores_only(images, run_dir):
    table = images["table"]
    stranger = table.head(1).assign(image_id="ISIC_9999999")
    with pytest.raises(ModelError, match=r"no out-of-fold score .*ISIC_9999999"):
        LesionPipeline(n_boot=10).fit(pd.concat([table, stranger]), run_dir)
    moved = table.assign(patient_id=lambda t: t["patient_id"].where(t.index != 3, "IP_OTHER"))
    with pytest.raises(ModelError, match="filed under patient"):
        LesionPipeline(n_boot=10).fit(moved, run_dir)
    with pytest.raises(ModelError, match="use_image_size"):
        LesionPipeline(n_boot=10, ranker=dermctx.ContextRanker(use_image_size=True)).fit(table, run_dir)
    # a table's own cnn_score is replaced by the run's out-of-fold one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = LesionPipeline(n_boot=10).fit(table.assign(cnn_score=1.0), run_dir)
    assert pipe.provenance_["cnn_auc"]["estimate"] != 0.5


def test_embeddings_from_the_final_model(images, run_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = LesionPipeline(use_embeddings=True, n_boot=10, device="cpu").fit(images["table"], run_dir)
    emb = [c for c in pipe.ranker_.feature_names_in_ if c.startswith("emb_")]
    assert len(emb) == 256  # test_efficientnet's pooled features
    folder = pipe.save(tmp_path / "emb")
    assert (folder / "final.safetensors").is_file()
    a, _ = pipe.score_images(images["patient"], patient_id="P1")
    b, _ = LesionPipeline.load(folder).score_images(images["patient"], patient_id="P1")
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=1e-6)
    # the similarities are cosine distances in the final model's space, that of emb_*
    from dermctx.pipeline import _infer

    emb = _infer(pipe.cnn_, a["path"].tolist(), pipe._infer_settings(), False, folds=False).final_feats
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = 1 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    assert a["most_similar"].tolist() == a["image_id"].iloc[dist.argmin(axis=1)].tolist()
    np.testing.assert_allclose(a["most_similar_distance"], dist.min(axis=1), atol=1e-5)


def test_dicom_folder_scored_with_its_headers(images, fitted, tmp_path):
    pipe, _ = fitted
    for i, path in enumerate(images["spare"]):
        dermctx.write_dicom(path, {"image_id": path.stem, "patient_id": "IP_DCM", "age": 70,
                                   "sex": "male", "site": ["torso", "head/neck"][i]},
                            tmp_path / "dcm" / f"{path.stem}.dcm")
    scores, errors = pipe.score_images(tmp_path / "dcm")
    assert len(errors) == 0 and set(scores["patient_id"]) == {"IP_DCM"}
    assert sorted(scores["site"]) == ["head/neck", "torso"] and (scores["age"] == 70).all()
    with pytest.raises(TableError, match="IP_DCM"):
        pipe.score_images(tmp_path / "dcm", patient_id="IP_OTHER")


# --- the command line ------------------------------------------------------------------------------


def test_fit_cnn_run_writes_a_pipeline_folder(images, run_dir, tmp_path, capsys):
    csv = tmp_path / "train.csv"
    images["table"].to_csv(csv, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli(["fit", str(csv), "--cnn-run", str(run_dir), "--out", str(tmp_path / "pipe"), "--n-boot", "50"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "trained on 24 patients, 24 lesions, 2 melanomas" in err and "out-of-fold AUC" in err
    assert LesionPipeline.load(tmp_path / "pipe").provenance_["ranker_auc"]["n_boot"] == 50
    assert cli(["fit", str(csv), "--cnn-run", str(run_dir), "--use-image-size", "--out", str(tmp_path / "x")]) == 2
    assert "drop --use-image-size" in capsys.readouterr().err


def test_score_patient_exit_codes(images, fitted, tmp_path, capsys):
    _, folder = fitted
    clean = tmp_path / "clean"
    clean.mkdir()
    for path in images["spare"]:
        shutil.copy(path, clean / path.name)
    out = tmp_path / "out"
    assert cli(["score-patient", str(clean), "--model", str(folder), "--out", str(out), "--no-page"]) == 0
    assert len(pd.read_csv(out / "scores.csv")) == 2 and not (out / "errors.csv").exists()
    capsys.readouterr()
    sites = tmp_path / "sites.csv"
    pd.DataFrame({"image_id": ["ISIC_0000000"], "site": ["torso"]}).to_csv(sites, index=False)
    for bad in (["score-patient", str(tmp_path / "nope"), "--model", str(folder), "--out", str(out)],
                ["score-patient", str(clean), "--model", str(tmp_path), "--out", str(out)],
                ["score-patient", str(clean), "--model", str(folder), "--out", str(out), "--sites", str(sites)]):
        assert cli(bad) == 2
        assert "dermctx score-patient: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["score-patient", str(clean), "--model", str(folder), "--out", str(out), "--age", "old"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli(["score-patient", "--help"])
    assert "1 when some images could not be scored" in " ".join(capsys.readouterr().out.split())
