"""The commands on tables: validate, describe, dedup, split, to-dicom."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dermctx.errors import DermctxError
from dermctx.formatting import plural

from ._common import (
    EXIT_OK,
    Options,
    command,
    finish,
    given,
    show_progress,
    write_frame,
)
from ._inputs import add_table_options, load_table

# --- validate ------------------------------------------------------------------------------------


def _validate_options(opts: Options) -> None:
    add_table_options(opts)
    opts.output.add_argument("--out", type=Path, default=None, metavar="FILE",
                             help="write the canonical lesion table here (.csv or .parquet)")


@command("validate", "read any supported table, check it, and write it in canonical form",
         _validate_options, output="file")
def _validate(args: argparse.Namespace) -> int:
    from dermctx.table import has_patient_context

    table = load_table(args).table
    n_pat = table["patient_id"].nunique()
    patients = (plural(n_pat, "patient") if has_patient_context(table)
                else plural(n_pat, "patient proxy", "patient proxies") + " (no patient ids)")
    meaning = table.attrs.get("target_meaning", "melanoma")
    positives = ("unlabelled" if table["target"].isna().all() else
                 plural(int((table["target"] == 1).sum()), "melanoma") if meaning == "melanoma"
                 else f"{int((table['target'] == 1).sum()):,} with target 1 ({meaning})")
    print(f"{args.table}: {plural(len(table), 'image')}, {patients}, {positives}", file=sys.stderr)
    if args.out is not None:
        write_frame(table, args.out)
    return EXIT_OK


# --- describe ------------------------------------------------------------------------------------


def _describe_options(opts: Options) -> None:
    add_table_options(opts)
    opts.input.add_argument("--by", default=None, metavar="COL",
                            help="group column: patient_class (the default: patients with and "
                                 "without melanoma) or any column of the table (a fold, site, source)")
    opts.output.add_argument("--format", choices=("md", "html", "tex"), default="md",
                             help="Markdown (default), HTML or LaTeX")
    opts.output.add_argument("--out", type=Path, default=None, metavar="FILE",
                             help="write the table here instead of stdout")


@command("describe", "describe the cohort of a lesion table: patients, lesions, sites (a Table 1)",
         _describe_options, output="file")
def _describe(args: argparse.Namespace) -> int:
    from dermctx.cohort import cohort_table, to_html, to_latex, to_markdown

    table = load_table(args).table
    render = {"md": to_markdown, "html": to_html, "tex": to_latex}[args.format]
    text = render(cohort_table(table, **given(args, by="by")))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return EXIT_OK


# --- dedup ---------------------------------------------------------------------------------------

_LAYOUTS = ("dermctx", "training", "challenge")


def _dedup_options(opts: Options) -> None:
    add_table_options(opts)
    opts.model.add_argument("--exact-only", action="store_true",
                            help="report identical decoded pixels only")
    opts.model.add_argument("--threshold", type=float, default=None,
                            help="largest near-duplicate distance, a fraction of the 256 hash bits "
                                 "(default: the library's, 0.2)")
    opts.model.add_argument("--embedding-threshold", type=float, default=None,
                            help="also pair rows whose emb_* columns have cosine distance at most this")
    opts.output.add_argument("--out", type=Path, default=None, metavar="FILE",
                             help="write the pairs here (.csv or .parquet; default stdout)")
    opts.output.add_argument("--layout", choices=_LAYOUTS, default="dermctx",
                             help="columns of the pairs: dermctx (image_id_1, image_id_2, kind, "
                                  "distance, method), training (image_name_1, image_name_2) or "
                                  "challenge (ISIC_id, ISIC_id_paired, partition: from a partition "
                                  "column, else train where labelled, test otherwise)")
    opts.renamed("--format", "--layout", group="output", choices=_LAYOUTS)
    opts.jobs("image decoding threads (default: the library's)")
    opts.progress()


@command("dedup", "find exact and near-duplicate images of a lesion table from their pixels",
         _dedup_options, output="file")
def _dedup(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from dermctx.dedup import find_duplicates

    table = load_table(args).table
    if len(table) and ("path" not in table.columns or table["path"].isna().all()):
        raise DermctxError(f"{args.table}: no row has an image path, and dedup compares pixels: "
                           "give the folder of the images with --image-dir DIR")
    pairs, errors = find_duplicates(table, near=not args.exact_only, progress=show_progress(args),
                                    **given(args, threshold="threshold", n_jobs="jobs",
                                            embedding_threshold="embedding_threshold"))
    counts = pairs["kind"].value_counts().to_dict()
    print(f"{args.table}: {pairs.attrs.get('n_images', 0)} of {len(table)} images hashed; "
          f"{counts.get('exact', 0)} exact and {counts.get('near', 0)} near duplicate pairs",
          file=sys.stderr)
    if args.layout == "training":
        out = pd.DataFrame({"image_name_1": pairs["image_id_1"], "image_name_2": pairs["image_id_2"]})
    elif args.layout == "challenge":
        if "partition" in table.columns:
            part = table.set_index("image_id")["partition"]
        else:
            part = pd.Series(np.where(table["target"].notna(), "train", "test"), index=table["image_id"])
        out = pd.DataFrame({"ISIC_id": pairs["image_id_1"], "ISIC_id_paired": pairs["image_id_2"],
                            "partition": pairs["image_id_1"].map(part).to_numpy()})
    else:
        out = pairs
    write_frame(out, args.out)
    return finish(args, len(table), errors)


# --- split ---------------------------------------------------------------------------------------


def _split_options(opts: Options) -> None:
    add_table_options(opts, duplicates=True)
    opts.model.add_argument("--folds", type=int, default=None, metavar="N",
                            help="number of patient-grouped folds (default: the library's, 5)")
    opts.output.add_argument("--out", type=Path, default=None, metavar="FILE",
                             help="write image_id, patient_id, fold here (.csv or .parquet; default "
                                  "stdout); 'dermctx bench' and 'dermctx train' read it with --folds")
    opts.random_state("seed of the split (default 0: the same table always gets the same folds; "
                      "PatientKFold's own default, None, would not)", default=0)
    opts.renamed("--seed", "--random-state", type=int)


@command("split", "assign patient-level folds (patients, lesions and duplicates kept whole)",
         _split_options, output="file")
def _split(args: argparse.Namespace) -> int:
    import pandas as pd

    from dermctx.splits import PatientKFold

    loaded = load_table(args)
    table = loaded.table
    cv = PatientKFold(duplicates=loaded.duplicates, random_state=args.random_state,
                      **given(args, n_splits="folds"))
    fold = cv.assign(table)
    out = pd.DataFrame({"image_id": table["image_id"], "patient_id": table["patient_id"], "fold": fold})
    for k in range(cv.get_n_splits()):
        part = table[fold == k]
        print(f"fold {k}: {plural(len(part), 'image')}, {plural(part['patient_id'].nunique(), 'patient')}, "
              f"{plural(int((part['target'] == 1).sum()), 'melanoma')}", file=sys.stderr)
    write_frame(out, args.out)
    return EXIT_OK


# --- to-dicom ------------------------------------------------------------------------------------


def _to_dicom_options(opts: Options) -> None:
    add_table_options(opts)
    opts.output.add_argument("--out", type=Path, required=True, metavar="DIR",
                             help="folder for the DICOM files (<image_id>.dcm)")
    opts.progress()


@command("to-dicom", "wrap each row's JPEG, unchanged, in a DICOM file with the row's metadata",
         _to_dicom_options, output="folder")
def _to_dicom(args: argparse.Namespace) -> int:
    from dermctx.io.dicom import write_dicom_dir

    table = load_table(args).table
    written, errors = write_dicom_dir(table, args.out, progress=show_progress(args))
    print(f"{args.table}: wrote {len(written)} DICOM file(s) to {args.out}", file=sys.stderr)
    return finish(args, len(table), errors)
