"""Scoring at scale: a lesion table of any size, in chunks of whole patients, locally or on Ray.

A lesion's score depends on its own patient's lesions only (:class:`~dermctx.ContextRanker`
fixes every scale at ``fit``), so a table can be scored a few thousand patients at a time with the
same result as in one piece. :func:`score_table` does that for a DataFrame; :func:`score_parquet`
streams a Parquet file of any size: one pass reads the ``patient_id`` column, a second pass
routes each row group's rows to per-chunk files (so the rows of one patient may lie anywhere in
the file), then each chunk is scored and appended to the output. Memory is bounded by one chunk
(``chunk_patients`` patients and the columns the model reads), not by the table.

``backend="ray"`` scores the chunks as a Ray Data job (``pip install "dermctx[ray]"``): each
worker loads the model from a saved folder (:meth:`ContextRanker.load`, no pickle of the model)
and scores whole chunks; the result equals local scoring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dermctx.errors import ModelError, TableError, error_record, errors_frame
from dermctx.table import as_texts, refuse_duplicate_columns, repeated_image_rows, stripped_ids

__all__ = ["score_parquet", "score_table"]

#: Patients per chunk by default: about 80,000 lesions of ISIC 2020 patients (16 on average).
CHUNK_PATIENTS: int = 5000


def _check_model(model: Any) -> None:
    if not hasattr(model, "rank") or not hasattr(model, "feature_names_in_"):
        raise ModelError(f"expected a fitted ContextRanker (with rank() and feature_names_in_), "
                         f"got {type(model).__name__}")


def _chunk_of(patient_ids: pd.Series, chunk_patients: int) -> tuple[np.ndarray, int]:
    """Chunk number of each row (patients in order of first appearance) and the chunk count."""
    if not isinstance(chunk_patients, int) or isinstance(chunk_patients, bool) or chunk_patients < 1:
        raise TableError(f"chunk_patients={chunk_patients!r}; expected a whole number >= 1")
    codes, uniques = pd.factorize(as_texts(patient_ids).str.strip(), use_na_sentinel=False)
    return codes // chunk_patients, max(1, -(-len(uniques) // chunk_patients))


def _score_rows(model: Any, X: pd.DataFrame, positions: np.ndarray, explain: bool, labels: Any = None,
                refused: dict[int, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``model.rank`` on one chunk, with ``row`` (the position in the whole input) on both tables.

    ``refused`` maps input positions to the message of rows refused on the whole input (rows
    that share an image id, found across chunks): they are error rows, never scored."""
    X = X.reset_index(drop=True)
    if "image_id" not in X.columns:  # as rank() names rows without ids: by input position
        X = X.assign(image_id=positions.astype(str))
    refused = refused or {}
    out = np.isin(positions, np.fromiter(refused, dtype=np.int64, count=len(refused)))
    keep = np.flatnonzero(~out)
    scores, errors = model.rank(X.iloc[keep].reset_index(drop=True), explain=explain, labels=labels)
    bad = np.zeros(len(keep), dtype=bool)
    bad[errors["row"].to_numpy(dtype=np.int64)] = True
    scores.insert(0, "row", positions[keep][~bad])
    errors["row"] = pd.array(positions[keep][errors["row"].to_numpy(dtype=np.int64)], dtype="Int64")
    if out.any():
        paths = X["path"].to_numpy(dtype=object) if "path" in X.columns else [None] * len(X)
        ids = X["image_id"].to_numpy(dtype=object)
        own = errors_frame(error_record(str(ids[i]), int(positions[i]), paths[i], "rank", refused[int(positions[i])])
                           for i in np.flatnonzero(out))
        errors = errors_frame([*errors.to_dict(orient="records"), *own.to_dict(orient="records")])
    return scores, errors


def _refuse_repeated_images(model: Any, rows: pd.DataFrame, positions: np.ndarray,
                            patient_ids: pd.Series) -> dict[int, str]:
    """Rows of the whole input that share an image id (copies and conflicting rows,
    :func:`dermctx.table.repeated_image_rows`), by input position; the patients that lose a
    lesion to them are warned about, as :meth:`ContextRanker.rank` does."""
    copies, problems = repeated_image_rows(rows, positions, ignore=("__row__",))
    refused = {int(positions[i]): msg for i, msg in problems.items()}
    if refused:  # a copy takes nothing from its patient; rows of one image that differ do
        lost = np.zeros(len(patient_ids), dtype=bool)
        lost[[int(positions[i]) for i in problems if not copies[i]]] = True
        copy = np.zeros(len(patient_ids), dtype=bool)
        copy[positions[copies].astype(np.int64)] = True
        model._warn_lost_lesions(pd.DataFrame({"patient_id": patient_ids.to_numpy()[~copy]}), lost[~copy])
    return refused


def _progress(iterable: Any, total: int, show: bool, desc: str) -> Any:
    if not show or total <= 1:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="chunk")


def score_table(
    model: Any,
    table: pd.DataFrame,
    *,
    chunk_patients: int = CHUNK_PATIENTS,
    explain: bool = False,
    labels: Any = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a lesion table ``chunk_patients`` whole patients at a time.

    Parameters
    ----------
    model : ContextRanker
        Fitted.
    table : DataFrame, n rows
        The columns the model reads (``model.feature_names_in_``) and ``image_id``.
    chunk_patients : int
        Patients per chunk; intermediate memory is that of one chunk.
    explain : bool
        Add the worded ``explanation`` column (:meth:`ContextRanker.explain`).
    labels : None, "isic2024" or dict of str to str
        Words for the columns in the explanations (:meth:`ContextRanker.explain`).
    progress : bool
        A progress bar over chunks.

    Returns
    -------
    scores : DataFrame
        As :meth:`ContextRanker.rank`, plus ``row`` (position in ``table``), in input order.
        Equal to ``model.rank(table)`` (a patient's score depends on its own lesions only).
    errors : DataFrame
        The errors table; ``len(scores) + len(errors) == len(table)``.

    Raises
    ------
    TableError
        ``table`` is not a DataFrame with ``patient_id``, or ``chunk_patients`` is not >= 1.
    ModelError
        ``model`` is not a fitted ranker.
    """
    _check_model(model)
    if not isinstance(table, pd.DataFrame) or "patient_id" not in table.columns:
        raise TableError("score_table: expected a lesion table (DataFrame with a 'patient_id' column)")
    refuse_duplicate_columns(table, "score_table")
    table = stripped_ids(table)  # " P1" and "P1" are one patient, in one chunk
    chunk, n_chunks = _chunk_of(table["patient_id"], chunk_patients)
    refused = _refuse_repeated_images(model, table, np.arange(len(table)), table["patient_id"])
    order = np.argsort(chunk, kind="stable")
    bounds = np.flatnonzero(np.diff(chunk[order])) + 1
    parts = [_score_rows(model, table.iloc[rows], rows, explain, labels, refused)
             for rows in _progress(np.split(order, bounds) if len(order) else [], n_chunks, progress, "score")]
    if not parts:  # no rows
        scores, errors = model.rank(table, explain=explain, labels=labels)
        return scores.assign(row=pd.Series(dtype="int64"))[["row", *scores.columns]], errors
    scores = pd.concat([p[0] for p in parts], ignore_index=True).sort_values("row", kind="stable")
    errors = errors_frame(r for p in parts for r in p[1].to_dict(orient="records"))
    return scores.reset_index(drop=True), errors.sort_values("row", kind="stable").reset_index(drop=True)


def _columns(model: Any, available: list[str]) -> list[str]:
    wanted = [*model.feature_names_in_, "image_id", "lesion_id", "path"]
    missing = [c for c in model.feature_names_in_ if c not in available]
    if missing:
        raise TableError(f"the table lacks column(s) {missing[:10]} the model reads "
                         f"(columns {available[:20]})")
    return [c for c in dict.fromkeys(wanted) if c in available]


def _partition(path: Path, columns: list[str], chunk_patients: int, work: Path
               ) -> tuple[list[Path], pd.Series, pd.DataFrame]:
    """Route the rows of ``path`` to one Parquet file per chunk of whole patients, keeping only
    ``columns`` and the input position ``__row__``. Also returns every row's ``patient_id`` and
    the rows whose ``image_id`` another row has too (every column of the file, and ``__row__``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pid = pq.read_table(path, columns=["patient_id"]).column("patient_id").to_pandas()
    chunk, n_chunks = _chunk_of(pid, chunk_patients)
    if "image_id" in columns:
        ids = as_texts(pq.read_table(path, columns=["image_id"]).column("image_id").to_pandas()).str.strip()
        shared = ids.duplicated(keep=False).to_numpy() & (ids != "").to_numpy()
    else:
        shared = np.zeros(len(pid), dtype=bool)
    suspects: list[pd.DataFrame] = []
    if shared.any():  # rows that share an image id are compared on every column of the file
        start = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            rows = np.arange(start, start + batch.num_rows)
            if shared[rows].any():
                picked = batch.take(pa.array(np.flatnonzero(shared[rows]))).to_pandas()
                suspects.append(picked.assign(__row__=rows[shared[rows]]))
            start += batch.num_rows
    files = [work / f"chunk-{k:06d}.parquet" for k in range(n_chunks)]
    writers: dict[int, Any] = {}
    start = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=columns):
            rows = np.arange(start, start + batch.num_rows)
            batch = batch.append_column("__row__", pa.array(rows, pa.int64()))
            here = chunk[rows]
            for k in np.unique(here):
                part = batch.take(pa.array(np.flatnonzero(here == k)))
                if k not in writers:
                    writers[k] = pq.ParquetWriter(files[k], part.schema)
                writers[k].write_batch(part)
            start += batch.num_rows
    finally:
        for w in writers.values():
            w.close()
    repeated = pd.concat(suspects, ignore_index=True) if suspects else pd.DataFrame(columns=[*columns, "__row__"])
    return [f for f in files if f.exists()], pid, repeated


def _score_file(model: Any, part: Path, explain: bool, labels: Any = None, refused: dict[int, str] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pyarrow.parquet as pq

    frame = pq.read_table(part).to_pandas()
    positions = frame.pop("__row__").to_numpy()
    return _score_rows(model, frame, positions, explain, labels, refused)


def _local(model: Any, parts: list[Path], explain: bool, labels: Any, progress: bool,
           refused: dict[int, str]) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    for part in _progress(parts, len(parts), progress, "score"):
        yield _score_file(model, part, explain, labels, refused)


class _RayScorer:
    """A Ray Data actor: loads the saved model once, scores whole-patient chunk files."""

    def __init__(self, model_dir: str, explain: bool, labels: Any = None,
                 refused: dict[int, str] | None = None) -> None:
        from dermctx.models.ranker import ContextRanker

        self.model = ContextRanker.load(model_dir)
        self.explain = explain
        self.labels = labels
        self.refused = refused

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out_scores, out_errors = [], []
        for part in batch["part"]:
            scores, errors = _score_file(self.model, Path(str(part)), self.explain, self.labels, self.refused)
            scores_path = Path(str(part)).with_suffix(".scores.parquet")
            scores.to_parquet(scores_path, index=False)
            errors_path = Path(str(part)).with_suffix(".errors.parquet")
            errors.astype({"row": "int64"}).to_parquet(errors_path, index=False)
            out_scores.append(str(scores_path))
            out_errors.append(str(errors_path))
        return {"scores": np.array(out_scores), "errors": np.array(out_errors)}


def _ray(model: Any, parts: list[Path], explain: bool, labels: Any, work: Path, actors: int | None,
         refused: dict[int, str]) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ModelError('backend="ray" needs Ray Data: pip install "dermctx[ray]"') from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    model_dir = work / "model"
    model.save(model_dir)  # workers read the model as data, like any saved model
    ds = ray.data.from_items([{"part": str(p)} for p in parts]).map_batches(
        _RayScorer, fn_constructor_args=(str(model_dir), explain, labels, refused), batch_size=1,
        concurrency=int(actors or 2), batch_format="numpy")
    done = {Path(str(r["scores"])).name: r for r in ds.take_all()}
    for part in parts:  # chunk order, as local scoring
        r = done[part.with_suffix(".scores.parquet").name]
        errors = pd.read_parquet(str(r["errors"]))
        yield pd.read_parquet(str(r["scores"])), errors_frame(errors.to_dict(orient="records"))


def score_parquet(
    model: Any,
    path: str | PathLike[str],
    out: str | PathLike[str],
    *,
    chunk_patients: int = CHUNK_PATIENTS,
    backend: Literal["local", "ray"] = "local",
    ray_actors: int | None = None,
    explain: bool = False,
    labels: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score a Parquet lesion table of any size into a Parquet file of scores.

    Parameters
    ----------
    model : ContextRanker
        Fitted (or loaded).
    path : path
        Parquet lesion table (a file): the columns the model reads, ``image_id``. Only those
        columns are read.
    out : path
        Parquet file written with ``row`` (the row's position in ``path``), ``image_id``,
        ``patient_id``, ``score``, ``patient_rank`` (and ``explanation``), one row per scored
        lesion, grouped by chunk of patients (sort by ``row`` for the input order).
    chunk_patients : int
        Patients per chunk: peak memory is about one chunk's rows of the model's columns.
    backend : {"local", "ray"}
        ``"ray"``: the chunks are scored by Ray Data actors (``ray_actors`` of them, default 2),
        each loading the model from a saved copy; equal to local scoring.
    explain : bool
        Add the worded ``explanation`` column.
    labels : None, "isic2024" or dict of str to str
        Words for the columns in the explanations (:meth:`ContextRanker.explain`).
    progress : bool
        A progress bar over chunks (local backend).

    Returns
    -------
    DataFrame
        The errors table (rows that could not be scored, ``row`` = position in ``path``);
        the number of rows of ``out`` plus its length is the number of rows of ``path``.

    Raises
    ------
    TableError
        ``path`` unreadable or not Parquet, a column the model reads missing, bad
        ``chunk_patients``.
    ModelError
        Not a fitted model; ``backend`` unknown or Ray not installed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_model(model)
    if backend not in ("local", "ray"):
        raise ModelError(f"backend must be 'local' or 'ray', got {backend!r}")
    source, target = Path(path), Path(out)
    if target.is_dir():
        raise TableError(f"{target}: a folder; expected the path of the Parquet file to write")
    try:
        same = target.exists() and target.resolve() == source.resolve()
    except OSError:
        same = False
    if same:
        raise TableError(f"{target}: is the input table; write the scores to another file")
    try:
        schema = pq.read_schema(source)
    except (OSError, pa.ArrowException) as exc:
        raise TableError(f"{source}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    names = list(schema.names)
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise TableError(f"{source}: duplicate column name(s) {dup}; every column needs its own name")
    if "patient_id" not in names:
        raise TableError(f"{source}: no 'patient_id' column (columns {names[:20]})")
    columns = _columns(model, names)
    errors: list[pd.DataFrame] = []
    writer = None
    with tempfile.TemporaryDirectory(prefix="dermctx-score-") as tmp:
        work = Path(tmp)
        try:
            parts, patient_ids, repeated = _partition(source, columns, chunk_patients, work)
        except (OSError, pa.ArrowException) as exc:
            raise TableError(f"{source}: could not be read ({type(exc).__name__}: {exc})") from exc
        refused = _refuse_repeated_images(model, stripped_ids(repeated), repeated["__row__"].to_numpy(dtype=np.int64),
                                          patient_ids)
        chunks = (_ray(model, parts, explain, labels, work, ray_actors, refused) if backend == "ray"
                  else _local(model, parts, explain, labels, progress, refused))
        try:
            for scores, errs in chunks:
                errors.append(errs)
                if not len(scores):  # every row of the chunk is an error row
                    continue
                table = pa.Table.from_pandas(scores, preserve_index=False)
                if writer is None:
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        writer = pq.ParquetWriter(target, table.schema)
                    except OSError as exc:
                        raise TableError(f"{target}: cannot be written ({type(exc).__name__}: {exc})") from exc
                writer.write_table(table.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()
    if writer is None:  # no rows at all: an empty file with the columns
        empty = pd.DataFrame({"row": pd.Series(dtype="int64"), "image_id": pd.Series(dtype=object),
                              "patient_id": pd.Series(dtype=object), "score": pd.Series(dtype=float),
                              "patient_rank": pd.Series(dtype="int64")})
        empty.to_parquet(target, index=False)
    found = [r for e in errors for r in e.to_dict(orient="records")]
    return errors_frame(found).sort_values("row", kind="stable").reset_index(drop=True)
