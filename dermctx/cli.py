"""The ``dermctx`` command: one subcommand per verb, each a thin wrapper over the Python API.

Every command that takes a TABLE accepts a canonical lesion table or any registered layout (ISIC
2020, HAM10000, ISIC 2018/2019, ISIC archive exports, ISIC 2024, PAD-UFES-20; CSV, ``.csv.gz``
or Parquet), recognised from its header (see :func:`dermctx.read_table`), and says which it chose.

Exit codes: 0 when the command ran (items that failed are counted on stderr and listed in an
errors file), 1 on an error or when every item failed, 2 on a usage error. ``score-patient`` is
stricter, for scripts around a clinic's folders: 0 when every image was scored, 1 when some
could not be, 2 for bad usage or input (see ``dermctx score-patient --help``).

Bad input never ends in a traceback: a :class:`~dermctx.errors.DermctxError` or an ``OSError``
(a file that is missing, unreadable or cannot be written) is shown as one line,
``dermctx COMMAND: error: MESSAGE``, with exit code 1, and the errors table, when the error has
one (every image failed), is written beside ``--out`` (``<out>.errors.csv``, or ``errors.csv``
in an output folder) or to stderr. Any other exception is a dermctx bug: it is shown as one
``internal error`` line (exit code 1); set ``DERMCTX_DEBUG=1`` to see its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dermctx.errors import DermctxError

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``func(args) -> exit code`` as the subcommand ``name``."""

    def register(func: Handler) -> Handler:
        _COMMANDS[name] = (help, add_arguments, func)
        return func

    return register


def _table_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", type=Path,
                   help="lesion table or any supported layout (ISIC 2018/2019/2020/2024, ISIC "
                        "archive, HAM10000, PAD-UFES-20), CSV or Parquet")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="folder of the images: attaches a path per row by image id, for any layout")
    p.add_argument("--labels", type=Path, default=None,
                   help="separate ground-truth file, for layouts that come as two files (ISIC 2019)")
    p.add_argument("--source", default=None,
                   help="read as this layout (isic2020, isic2019, ...) instead of recognising it")
    p.add_argument("--unknown-patients", choices=("error", "own"), default="error",
                   help="placeholder patient ids (-1, unknown, empty...): refuse (default) or "
                        "make each such row its own patient")
    p.add_argument("--lesion-ids", choices=("global", "per-patient"), default="global",
                   help="lesion ids name one lesion across the table (default), or are numbered "
                        "per patient")


def _read(args: argparse.Namespace):
    """Read the TABLE argument as :func:`dermctx.read_table` does; say which layout was chosen.

    With ``--image-dir``, says how many images were not found, and fails when none was.
    """
    from dermctx.io.registry import SOURCES, read_table

    table = read_table(args.table, image_dir=args.image_dir, labels=args.labels,
                       source=args.source, unknown_patients=args.unknown_patients,
                       lesion_ids=args.lesion_ids.replace("-", "_"))
    title = {s.name: s.title for s in SOURCES}.get(table.attrs.get("format"), "a lesion table")
    print(f"{args.table}: read as {title}", file=sys.stderr)
    if args.image_dir is not None:
        failed = table["image_error"].notna()
        if len(table) and failed.all():
            from dermctx.errors import error_record, errors_frame

            raise _Failed(f"{args.image_dir}: no image of the {len(table)} rows was found "
                          f"or usable (first: {table['image_error'].iloc[0]})",
                          errors_frame(error_record(i, row, p, "image", m) for row, (i, p, m) in
                                       enumerate(zip(table["image_id"], table["path"], table["image_error"],
                                                     strict=True))))
        if failed.any():
            print(f"{int(failed.sum())} of {len(table)} images not found or refused (column "
                  "image_error)", file=sys.stderr)
    return table


class _Failed(DermctxError):
    """A command failed as a whole; ``errors`` is the errors table that says why, item by item."""

    def __init__(self, message: str, errors) -> None:
        super().__init__(message)
        self.errors = errors


def _write_frame(frame, out: Path | None) -> None:
    """Write a DataFrame to ``out`` (.csv or .parquet), or to stdout as CSV."""
    if out is None:
        frame.to_csv(sys.stdout, index=False)
    elif out.suffix.lower() in (".parquet", ".pq"):
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out, index=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)


def _finish(n_items: int, errors, out: Path | None) -> int:
    """Say how many of ``n_items`` failed, write the errors table beside ``out``; the exit code.

    1 when every item failed, else 0.
    """
    if errors is None or len(errors) == 0:
        return 0
    if out is not None:
        path = out.with_name(out.stem + ".errors.csv")
        errors.to_csv(path, index=False)
        print(f"{len(errors)} of {n_items} item(s) failed; see {path}", file=sys.stderr)
    else:
        print(f"{len(errors)} of {n_items} item(s) failed:", file=sys.stderr)
        errors.to_csv(sys.stderr, index=False)
    return 1 if len(errors) >= n_items else 0


# --- validate -------------------------------------------------------------------------------


def _validate_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--out", type=Path, default=None, help="write the canonical table here (.csv/.parquet)")


@command("validate", "read any supported table, check it, and write it in canonical form", _validate_args)
def _validate(args: argparse.Namespace) -> int:
    from dermctx.table import has_patient_context

    table = _read(args)
    n_pat = table["patient_id"].nunique()
    patients = f"{n_pat} patients" if has_patient_context(table) else f"{n_pat} patient proxies (no patient ids)"
    meaning = table.attrs.get("target_meaning", "melanoma")
    positives = ("unlabelled" if table["target"].isna().all() else
                 f"{int((table['target'] == 1).sum())} " + ("melanomas" if meaning == "melanoma"
                                                           else f"with target 1 ({meaning})"))
    print(f"{args.table}: {len(table)} images, {patients}, {positives}", file=sys.stderr)
    if args.out is not None:
        _write_frame(table, args.out)
    return 0


# --- describe -------------------------------------------------------------------------------


def _describe_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--by", default="patient_class",
                   help="group column: 'patient_class' (default; patients with/without melanoma) "
                        "or any column of the table (a fold, site, source)")
    p.add_argument("--format", choices=("md", "html", "tex"), default="md",
                   help="Markdown (default), HTML or LaTeX")
    p.add_argument("--out", type=Path, default=None, help="write the table here instead of stdout")


@command("describe", "describe the cohort of a lesion table: patients, lesions, sites (a 'Table 1')",
         _describe_args)
def _describe(args: argparse.Namespace) -> int:
    from dermctx.cohort import cohort_table, to_html, to_latex, to_markdown

    table = _read(args)
    render = {"md": to_markdown, "html": to_html, "tex": to_latex}[args.format]
    text = cohort_table(table, by=args.by).pipe(render)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


# --- embed ----------------------------------------------------------------------------------


def _embed_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--model", default=None,
                   help="timm model name (default: the checkpoint's, else efficientnet_b0)")
    p.add_argument("--out", type=Path, required=True,
                   help="embedding store folder (Parquet parts); re-running resumes it")
    p.add_argument("--checkpoint", type=Path, default=None, help=".safetensors or state-dict .pth")
    p.add_argument("--size", type=int, default=None, help="input side in pixels")
    p.add_argument("--aspect", choices=["crop", "pad", "squash"], default="crop")
    p.add_argument("--colour-constancy", choices=["shades_of_grey", "grey_world"], default=None)
    p.add_argument("--tta", action="store_true", help="average flip/transpose views")
    p.add_argument("--no-pretrained", action="store_true", help="random weights (for testing)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding threads")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--no-progress", action="store_true")


@command("embed", "embed every image of a lesion table with a timm backbone", _embed_args)
def _embed(args: argparse.Namespace) -> int:
    from dermctx.embed import Embedder, checkpoint_metadata

    table = _read(args)
    model = args.model
    if model is None and args.checkpoint is not None:
        model = checkpoint_metadata(args.checkpoint).get("model")
    embedder = Embedder(model or "efficientnet_b0", pretrained=not args.no_pretrained,
                        checkpoint=args.checkpoint, image_size=args.size, aspect=args.aspect,
                        colour_constancy=args.colour_constancy, tta=args.tta, device=args.device,
                        batch_size=args.batch_size, n_jobs=args.workers)
    emb, errors = embedder.embed(table, store=args.out, progress=not args.no_progress,
                                 backend=args.backend)
    print(f"{args.out}: {len(emb)} embeddings of width {emb.shape[1]} "
          f"({embedder.settings_['model']}, {embedder.image_size_} px), {len(errors)} failed",
          file=sys.stderr)
    return _finish(len(table), errors, args.out)


# --- bench and demo -------------------------------------------------------------------------

_BENCH_MODELS = ("cnn", "context", "context-size")


def _bench_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--score-col", default="cnn_score",
                   help="column of per-lesion CNN melanoma probabilities (default cnn_score)")
    p.add_argument("--out", type=Path, default=Path("dermctx-bench"),
                   help="folder for report.html, metrics.json, plots and tables")
    p.add_argument("--models", default="cnn,context",
                   help=f"comma-separated, from {', '.join(_BENCH_MODELS)}: the raw score, "
                        "ContextRanker, ContextRanker with use_image_size=True")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", default="0", help="comma-separated split seeds, e.g. 0,1,2")
    p.add_argument("--n-boot", type=int, default=2000, help="patient-bootstrap resamples")
    p.add_argument("--duplicates", type=Path, default=None,
                   help="CSV of duplicate image pairs (kept in one fold)")
    p.add_argument("--patients", type=int, default=6, help="patients in the per-patient view")
    p.add_argument("--no-progress", action="store_true")


@command("bench", "benchmark rankers side by side on patient-grouped folds and write a report",
         _bench_args)
def _bench(args: argparse.Namespace) -> int:
    from dermctx.benchmarking import benchmark
    from dermctx.errors import DermctxError as _Error
    from dermctx.io.isic import read_isic_duplicates
    from dermctx.report import write_report

    table = _read(args)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in _BENCH_MODELS]
    if unknown or not names:
        raise _Error(f"--models: unknown model(s) {unknown}; expected some of {list(_BENCH_MODELS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise _Error(f"--seeds {args.seeds!r}: expected comma-separated integers") from exc
    models: dict[str, object] = {}
    for name in names:
        if name == "cnn":
            models["CNN alone"] = None
        else:
            from dermctx.models.ranker import ContextRanker

            label = "ContextRanker" + (" + image size" if name == "context-size" else "")
            models[label] = ContextRanker(score_col=args.score_col,
                                          use_image_size=name == "context-size")
    # ids read as text ("0012" stays "0012"), any ISIC pairs layout, a clear error if missing
    duplicates = read_isic_duplicates(args.duplicates) if args.duplicates is not None else None
    result = benchmark(table, models, score_col=args.score_col, folds=args.folds, seeds=seeds,
                       n_boot=args.n_boot, duplicates=duplicates, progress=not args.no_progress)
    path = write_report(result, args.out, title=f"dermctx bench: {args.table.name}",
                        n_patients=args.patients, n_boot=min(args.n_boot, 1000),
                        progress=not args.no_progress)
    print(result.to_markdown())
    print(f"report: {path}", file=sys.stderr)
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("dermctx-demo"),
                   help="folder for the report (default ./dermctx-demo)")
    p.add_argument("--n-boot", type=int, default=1000, help="patient-bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, model and bootstrap")
    p.add_argument("--max-patients", type=int, default=None,
                   help="use only this many patients (a quicker run)")
    p.add_argument("--no-progress", action="store_true")


@command("demo", "fit ContextRanker on real ISIC 2020 patients and report on held-out ones "
         "(offline, about a minute)", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from dermctx.demo import run_demo

    run_demo(args.out, n_boot=args.n_boot, random_state=args.seed,
             max_patients=args.max_patients, progress=not args.no_progress)
    return 0


# --- to-dicom -------------------------------------------------------------------------------


def _to_dicom_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the DICOM files (<image_id>.dcm)")


@command("to-dicom", "wrap each row's JPEG, unchanged, in a DICOM file with the row's metadata",
         _to_dicom_args)
def _to_dicom(args: argparse.Namespace) -> int:
    from dermctx.io.dicom import write_dicom_dir

    table = _read(args)
    written, errors = write_dicom_dir(table, args.out)
    print(f"{args.table}: wrote {len(written)} DICOM file(s) to {args.out}", file=sys.stderr)
    return _finish(len(table), errors, args.out / "to-dicom.csv")


# --- split ----------------------------------------------------------------------------------


def _split_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the split (default 0)")
    p.add_argument("--duplicates", type=Path, default=None,
                   help="CSV of duplicate image pairs (any ISIC layout); linked patients stay together")
    p.add_argument("--out", type=Path, default=None, help="write image_id, patient_id, fold here (.csv/.parquet)")


@command("split", "assign patient-level folds (patients, lesions and duplicates kept whole)", _split_args)
def _split(args: argparse.Namespace) -> int:
    import pandas as pd

    from dermctx.io.isic import read_isic_duplicates
    from dermctx.splits import PatientKFold

    table = _read(args)
    duplicates = read_isic_duplicates(args.duplicates) if args.duplicates is not None else None
    fold = PatientKFold(args.folds, random_state=args.seed, duplicates=duplicates).assign(table)
    out = pd.DataFrame({"image_id": table["image_id"], "patient_id": table["patient_id"], "fold": fold})
    for k in range(args.folds):
        part = table[fold == k]
        print(f"fold {k}: {len(part)} images, {part['patient_id'].nunique()} patients, "
              f"{int((part['target'] == 1).sum())} melanomas", file=sys.stderr)
    _write_frame(out, args.out)
    return 0


# --- fit / score (ContextRanker) ------------------------------------------------------------


def _fit_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--out", type=Path, required=True, help="folder to write the fitted model to")
    p.add_argument("--score-col", default="cnn_score",
                   help="column of CNN melanoma probabilities (default: cnn_score; 'none' for no CNN)")
    p.add_argument("--context-features", default=None,
                   help="comma-separated numeric columns used raw and relative to the patient's other "
                        "lesions (ISIC 2024's tbp_lv_*...), or 'auto' for every eligible numeric column")
    p.add_argument("--use-image-size", action="store_true",
                   help="also read width/height (an acquisition artefact in ISIC 2020)")
    p.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    p.add_argument("--cnn", type=Path, default=None,
                   help="a 'dermctx train' output folder: its out-of-fold scores become the score column")
    p.add_argument("--cnn-run", type=Path, default=None,
                   help="a 'dermctx train' output folder: write a LesionPipeline folder instead (its fold "
                        "models, their preprocessing and a ContextRanker fitted on their out-of-fold "
                        "scores), which 'dermctx score-patient --model' reads")
    p.add_argument("--embeddings", action="store_true",
                   help="with --cnn-run: also feed the ranker the final model's embeddings (needs "
                        "'dermctx train --final-model' and --image-dir)")
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=1,
                   help="with --cnn-run: flip/transpose views the CNN averages when scoring (default 1: "
                        "none, as the out-of-fold scores the ranker is fitted on)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="with --cnn-run: patient-bootstrap resamples of the out-of-fold AUCs it records")


def _fit_pipeline(table, args: argparse.Namespace) -> int:
    """``dermctx fit --cnn-run``: a LesionPipeline folder from a trainer's output folder."""
    from dermctx.pipeline import LesionPipeline, provenance_lines

    clash = [flag for flag, used in (("--cnn", args.cnn is not None),
                                     ("--context-features", bool(args.context_features)),
                                     ("--use-image-size", args.use_image_size),
                                     ("--score-col", args.score_col != "cnn_score")) if used]
    if clash:
        raise DermctxError(f"--cnn-run writes a LesionPipeline, whose ranker reads the CNN's score (and "
                           f"embeddings) with age, sex and site only; drop {', '.join(clash)}")
    pipeline = LesionPipeline(use_embeddings=args.embeddings, tta=args.tta, n_boot=args.n_boot,
                              random_state=args.random_state)
    pipeline.fit(table, args.cnn_run)
    pipeline.save(args.out)
    for line in provenance_lines(pipeline.provenance_):
        print(line, file=sys.stderr)
    print(f"LesionPipeline written to {args.out}; score a patient with 'dermctx score-patient FOLDER "
          f"--model {args.out} --out DIR'", file=sys.stderr)
    return 0


def _join_cnn(table, args: argparse.Namespace, *, new_images: bool):
    """Add the trainer's scores as ``--score-col``; returns ``(table, errors)``.

    Images the trainer scored out of fold keep that score (a fold model that saw the patient is
    never used on it); with ``new_images`` the others are scored by the average of the fold
    models. Rows that cannot be scored are errors, never guessed.
    """
    import pandas as pd

    from dermctx.errors import errors_frame
    from dermctx.train import TrainResult

    run = TrainResult.load(args.cnn)
    known = table["image_id"].isin(run.oof["image_id"])
    scores, errors = run.oof[["image_id", "cnn_score"]][run.oof["image_id"].isin(table["image_id"])], errors_frame()
    if known.any():
        print(f"{args.cnn}: {int(known.sum())} image(s) were in its training table: their "
              "out-of-fold scores are used", file=sys.stderr)
    if not known.all():
        if not new_images:
            raise DermctxError(f"{args.cnn}: {int((~known).sum())} image(s) of {args.table} have no "
                               f"out-of-fold score (e.g. {table['image_id'][~known].iloc[0]!r}); fit "
                               "on the table the CNN was trained on, or see its errors.csv")
        new, errors = run.predict(table[~known], progress=False)
        scores = pd.concat([scores, new[["image_id", "cnn_score"]]], ignore_index=True)
    joined = table.merge(scores.rename(columns={"cnn_score": args.score_col}), on="image_id",
                         how="inner", validate="one_to_one")
    return joined, errors


@command("fit", "fit a ContextRanker on a labelled lesion table and save it", _fit_args)
def _fit(args: argparse.Namespace) -> int:
    from dermctx.models.ranker import ContextRanker

    table = _read(args)
    if table["target"].isna().any():
        raise DermctxError(f"{args.table}: 'fit' needs a target (0/1) on every row; "
                           f"{int(table['target'].isna().sum())} row(s) have none")
    if args.cnn_run is not None:
        return _fit_pipeline(table, args)
    if args.cnn is not None:
        table, _ = _join_cnn(table, args, new_images=False)
    context: str | list[str] = []
    if args.context_features:
        context = ("auto" if args.context_features.strip() == "auto"
                   else [c.strip() for c in args.context_features.split(",") if c.strip()])
    score_col = None if args.score_col.strip().lower() == "none" else args.score_col
    ranker = ContextRanker(score_col=score_col, use_image_size=args.use_image_size,
                           context_features=context, random_state=args.random_state)
    ranker.fit(table, table["target"])
    ranker.save(args.out)
    print(f"fitted on {len(table)} lesions, {table['patient_id'].nunique()} patients; "
          f"model written to {args.out}", file=sys.stderr)
    return 0


def _score_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--model", type=Path, required=True, help="folder written by 'dermctx fit'")
    p.add_argument("--out", type=Path, default=None,
                   help="scores file (.csv/.parquet; errors go beside it); default stdout")
    p.add_argument("--cnn", type=Path, default=None,
                   help="a 'dermctx train' output folder: its fold models score the images first")
    p.add_argument("--explain", action="store_true",
                   help="add the worded explanation of each score (which measurements raised or lowered it)")
    p.add_argument("--chunk-patients", type=int, default=None,
                   help="score this many whole patients at a time (bounded memory); a Parquet TABLE "
                        "with dermctx's column names and a .parquet --out are then streamed from disk")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="'ray': score the chunks on Ray Data (Parquet TABLE and --out; pip install 'dermctx[ray]')")


def _streamable(args: argparse.Namespace) -> bool:
    """A Parquet table scored straight from disk into a Parquet file (no layout to translate)."""
    plain = (args.cnn is None and args.labels is None and args.source is None and args.image_dir is None)
    parquet = str(args.table).lower().endswith((".parquet", ".pq"))
    out = args.out is not None and args.out.suffix.lower() in (".parquet", ".pq")
    return plain and parquet and out and (args.chunk_patients is not None or args.backend == "ray")


@command("score", "score every lesion of a table with a saved ContextRanker", _score_args)
def _score(args: argparse.Namespace) -> int:
    from dermctx.models.ranker import ContextRanker
    from dermctx.scoring import CHUNK_PATIENTS, score_parquet, score_table

    ranker = ContextRanker.load(args.model)
    if args.chunk_patients is not None and args.chunk_patients < 1:
        raise DermctxError(f"--chunk-patients {args.chunk_patients}: expected a whole number >= 1")
    if args.out is not None and args.out.exists() and args.out.resolve() == Path(args.table).resolve():
        raise DermctxError(f"--out {args.out} is the input table; write the scores to another file")
    chunk = args.chunk_patients if args.chunk_patients is not None else CHUNK_PATIENTS
    if _streamable(args):
        import pyarrow.parquet as pq

        errors = score_parquet(ranker, args.table, args.out, chunk_patients=chunk, backend=args.backend,
                               explain=args.explain, progress=sys.stderr.isatty())
        n_rows = pq.ParquetFile(args.table).metadata.num_rows
        print(f"{args.table}: scored {n_rows - len(errors)} of {n_rows} lesions in chunks of {chunk} "
              f"patients ({args.backend}); wrote {args.out}", file=sys.stderr)
        return _finish(n_rows, errors, args.out)
    if args.backend == "ray":
        raise DermctxError("--backend ray scores a Parquet TABLE into a .parquet --out, without --cnn, "
                           "--labels, --source or --image-dir")
    table = _read(args)
    n_rows, cnn_errors = len(table), None
    if args.cnn is not None:
        args.score_col = ranker.score_col
        table, cnn_errors = _join_cnn(table, args, new_images=True)
    if args.chunk_patients is not None:
        scores, errors = score_table(ranker, table, chunk_patients=chunk, explain=args.explain,
                                     progress=sys.stderr.isatty())
        scores = scores.drop(columns="row")
    else:
        scores, errors = ranker.rank(table, explain=args.explain)
    if cnn_errors is not None and len(cnn_errors):
        import pandas as pd

        errors = pd.concat([cnn_errors, errors], ignore_index=True)
    _write_frame(scores, args.out)
    print(f"{args.table}: scored {len(scores)} of {n_rows} lesions"
          + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return _finish(n_rows, errors, args.out)


# --- score-patient (LesionPipeline) ---------------------------------------------------------

_SCORE_PATIENT_EXIT = ("exit codes: 0 when every image was scored; 1 when some images could not be "
                       "scored (listed in errors.csv beside scores.csv; the others are scored and "
                       "shown); 2 for bad usage or input (no such folder, no image in it, images of "
                       "several patients, a --patient-id, --age, --sex or --sites that disagrees with "
                       "the folder or its DICOM headers, a --model folder that is not a LesionPipeline "
                       "or was changed)")


class _InputError(DermctxError):
    """Bad input to a command whose rule is exit code 2 for it."""

    exit_code = 2


def _score_patient_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+", metavar="FOLDER",
                   help="a folder of one patient's images (JPEG, PNG, TIFF, DICOM; other files such as "
                        ".txt or .csv are ignored), or image files")
    p.add_argument("--model", type=Path, required=True,
                   help="a LesionPipeline folder ('dermctx fit TABLE --cnn-run RUN --out DIR')")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: patient.html and scores.csv (and errors.csv when some images failed)")
    p.add_argument("--patient-id", default=None,
                   help="the patient's id (default: the DICOM headers', else the folder's name)")
    p.add_argument("--age", type=float, default=None, help="the patient's age in years")
    p.add_argument("--sex", type=str.lower, choices=("male", "female", "m", "f"), default=None,
                   help="the patient's sex")
    p.add_argument("--sites", type=Path, default=None,
                   help="CSV with each image's id (or file name) and anatomic site; it must list every "
                        "image of the folder, and only those")
    p.add_argument("--title", default=None, help="title of the page")
    p.add_argument("--no-page", action="store_true", help="write scores.csv only, no patient.html")
    p.add_argument("--jobs", type=int, default=None,
                   help="threads of the CNN and the image decoding (default: the pipeline's, 1)")
    p.epilog = _SCORE_PATIENT_EXIT


@command("score-patient", "rank one patient's lesion images with a LesionPipeline: patient.html and "
         "scores.csv (a research aid, not a diagnosis)", _score_patient_args)
def _score_patient(args: argparse.Namespace) -> int:
    import pandas as pd

    from dermctx.errors import errors_frame
    from dermctx.formatting import format_probability, plural
    from dermctx.pipeline import LesionPipeline

    try:
        pipeline = LesionPipeline.load(args.model)
        if args.jobs is not None:
            pipeline.set_params(n_jobs=args.jobs)
        first = args.images[0]
        images = first if len(args.images) == 1 and first.is_dir() else [str(p) for p in args.images]
        scores, errors = pipeline.score_images(images, patient_id=args.patient_id, age=args.age,
                                               sex=args.sex, sites=args.sites)
    except (DermctxError, OSError) as exc:
        where = f"{exc.filename}: " if isinstance(exc, OSError) and getattr(exc, "filename", None) else ""
        raise _InputError(f"{where}{exc}") from exc
    args.out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(args.out / "scores.csv", index=False)
    errors_path = args.out / "errors.csv"
    if len(errors):
        errors.to_csv(errors_path, index=False)
    elif errors_path.exists():
        errors_path.unlink()  # of an earlier run into the same folder
    n = len(scores) + len(errors)
    if not len(scores):
        print(f"no image of {plural(n, 'file')} could be scored; see {errors_path}", file=sys.stderr)
        errors_frame(errors.to_dict("records")).to_csv(sys.stderr, index=False)
        return 1
    patient = scores["patient_id"].iloc[0]
    print(f"patient {patient}: {plural(len(scores), 'image')} ranked in context"
          + (f", {plural(len(errors), 'image')} could not be scored (see {errors_path})" if len(errors) else ""))
    table = pd.DataFrame({"rank": scores["rank"], "image": scores["image_id"],
                          "score": scores["score"].map(format_probability),
                          "CNN alone": [f"#{r} ({format_probability(p)})"
                                        for r, p in zip(scores["cnn_rank"], scores["cnn_score"], strict=True)]})
    print(table.to_string(index=False))
    if not args.no_page:
        page = pipeline.write_page(scores, errors, args.out / "patient.html", title=args.title)
        print(f"wrote {page} and {args.out / 'scores.csv'}", file=sys.stderr)
    else:
        print(f"wrote {args.out / 'scores.csv'}", file=sys.stderr)
    return 1 if len(errors) else 0


# --- train / explain ------------------------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--model", default="efficientnet_b0", help="timm model name (default efficientnet_b0)")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder (fold checkpoints, oof.parquet, history.csv); re-running resumes")
    p.add_argument("--folds", type=int, default=5, help="patient-grouped folds (default 5)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--schedule", choices=("sgdr", "cosine", "constant"), default="sgdr")
    p.add_argument("--checkpoint", type=Path, default=None, help="start from these weights (.safetensors)")
    p.add_argument("--no-pretrained", action="store_true", help="random initial weights (for testing)")
    p.add_argument("--external", type=Path, default=None,
                   help="a labelled table of other patients' images (e.g. ISIC 2019) added to every "
                        "training fold, never scored; its images are found with --image-dir")
    p.add_argument("--final-model", action="store_true",
                   help="also train on every patient (for embeddings in one space)")
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


@command("train", "fine-tune a lesion CNN on patient-grouped folds: out-of-fold scores and checkpoints",
         _train_args)
def _train(args: argparse.Namespace) -> int:
    from dermctx.io.registry import read_table
    from dermctx.splits import PatientKFold
    from dermctx.train import train_lesion_cnn

    table = _read(args)
    external = None
    if args.external is not None:
        external = read_table(args.external, image_dir=args.image_dir, unknown_patients="own")
    result = train_lesion_cnn(
        table, args.model, folds=PatientKFold(args.folds, random_state=args.seed),
        image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        schedule=args.schedule, pretrained=not args.no_pretrained, checkpoint=args.checkpoint,
        out_dir=args.out, external=external, final_model=args.final_model, device=args.device,
        num_workers=args.workers, random_state=args.seed, progress=not args.no_progress)
    valid = result.oof.merge(table[["image_id", "target"]], on="image_id")
    if valid["target"].nunique() == 2:
        from dermctx.metrics import auc

        print(f"out-of-fold AUC {auc(valid['target'], valid['cnn_score']):.4f} on {len(valid)} images",
              file=sys.stderr)
    print(f"{args.out}: {len(result.oof)} out-of-fold scores, {len(result.checkpoints)} checkpoint(s)",
          file=sys.stderr)
    return _finish(len(table), result.errors, args.out / "train.csv")


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+", help="image files (JPEG, PNG, DICOM)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors written by dermctx")
    p.add_argument("--out", type=Path, required=True, help="folder for the Grad-CAM and guided-backprop PNGs")
    p.add_argument("--class", dest="target_class", type=int, default=None,
                   help="class index to explain (default: the predicted one)")


@command("explain", "Grad-CAM and guided-backpropagation overlays of images for a checkpoint", _explain_args)
def _explain(args: argparse.Namespace) -> int:
    from dermctx.explain import explain_checkpoint

    paths, errors = explain_checkpoint(args.checkpoint, [str(p) for p in args.images], args.out,
                                       target_class=args.target_class)
    _write_frame(paths, args.out / "explanations.csv")
    print(f"{args.out}: overlays of {len(paths)} image(s)", file=sys.stderr)
    return _finish(len(args.images), errors, args.out / "explanations.csv")


# --- dedup ----------------------------------------------------------------------------------


def _dedup_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--out", type=Path, default=None, help="write the pairs here (.csv/.parquet; default stdout)")
    p.add_argument("--format", choices=["dermctx", "training", "challenge"], default="dermctx",
                   help="dermctx: image_id_1,image_id_2,kind,distance,method; training: "
                        "image_name_1,image_name_2; challenge: ISIC_id,ISIC_id_paired,partition "
                        "(partition from a 'partition' column, else train where labelled, test otherwise)")
    p.add_argument("--exact-only", action="store_true", help="report identical decoded pixels only")
    p.add_argument("--threshold", type=float, default=None,
                   help="largest near-duplicate distance (fraction of 256 hash bits; default 0.2)")
    p.add_argument("--embedding-threshold", type=float, default=None,
                   help="also pair rows whose emb_* columns have cosine distance at most this")
    p.add_argument("--jobs", type=int, default=None, help="decoding threads")


@command("dedup", "find exact and near-duplicate images of a lesion table from their pixels", _dedup_args)
def _dedup(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from dermctx.dedup import find_duplicates

    table = _read(args)
    kwargs = {} if args.threshold is None else {"threshold": args.threshold}
    pairs, errors = find_duplicates(table, near=not args.exact_only, n_jobs=args.jobs,
                                    embedding_threshold=args.embedding_threshold, **kwargs)
    counts = pairs["kind"].value_counts().to_dict()
    print(f"{args.table}: {pairs.attrs.get('n_images', 0)} of {len(table)} images hashed; "
          f"{counts.get('exact', 0)} exact and {counts.get('near', 0)} near duplicate pairs",
          file=sys.stderr)
    if args.format == "training":
        out = pd.DataFrame({"image_name_1": pairs["image_id_1"], "image_name_2": pairs["image_id_2"]})
    elif args.format == "challenge":
        if "partition" in table.columns:
            part = table.set_index("image_id")["partition"]
        else:
            part = pd.Series(np.where(table["target"].notna(), "train", "test"), index=table["image_id"])
        out = pd.DataFrame({"ISIC_id": pairs["image_id_1"], "ISIC_id_paired": pairs["image_id_2"],
                            "partition": pairs["image_id_1"].map(part).to_numpy()})
    else:
        out = pairs
    _write_frame(out, args.out)
    return _finish(len(table), errors, args.out)


@contextmanager
def _warnings_as_messages(command: str) -> Iterator[None]:
    """Show dermctx's warnings as one line each, ``dermctx COMMAND: warning: ...``."""
    from dermctx.errors import DermctxWarning

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DermctxWarning, UserWarning)):
            text = str(message)
            key = re.sub(r"^\S+: ", "", text)  # the same warning about the table, from two steps
            if key not in seen:
                seen.add(key)
                print(f"dermctx {command}: warning: {text}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    original = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always", DermctxWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dermctx`` command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="dermctx", description=__doc__.splitlines()[0])
    from dermctx import __version__

    parser.add_argument("--version", action="version", version=f"dermctx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in _COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = _COMMANDS[args.command][2]
    try:
        with _warnings_as_messages(args.command):
            return handler(args)
    except DermctxError as exc:
        _error(args, _one_line(str(exc)))
        errors = getattr(exc, "errors", None)
        if errors is not None and len(errors):
            _write_errors(errors, args)
        return int(getattr(exc, "exit_code", 1))
    except OSError as exc:  # a file that is missing, unreadable or cannot be written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _error(args, _one_line(f"{where}{exc.strerror or exc}"))
        return 1
    except Exception as exc:  # a dermctx bug, not bad input: one line, the traceback on request
        if os.environ.get("DERMCTX_DEBUG"):
            raise
        _error(args, _one_line(f"{type(exc).__name__}: {exc}"), kind="internal error")
        print(f"dermctx {args.command}: this is a dermctx bug; please report it with the command "
              "(DERMCTX_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _one_line(text: str, limit: int = 2000) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error(args: argparse.Namespace, message: str, kind: str = "error") -> None:
    print(f"dermctx {args.command}: {kind}: {message}", file=sys.stderr)


def _write_errors(errors, args: argparse.Namespace) -> None:
    """Write the errors table of a failed command beside ``--out``, or to stderr."""
    out = getattr(args, "out", None)
    if isinstance(out, Path):
        path = out.with_name(out.stem + ".errors.csv") if out.suffix else out / "errors.csv"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            errors.to_csv(path, index=False)
        except OSError:
            pass
        else:
            print(f"dermctx {args.command}: {len(errors)} item(s) failed; see {path}", file=sys.stderr)
            return
    print(f"dermctx {args.command}: {len(errors)} item(s) failed:", file=sys.stderr)
    errors.to_csv(sys.stderr, index=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
