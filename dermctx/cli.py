"""The ``dermctx`` command: one subcommand per verb, each a thin wrapper over the Python API.

Every command that takes a TABLE accepts a canonical lesion table (CSV or Parquet), an ISIC 2020
CSV or a HAM10000 CSV (see :func:`dermctx.read_table`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
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
    p.add_argument("table", type=Path, help="lesion table: canonical CSV/Parquet, ISIC 2020 or HAM10000 CSV")
    p.add_argument("--image-dir", type=Path, default=None, help="folder of the images named in the table")


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


def _report_errors(errors, out: Path | None) -> None:
    """Say how many items failed; write the errors table beside ``out``."""
    if errors is None or len(errors) == 0:
        return
    if out is not None:
        path = out.with_name(out.stem + ".errors.csv")
        errors.to_csv(path, index=False)
        print(f"{len(errors)} item(s) failed; see {path}", file=sys.stderr)
    else:
        print(f"{len(errors)} item(s) failed:", file=sys.stderr)
        errors.to_csv(sys.stderr, index=False)


# --- validate -------------------------------------------------------------------------------


def _validate_args(p: argparse.ArgumentParser) -> None:
    _table_arg(p)
    p.add_argument("--out", type=Path, default=None, help="write the canonical table here (.csv/.parquet)")


@command("validate", "read any supported table, check it, and write it in canonical form", _validate_args)
def _validate(args: argparse.Namespace) -> int:
    from dermctx.table import read_table

    table = read_table(args.table, image_dir=args.image_dir)
    n_pat = table["patient_id"].nunique()
    n_mel = int((table["target"] == 1).sum())
    print(f"{args.table}: {len(table)} images, {n_pat} patients, {n_mel} melanomas", file=sys.stderr)
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
    from dermctx.table import read_table

    table = read_table(args.table, image_dir=args.image_dir)
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
    from dermctx.table import read_table

    table = read_table(args.table, image_dir=args.image_dir)
    model = args.model
    if model is None and args.checkpoint is not None:
        model = checkpoint_metadata(args.checkpoint).get("model")
    embedder = Embedder(model or "efficientnet_b0", pretrained=not args.no_pretrained,
                        checkpoint=args.checkpoint, image_size=args.size, aspect=args.aspect,
                        colour_constancy=args.colour_constancy, tta=args.tta, device=args.device,
                        batch_size=args.batch_size, num_workers=args.workers)
    emb, errors = embedder.embed(table, store=args.out, progress=not args.no_progress,
                                 backend=args.backend)
    print(f"{args.out}: {len(emb)} embeddings of width {emb.shape[1]} "
          f"({embedder.settings_['model']}, {embedder.image_size_} px), {len(errors)} failed",
          file=sys.stderr)
    _report_errors(errors, args.out)
    return 0


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
        return handler(args)
    except DermctxError as exc:
        print(f"dermctx {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
