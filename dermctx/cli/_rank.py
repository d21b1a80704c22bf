"""The ranking commands: fit, score (ContextRanker) and score-patient (LesionPipeline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dermctx.errors import DermctxError
from dermctx.formatting import plural

from ._common import (
    EXIT_FAILED_ITEMS,
    BareFlag,
    Options,
    command,
    finish,
    given,
    library_default,
    positive_int,
    show_progress,
    tta_views,
    write_frame,
)
from ._inputs import (
    Loaded,
    add_table_options,
    keep_rows,
    load_table,
    require_column,
    score_col_option,
)


def _cnn_option(opts: Options, what: str) -> None:
    opts.input.add_argument("--cnn", type=Path, default=None, metavar="DIR",
                            help=f"a 'dermctx train' output folder: {what}")


def _join_cnn(loaded: Loaded, args: argparse.Namespace, as_name: str, *, new_images: bool) -> None:
    """Add the trainer's scores as ``as_name``; rows that cannot be scored go to the errors table.

    Images the trainer scored out of fold keep that score (a fold model that saw the patient is
    never used on it); with ``new_images`` the others are scored by the average of the fold
    models. Rows that cannot be scored are errors, never guessed.
    """
    import numpy as np

    from dermctx.train import TrainResult

    if getattr(args, "scores", None) is not None:
        raise DermctxError("give --cnn DIR or --scores FILE, not both: each supplies the CNN score")
    run = TrainResult.load(args.cnn)
    table = loaded.table
    ids = table["image_id"].astype(str)
    scores = ids.map(run.oof.assign(image_id=run.oof["image_id"].astype(str))
                     .set_index("image_id")["cnn_score"])
    seen = scores.notna().to_numpy()  # images of the run's training table
    run_patient = ids.map(run.oof.assign(image_id=run.oof["image_id"].astype(str))
                          .set_index("image_id")["patient_id"].astype(str))
    moved = seen & (run_patient != table["patient_id"].astype(str)).to_numpy()
    messages = [""] * len(table)
    if moved.any():  # its out-of-fold score (or any fold model's) would have seen the patient's image
        i = int(np.flatnonzero(moved)[0])
        what = (f"image {ids.iloc[i]!r} is filed under patient {run_patient.iloc[i]!r} in {args.cnn} and "
                f"{str(table['patient_id'].iloc[i])!r} in {args.table}")
        if not new_images:
            raise DermctxError(f"{what} ({int(moved.sum())} such image(s)); out-of-fold scores are out of "
                               "patient only for the patients the run was split by: fix the patient ids")
        for i in map(int, np.flatnonzero(moved)):
            messages[i] = (f"image {ids.iloc[i]!r} is filed under patient {run_patient.iloc[i]!r} in the CNN "
                           f"run and {str(table['patient_id'].iloc[i])!r} here: the fold models trained on it, "
                           "so no score of theirs is out of patient; fix the patient id")
        scores[moved] = np.nan
    known = seen & ~moved
    if known.any():
        print(f"{args.cnn}: {int(known.sum())} image(s) were in its training table: their "
              "out-of-fold scores are used", file=sys.stderr)
    if not (known | moved).all():
        if not new_images:
            raise DermctxError(f"{args.cnn}: {int((~seen).sum())} image(s) of {args.table} have no "
                               f"out-of-fold score (e.g. {ids[~seen].iloc[0]!r}); fit on the table "
                               "the CNN was trained on, or see its errors.csv")
        fresh = ~seen
        new, errors = run.predict(table[fresh], progress=show_progress(args))
        scores[fresh] = ids[fresh].map(new.assign(image_id=new["image_id"].astype(str))
                                       .set_index("image_id")["cnn_score"])
        why = dict(zip(errors["image_id"].astype(str), errors["message"], strict=True))
        for i in map(int, np.flatnonzero(fresh)):
            messages[i] = why.get(ids.iloc[i], "not scored by the fold models")
    loaded.table = table.assign(**{as_name: scores.to_numpy(dtype=float)})
    keep_rows(loaded, loaded.table[as_name].notna().to_numpy(), "cnn", messages, args.cnn,
              args.table, none_left="items")


# --- fit -----------------------------------------------------------------------------------------


def _fit_options(opts: Options) -> None:
    add_table_options(opts, scores=True)
    opts.input.add_argument("--embeddings", type=Path, action=BareFlag, new="--use-embeddings",
                            bare_dest="use_embeddings", default=None, metavar="DIR",
                            help="an embedding store written by 'dermctx embed', joined by image id "
                                 "(its emb_* columns); rows without one go to the errors table")
    score_col_option(opts, "the library's, cnn_score; none: no CNN score")
    _cnn_option(opts, "its out-of-fold scores become the score column")
    opts.model.add_argument("--context-features", default=None, metavar="COLS",
                            help="comma-separated numeric columns used raw and relative to the "
                                 "patient's other lesions (ISIC 2024's tbp_lv_*...), or auto for "
                                 "every eligible numeric column")
    opts.model.add_argument("--use-image-size", action="store_true",
                            help="also read width/height (an acquisition artefact in ISIC 2020)")
    opts.model.add_argument("--cnn-run", type=Path, default=None, metavar="DIR",
                            help="a 'dermctx train' output folder: write a LesionPipeline folder "
                                 "instead (its fold models, their preprocessing and a ContextRanker "
                                 "fitted on their out-of-fold scores), which 'dermctx score-patient "
                                 "--model' reads")
    opts.model.add_argument("--use-embeddings", action="store_true", default=None,
                            help="with --cnn-run: also feed the ranker the final model's embeddings "
                                 "(needs 'dermctx train --final-model' and --image-dir)")
    opts.model.add_argument("--tta", type=tta_views, action=BareFlag, new="--tta 8", bare_value=8,
                            default=None, metavar="N",
                            help="with --cnn-run: flip/transpose views the CNN averages when scoring: "
                                 "1 (none, the default, as the out-of-fold scores the ranker is "
                                 "fitted on), 2, 4 or 8")
    opts.model.add_argument("--n-boot", type=positive_int, default=None, metavar="N",
                            help="with --cnn-run: patient-bootstrap resamples of the out-of-fold "
                                 "AUCs it records (default: the library's)")
    opts.output.add_argument("--out", type=Path, required=True, metavar="DIR",
                             help="folder to write the fitted model to")
    opts.random_state("seed of the model (default: the library's, 0)")
    opts.progress()


def _fit_pipeline(loaded: Loaded, args: argparse.Namespace) -> int:
    """``dermctx fit --cnn-run``: a LesionPipeline folder from a trainer's output folder."""
    from dermctx.pipeline import LesionPipeline, provenance_lines

    clash = [flag for flag, used in (("--cnn", args.cnn is not None),
                                     ("--scores", args.scores is not None),
                                     ("--embeddings", args.embeddings is not None),
                                     ("--context-features", bool(args.context_features)),
                                     ("--use-image-size", args.use_image_size),
                                     ("--score-col", args.score_col is not None)) if used]
    if clash:
        raise DermctxError(f"--cnn-run writes a LesionPipeline, whose ranker reads the CNN's score (and "
                           f"embeddings) with age, sex and site only; drop {', '.join(clash)}")
    pipeline = LesionPipeline(**given(args, use_embeddings="use_embeddings", tta="tta",
                                      n_boot="n_boot", random_state="random_state"))
    pipeline.fit(loaded.table, args.cnn_run, progress=show_progress(args))
    pipeline.save(args.out)
    for line in provenance_lines(pipeline.provenance_):
        print(line, file=sys.stderr)
    print(f"LesionPipeline written to {args.out}; score a patient with 'dermctx score-patient FOLDER "
          f"--model {args.out} --out DIR'", file=sys.stderr)
    return finish(args, loaded.n_rows, loaded.errors)


@command("fit", "fit a ContextRanker (or with --cnn-run a LesionPipeline) on a labelled lesion "
         "table and save it", _fit_options, output="folder")
def _fit(args: argparse.Namespace) -> int:
    from dermctx.models.ranker import ContextRanker

    if args.use_embeddings and args.cnn_run is None:
        raise DermctxError("--use-embeddings goes with --cnn-run; to feed a ContextRanker embeddings, "
                           "join them with --embeddings DIR")
    default_col = library_default(ContextRanker, "score_col")
    no_cnn = (args.score_col or "").strip().lower() == "none"
    if no_cnn and (args.scores is not None or args.cnn is not None):
        raise DermctxError("--score-col none fits without a CNN score; drop --scores and --cnn")
    loaded = load_table(args, score_col=None if no_cnn else args.score_col or default_col)
    table = loaded.table
    if table["target"].isna().any():
        raise DermctxError(f"{args.table}: 'fit' needs a target (0/1) on every row; "
                           f"{int(table['target'].isna().sum())} row(s) have none")
    if args.cnn_run is not None:
        return _fit_pipeline(loaded, args)
    score_col = None if no_cnn else args.score_col or default_col
    if args.cnn is not None:
        _join_cnn(loaded, args, score_col or default_col, new_images=False)
    if score_col is not None:
        require_column(loaded.table, score_col, args, default=args.score_col is None)
    context: str | list[str] | None = None
    if args.context_features:
        context = ("auto" if args.context_features.strip() == "auto"
                   else [c.strip() for c in args.context_features.split(",") if c.strip()])
    options = {"context_features": context, **given(args, random_state="random_state")}
    ranker = ContextRanker(score_col=score_col, use_image_size=args.use_image_size,
                           **{k: v for k, v in options.items() if v is not None})
    table = loaded.table
    ranker.fit(table, table["target"])
    ranker.save(args.out)
    print(f"fitted on {plural(len(table), 'lesion')}, {plural(table['patient_id'].nunique(), 'patient')}; "
          f"model written to {args.out}", file=sys.stderr)
    return finish(args, loaded.n_rows, loaded.errors)


# --- score ---------------------------------------------------------------------------------------


def _score_options(opts: Options) -> None:
    add_table_options(opts, scores=True, embeddings=True)
    score_col_option(opts, "the model's score column")
    _cnn_option(opts, "its fold models score the images first")
    opts.model.add_argument("--model", type=Path, required=True, metavar="DIR",
                            help="a folder written by 'dermctx fit'")
    opts.output.add_argument("--out", type=Path, default=None, metavar="FILE",
                             help="scores file (.csv or .parquet); default stdout")
    opts.output.add_argument("--explain", action="store_true",
                             help="add the worded explanation of each score (which measurements "
                                  "raised or lowered it)")
    opts.output.add_argument("--explain-words", choices=("isic2024",), default=None,
                             help="with --explain: plain words for the ISIC 2024 (SLICE-3D) tbp_lv_* columns "
                                  "(e.g. 'area (mm²)' for tbp_lv_areaMM2) instead of their names")
    opts.run.add_argument("--chunk-patients", type=positive_int, default=None, metavar="N",
                          help="score this many whole patients at a time (bounded memory); a Parquet "
                               "TABLE with dermctx's column names and a .parquet --out are then "
                               "streamed from disk")
    opts.run.add_argument("--backend", choices=("local", "ray"), default=None,
                          help="ray: score the chunks on Ray Data (Parquet TABLE and --out, no joins; "
                               "pip install 'dermctx[ray]')")
    opts.progress()


def _streamable(args: argparse.Namespace) -> bool:
    """A Parquet table scored straight from disk into a Parquet file (no layout, no join)."""
    plain = all(getattr(args, name) is None for name in
                ("cnn", "labels", "source", "image_dir", "scores", "embeddings"))
    parquet = str(args.table).lower().endswith((".parquet", ".pq"))
    out = args.out is not None and args.out.suffix.lower() in (".parquet", ".pq")
    return plain and parquet and out and (args.chunk_patients is not None or args.backend == "ray")


def _score_streamed(ranker: Any, args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from dermctx.scoring import score_parquet

    errors = score_parquet(ranker, args.table, args.out, explain=args.explain, labels=args.explain_words,
                           progress=show_progress(args),
                           **given(args, chunk_patients="chunk_patients", backend="backend"))
    n_rows = pq.ParquetFile(args.table).metadata.num_rows
    print(f"{args.table}: scored {n_rows - len(errors)} of {n_rows} lesions in chunks of whole "
          f"patients ({args.backend or 'local'}); wrote {args.out}", file=sys.stderr)
    return finish(args, n_rows, errors)


@command("score", "score every lesion of a table with a saved ContextRanker", _score_options,
         output="file")
def _score(args: argparse.Namespace) -> int:
    from dermctx.models.ranker import ContextRanker
    from dermctx.scoring import score_table

    ranker = ContextRanker.load(args.model)
    if args.explain_words is not None and not args.explain:
        raise DermctxError("--explain-words words the explanations: give --explain too")
    if args.out is not None and args.out.exists() and args.out.resolve() == Path(args.table).resolve():
        raise DermctxError(f"--out {args.out} is the input table; write the scores to another file")
    if _streamable(args):
        return _score_streamed(ranker, args)
    if args.backend == "ray":
        raise DermctxError("--backend ray scores a Parquet TABLE into a .parquet --out, without "
                           "--cnn, --scores, --embeddings, --labels, --source or --image-dir")
    model_col = ranker.score_col
    if model_col is None and (args.scores is not None or args.cnn is not None):
        raise DermctxError(f"{args.model} was fitted without a CNN score; drop --scores and --cnn")
    # rows without usable ids (blank or placeholder patient, blank or repeated image id) become
    # error rows of the scores, as in ContextRanker.rank, not a refusal of the whole table
    loaded = load_table(args, score_col=model_col, bad_ids="keep")
    if args.cnn is not None and model_col is not None:
        _join_cnn(loaded, args, model_col, new_images=True)
    elif model_col is not None and args.scores is None and args.score_col not in (None, model_col):
        require_column(loaded.table, args.score_col, args, default=False)
        print(f"{args.table}: column {args.score_col!r} read as the model's {model_col!r}",
              file=sys.stderr)
        loaded.table = loaded.table.drop(columns=[model_col], errors="ignore").rename(
            columns={args.score_col: model_col})
    if model_col is not None:
        require_column(loaded.table, model_col, args, default=args.score_col is None)
    if args.chunk_patients is not None:
        scores, errors = score_table(ranker, loaded.table, chunk_patients=args.chunk_patients,
                                     explain=args.explain, labels=args.explain_words, progress=show_progress(args))
        scores = scores.drop(columns="row")
    else:
        scores, errors = ranker.rank(loaded.table, explain=args.explain, labels=args.explain_words)
    write_frame(scores, args.out)
    print(f"{args.table}: scored {len(scores)} of {loaded.n_rows} lesions"
          + (f"; wrote {args.out}" if args.out else ""), file=sys.stderr)
    return finish(args, loaded.n_rows, loaded.all_errors(errors))


# --- score-patient -------------------------------------------------------------------------------

_SCORE_PATIENT_EXIT = (
    "exit codes (the rule of every command): 0 when every image was scored; 1 when some images could not be scored (listed in "
    "errors.csv beside scores.csv; the others are scored and shown); 2 for bad usage or input (no "
    "such folder, no image in it, images of several patients, a --patient-id, --age, --sex or "
    "--sites that disagrees with the folder or its DICOM headers, a --model folder that is not a "
    "LesionPipeline or was changed); 3 for an internal error (a dermctx bug)")


def _score_patient_options(opts: Options) -> None:
    opts.input.add_argument("images", type=Path, nargs="+", metavar="FOLDER",
                            help="a folder of one patient's images (JPEG, PNG, TIFF, DICOM; other "
                                 "files such as .txt or .csv are ignored), or image files")
    opts.input.add_argument("--patient-id", default=None,
                            help="the patient's id (default: the DICOM headers', else the folder's name)")
    opts.input.add_argument("--age", type=float, default=None, help="the patient's age in years")
    opts.input.add_argument("--sex", type=str.lower, choices=("male", "female", "m", "f"),
                            default=None, help="the patient's sex")
    opts.input.add_argument("--sites", type=Path, default=None, metavar="FILE",
                            help="CSV with each image's id (or file name) and anatomic site; it must "
                                 "list every image of the folder, and only those")
    opts.model.add_argument("--model", type=Path, required=True, metavar="DIR",
                            help="a LesionPipeline folder ('dermctx fit TABLE --cnn-run RUN --out DIR')")
    opts.output.add_argument("--out", type=Path, required=True, metavar="DIR",
                             help="output folder: patient.html and scores.csv (and errors.csv when "
                                  "some images failed)")
    opts.output.add_argument("--title", default=None, help="title of the page")
    opts.output.add_argument("--no-page", action="store_true", help="write scores.csv only, no patient.html")
    opts.jobs("threads of the CNN and the image decoding (default: the pipeline's)")
    opts.progress()
    opts.parser.epilog = _SCORE_PATIENT_EXIT


@command("score-patient", "rank one patient's lesion images with a LesionPipeline: patient.html "
         "and scores.csv (a research aid, not a diagnosis)", _score_patient_options, output="folder")
def _score_patient(args: argparse.Namespace) -> int:
    import pandas as pd

    from dermctx.formatting import format_probability
    from dermctx.pipeline import LesionPipeline

    pipeline = LesionPipeline.load(args.model)
    if args.jobs is not None:
        pipeline.set_params(n_jobs=args.jobs)
    first = args.images[0]
    images = first if len(args.images) == 1 and first.is_dir() else [str(p) for p in args.images]
    scores, errors = pipeline.score_images(images, patient_id=args.patient_id, age=args.age,
                                           sex=args.sex, sites=args.sites,
                                           progress=show_progress(args))
    args.out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(args.out / "scores.csv", index=False)
    code = finish(args, len(scores) + len(errors), errors)
    if not len(scores):
        print(f"no image of {plural(len(errors), 'file')} could be scored", file=sys.stderr)
        return EXIT_FAILED_ITEMS
    patient = scores["patient_id"].iloc[0]
    print(f"patient {patient}: {plural(len(scores), 'image')} ranked in context"
          + (f", {plural(len(errors), 'image')} could not be scored (see {args.out / 'errors.csv'})"
             if len(errors) else ""))
    table = pd.DataFrame({"rank": scores["rank"], "image": scores["image_id"],
                          "score": scores["score"].map(format_probability),
                          "CNN alone": [f"#{r} ({format_probability(p)})" for r, p in
                                        zip(scores["cnn_rank"], scores["cnn_score"], strict=True)]})
    print(table.to_string(index=False))
    if not args.no_page:
        page = pipeline.write_page(scores, errors, args.out / "patient.html", title=args.title)
        print(f"wrote {page} and {args.out / 'scores.csv'}", file=sys.stderr)
    else:
        print(f"wrote {args.out / 'scores.csv'}", file=sys.stderr)
    return code
