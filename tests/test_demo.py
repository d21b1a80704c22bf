from __future__ import annotations

import io
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from dermctx.cli import main
from dermctx.demo import DEMO_DATA, load_demo_table, run_demo

SMALL = dict(max_patients=120, n_boot=100, progress=False)


def test_embedded_demo_data_is_small_licensed_and_leak_free():
    data = resources.files("dermctx") / "data"
    assert len((data / DEMO_DATA).read_bytes()) <= 1_000_000
    assert "CC BY-NC 4.0" in (data / "README.md").read_text()
    assert "Attribution-NonCommercial 4.0" in (data / "LICENSE").read_text()
    t = load_demo_table()
    assert len(t) == 23_299
    assert t["patient_id"].nunique() == 1_440
    assert int(t["target"].sum()) == 436
    assert not {"fold", "tfrecord", "benign_malignant"} & set(t.columns)
    assert t["cnn_score"].between(0, 1).all()
    assert (t["width"] > 0).all() and (t["height"] > 0).all()


def test_demo_data_matches_the_shared_scores(isic_dir):
    oof = pd.read_csv(isic_dir / "oof_effnet_b1_dev.csv").set_index("image_name")
    t = load_demo_table().set_index("image_id")
    assert set(t.index) == set(oof.index)
    np.testing.assert_allclose(t["cnn_score"], oof.loc[t.index, "pred"], rtol=1e-6)
    assert (t["target"] == oof.loc[t.index, "target"]).all()
    assert (t["patient_id"] == oof.loc[t.index, "patient_id"]).all()


def test_demo_runs_and_gives_the_same_numbers_twice(tmp_path):
    out1, out2 = io.StringIO(), io.StringIO()
    a = run_demo(tmp_path / "a", stream=out1, **SMALL)
    b = run_demo(tmp_path / "b", stream=out2, **SMALL)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.differences, b.differences)
    pd.testing.assert_frame_equal(a.example, b.example)
    assert a.n_train_patients + a.n_test_patients == 120
    assert a.n_test_patients == pytest.approx(24, abs=3)  # one fold of five
    assert set(a.metrics["model"]) == {"CNN alone", "ContextRanker"}
    assert set(a.differences["model"]) == {"ContextRanker"}
    assert (a.report.parent / "metrics.json").exists() and a.report.name == "report.html"
    assert "caused by another lesion" in a.report.read_text()  # the ranker's explanation
    assert (a.report.parent / "demo.md").read_text().count("| ContextRanker |") == 2
    # the example patient is held out, has a melanoma, and is printed with its explanation
    assert a.example["rank"].tolist() == list(range(1, len(a.example) + 1))
    assert (a.example["melanoma"] == "yes").any()
    text = out1.getvalue()
    assert a.example_patient in text and "report:" in text and "CNN alone" in text
    # the printed tables carry the same numbers (the time line aside)
    strip = lambda s: [line for line in s.splitlines() if not line.startswith(("report:", "  done"))]  # noqa: E731
    assert strip(text) == strip(out2.getvalue())


def test_demo_cli(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d"), "--max-patients", "80", "--n-boot", "50",
                 "--no-progress"])
    assert code == 0
    assert (tmp_path / "d" / "report.html").exists()
    assert "ContextRanker" in capsys.readouterr().out


def test_bench_cli(tmp_path, capsys):
    t = load_demo_table()
    t = t[t["patient_id"].isin(np.sort(t["patient_id"].unique())[:60])]
    t.to_parquet(tmp_path / "t.parquet")
    code = main(["bench", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "b"),
                 "--models", "cnn", "--folds", "2", "--n-boot", "50", "--no-progress"])
    assert code == 0
    assert (tmp_path / "b" / "report.html").exists()
    assert "| CNN alone |" in capsys.readouterr().out
    assert main(["bench", str(tmp_path / "t.parquet"), "--models", "svm", "--no-progress"]) == 2


def test_bench_cli_duplicates_keep_numeric_looking_ids(tmp_path):
    # image ids such as "0007" must match the pairs file as text (not as the number 7), or the
    # pair is silently ignored and a duplicate can land on both sides of a fold
    rng = np.random.default_rng(0)
    n_pat, per = 40, 5
    t = pd.DataFrame({
        "image_id": [f"{i:04d}" for i in range(n_pat * per)],
        "patient_id": np.repeat([f"P{p:02d}" for p in range(n_pat)], per),
        "target": (rng.uniform(size=n_pat * per) < 0.15).astype(int),
    })
    t["cnn_score"] = np.clip(0.3 * t["target"] + rng.uniform(0, 0.7, len(t)), 0, 1)
    t.to_csv(tmp_path / "t.csv", index=False)
    # link patient P00 ("0000") with each of P01..P39 ("0005", "0010", ...)
    pairs = pd.DataFrame({"image_name_1": ["0000"] * (n_pat - 1),
                          "image_name_2": [f"{p * per:04d}" for p in range(1, n_pat)]})
    pairs.to_csv(tmp_path / "dup.csv", index=False)
    code = main(["bench", str(tmp_path / "t.csv"), "--out", str(tmp_path / "b"), "--models", "cnn",
                 "--folds", "2", "--n-boot", "20", "--duplicates", str(tmp_path / "dup.csv"),
                 "--no-progress"])
    # every patient is linked to P00: one group, which cannot be cut into two folds: bad input
    assert code == 2
