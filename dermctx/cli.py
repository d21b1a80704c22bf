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
