"""``dermctx`` itself: the parser (commands in data-flow order) and the exit-code rule."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dermctx.errors import DermctxError

from . import _bench, _cnn, _data, _rank  # noqa: F401  (they register the commands)
from ._common import (
    COMMANDS,
    EXIT_BAD_INPUT,
    EXIT_FAILED_ITEMS,
    EXIT_INTERNAL,
    Failed,
    HelpFormatter,
    Options,
    write_errors,
)

#: The commands in the order data flows through them, as ``dermctx --help`` lists them.
ORDER = ("validate", "describe", "dedup", "split", "train", "embed", "fit", "score",
         "score-patient", "explain", "bench", "to-dicom", "demo")

_ERRORS_WHERE = {"file": "errors table: beside --out FILE, named after it (scores.csv: "
                         "scores.errors.csv); on stderr without --out",
                 "folder": "errors table: inside the output folder, DIR/errors.csv"}
_EXIT_LINE = ("exit codes: 0 all done; 1 some items failed (listed in the errors table); 2 bad "
              "usage or input; 3 internal error (a dermctx bug). See dermctx --help.")


def build_parser() -> argparse.ArgumentParser:
    """The ``dermctx`` parser: one subparser per command, in :data:`ORDER`."""
    from dermctx import __version__

    doc = importlib.import_module(__package__).__doc__ or ""
    first, _, rest = doc.partition("\n")
    parser = argparse.ArgumentParser(prog="dermctx", description=first, epilog=rest.strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dermctx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    if sorted(ORDER) != sorted(COMMANDS):
        raise AssertionError(f"ORDER {ORDER} does not list the commands {sorted(COMMANDS)}")
    for name in ORDER:
        cmd = COMMANDS[name]
        p = sub.add_parser(name, help=cmd.summary, description=cmd.summary, add_help=False,
                           formatter_class=HelpFormatter)
        cmd.add_options(Options(p))
        p.epilog = "\n".join(textwrap.fill(text, 90) for text in
                             (p.epilog or _EXIT_LINE, _ERRORS_WHERE[cmd.output]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dermctx`` command line; returns the exit code (see ``dermctx --help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # bad usage: argparse says so and exits with 2
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        with _warnings_as_messages(args.command):
            return COMMANDS[args.command].run(args)
    except Failed as exc:  # every item failed: the errors table says why
        _error(args, str(exc))
        write_errors(args, exc.errors, f"{len(exc.errors)} item(s) failed")
        return EXIT_FAILED_ITEMS
    except DermctxError as exc:
        _error(args, str(exc))
        return EXIT_BAD_INPUT
    except OSError as exc:  # a file that is missing, unreadable or cannot be written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _error(args, f"{where}{exc.strerror or exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error(args, "interrupted")
        return 130
    except Exception as exc:  # a dermctx bug, not bad input: one line, the traceback on request
        if os.environ.get("DERMCTX_DEBUG"):
            raise
        _error(args, f"{type(exc).__name__}: {exc}", kind="internal error")
        print(f"dermctx {args.command}: this is a dermctx bug; please report it with the command "
              "(DERMCTX_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _error(args: argparse.Namespace, message: str, kind: str = "error") -> None:
    text = " ".join(message.split())
    text = text if len(text) <= 2000 else text[:2000] + "..."
    print(f"dermctx {args.command}: {kind}: {text}", file=sys.stderr)


@contextmanager
def _warnings_as_messages(command: str) -> Iterator[None]:
    """Show dermctx's warnings as one line each, ``dermctx COMMAND: warning: ...``."""
    from dermctx.errors import DermctxWarning

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DermctxWarning, UserWarning)):
            text = str(message)
            key = re.sub(r"^\S+: ", "", text)  # the same warning about the table, from two steps (a file prefix)
            if key not in seen:
                seen.add(key)
                print(f"dermctx {command}: warning: {' '.join(text.split())}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    original = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always", DermctxWarning)
        warnings.showwarning = show
        yield
