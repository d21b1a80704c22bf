"""The command line's rules, one test each: help, option names, exit codes, errors-table placement,
progress bars, and the chains (split -> bench/train, scores -> fit -> score, embed -> fit/score/bench).

Every table here is generated (a few hundred rows); the last test runs the README's main job on the
real ISIC 2020 data and skips without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermctx.cli import main
from dermctx.cli._common import COMMANDS, BareFlag, Renamed, errors_path, show_progress
from dermctx.cli._main import ORDER, build_parser

# --- generated inputs ----------------------------------------------------------------------------


def _lesions(n_patients: int = 40, per: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A labelled table (up to 15 patients with one melanoma each, never more than half) and a
    CNN's scores for it (``pred``)."""
    rng = np.random.default_rng(seed)
    n = n_patients * per
    target = np.zeros(n, dtype=int)
    target[np.arange(min(15, n_patients // 2)) * per] = 1
    table = pd.DataFrame({
        "image_id": [f"IMG_{i:04d}" for i in range(n)],
        "patient_id": np.repeat([f"P{p:03d}" for p in range(n_patients)], per),
        "age": np.repeat(rng.integers(30, 80, n_patients), per).astype(float),
        "sex": np.repeat(rng.choice(["male", "female"], n_patients), per),
        "site": rng.choice(["torso", "lower extremity", "upper extremity", "head/neck"], n),
        "target": target,
    })
    scores = pd.DataFrame({"image_id": table["image_id"],
                           "pred": np.clip(0.35 * target + rng.uniform(0, 0.65, n), 0, 1)})
    return table, scores


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """table.csv (no score column), oof.csv (every row's score), partial.csv (the first 7 rows'
    scores missing, one score not a number, two ids not in the table) and a fitted model/."""
    root = tmp_path_factory.mktemp("cli")
    table, scores = _lesions()
    table.to_csv(root / "table.csv", index=False)
    scores.to_csv(root / "oof.csv", index=False)
    partial = scores.iloc[7:].copy()
    partial.loc[partial.index[0], "pred"] = np.nan
    extra = pd.DataFrame({"image_id": ["IMG_X1", "IMG_X2"], "pred": [0.1, 0.2]})
    pd.concat([partial, extra]).to_csv(root / "partial.csv", index=False)
    assert main(["fit", str(root / "table.csv"), "--scores", str(root / "oof.csv"),
                 "--score-col", "pred", "--out", str(root / "model")]) == 0
    return {"root": root, "table": root / "table.csv", "oof": root / "oof.csv",
            "partial": root / "partial.csv", "model": root / "model"}


def _images(folder: Path, ids: pd.Series) -> None:
    """A 16x16 PNG per image id; a melanoma's has a bright corner."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for image_id in ids:
        pixels = rng.integers(40, 160, (16, 16, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{image_id}.png")


# --- help ----------------------------------------------------------------------------------------

_MARKUP = re.compile(r"``|:(func|class|meth|attr|data|mod):|`[^`\s]+`_")


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_the_commands_in_data_flow_order_in_plain_text(capsys):
    text = _help(["--help"], capsys)
    listed = re.findall(r"^    (\S+)", text.split("commands:")[1], flags=re.M)
    assert tuple(listed[: len(ORDER)]) == ORDER
    assert set(ORDER) == set(COMMANDS)
    assert not _MARKUP.search(text), _MARKUP.search(text)
    # the exit-code and errors-table rules are in the help and in the module docstring
    import dermctx.cli

    for where in (text, dermctx.cli.__doc__):
        flat = " ".join(where.split())
        assert "0 all done" in flat and "1 some items failed" in flat
        assert "2 bad usage or bad input" in flat and "3 internal error" in flat
        assert "scores.errors.csv" in flat and "DIR/errors.csv" in flat


@pytest.mark.parametrize("name", ORDER)
def test_each_command_help_is_plain_text_in_option_groups(name, capsys):
    text = _help([name, "--help"], capsys)
    assert not _MARKUP.search(text), _MARKUP.search(text)
    headings = re.findall(r"^(\w[\w ]*):$", text, flags=re.M)
    assert set(headings) <= {"input", "model", "output", "run"} and "run" in headings
    assert "input" in headings or name == "demo"  # demo reads the embedded table
    assert [h for h in ("input", "model", "output", "run") if h in headings] == headings
    flat = " ".join(text.split())
    assert "exit codes" in flat and re.search(r"\b3 (for an )?internal error", flat)
    assert ("DIR/errors.csv" if COMMANDS[name].output == "folder" else "scores.errors.csv") in flat


def test_python_m_dermctx_cli_still_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dermctx.cli", "--version"], capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("dermctx ")


# --- one name per option -------------------------------------------------------------------------

#: Old spellings, per command, and what replaced them (kept as hidden deprecated aliases).
RENAMED = {
    "split": {"--seed": "--random-state"},
    "demo": {"--seed": "--random-state"},
    "train": {"--seed": "--random-state", "--workers": "--num-workers", "--model": "--backbone"},
    "embed": {"--workers": "--jobs", "--model": "--backbone", "--size": "--image-size"},
    "dedup": {"--format": "--layout"},
}
#: Spellings that must never be a visible option (each concept has one name).
NEVER = {"--seed", "--workers", "--size", "--threads", "--n-jobs", "--num-threads", "--n-threads"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_no_option_has_two_names_or_two_meanings():
    dests: dict[str, set[str]] = {}
    for name, sub in _subparsers().items():
        for action in sub._actions:
            hidden = action.help == argparse.SUPPRESS
            for option in action.option_strings:
                if isinstance(action, Renamed):
                    assert hidden and RENAMED[name][option] == action.new, (name, option)
                    continue
                assert option not in NEVER, f"dermctx {name} {option}: an old name, visible"
                assert option not in RENAMED.get(name, {}), f"dermctx {name} {option}"
                dests.setdefault(option, set()).add(action.dest)
                if option == "--model":  # everywhere a model folder (a timm name is --backbone)
                    assert action.type is Path, name
                if option == "--format":  # describe's output format only
                    assert name == "describe"
        for old in RENAMED.get(name, {}):
            assert any(old in a.option_strings and isinstance(a, Renamed) for a in sub._actions), (name, old)
    assert {o: d for o, d in dests.items() if len(d) > 1} == {}


@pytest.mark.parametrize("argv, dest, value", [
    (["split", "t.csv", "--seed", "3"], "random_state", 3),
    (["demo", "--seed", "3"], "random_state", 3),
    (["train", "t.csv", "--out", "o", "--seed", "3"], "random_state", 3),
    (["train", "t.csv", "--out", "o", "--workers", "2"], "num_workers", 2),
    (["train", "t.csv", "--out", "o", "--model", "resnet18"], "backbone", "resnet18"),
    (["embed", "t.csv", "--out", "o", "--workers", "2"], "jobs", 2),
    (["embed", "t.csv", "--out", "o", "--model", "resnet18"], "backbone", "resnet18"),
    (["embed", "t.csv", "--out", "o", "--size", "64"], "image_size", 64),
    (["embed", "t.csv", "--out", "o", "--tta"], "tta", 8),
    (["dedup", "t.csv", "--format", "training"], "layout", "training"),
    (["fit", "t.csv", "--out", "o", "--embeddings"], "use_embeddings", True),
])
def test_each_old_spelling_still_works_with_a_one_line_note(argv, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"dermctx {argv[0]}: warning: " in err[0] and "is deprecated, use" in err[0]


def test_new_spellings_take_values_and_say_nothing(capsys):
    parser = build_parser()
    args = parser.parse_args(["embed", "t.csv", "--out", "o", "--tta", "4", "--jobs", "2",
                              "--backbone", "resnet18", "--image-size", "64"])
    assert (args.tta, args.jobs, args.backbone, args.image_size) == (4, 2, "resnet18", 64)
    args = parser.parse_args(["fit", "t.csv", "--out", "o", "--embeddings", "emb/", "--tta", "2"])
    assert args.embeddings == Path("emb/") and args.use_embeddings is None and args.tta == 2
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["fit", "t.csv", "--out", "o", "--tta", "3"])
    assert info.value.code == 2
    assert isinstance(next(a for a in _subparsers()["embed"]._actions if "--tta" in a.option_strings), BareFlag)


def test_an_old_spelling_gives_the_same_result_as_the_new_one(files, tmp_path, capsys):
    assert main(["split", str(files["table"]), "--seed", "4", "--out", str(tmp_path / "old.csv")]) == 0
    assert "--seed is deprecated, use --random-state" in capsys.readouterr().err
    assert main(["split", str(files["table"]), "--random-state", "4", "--out", str(tmp_path / "new.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "old.csv"), pd.read_csv(tmp_path / "new.csv"))


def _library_defaults() -> dict[tuple[str, str], object]:
    """(command, option) -> the library default its help quotes ("default: the library's, X")."""
    import inspect

    from dermctx.benchmarking import benchmark
    from dermctx.dedup import find_duplicates
    from dermctx.demo import run_demo
    from dermctx.embed import Embedder
    from dermctx.models.ranker import ContextRanker
    from dermctx.splits import PatientKFold
    from dermctx.train import train_lesion_cnn

    def default(func, name):
        return inspect.signature(func).parameters[name].default

    return {
        ("bench", "--score-col"): default(ContextRanker, "score_col"),
        ("bench", "--random-state"): default(benchmark, "random_state"),
        ("bench", "--folds"): default(benchmark, "folds"),
        ("bench", "--seeds"): ",".join(map(str, default(benchmark, "seeds"))),
        ("train", "--folds"): default(PatientKFold, "n_splits"),
        ("split", "--folds"): default(PatientKFold, "n_splits"),
        ("demo", "--out"): f"./{default(run_demo, 'out_dir')}",
        ("demo", "--random-state"): default(run_demo, "random_state"),
        ("train", "--backbone"): default(train_lesion_cnn, "model"),
        ("train", "--schedule"): default(train_lesion_cnn, "schedule"),
        ("train", "--num-workers"): default(train_lesion_cnn, "num_workers"),
        ("train", "--random-state"): default(train_lesion_cnn, "random_state"),
        ("embed", "--backbone"): default(Embedder, "model"),
        ("embed", "--aspect"): default(Embedder, "aspect"),
        ("dedup", "--threshold"): default(find_duplicates, "threshold"),
        ("fit", "--score-col"): default(ContextRanker, "score_col"),
        ("fit", "--random-state"): default(ContextRanker, "random_state"),
    }


def test_the_library_defaults_quoted_in_the_help_are_the_library_s():
    quoted = {}
    for name, sub in _subparsers().items():
        for action in sub._actions:
            found = re.search(r"the library's, ([^;)]+)", action.help or "")
            if found and action.option_strings:
                quoted[(name, action.option_strings[0])] = found.group(1).strip()
                assert action.default is None, (name, action.option_strings)  # not passed when left out
    expected = _library_defaults()
    assert set(quoted) == set(expected)
    assert {k: str(v) for k, v in expected.items()} == quoted


# --- exit codes ----------------------------------------------------------------------------------


def _exit_cases(f: dict[str, Path], tmp: Path) -> list[tuple[list[str], int]]:
    t, oof, part, model = (str(f[k]) for k in ("table", "oof", "partial", "model"))
    (tmp / "empty").mkdir(exist_ok=True)
    return [
        (["validate", t], 0),
        (["validate", t, "--image-dir", str(tmp / "empty")], 1),  # no image found: every item failed
        (["validate", str(tmp / "missing.csv")], 2),
        (["describe", t], 0),
        (["describe", t, "--by", "nosuch"], 2),
        (["dedup", t, "--out", str(tmp / "pairs.csv")], 2),  # no image paths at all: bad input
        (["split", t, "--folds", "3"], 0),
        (["split", t, "--folds", "500"], 2),
        (["fit", t, "--scores", oof, "--score-col", "pred", "--out", str(tmp / "m0")], 0),
        (["fit", t, "--scores", part, "--score-col", "pred", "--out", str(tmp / "m1")], 1),
        (["fit", t, "--out", str(tmp / "m2")], 2),  # no cnn_score column
        (["score", t, "--scores", oof, "--score-col", "pred", "--model", model], 0),
        (["score", t, "--scores", part, "--score-col", "pred", "--model", model], 1),
        (["score", t, "--model", str(tmp / "no-model")], 2),
        (["bench", t, "--scores", oof, "--score-col", "pred", "--models", "cnn", "--n-boot", "20",
          "--folds", "3", "--out", str(tmp / "b0")], 0),
        (["bench", t, "--scores", part, "--score-col", "pred", "--models", "cnn", "--n-boot", "20",
          "--folds", "3", "--out", str(tmp / "b1")], 1),
        (["bench", t, "--models", "cnn", "--out", str(tmp / "b2")], 2),
        (["split", t, "--folds", "x"], 2),  # bad usage: argparse exits
    ]


def test_every_command_follows_one_exit_code_rule(files, tmp_path, capsys):
    for argv, expected in _exit_cases(files, tmp_path):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == expected, (argv, err)
        assert "Traceback" not in err
        if expected == 2 and argv[-1] != "x":
            assert len([ln for ln in err.splitlines() if ": error: " in ln]) == 1, err


def test_bench_without_its_score_column_names_it_and_the_columns(files, capsys):
    assert main(["bench", str(files["table"]), "--no-progress"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1
    assert "no column 'cnn_score' (the default --score-col)" in err[0] and "'patient_id'" in err[0]


def test_an_internal_error_is_one_line_and_exit_3(files, monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(COMMANDS, "validate", dataclasses.replace(COMMANDS["validate"], run=boom))
    assert main(["validate", str(files["table"])]) == 3
    err = capsys.readouterr().err
    assert "dermctx validate: internal error: RuntimeError: a bug" in err and "Traceback" not in err
    monkeypatch.setenv("DERMCTX_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["validate", str(files["table"])])


# --- the errors table ----------------------------------------------------------------------------


def test_score_lists_rows_without_usable_ids_as_errors_and_scores_the_rest(files, tmp_path):
    table = pd.read_csv(files["table"], dtype={"image_id": str, "patient_id": str})
    table.loc[2, "patient_id"] = ""          # blank patient
    table.loc[5, "patient_id"] = "unknown"   # placeholder patient
    table.loc[8, "image_id"] = table.loc[9, "image_id"]  # one image id on two different rows: both refused
    table.loc[11, "image_id"] = ""           # no image id
    table.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "t.csv"), "--scores", str(files["oof"]), "--score-col", "pred",
                 "--model", str(files["model"]), "--out", str(out)]) == 1
    errors = pd.read_csv(tmp_path / "scores.errors.csv")
    assert errors["row"].tolist() == [2, 5, 8, 9, 11]
    # (row 11's blank id has no score in the scores file either: the join names it first)
    assert [m.split(" ")[0] for m in errors["message"]] == ["patient_id", "patient_id", "image_id", "image_id", "no"]
    assert "rows 8, 9 with different values" in errors["message"].iloc[2]
    assert len(pd.read_csv(out)) + len(errors) == len(table)
    # fitting on such a table is still refused, naming the rows
    assert main(["fit", str(tmp_path / "t.csv"), "--scores", str(files["oof"]), "--score-col", "pred",
                 "--out", str(tmp_path / "m")]) == 2


def test_errors_path_rule():
    assert errors_path(Path("out/scores.csv"), "file") == Path("out/scores.errors.csv")
    assert errors_path(Path("out/scores.parquet"), "file") == Path("out/scores.errors.csv")
    assert errors_path(Path("pairs.csv.gz"), "file") == Path("pairs.errors.csv")
    assert errors_path(Path("model"), "folder") == Path("model/errors.csv")
    assert errors_path(Path("emb.parquet"), "folder") == Path("emb.parquet/errors.csv")


def test_errors_table_beside_a_file_inside_a_folder_on_stderr_without_out(files, tmp_path, capsys):
    t, part = str(files["table"]), str(files["partial"])
    out = tmp_path / "scores.csv"
    args = ["--scores", part, "--score-col", "pred", "--model", str(files["model"])]
    assert main(["score", t, *args, "--out", str(out)]) == 1
    errors = pd.read_csv(tmp_path / "scores.errors.csv")
    # rows without a score: listed (row = row of TABLE), never dropped silently
    assert errors["row"].tolist() == list(range(8)) and set(errors["stage"]) == {"scores"}
    assert "not a finite number" in errors["message"].iloc[7]
    assert len(pd.read_csv(out)) + len(errors) == 200
    err = capsys.readouterr().err
    assert "2 score(s) for image ids not in" in err and "'IMG_X1'" in err
    # a clean run into the same file removes the stale errors table
    assert main(["score", t, "--scores", str(files["oof"]), "--score-col", "pred",
                 "--model", str(files["model"]), "--out", str(out)]) == 0
    assert not (tmp_path / "scores.errors.csv").exists()
    # the result on stdout: the errors table on stderr
    capsys.readouterr()
    assert main(["score", t, *args]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("image_id,patient_id,score")
    assert "image_id,row,path,stage,message" in captured.err
    # a folder output: inside it
    assert main(["fit", t, "--scores", part, "--score-col", "pred", "--out", str(tmp_path / "m")]) == 1
    assert len(pd.read_csv(tmp_path / "m" / "errors.csv")) == 8
    assert not (tmp_path / "m.errors.csv").exists()


# --- progress bars -------------------------------------------------------------------------------


@pytest.fixture
def image_table(tmp_path) -> Path:
    table, _ = _lesions(4, 3)
    _images(tmp_path / "img", table["image_id"])
    table.to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "t.csv"


def _bar(err: str) -> bool:
    return "\r" in err or bool(re.search(r"\d+%\|", err))


def test_no_progress_bar_when_stderr_is_not_a_terminal(image_table, tmp_path, capsys, monkeypatch):
    argv = ["dedup", str(image_table), "--image-dir", str(tmp_path / "img"), "--jobs", "1",
            "--out", str(tmp_path / "p.csv")]
    assert main(argv) == 0
    assert not _bar(capsys.readouterr().err)
    assert main([*argv, "--progress"]) == 0  # forced on
    assert _bar(capsys.readouterr().err)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress(argparse.Namespace(progress=None)) is True
    assert show_progress(argparse.Namespace(progress=False)) is False


def test_no_progress_bar_in_a_log_file(image_table, tmp_path):
    log = tmp_path / "log.txt"
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "dermctx", "dedup", str(image_table),
                               "--image-dir", str(tmp_path / "img"), "--jobs", "1"],
                              stdout=subprocess.DEVNULL, stderr=handle, timeout=120, check=False)
    assert done.returncode == 0
    text = log.read_text()
    assert "read as dermctx lesion table" in text and not _bar(text)


# --- the chains ----------------------------------------------------------------------------------


def test_chain_scores_fit_then_score_as_the_readme_main_job(files, tmp_path):
    from dermctx.models.ranker import ContextRanker

    assert main(["fit", str(files["table"]), "--scores", str(files["oof"]), "--score-col", "pred",
                 "--out", str(tmp_path / "model")]) == 0
    new, scores = _lesions(10, 4, seed=5)
    new = new.drop(columns="target").assign(image_id="NEW_" + new["image_id"])
    new.to_csv(tmp_path / "test.csv", index=False)
    scores.assign(image_id=new["image_id"]).to_csv(tmp_path / "test_scores.csv", index=False)
    assert main(["score", str(tmp_path / "test.csv"), "--scores", str(tmp_path / "test_scores.csv"),
                 "--score-col", "pred", "--model", str(tmp_path / "model"),
                 "--out", str(tmp_path / "scores.csv")]) == 0
    got = pd.read_csv(tmp_path / "scores.csv")
    # the same as the Python API on the merged frames
    train = pd.read_csv(files["table"]).merge(pd.read_csv(files["oof"]), on="image_id")
    ranker = ContextRanker(score_col="pred").fit(train, train["target"])
    expected, _ = ranker.rank(new.merge(scores.assign(image_id=new["image_id"]), on="image_id"))
    assert got["image_id"].tolist() == expected["image_id"].tolist()
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-9)


def test_chain_split_then_bench_reuses_the_folds(files, tmp_path, capsys):
    assert main(["split", str(files["table"]), "--folds", "4", "--random-state", "7",
                 "--out", str(tmp_path / "folds.csv")]) == 0
    assert main(["bench", str(files["table"]), "--scores", str(files["oof"]), "--score-col", "pred",
                 "--folds", str(tmp_path / "folds.csv"), "--n-boot", "20", "--no-progress",
                 "--out", str(tmp_path / "b")]) == 0
    assert "| CNN alone |" in capsys.readouterr().out
    folds = pd.read_csv(tmp_path / "folds.csv")
    pred = pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert sorted(pred["seed"].unique()) == [0] and pred["fold"].nunique() == 4
    pairs = pred[["image_id", "fold"]].merge(folds, on="image_id", suffixes=("", "_given"))
    assert len(pairs) == 200 and pairs.groupby("fold_given")["fold"].nunique().max() == 1
    # the folds from a column of the --scores file, with a seed list that makes no sense here
    pd.read_csv(files["oof"]).merge(folds[["image_id", "fold"]]).to_csv(tmp_path / "oof_f.csv", index=False)
    base = ["bench", str(files["table"]), "--scores", str(tmp_path / "oof_f.csv"), "--score-col", "pred",
            "--fold-col", "fold", "--models", "cnn", "--n-boot", "20", "--out", str(tmp_path / "b2")]
    assert main(base) == 0
    assert main([*base, "--seeds", "0,1"]) == 2
    # folds that split a patient are refused
    bad = folds.copy()
    bad.loc[0, "fold"] = (bad.loc[1, "fold"] + 1) % 4
    bad.to_csv(tmp_path / "leaky.csv", index=False)
    assert main(["bench", str(files["table"]), "--scores", str(files["oof"]), "--score-col", "pred",
                 "--folds", str(tmp_path / "leaky.csv"), "--out", str(tmp_path / "b3")]) == 2
    assert "more than one fold" in capsys.readouterr().err


def test_chain_embed_then_fit_score_and_bench(tmp_path, capsys):
    table, scores = _lesions(30, 4)
    _images(tmp_path / "img", table["image_id"])
    table.to_csv(tmp_path / "t.csv", index=False)
    scores.to_csv(tmp_path / "oof.csv", index=False)
    assert main(["embed", str(tmp_path / "t.csv"), "--image-dir", str(tmp_path / "img"),
                 "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32",
                 "--jobs", "1", "--out", str(tmp_path / "emb")]) == 0
    join = ["--scores", str(tmp_path / "oof.csv"), "--score-col", "pred", "--embeddings", str(tmp_path / "emb")]
    assert main(["fit", str(tmp_path / "t.csv"), *join, "--out", str(tmp_path / "m")]) == 0
    from dermctx.models.ranker import ContextRanker

    assert any(c.startswith("emb_") for c in ContextRanker.load(tmp_path / "m").feature_names_in_)
    assert main(["score", str(tmp_path / "t.csv"), *join, "--model", str(tmp_path / "m"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == len(table)
    assert main(["bench", str(tmp_path / "t.csv"), *join, "--folds", "3", "--n-boot", "20",
                 "--out", str(tmp_path / "b")]) == 0
    # an image missing from the store: its row is listed, not dropped silently
    table.iloc[:2].assign(image_id=["NEW_1", "NEW_2"]).pipe(
        lambda t: pd.concat([t, table])).to_csv(tmp_path / "t2.csv", index=False)
    pd.concat([scores.iloc[:2].assign(image_id=["NEW_1", "NEW_2"]), scores]).to_csv(tmp_path / "oof2.csv", index=False)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "t2.csv"), "--scores", str(tmp_path / "oof2.csv"), "--score-col",
                 "pred", "--embeddings", str(tmp_path / "emb"), "--model", str(tmp_path / "m"),
                 "--out", str(tmp_path / "s2.csv")]) == 1
    errors = pd.read_csv(tmp_path / "s2.errors.csv")
    assert errors["image_id"].tolist() == ["NEW_1", "NEW_2"] and set(errors["stage"]) == {"embeddings"}
    # an image edited since it was embedded: with the images at hand, its stale embedding is refused
    edited = tmp_path / "img" / f"{table['image_id'].iloc[3]}.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(edited)
    with_images = [*join, "--image-dir", str(tmp_path / "img"), "--model", str(tmp_path / "m")]
    assert main(["score", str(tmp_path / "t.csv"), *with_images, "--out", str(tmp_path / "s3.csv")]) == 1
    errors = pd.read_csv(tmp_path / "s3.errors.csv")
    assert errors["row"].tolist() == [3] and "changed" in errors["message"].iloc[0]
    assert main(["embed", str(tmp_path / "t.csv"), "--image-dir", str(tmp_path / "img"),  # embedded anew
                 "--backbone", "test_efficientnet", "--no-pretrained", "--image-size", "32",
                 "--jobs", "1", "--out", str(tmp_path / "emb")]) == 0
    assert main(["score", str(tmp_path / "t.csv"), *with_images, "--out", str(tmp_path / "s3.csv")]) == 0


def test_chain_split_then_train_reuses_the_folds(tmp_path):
    table, _ = _lesions(8, 2)
    _images(tmp_path / "img", table["image_id"])
    table.to_csv(tmp_path / "t.csv", index=False)
    assert main(["split", str(tmp_path / "t.csv"), "--folds", "2", "--out", str(tmp_path / "folds.csv")]) == 0
    assert main(["train", str(tmp_path / "t.csv"), "--image-dir", str(tmp_path / "img"),
                 "--folds", str(tmp_path / "folds.csv"), "--backbone", "test_efficientnet",
                 "--no-pretrained", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "run")]) == 0
    oof = pd.read_parquet(tmp_path / "run" / "oof.parquet")
    given = pd.read_csv(tmp_path / "folds.csv")
    pairs = oof[["image_id", "fold"]].merge(given, on="image_id", suffixes=("", "_given"))
    assert len(pairs) == len(table) and (pairs["fold"] == pairs["fold_given"]).all()
    # the trainer's out-of-fold scores chain into fit as --scores
    assert main(["fit", str(tmp_path / "t.csv"), "--scores", str(tmp_path / "run" / "oof.parquet"),
                 "--score-col", "cnn_score", "--out", str(tmp_path / "m")]) == 0


# --- the README's main job on the real data ------------------------------------------------------


def test_readme_main_job_on_isic2020(isic_dir, tmp_path, capsys):
    """fit on the ISIC 2020 CSV with a real CNN's out-of-fold scores, score, and bench on its folds."""
    gt, oof = isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv", isic_dir / "oof_effnet_b1_dev.csv"
    if not oof.exists():
        pytest.skip(f"real data not available: {oof} is missing")
    # the scores cover 1,440 of the 2,056 patients: the other rows are listed, never dropped silently
    assert main(["fit", str(gt), "--scores", str(oof), "--score-col", "pred", "--out", str(tmp_path / "model")]) == 1
    errors = pd.read_csv(tmp_path / "model" / "errors.csv")
    assert len(errors) == 33126 - 23299 and set(errors["stage"]) == {"scores"}
    shutil.copy(oof, tmp_path / "test_scores.csv")
    assert main(["score", str(oof), "--scores", str(tmp_path / "test_scores.csv"), "--score-col", "pred",
                 "--model", str(tmp_path / "model"), "--out", str(tmp_path / "scores.csv")]) == 2
    assert "already has a column 'pred'" in capsys.readouterr().err
    assert main(["score", str(gt), "--scores", str(oof), "--score-col", "pred", "--model", str(tmp_path / "model"),
                 "--out", str(tmp_path / "scores.csv")]) == 1
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 23299
    assert main(["bench", str(gt), "--scores", str(oof), "--score-col", "pred", "--fold-col", "fold",
                 "--models", "cnn", "--n-boot", "50", "--out", str(tmp_path / "bench")]) == 1
    assert "| CNN alone | 0.9" in capsys.readouterr().out


def test_score_explains_in_plain_words_for_isic2024_columns(tmp_path):
    from dermctx.synthetic import make_tbp_patients

    cols = ["tbp_lv_areaMM2", "tbp_lv_deltaB", "tbp_lv_norm_color"]
    keep = ["image_id", "patient_id", "age", "sex", "site", "target", *cols]
    make_tbp_patients(80, random_state=0)[keep].to_csv(tmp_path / "train.csv", index=False)
    make_tbp_patients(3, random_state=1)[keep].drop(columns="target").to_csv(tmp_path / "new.csv", index=False)
    assert main(["fit", str(tmp_path / "train.csv"), "--score-col", "none", "--context-features", ",".join(cols),
                 "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    score = ["score", str(tmp_path / "new.csv"), "--model", str(tmp_path / "m"), "--explain"]
    assert main([*score, "--out", str(tmp_path / "raw.csv")]) == 0
    assert main([*score, "--explain-words", "isic2024", "--out", str(tmp_path / "words.csv")]) == 0
    raw, words = pd.read_csv(tmp_path / "raw.csv"), pd.read_csv(tmp_path / "words.csv")
    assert raw["explanation"].str.contains("tbp_lv_").any() and not words["explanation"].str.contains("tbp_lv_").any()
    assert words["explanation"].str.contains("area \\(mm²\\)|yellowness|colour").any()
    assert main(["score", str(tmp_path / "new.csv"), "--model", str(tmp_path / "m"),
                 "--explain-words", "isic2024"]) == 2  # without --explain: a usage error


def test_a_scores_file_with_a_row_twice_is_read_once_and_a_clash_refused(files, tmp_path, capsys):
    scores = pd.read_csv(files["oof"])
    twice = pd.concat([scores, scores.iloc[[3, 4]]], ignore_index=True)  # fold outputs appended twice
    twice.to_csv(tmp_path / "twice.csv", index=False)
    out = tmp_path / "s.csv"
    assert main(["score", str(files["table"]), "--scores", str(tmp_path / "twice.csv"), "--score-col", "pred",
                 "--model", str(files["model"]), "--out", str(out)]) == 0
    assert "2 row(s) repeat an earlier row exactly" in capsys.readouterr().err
    clean = tmp_path / "clean.csv"
    assert main(["score", str(files["table"]), "--scores", str(files["oof"]), "--score-col", "pred",
                 "--model", str(files["model"]), "--out", str(clean)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(clean))
    clash = pd.concat([scores, scores.iloc[[3]].assign(pred=0.99)], ignore_index=True)
    clash.to_csv(tmp_path / "clash.csv", index=False)
    assert main(["score", str(files["table"]), "--scores", str(tmp_path / "clash.csv"), "--score-col", "pred",
                 "--model", str(files["model"]), "--out", str(out)]) == 2
    assert f"is on rows [3, {len(scores)}] with different values" in capsys.readouterr().err
