"""CUDA paths: embedding, training with AMP and pipeline scoring agree with the CPU.

Marked ``gpu`` and skipped without a CUDA device (the README's test command deselects them). Run
them on a CUDA machine with ``python -m pytest -q -m gpu tests/test_gpu.py``. Images are
generated (noise, class 1 with a bright square), so no shared data is needed.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import dermctx
from dermctx import Embedder, LesionPipeline, train_lesion_cnn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _square_task(folder: Path, n: int = 120) -> pd.DataFrame:
    """test_train's generated task (48x48 noise, class 1 with a bright square), with metadata."""
    from test_train import _square_task as square_task

    return square_task(folder, n).assign(age=50.0, sex="female", site="torso")


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_embedder_on_cuda_matches_the_cpu(tmp_path):
    table = _square_task(tmp_path / "img", 24)
    got = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)  # the same random weights on both
        emb, errors = Embedder("resnet18", pretrained=False, image_size=64, device=device,
                               batch_size=8).embed(table, progress=False)
        assert errors.empty
        got[device] = emb.filter(like="emb_").to_numpy()
    assert got["cuda"].dtype == np.float32 and got["cuda"].shape == got["cpu"].shape == (24, 512)
    assert _relative_error(got["cuda"], got["cpu"]) < 1e-2  # float16 autocast on CUDA


def test_training_on_cuda_with_amp_learns_and_predicts_like_the_cpu(tmp_path):
    table = _square_task(tmp_path / "img")
    result = train_lesion_cnn(table, "test_efficientnet", pretrained=False, image_size=48, epochs=4,
                              batch_size=16, lr=3e-3, schedule="cosine", lr_factors=None, augment=False,
                              folds=dermctx.PatientKFold(2, random_state=0), device="cuda", amp=True,
                              progress=False)
    y = table.set_index("image_id").loc[result.oof["image_id"], "target"]
    assert dermctx.auc(y, result.oof["cnn_score"]) >= 0.95
    assert np.isfinite(result.history["train_loss"]).all()
    # the same fold models scoring on the CPU (float32) agree with their CUDA (AMP) scores
    on_cuda, _ = result.predict(table)
    cpu_result = dataclasses.replace(result, models=[m.to("cpu") for m in result.models],
                                     settings={**result.settings, "device": "cpu"})
    on_cpu, _ = cpu_result.predict(table)
    np.testing.assert_allclose(on_cuda["cnn_score"], on_cpu["cnn_score"], atol=5e-3)


def test_pipeline_scores_on_cuda_match_the_cpu(tmp_path):
    table = _square_task(tmp_path / "img", 40)
    run = train_lesion_cnn(table, "test_efficientnet", pretrained=False, image_size=48, epochs=1,
                           batch_size=16, folds=dermctx.PatientKFold(2, random_state=0), device="cpu",
                           progress=False)
    patient = tmp_path / "IP_NEW"
    patient.mkdir()
    for i in range(6):
        Image.open(table["path"][i]).save(patient / f"new{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few patients for the ranker's inner folds
        saved = LesionPipeline(n_boot=10, device="cpu").fit(table, run).save(tmp_path / "pipe")
    scores = {}
    for device in ("cpu", "cuda"):
        pipe = LesionPipeline.load(saved).set_params(device=device)
        scored, errors = pipe.score_images(patient, age=50, sex="female")
        assert errors.empty
        scores[device] = scored.sort_values("image_id")
    np.testing.assert_allclose(scores["cuda"]["cnn_score"], scores["cpu"]["cnn_score"], atol=2e-3)
    np.testing.assert_allclose(scores["cuda"]["score"], scores["cpu"]["score"], atol=5e-3)
