"""The evaluation commands: bench (any table) and demo (the embedded ISIC 2020 patients)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dermctx.errors import DermctxError

from ._common import (
    EXIT_OK,
    Options,
    command,
    finish,
    given,
    library_default,
    positive_int,
    show_progress,
)
from ._inputs import add_table_options, load_table, require_column, score_col_option

_BENCH_MODELS = ("cnn", "context", "context-size")


def _bench_options(opts: Options) -> None:
    add_table_options(opts, scores=True, embeddings=True, folds=True, duplicates=True)
    score_col_option(opts, "the library's, cnn_score")
    opts.model.add_argument("--models", default="cnn,context",
                            help=f"comma-separated, from {', '.join(_BENCH_MODELS)}: the raw score, "
                                 "ContextRanker, ContextRanker with use_image_size=True (default "
                                 "cnn,context)")
    opts.output.add_argument("--out", type=Path, default=Path("dermctx-bench"), metavar="DIR",
                             help="folder for report.html, metrics.json, plots and tables (default "
                                  "./dermctx-bench)")
    opts.output.add_argument("--patients", type=positive_int, default=None, metavar="N",
                             help="patients in the report's per-patient view (default: the library's)")
    opts.run.add_argument("--seeds", default=None, metavar="SEEDS",
                          help="comma-separated seeds of repeated splits, e.g. 0,1,2 (default: the "
                               "library's, 0); not with reused folds")
    opts.run.add_argument("--n-boot", type=positive_int, default=None, metavar="N",
                          help="patient-bootstrap resamples (default: the library's)")
    opts.random_state("seed of the bootstrap (default: the library's, 0)")
    opts.progress()


def _models(args: argparse.Namespace, score_col: str) -> dict[str, Any]:
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in _BENCH_MODELS]
    if unknown or not names:
        raise DermctxError(f"--models: unknown model(s) {unknown}; expected some of {list(_BENCH_MODELS)}")
    models: dict[str, Any] = {}
    for name in names:
        if name == "cnn":
            models["CNN alone"] = None
        else:
            from dermctx.models.ranker import ContextRanker

            label = "ContextRanker" + (" + image size" if name == "context-size" else "")
            models[label] = ContextRanker(score_col=score_col, use_image_size=name == "context-size")
    return models


def _seeds(args: argparse.Namespace) -> list[int] | None:
    if args.seeds is None:
        return None
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise DermctxError(f"--seeds {args.seeds!r}: expected comma-separated integers") from exc


@command("bench", "benchmark rankers side by side on patient-grouped folds and write a report",
         _bench_options, output="folder")
def _bench(args: argparse.Namespace) -> int:
    from dermctx.benchmarking import benchmark
    from dermctx.models.ranker import ContextRanker
    from dermctx.report import write_report

    score_col = args.score_col or library_default(ContextRanker, "score_col")
    models = _models(args, score_col)
    seeds = _seeds(args)
    loaded = load_table(args, score_col=score_col)
    require_column(loaded.table, score_col, args, default=args.score_col is None)
    split: dict[str, Any] = {"duplicates": loaded.duplicates}
    if loaded.folds is not None:
        split = {"folds": loaded.folds, "duplicates": loaded.duplicates}  # checked for leaks by benchmark
    elif args.folds is not None:
        split["folds"] = args.folds
    if seeds is not None:
        split["seeds"] = seeds
    result = benchmark(loaded.table, models, score_col=score_col, progress=show_progress(args),
                       **split, **given(args, n_boot="n_boot", random_state="random_state"))
    report_boot = {} if args.n_boot is None else {"n_boot": min(args.n_boot, 1000)}
    path = write_report(result, args.out, title=f"dermctx bench: {args.table.name}",
                        progress=show_progress(args), **report_boot,
                        **given(args, n_patients="patients", random_state="random_state"))
    print(result.to_markdown())
    print(f"report: {path}", file=sys.stderr)
    return finish(args, loaded.n_rows, loaded.errors)


# --- demo ----------------------------------------------------------------------------------------


def _demo_options(opts: Options) -> None:
    opts.model.add_argument("--max-patients", type=positive_int, default=None, metavar="N",
                            help="use only this many patients (a quicker run)")
    opts.output.add_argument("--out", type=Path, default=None, metavar="DIR",
                             help="folder for the report (default: the library's, ./dermctx-demo)")
    opts.run.add_argument("--n-boot", type=positive_int, default=None, metavar="N",
                          help="patient-bootstrap resamples (default: the library's)")
    opts.random_state("seed of the split, model and bootstrap (default: the library's, 0)")
    opts.renamed("--seed", "--random-state", type=int)
    opts.progress()


@command("demo", "fit ContextRanker on real ISIC 2020 patients and report on held-out ones "
         "(offline, about half a minute)", _demo_options, output="folder")
def _demo(args: argparse.Namespace) -> int:
    from dermctx.demo import run_demo

    run_demo(progress=show_progress(args),
             **given(args, out_dir="out", n_boot="n_boot", random_state="random_state",
                     max_patients="max_patients"))
    return EXIT_OK
