"""What every command shares: the registry, option groups, renamed options, progress, outputs.

A command is registered with :func:`command`: its one-line summary (plain text: it is printed
by ``dermctx --help``), a function adding its options to an :class:`Options` (four groups:
input, model, output, run), the handler ``run(args) -> exit code`` and what ``--out`` is (a
file or a folder), which decides where the errors table goes (:func:`errors_path`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dermctx.errors import DermctxError
from dermctx.formatting import plural

#: The exit codes, the same for every command (see ``dermctx --help``).
EXIT_OK, EXIT_FAILED_ITEMS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]
Output = Literal["file", "folder"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its summary line, options, handler and kind of ``--out``."""

    name: str
    summary: str
    add_options: Callable[[Options], None]
    run: Handler
    output: Output


COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, add_options: Callable[[Options], None], *,
            output: Output) -> Callable[[Handler], Handler]:
    """Register ``run(args) -> exit code`` as the subcommand ``name``.

    ``summary`` is one plain-text line (no markup); ``output`` says whether ``--out`` is a file
    (errors in ``<out stem>.errors.csv`` beside it) or a folder (errors in ``<out>/errors.csv``).
    """

    def register(run: Handler) -> Handler:
        if "``" in summary or ":func:" in summary or ":class:" in summary:
            raise AssertionError(f"dermctx {name}: the summary must be plain text: {summary!r}")
        COMMANDS[name] = Command(name, summary, add_options, run, output)
        return run

    return register


class Failed(DermctxError):
    """A command failed as a whole, item by item; ``errors`` is the errors table that says why.

    Exit code 1 (every item failed), not 2: the input was usable, none of its items was.
    """

    def __init__(self, message: str, errors: Any) -> None:
        super().__init__(message)
        self.errors = errors


# --- options -------------------------------------------------------------------------------------


class Options:
    """A command's parser with its four option groups, shown in this order by ``--help``.

    ``input``: what is read (the table and what is joined to it); ``model``: the model read,
    built or fitted, and its settings; ``output``: what is written; ``run``: how it runs
    (progress, threads, device, seeds).
    """

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.input = parser.add_argument_group("input")
        self.model = parser.add_argument_group("model")
        self.output = parser.add_argument_group("output")
        self.run = parser.add_argument_group("run")
        self.run.add_argument("-h", "--help", action="help", help="show this help and exit")

    def progress(self) -> None:
        """``--progress/--no-progress``: bars on stderr; default only when it is a terminal."""
        self.run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                              help="show progress bars on stderr (default: only when stderr is a "
                                   "terminal, never in a log file)")

    def device(self) -> None:
        """``--device`` and ``--batch-size`` of a command that runs a CNN."""
        self.run.add_argument("--device", default=None, metavar="DEVICE",
                              help="cpu, cuda, cuda:1, ... (default: cuda if available)")
        self.run.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                              help="images per batch (default: the library's)")

    def jobs(self, what: str) -> None:
        """``--jobs N``: threads (what they do, and whose default applies)."""
        self.run.add_argument("--jobs", type=positive_int, default=None, metavar="N", help=what)

    def random_state(self, what: str, *, default: int | None = None) -> None:
        """``--random-state SEED`` (``--seed`` where it was the old name: see :meth:`renamed`)."""
        self.run.add_argument("--random-state", type=int, default=default, metavar="SEED", help=what)

    def renamed(self, old: str, new: str, *, group: str = "run", **kwargs: Any) -> None:
        """Keep ``old`` working as ``new`` (same value) with a one-line note on stderr; hidden."""
        dest = new.lstrip("-").replace("-", "_")
        kwargs.setdefault("dest", dest)
        getattr(self, group).add_argument(old, action=Renamed, new=new, help=argparse.SUPPRESS,
                                          **kwargs)


def show_progress(args: argparse.Namespace) -> bool:
    """``--progress``/``--no-progress`` when given, else whether stderr is a terminal."""
    given = getattr(args, "progress", None)
    if given is not None:
        return bool(given)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def deprecation_note(prog: str, old: str, new: str) -> None:
    """The one-line note for an old option spelling."""
    print(f"{prog}: warning: {old} is deprecated, use {new} ({old} will be removed in a future "
          "release)", file=sys.stderr)


class Renamed(argparse.Action):
    """An old option spelling: stores its value under the new one's ``dest`` and says so.

    ``nargs=0`` with ``const`` stands for an old flag (``store_true``).
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        deprecation_note(parser.prog, option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


class BareFlag(argparse.Action):
    """An option that takes a value and used to be a flag without one (``--tta``, ``fit
    --embeddings``): the bare form still works, with a one-line note, as ``new``.

    Given bare, ``bare_dest`` (default: the option's own dest) is set to ``bare_value``.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 bare_value: Any = True, bare_dest: str | None = None, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", const=None, **kwargs)
        self.new, self.bare_value, self.bare_dest = new, bare_value, bare_dest or dest

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values is None:
            deprecation_note(parser.prog, f"{option_string} without a value", self.new)
            setattr(namespace, self.bare_dest, self.bare_value)
        else:
            setattr(namespace, self.dest, values)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written; a :class:`BareFlag` shown as the value it takes (``--tta N``), its
    deprecated bare form left out."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, BareFlag):
            return self._metavar_formatter(action, default_metavar)(1)[0]
        return super()._format_args(action, default_metavar)


def given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """``{keyword: value}`` of the options that were given (not None): the library's defaults
    apply to the others, so they live in one place. ``names`` maps keyword -> option dest."""
    return {key: getattr(args, dest) for key, dest in names.items()
            if getattr(args, dest, None) is not None}


def library_default(func: Callable[..., Any], name: str) -> Any:
    """The default of ``func``'s parameter ``name``: the one place a default lives."""
    import inspect

    return inspect.signature(func).parameters[name].default


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def tta_views(text: str) -> int:
    """argparse type of ``--tta N``: 1 (no test-time augmentation), 2, 4 or 8 views."""
    if text not in ("1", "2", "4", "8"):
        raise argparse.ArgumentTypeError(f"expected 1, 2, 4 or 8 views, got {text!r}")
    return int(text)


# --- outputs and the errors table ----------------------------------------------------------------


def errors_path(out: Path, output: Output) -> Path:
    """Where the errors table of a command writing ``out`` goes.

    A file output: beside it, ``<out without its suffix>.errors.csv`` (``scores.errors.csv`` for
    ``scores.csv``); a folder output: inside it, ``<out>/errors.csv``.
    """
    if output == "folder":
        return out / "errors.csv"
    name = out.name
    for suffix in (".csv.gz", ".parquet", ".csv", ".pq", ".html", ".md", ".tex", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(name + ".errors.csv")


def write_frame(frame: Any, out: Path | None) -> None:
    """Write a DataFrame to ``out`` (.parquet/.pq as Parquet, else CSV), or to stdout as CSV."""
    if out is None:
        frame.to_csv(sys.stdout, index=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)


def finish(args: argparse.Namespace, n_items: int, errors: Any, *, keep_empty: bool = False) -> int:
    """Write the errors table where the rule says, say how many items failed; the exit code.

    0 when nothing failed (a stale errors file of an earlier run into the same output is
    removed, or with ``keep_empty`` overwritten by an empty table), else 1. With no ``--out``
    (a result on stdout) the errors table goes to stderr as CSV.
    """
    from dermctx.errors import errors_frame

    errors = errors_frame() if errors is None else errors
    out = getattr(args, "out", None)
    path = errors_path(out, COMMANDS[args.command].output) if isinstance(out, Path) else None
    if not len(errors):
        if path is not None and keep_empty:
            path.parent.mkdir(parents=True, exist_ok=True)
            errors.to_csv(path, index=False)
        elif path is not None and path.is_file():
            path.unlink()
        return EXIT_OK
    write_errors(args, errors, f"{len(errors):,} of {plural(n_items, 'item')} failed")
    return EXIT_FAILED_ITEMS


def write_errors(args: argparse.Namespace, errors: Any, what: str) -> None:
    """Write ``errors`` beside (or in) ``--out`` and say ``what`` with where; to stderr without one."""
    out = getattr(args, "out", None)
    prefix = f"dermctx {args.command}: "
    if isinstance(out, Path):
        path = errors_path(out, COMMANDS[args.command].output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            errors.to_csv(path, index=False)
        except OSError as exc:
            print(f"{prefix}could not write {path} ({exc.strerror or exc})", file=sys.stderr)
        else:
            print(f"{prefix}{what}; see {path}", file=sys.stderr)
            return
    print(f"{prefix}{what}:", file=sys.stderr)
    errors.to_csv(sys.stderr, index=False)
