"""The one table-loading helper of every command, and the joins that chain the steps.

:func:`add_table_options` adds TABLE and its reading options (``--source``, ``--labels``,
``--image-dir``, ``--unknown-patients``, ``--lesion-ids``) and, where a command asks for them,
the joins: ``--scores FILE`` (a CNN's scores by image id), ``--embeddings DIR`` (``dermctx
embed``'s store), ``--folds N|FILE`` / ``--fold-col COL`` (``dermctx split``'s folds) and
``--duplicates FILE``. :func:`load_table` reads and joins them and returns a :class:`Loaded`.

The join rule, the same for scores, embeddings and folds: every row of TABLE is kept or listed
in the errors table (stage ``scores``, ``embeddings`` or ``folds``), never silently dropped;
ids of the joined file that are not in TABLE are counted on stderr; a file sharing no image id
with TABLE is bad input (exit code 2).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dermctx.errors import DermctxError, TableError

from ._common import Failed, Options

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def folds_arg(text: str) -> int | Path:
    """argparse type of ``--folds N|FILE``: a number of folds (any integer: a bad one is refused
    by name where it is used), or a folds file."""
    return int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else Path(text)


def add_table_options(opts: Options, *, scores: bool = False, embeddings: bool = False,
                      folds: bool = False, duplicates: bool = False) -> None:
    """TABLE and its reading options, plus the joins the command asks for (input group)."""
    g = opts.input
    g.add_argument("table", type=Path, metavar="TABLE",
                   help="lesion table or any supported layout (ISIC 2018/2019/2020/2024, ISIC "
                        "archive, HAM10000, PAD-UFES-20), CSV, .csv.gz or Parquet")
    g.add_argument("--source", default=None,
                   help="read as this layout (isic2020, isic2019, ...) instead of recognising it")
    g.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="separate ground-truth file, for layouts that come as two files (ISIC 2019)")
    g.add_argument("--image-dir", type=Path, default=None, metavar="DIR",
                   help="folder of the images: attaches a path per row by image id, for any layout")
    g.add_argument("--unknown-patients", choices=("error", "own"), default=None,
                   help="placeholder patient ids (-1, unknown, empty...): refuse them (error, the "
                        "default) or make each such row its own patient (own)")
    g.add_argument("--lesion-ids", choices=("global", "per-patient"), default=None,
                   help="lesion ids name one lesion across the table (global, the default) or are "
                        "numbered per patient")
    if scores:
        g.add_argument("--scores", type=Path, default=None, metavar="FILE",
                       help="CSV or Parquet of a CNN's scores (e.g. out-of-fold): image_id (or "
                            "image_name, isic_id...) and the --score-col column, joined to TABLE by "
                            "image id; rows without a score go to the errors table")
    if embeddings:
        g.add_argument("--embeddings", type=Path, default=None, metavar="DIR",
                       help="an embedding store written by 'dermctx embed', joined by image id "
                            "(its emb_* columns); rows without one go to the errors table")
    if folds:
        g.add_argument("--folds", type=folds_arg, default=None, metavar="N|FILE",
                       help="N patient-grouped folds made here (default: the library's, 5), or a "
                            "folds file written by 'dermctx split' (image_id, fold) to reuse")
        g.add_argument("--fold-col", default=None, metavar="COL",
                       help="reuse the folds in this column of TABLE (or of the --scores file)")
    if duplicates:
        g.add_argument("--duplicates", type=Path, default=None, metavar="FILE",
                       help="CSV of duplicate image pairs (any ISIC layout); linked patients are "
                            "kept in one fold")


@dataclass
class Loaded:
    """TABLE as read and joined.

    Attributes
    ----------
    table : DataFrame
        The rows to work on (index ``0..m-1``), with the joined columns.
    positions : ndarray of int
        For each row of ``table``, its row in TABLE as read.
    errors : DataFrame
        The errors table of the rows a join left out (rows of TABLE as read).
    n_rows : int
        Rows of TABLE as read.
    folds : ndarray of int, optional
        Fold number (``0..K-1``) of each row of ``table``, from ``--folds FILE`` or ``--fold-col``.
    duplicates : DataFrame, optional
        The ``--duplicates`` pairs.
    """

    table: pd.DataFrame
    positions: np.ndarray
    errors: pd.DataFrame
    n_rows: int
    folds: np.ndarray | None = None
    duplicates: pd.DataFrame | None = None

    def all_errors(self, *later: pd.DataFrame | None) -> pd.DataFrame:
        """The join's errors and those of later steps (whose ``row`` counts rows of ``table``),
        every ``row`` a row of TABLE as read, in row order."""
        import pandas as pd

        frames = [self.errors]
        for errors in later:
            if errors is None or not len(errors):
                continue
            errors = errors.copy()
            rows = errors["row"]
            ok = rows.notna() & rows.between(0, len(self.positions) - 1)
            errors.loc[ok, "row"] = self.positions[rows[ok].astype(int).to_numpy()]
            frames.append(errors)
        frames = [f for f in frames if len(f)]
        if len(frames) < 2:
            return frames[0] if frames else self.errors
        both = pd.concat(frames, ignore_index=True)
        return both.sort_values("row", kind="stable", na_position="last").reset_index(drop=True)


def load_table(args: argparse.Namespace, *, score_col: str | None = None,
               bad_ids: Literal["raise", "keep"] = "raise") -> Loaded:
    """Read TABLE as :func:`dermctx.read_table` does, say which layout, and apply the joins.

    ``score_col`` is the column name the ``--scores`` values get (default ``--score-col``);
    ``bad_ids="keep"`` keeps rows without usable ids for the scorer's errors table.
    With ``--image-dir``, says how many images were not found; raises :class:`Failed` (exit
    code 1, with the errors table) when none was.
    """
    import numpy as np

    from dermctx.errors import errors_frame

    table = _read(args, bad_ids)
    loaded = Loaded(table=table, positions=np.arange(len(table)), errors=errors_frame(),
                    n_rows=len(table))
    if getattr(args, "duplicates", None) is not None:
        from dermctx.io.isic import read_isic_duplicates

        # ids read as text ("0012" stays "0012"), any ISIC pairs layout, a clear error if missing
        loaded.duplicates = read_isic_duplicates(args.duplicates)
    if getattr(args, "scores", None) is not None:
        column = args.score_col or score_col
        if column is None:
            raise DermctxError("--scores needs --score-col COL: the column of the file that holds "
                               "the scores")
        _join_scores(loaded, args.scores, column, score_col or column, args.table)
    if getattr(args, "embeddings", None) is not None:
        _join_embeddings(loaded, args.embeddings, args.table)
    if isinstance(getattr(args, "folds", None), Path) or getattr(args, "fold_col", None):
        _join_folds(loaded, args)
    return loaded


def _read(args: argparse.Namespace, bad_ids: Literal["raise", "keep"] = "raise") -> pd.DataFrame:
    from dermctx.io.registry import SOURCES, read_table

    kwargs: dict[str, Any] = {"image_dir": args.image_dir, "labels": args.labels, "source": args.source,
                              "bad_ids": bad_ids}
    if args.unknown_patients is not None:
        kwargs["unknown_patients"] = args.unknown_patients
    if args.lesion_ids is not None:
        kwargs["lesion_ids"] = args.lesion_ids.replace("-", "_")
    table = read_table(args.table, **kwargs)
    title = {s.name: s.title for s in SOURCES}.get(table.attrs.get("format"), "a lesion table")
    print(f"{args.table}: read as {title}", file=sys.stderr)
    if args.image_dir is not None:
        failed = table["image_error"].notna()
        if len(table) and failed.all():
            from dermctx.errors import error_record, errors_frame

            records = (error_record(i, row, p, "image", m) for row, (i, p, m) in
                       enumerate(zip(table["image_id"], table["path"], table["image_error"], strict=True)))
            raise Failed(f"{args.image_dir}: no image of the {len(table)} rows was found or usable "
                         f"(first: {table['image_error'].iloc[0]})", errors_frame(records))
        if failed.any():
            print(f"{int(failed.sum())} of {len(table)} images not found or refused (column "
                  "image_error)", file=sys.stderr)
    return table.reset_index(drop=True)


# --- the joins -----------------------------------------------------------------------------------


def _image_id_columns() -> tuple[str, ...]:
    """``image_id`` and every layout's raw name for it (image_name, isic_id, image, img_id)."""
    from dermctx.io.registry import SOURCES

    raw = [r for s in SOURCES for r, col in s.columns.items() if col == "image_id"]
    return tuple(dict.fromkeys(["image_id", *raw]))


def read_keyed(path: Path, columns: list[str], what: str) -> pd.DataFrame:
    """``columns`` of a CSV/Parquet file, indexed by its image ids (text); TableError naming it."""
    from dermctx.io._common import read_csv_frame

    ids = _image_id_columns()
    frame, name = read_csv_frame(path, id_columns=ids, what=what)
    key = next((c for c in ids if c in frame.columns), None)
    if key is None:
        raise TableError(f"{name}: no image id column (expected one of {list(ids)}); its columns: "
                         f"{list(frame.columns)[:20]}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TableError(f"{name}: no column {missing[0]!r}; its columns: {list(frame.columns)[:20]}")
    keys = frame[key].astype(str).str.strip()
    values = frame[columns].set_axis(keys.to_numpy(), axis=0)
    repeated = keys.duplicated().to_numpy()
    if repeated.any():
        # the same row twice (fold outputs concatenated twice) says one thing: read once; rows of
        # one image that disagree cannot be told apart
        copies = values.reset_index().duplicated().to_numpy()
        clash = repeated & ~copies
        if clash.any():
            first = keys.iloc[int(np.flatnonzero(clash)[0])]
            rows = np.flatnonzero((keys == first).to_numpy())
            raise TableError(f"{name}: image id {first!r} is on rows {rows[:5].tolist()} with different values "
                             f"({int(clash.sum())} such repeated ids); expected one row per image")
        print(f"{name}: {int(repeated.sum())} row(s) repeat an earlier row exactly (same image id, same "
              f"{', '.join(columns)}); each read once", file=sys.stderr)
        values = values[~repeated]
    return values


def keep_rows(loaded: Loaded, ok: np.ndarray, stage: str, messages: list[str], source: Path,
              table_path: Path, *, none_left: str = "bad input") -> None:
    """Keep the rows where ``ok``; the others go to the errors table with their ``messages``.

    When no row is left: a TableError (exit code 2: the joined file does not fit TABLE), or
    with ``none_left="items"`` :class:`Failed` (exit code 1: every item failed, the errors
    table says why).
    """
    import pandas as pd

    from dermctx.errors import error_record, errors_frame

    table = loaded.table
    bad = [i for i in range(len(table)) if not ok[i]]
    paths = table["path"] if "path" in table.columns else pd.Series([None] * len(table))
    records = [error_record(table["image_id"].iloc[i], int(loaded.positions[i]), paths.iloc[i],
                            stage, messages[i]) for i in bad]
    if bad:
        loaded.errors = pd.concat([f for f in (loaded.errors, errors_frame(records)) if len(f)],
                                  ignore_index=True)
    if not ok.any():
        first = f"{messages[0]}; first image id of the table: {table['image_id'].iloc[0]!r}" if len(table) else "no rows"
        if none_left == "items":
            raise Failed(f"{source}: no row of {table_path} could be used ({first})", loaded.errors)
        raise TableError(f"{source}: no row of {table_path} could be joined ({first})")
    if bad:
        print(f"{source}: {len(bad)} of {len(table)} row(s) of {table_path} left out ({stage}: "
              f"{messages[bad[0]]}); listed in the errors table", file=sys.stderr)
    loaded.table = table[ok].reset_index(drop=True)
    loaded.positions = loaded.positions[ok]
    if loaded.folds is not None:
        loaded.folds = loaded.folds[ok]


def _say_unknown(source: Path, keys: Any, table: pd.DataFrame, table_path: Path, what: str) -> None:
    unknown = ~keys.isin(table["image_id"].astype(str))
    if unknown.any():
        print(f"{source}: {int(unknown.sum())} {what} for image ids not in {table_path} (e.g. "
              f"{keys[unknown][0]!r}); not used", file=sys.stderr)


def _join_scores(loaded: Loaded, path: Path, column: str, as_name: str, table_path: Path) -> None:
    import numpy as np
    import pandas as pd

    if as_name in loaded.table.columns:
        raise TableError(f"{table_path} already has a column {as_name!r}; leave out --scores to use "
                         "it, or name another --score-col")
    scores = read_keyed(path, [column], "scores file")[column]
    _say_unknown(path, scores.index, loaded.table, table_path, "score(s)")
    ids = loaded.table["image_id"].astype(str)
    found = ids.isin(scores.index).to_numpy()
    raw = ids.map(scores)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    ok = found & np.isfinite(values)
    messages = [f"no score for this image id in {path} (column {column!r})" if not f else
                f"the score in {path} is not a finite number ({v!r})" if not k else ""
                for f, k, v in zip(found, ok, raw, strict=True)]
    loaded.table = loaded.table.assign(**{as_name: values})
    keep_rows(loaded, ok, "scores", messages, path, table_path)
    print(f"{path}: column {column!r} joined as {as_name!r} on {len(loaded.table)} row(s)",
          file=sys.stderr)


def _join_embeddings(loaded: Loaded, path: Path, table_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from dermctx.embedding_store import read_embeddings

    present = [c for c in loaded.table.columns if str(c).startswith("emb_")]
    if present:
        raise TableError(f"{table_path} already has embedding columns ({present[0]!r}, ...); leave "
                         "out --embeddings to use them")
    emb = read_embeddings(path)
    keys = pd.Index(emb.index.astype(str))
    _say_unknown(path, keys, loaded.table, table_path, "embedding(s)")
    ids = loaded.table["image_id"].astype(str)
    ok = ids.isin(keys).to_numpy().copy()
    messages = [f"no embedding for this image id in {path}"] * len(ok)
    if "path" in loaded.table.columns:  # images on disk: still the ones embedded?
        from dermctx.embedding_store import changed_files, stored_files
        from dermctx.io.images import file_stamps

        has_file = ok & loaded.table["path"].notna().to_numpy()
        stored = stored_files(path)
        stored = stored.set_axis(stored.index.astype(str), axis=0)
        where = ids[has_file]
        now = file_stamps(loaded.table["path"][has_file]).set_axis(where.to_numpy(), axis=0)
        changed = changed_files(stored.loc[where.to_numpy()], now[~now.index.duplicated()]).to_numpy()
        gone = (now["size"].to_numpy() < 0)
        for pos, missing in zip(np.flatnonzero(has_file)[changed], gone[changed], strict=True):
            ok[pos] = False
            messages[pos] = ("the image file is missing now (its stored embedding is of a file that is gone)"
                             if missing else
                             f"the image file changed (size, modification or status-change time) since it was "
                             f"embedded into {path}; run 'dermctx embed' with that store again to embed it anew")
    joined = emb.set_axis(keys, axis=0).reindex(ids.to_numpy()).set_axis(loaded.table.index, axis=0)
    loaded.table = pd.concat([loaded.table, joined], axis=1)
    keep_rows(loaded, ok, "embeddings", messages, path, table_path)
    print(f"{path}: {joined.shape[1]} embedding columns joined on {len(loaded.table)} row(s)",
          file=sys.stderr)


def _join_folds(loaded: Loaded, args: argparse.Namespace) -> None:
    """Per-row fold numbers from ``--folds FILE`` or ``--fold-col``, checked against leaks."""
    import numpy as np
    import pandas as pd

    if isinstance(args.folds, Path) and args.fold_col:
        raise DermctxError("give --folds FILE or --fold-col COL, not both")
    table, col = loaded.table, args.fold_col
    if isinstance(args.folds, Path):
        source, raw = args.folds, table["image_id"].astype(str).map(
            read_keyed(args.folds, ["fold"], "folds file")["fold"])
        what = f"no fold for this image id in {args.folds}"
    elif col in table.columns:
        source, raw, what = args.table, table[col], f"no fold in column {col!r}"
    elif getattr(args, "scores", None) is not None and col:
        source = args.scores
        raw = table["image_id"].astype(str).map(read_keyed(args.scores, [col], "scores file")[col])
        what = f"no fold in column {col!r} of {args.scores}"
    else:
        raise TableError(f"--fold-col {col!r}: {args.table} has no such column; its columns: "
                         f"{list(table.columns)[:20]}")
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(values) & (values >= 0) & (values == np.round(values))
    keep_rows(loaded, ok, "folds", [f"{what} (a whole number >= 0; got {v!r})" for v in raw], source,
          args.table)
    kept = values[ok].astype(int)
    numbers = np.unique(kept)
    if len(numbers) < 2:
        raise DermctxError(f"{source}: the rows hold {len(numbers)} fold(s); expected at least 2")
    loaded.folds = np.searchsorted(numbers, kept)
    from dermctx.splits import check_fold_leakage

    check_fold_leakage(loaded.table, loaded.folds, duplicates=loaded.duplicates, name=str(source))
    print(f"{source}: {len(numbers)} folds reused", file=sys.stderr)


def require_column(table: pd.DataFrame, column: str, args: argparse.Namespace, *,
                   default: bool) -> None:
    """A one-line TableError when TABLE has no score column ``column``, naming what it has."""
    if column in table.columns:
        return
    which = "the default --score-col" if default else "--score-col"
    raise TableError(f"{args.table} has no column {column!r} ({which}); name the column of CNN "
                     f"scores with --score-col COL, or join one with --scores FILE --score-col COL; "
                     f"its columns: {[str(c) for c in table.columns][:30]}")


def score_col_option(opts: Options, default: str) -> None:
    """``--score-col COL``: the column of CNN scores, in TABLE or in the ``--scores`` file."""
    opts.input.add_argument("--score-col", default=None, metavar="COL",
                            help="column of per-lesion CNN melanoma scores, in TABLE or in the "
                                 f"--scores file (default: {default})")
