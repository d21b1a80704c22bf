"""The fast example scripts run end to end on the shared data and print what they promise.

Each script is loaded with ``runpy`` (not as ``__main__``) and its ``main(argv)`` called with
small arguments; the scripts skip nothing themselves, so these tests skip when the data is absent.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _main(name: str):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


def _ranked_rows(out: str) -> list[tuple[int, str, float]]:
    """(rank, image_id, score) of each printed ranking line."""
    rows = re.findall(r"^\s+(\d+)\s+(ISIC_\d+)\s+([0-9.]+)\s", out, flags=re.M)
    return [(int(r), i, float(s)) for r, i, s in rows]


def test_dicom_workflow_round_trip(shared_data, tmp_path, capsys):
    out_dir = tmp_path / "dicom"
    rc = _main("dicom_workflow.py")(["--data-dir", str(shared_data), "--n", "3", "--out", str(out_dir),
                                     "--size", "64"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "wrote 3 DICOM files" in out and "(0 errors)" in out
    assert "read back 3 DICOM files (0 errors)" in out
    assert "patient, sex, site and label match the CSV: True" in out
    assert "shape (64, 64, 3), dtype uint8" in out
    assert "full-resolution pixels identical to the JPEG's: True" in out
    # the resized arrays from .dcm and .jpg agree closely (the JPEG is decoded at a reduced scale)
    mean_diff = float(re.search(r"mean \|difference\| ([0-9.]+)", out).group(1))
    assert mean_diff < 2.0
    assert len(list(out_dir.glob("*.dcm"))) == 3


def test_score_one_patient_fit_save_and_load(shared_data, tmp_path, capsys):
    main = _main("score_one_patient.py")
    model = tmp_path / "model"
    args = ["--data-dir", str(shared_data), "--max-patients", "150", "--top", "50"]
    assert main([*args, "--save-model", str(model)]) == 0
    fitted = capsys.readouterr().out
    assert "fitting ContextRanker on 150 other patients" in fitted
    assert (model / "context_ranker.json").is_file() and (model / "gbm.txt").is_file()

    patient = re.search(r"^patient (\S+): (\d+) lesions", fitted, flags=re.M)
    assert patient is not None
    rows = _ranked_rows(fitted)
    n_shown = min(50, int(patient.group(2)))
    assert [r for r, _, _ in rows] == list(range(1, n_shown + 1))
    scores = [s for _, _, s in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert re.search(r"melanoma\(s\) ranked \[\d+", fitted)  # the default patient has a melanoma

    # the saved model, loaded, ranks the same patient identically
    assert main([*args, "--model", str(model), "--patient", patient.group(1)]) == 0
    loaded = capsys.readouterr().out
    assert f"loaded model from {model}" in loaded
    assert _ranked_rows(loaded) == rows


def test_examples_exit_clearly_without_data(tmp_path):
    for name in ("score_one_patient.py", "dicom_workflow.py", "quickstart.py", "embed_and_rank.py",
                 "score_patient_folder.py"):
        if not (EXAMPLES / name).is_file():
            continue
        with pytest.raises(SystemExit, match="data not found"):
            _main(name)(["--data-dir", str(tmp_path)])


def test_score_one_patient_unknown_patient(shared_data):
    with pytest.raises(SystemExit, match="'IP_NOPE' has no CNN-scored lesions"):
        _main("score_one_patient.py")(["--data-dir", str(shared_data), "--patient", "IP_NOPE"])


def _ci_rows(out: str) -> dict[str, list[tuple[float, float, float]]]:
    """Label -> [(estimate, low, high), ...] of each printed 'x.xxx (l.lll-h.hhh)' row."""
    rows = {}
    for line in out.splitlines():
        cells = re.findall(r"(-?[0-9.]+) \((-?[0-9.]+)-(-?[0-9.]+)\)", line)
        if cells:
            label = line[: line.index(cells[0][0])].strip()
            rows[label] = [tuple(float(v) for v in c) for c in cells]
    return rows


def test_quickstart_small(shared_data, capsys):
    rc = _main("quickstart.py")(["--data-dir", str(shared_data), "--max-patients", "150",
                                 "--n-splits", "3", "--n-boot", "100"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "lesions of 150 patients with a CNN score" in out
    assert "with melanoma" in out and "without melanoma" in out  # the cohort table
    assert "no patient, lesion, image or duplicate pair on both sides of any of the 3 splits" in out
    rows = _ci_rows(out)
    assert {"AUC", "within-patient AUC", "top-1 rate"} <= set(rows)
    for label in ("AUC", "within-patient AUC", "top-1 rate"):
        for est, low, high in rows[label]:  # CNN alone, ContextRanker
            assert 0.0 <= low <= est <= high <= 1.0
    assert rows["AUC"][0][0] > 0.8  # the real CNN's scores rank melanomas well


def test_embed_and_rank_small(shared_data, capsys):
    rc = _main("embed_and_rank.py")(["--data-dir", str(shared_data), "--n", "2", "--image-size", "64",
                                     "--synthetic-patients", "80", "--n-boot", "100"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "embedded 3 of 3 images with efficientnet_b0" in out  # 2 real + 1 mirrored copy
    assert "1280 features each, 0 errors" in out
    assert re.search(r"ISIC_\d+\s+ISIC_\d+_mirrored\s+near", out)  # the planted near duplicate
    rows = _ci_rows(out)
    per_lesion = rows["per lesion: SetRanker(context=False)"][0][0]
    in_context = rows["in context: SetRanker"][0][0]
    assert per_lesion < 0.7 < 0.9 < in_context  # melanomas stand out only within their patient


@pytest.mark.slow  # about 1.5 min on 2 CPU cores: run by hand (pytest -m slow)
def test_train_and_rank_quick(shared_data, tmp_path, capsys):
    rc = _main("train_and_rank.py")(["--data-dir", str(shared_data), "--quick", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "out-of-fold scores: 139 images, 0 errors" in out
    assert "plumbing, not accuracy" in out
    assert (tmp_path / "run" / "report" / "report.html").exists()


@pytest.mark.slow  # about 40 s on 2 CPU cores (training the CNN): run by hand (pytest -m slow)
def test_score_patient_folder(shared_data, tmp_path, capsys):
    rc = _main("score_patient_folder.py")(["--data-dir", str(shared_data), "--out", str(tmp_path / "run"),
                                           "--image-size", "64"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("PLUMBING, NOT ACCURACY") == 2
    assert "is held out" in out and "$ dermctx score-patient" in out
    assert re.search(r"patient IP_\d+: 3 images ranked in context", out)
    assert (tmp_path / "run" / "page" / "patient.html").is_file()
    assert len(pd.read_csv(tmp_path / "run" / "page" / "scores.csv")) == 3
