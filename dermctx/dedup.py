"""Duplicate images in a lesion table: exact copies and near copies, found from the pixels.

:func:`find_duplicates` decodes every image once (in parallel, at a reduced scale) and describes
it by perceptual hashes of a 32 x 32 grey thumbnail:

* a 64-bit DCT hash (pHash: the 8 x 8 lowest DCT frequencies against their median) of each of
  the 8 dihedral transforms of the image (flips, 90-degree rotations), computed exactly from one
  DCT by sign changes and a transpose;
* the same hash of centre crops at :data:`CROP_LEVELS` of the image, so that an image cropped
  by 5-15 % is compared with the crop of the original that shows the same field of view;
* a finer 256-bit hash (16 x 16 frequencies) of each of these views, used to verify candidates.

Candidate pairs come from multi-index hashing: each 64-bit hash is split into ``bands`` bands,
hashes that agree exactly on one band are candidates (so every pair within ``bands - 1`` bits is
found, and most pairs further apart), and candidates are kept when their 64-bit distance is at
most ``search_radius``. A kept pair's ``distance`` is the fraction of the 256 fine bits that
differ under the best-matching transform and crop; pairs with ``distance <= threshold`` are
reported. A pair whose thumbnails agree exactly is decoded in full and reported as ``exact`` when
the full decoded pixel arrays are identical (the same image saved twice differs in its bytes, not
in its pixels).

:func:`duplicate_groups` turns pairs into group ids (connected components), which
:class:`dermctx.PatientKFold` and :func:`dermctx.check_leakage` keep on one side of a split.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dermctx.errors import DermctxError, TableError, error_record, errors_frame
from dermctx.pairs import as_pairs, link_components
from dermctx.table import as_texts, embedding_columns, refuse_duplicate_columns, to_numbers

__all__ = [
    "CROP_LEVELS",
    "DIHEDRAL",
    "PAIR_COLUMNS",
    "auto_bands",
    "duplicate_groups",
    "find_duplicates",
    "image_hashes",
    "search_hashes",
]

#: Columns of the pairs frame returned by :func:`find_duplicates`.
PAIR_COLUMNS: tuple[str, ...] = ("image_id_1", "image_id_2", "kind", "distance", "method")

#: Centre-crop fractions (of width and height) whose hashes are indexed for every image.
CROP_LEVELS: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85)

#: The 8 dihedral transforms, in the order of the hash arrays: (transpose, flip rows, flip cols).
DIHEDRAL: tuple[str, ...] = (
    "identity", "flip_lr", "flip_ud", "rot180", "transpose", "rot90_cw", "rot90_ccw", "transverse",
)

_THUMB = 32  # side of the grey thumbnail that is hashed
_COARSE = 8  # coarse hash: 8 x 8 DCT block -> 64 bits
_FINE = 16  # fine hash: 16 x 16 DCT block -> 256 bits = 4 words
_LOAD_SIZE = 64  # the image is loaded squashed to this size, then cropped and resized to _THUMB
_EXACT_CHECK = 0.05  # pairs this close (fine distance, upright, full view) get a full-pixel check


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, shape (n, n): ``C @ x`` transforms the columns of ``x``."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


_DCT = _dct_matrix(_THUMB)


def _dihedral_blocks(block: np.ndarray) -> np.ndarray:
    """DCT blocks of the 8 dihedral transforms of an image, from the block of the image itself.

    Flipping the image along an axis multiplies the DCT coefficients of odd frequency along that
    axis by -1; transposing the image transposes the block. Exact for the square thumbnail.

    block : (K, K) -> returns (8, K, K) in the order of :data:`DIHEDRAL`.
    """
    k = block.shape[0]
    odd = np.where(np.arange(k) % 2 == 1, -1.0, 1.0)
    one = np.ones(k)
    out = []
    for b in (block, block.T):
        for rows in (one, odd):  # flip rows = flip up-down
            for cols in (one, odd):  # flip columns = flip left-right
                out.append(b * rows[:, None] * cols[None, :])
    return np.stack(out)  # (transpose, flip_ud, flip_lr) = 000, 001, ..., 111: DIHEDRAL order


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack bool (..., 64 * w) into uint64 (..., w), most significant bit first."""
    packed = np.packbits(bits, axis=-1)  # (..., 8 * w) uint8
    return packed.view(">u8").astype(np.uint64)


def _median_bits(blocks: np.ndarray) -> np.ndarray:
    """(..., K, K) -> bool (..., K*K): each coefficient above the median of its block."""
    flat = blocks.reshape(*blocks.shape[:-2], -1)
    return flat > np.median(flat, axis=-1, keepdims=True)


def image_hashes(grey: np.ndarray) -> dict[str, np.ndarray]:
    """Perceptual hashes of one image, from its grey version.

    Parameters
    ----------
    grey : ndarray, shape (H, W)
        The image in grey levels (any numeric dtype), full field of view. Any size; it is resized
        (squashed) to 32 x 32 per view.

    Returns
    -------
    dict of ndarray (uint64)
        ``"query"`` (8,): 64-bit hash of each dihedral transform (order :data:`DIHEDRAL`);
        ``"query_fine"`` (8, 4): their 256-bit hashes; ``"index"`` (L,): 64-bit hash of each
        centre crop of :data:`CROP_LEVELS` (upright); ``"index_fine"`` (L, 4).
    """
    im = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))  # mode "F"
    w, h = im.size
    blocks = []
    for level in CROP_LEVELS:
        cw, ch = w * level, h * level
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        thumb = np.asarray(im.resize((_THUMB, _THUMB), Image.Resampling.BILINEAR, box=box),
                           dtype=np.float64)  # (32, 32)
        blocks.append(_DCT @ thumb @ _DCT.T)
    full = _dihedral_blocks(blocks[0][:_FINE, :_FINE])  # (8, 16, 16)
    crops = np.stack([b[:_FINE, :_FINE] for b in blocks])  # (L, 16, 16)
    return {
        "query": _pack_bits(_median_bits(full[:, :_COARSE, :_COARSE]))[:, 0],
        "query_fine": _pack_bits(_median_bits(full)),
        "index": _pack_bits(_median_bits(crops[:, :_COARSE, :_COARSE]))[:, 0],
        "index_fine": _pack_bits(_median_bits(crops)),
    }


def _grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 array, float32 (H, W)."""
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _pixel_digest(path: str) -> str:
    """BLAKE2b digest of the fully decoded RGB pixels (with their shape) of an image file."""
    from dermctx.io.images import open_image  # full decode (no draft scaling), EXIF-upright, RGB

    im = open_image(Path(path), str(path), None, "squash")
    arr = np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    h = hashlib.blake2b(digest_size=20)
    h.update(np.array(arr.shape, dtype=np.int64).tobytes())
    h.update(arr.tobytes())
    return h.hexdigest()


def _hash_path(path: str) -> dict[str, np.ndarray]:
    from dermctx.io.images import load_image

    rgb = load_image(path, _LOAD_SIZE, aspect="squash")  # (64, 64, 3) uint8, reduced decode
    out = image_hashes(_grey(rgb))
    out["size"] = _pixel_size(path)
    return out


def _pixel_size(path: str) -> np.ndarray:
    """(short side, long side) in pixels from the file header, or (0, 0) when unknown (DICOM)."""
    try:
        with Image.open(path) as im:
            return np.array(sorted(im.size), dtype=np.int64)
    except Exception:  # not a format Pillow knows: the exact check does not use the size then
        return np.zeros(2, dtype=np.int64)


def _digest_rows(rows: list[int], paths: list[Any], n_jobs: int, progress: bool | None
                 ) -> dict[int, str | BaseException]:
    """Full-pixel digest of each row (or the exception its full decode raised), in parallel."""
    from tqdm.auto import tqdm

    def work(row: int) -> tuple[int, str | BaseException]:
        try:
            return row, _pixel_digest(str(paths[row]))
        except Exception as exc:  # reported in the errors table by the caller
            return row, exc

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        done = tqdm(pool.map(work, rows), total=len(rows), desc="checking exact pixels",
                    unit="img", disable=progress is False if progress is not None else None)
        return dict(done)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def _band_candidates(
    query: np.ndarray, index: np.ndarray, bands: int, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (query position, index position) arrays of entries equal on at least one band."""
    width = 64 // bands
    for b in range(bands):
        shift = np.uint64(64 - width * (b + 1)) if b < bands - 1 else np.uint64(0)
        bits = width if b < bands - 1 else 64 - width * (bands - 1)
        mask = np.uint64((1 << bits) - 1)
        kq = ((query >> shift) & mask).astype(np.int64)
        ki = ((index >> shift) & mask).astype(np.int64)
        order = np.argsort(ki, kind="stable")
        counts = np.bincount(ki, minlength=1 << bits)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n_match = counts[kq]  # (Nq,)
        # group queries so that each group yields at most ~chunk candidates
        ends = np.cumsum(n_match)
        lo = 0
        while lo < len(query):
            base = ends[lo - 1] if lo > 0 else 0
            hi = int(np.searchsorted(ends, base + chunk, side="right"))
            hi = max(hi, lo + 1)
            nm = n_match[lo:hi]
            total = int(nm.sum())
            if total:
                qpos = np.repeat(np.arange(lo, hi), nm)
                first = np.repeat(np.cumsum(nm) - nm, nm)
                within = np.arange(total) - first
                ipos = order[starts[kq[qpos]] + within]
                yield qpos, ipos
            lo = hi


def search_hashes(
    query: np.ndarray,
    index: np.ndarray,
    *,
    radius: int,
    bands: int = 4,
    chunk: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query, index) pairs of 64-bit hashes within ``radius`` bits, by multi-index hashing.

    Each hash is split into ``bands`` bands of ``64 // bands`` bits; pairs equal on at least one
    band are candidates and their Hamming distance is checked. Every pair within
    ``bands - 1`` bits is found (pigeonhole); pairs further apart are found when their differing
    bits leave one band untouched (most near duplicates). Work is about
    ``len(query) * len(index) * bands / 2**(64 // bands)`` candidate checks for random hashes.

    Parameters
    ----------
    query : ndarray of uint64, shape (Nq,)
    index : ndarray of uint64, shape (Ni,)
    radius : int
        Largest Hamming distance kept, in bits (0-64).
    bands : int
        Number of bands (2-8).
    chunk : int
        Candidates checked at a time (memory: about 40 bytes each).

    Returns
    -------
    qpos, ipos, dist : ndarray of int64, shape (M,)
        Positions in ``query`` and ``index`` and their Hamming distance. A pair found on several
        bands is returned once.

    Raises
    ------
    DermctxError
        An argument of the wrong type or out of range, naming it.
    """
    if not _is_int(bands) or not 2 <= bands <= 8:
        raise DermctxError(f"bands must be an integer between 2 and 8, got {bands!r}")
    if not _is_int(radius) or not 0 <= radius <= 64:
        raise DermctxError(f"radius must be an integer number of bits in 0-64, got {radius!r}")
    if not _is_int(chunk) or chunk < 1:
        raise DermctxError(f"chunk must be a positive integer, got {chunk!r}")
    try:
        query = np.ascontiguousarray(query, dtype=np.uint64)
        index = np.ascontiguousarray(index, dtype=np.uint64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DermctxError(f"query and index must be arrays of 64-bit hashes ({exc})") from exc
    if query.ndim != 1 or index.ndim != 1:
        raise DermctxError(f"query and index must be 1-D arrays, got shapes {query.shape} and {index.shape}")
    qs, js, ds = [], [], []
    for qpos, ipos in _band_candidates(query, index, bands, chunk):
        d = _popcount(query[qpos] ^ index[ipos])
        keep = d <= radius
        qs.append(qpos[keep])
        js.append(ipos[keep])
        ds.append(d[keep])
    if not qs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    q = np.concatenate(qs).astype(np.int64)
    j = np.concatenate(js).astype(np.int64)
    d = np.concatenate(ds).astype(np.int64)
    key = q * max(len(index), 1) + j
    _, first = np.unique(key, return_index=True)
    return q[first], j[first], d[first]


def _hash_all(
    paths: list[Any], image_ids: list[str], n_jobs: int, progress: bool | None
) -> tuple[dict[int, dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Hash every path in a thread pool; returns {row: hashes} and error records."""
    from tqdm.auto import tqdm

    hashes: dict[int, dict[str, np.ndarray]] = {}
    errors: list[dict[str, Any]] = []
    todo: list[int] = []
    for row, path in enumerate(paths):
        if path is None or (isinstance(path, float) and np.isnan(path)) or str(path).strip() == "":
            errors.append(error_record(image_ids[row], row, None, "path",
                                       "the lesion-table row has no 'path'; expected an image file"))
        else:
            todo.append(row)

    def work(row: int) -> tuple[int, dict[str, np.ndarray] | None, BaseException | None]:
        try:
            return row, _hash_path(str(paths[row])), None
        except Exception as exc:  # reported in the errors table, the run goes on
            return row, None, exc

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        bar = tqdm(pool.map(work, todo), total=len(todo), desc="hashing images", unit="img",
                   disable=progress is False if progress is not None else None)
        for row, result, exc in bar:
            if exc is None:
                hashes[row] = result  # type: ignore[assignment]
            else:
                errors.append(error_record(image_ids[row], row, str(paths[row]), "decode", exc))
    return hashes, errors


def _stack(hashes: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-row hashes: ``rows`` (N,), ``query`` (N, 8), ``index`` (N, L), ``*_fine`` (..., 4)."""
    rows = np.array(sorted(hashes), dtype=np.int64)
    out = {"rows": rows}
    for key, shape in (("query", (len(DIHEDRAL),)), ("index", (len(CROP_LEVELS),)),
                       ("query_fine", (len(DIHEDRAL), 4)), ("index_fine", (len(CROP_LEVELS), 4))):
        out[key] = (np.stack([hashes[r][key] for r in rows]) if len(rows)
                    else np.zeros((0, *shape), dtype=np.uint64))
    out["size"] = (np.stack([hashes[r].get("size", np.zeros(2, np.int64)) for r in rows])
                   if len(rows) else np.zeros((0, 2), dtype=np.int64))
    return out


def auto_bands(n_index: int) -> int:
    """Bands for multi-index hashing of ``n_index`` 64-bit hashes: about log2(n) bits a band.

    Few hashes: more, narrower bands (a wider guaranteed radius, ``bands - 1`` bits); many hashes:
    fewer, wider bands, so that a band value is shared by few hashes and the search stays
    near-linear (Norouzi et al., "Fast search in Hamming space with multi-index hashing", 2012).
    """
    bits = max(np.log2(max(n_index, 2)), 1.0)
    return int(np.clip(round(64 / bits), 3, 6))


def _image_pairs(
    stacked: dict[str, np.ndarray],
    *,
    threshold: float,
    search_radius: int,
    bands: int | str,
) -> pd.DataFrame:
    """Rows (a, b, distance, same_thumb) of hashed rows within the thresholds, a < b."""
    rows = stacked["rows"]
    n_q, n_i = len(DIHEDRAL), len(CROP_LEVELS)
    if "size" not in stacked:  # hashes without a known pixel size
        stacked = {**stacked, "size": np.zeros((len(rows), 2), dtype=np.int64)}
    if len(rows) < 2:
        return pd.DataFrame({"a": np.zeros(0, np.int64), "b": np.zeros(0, np.int64),
                             "distance": np.zeros(0), "same_thumb": np.zeros(0, bool)})
    query = stacked["query"].reshape(-1)  # (N*8,)
    index = stacked["index"].reshape(-1)  # (N*L,)
    qfine = stacked["query_fine"].reshape(-1, 4)  # (N*8, 4)
    ifine = stacked["index_fine"].reshape(-1, 4)  # (N*L, 4)
    if bands == "auto":
        bands = auto_bands(len(index))
    qpos, ipos, _ = search_hashes(query, index, radius=search_radius, bands=int(bands))
    a, b = qpos // n_q, ipos // n_i
    keep = a != b
    qpos, ipos, a, b = qpos[keep], ipos[keep], a[keep], b[keep]
    fine = _popcount(qfine[qpos] ^ ifine[ipos]).sum(axis=1) / (64.0 * 4)
    # candidates for an exact check: upright, full view, (almost) the same thumbnail, and the same
    # pixel size where the headers tell it. Identical pixels decoded along different paths (PNG
    # vs JPEG draft decoding) may differ a little in the thumbnail.
    same = (qpos % n_q == 0) & (ipos % n_i == 0) & (fine <= _EXACT_CHECK)
    size_a, size_b = stacked["size"][a], stacked["size"][b]  # (M, 2)
    unknown = (size_a == 0).all(axis=1) | (size_b == 0).all(axis=1)
    same &= unknown | (size_a == size_b).all(axis=1)
    frame = pd.DataFrame({
        "a": rows[np.minimum(a, b)], "b": rows[np.maximum(a, b)], "distance": fine,
        "same_thumb": same,
    })
    frame = frame[frame["distance"] <= threshold]
    best = frame.groupby(["a", "b"], sort=True).agg(distance=("distance", "min"),
                                                     same_thumb=("same_thumb", "any"))
    return best.reset_index()


def _embedding_pairs(table: pd.DataFrame, prefix: str, threshold: float,
                     block: int = 2048) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Rows (a, b, distance) with cosine distance <= threshold between embedding rows, a < b."""
    cols = embedding_columns(table, prefix)
    if not cols:
        raise TableError(f"no embedding columns starting with {prefix!r} in the table; "
                         "expected emb_0000, emb_0001, ... (see dermctx.Embedder)")
    # text or other objects in a column are not numbers: such rows go to the errors table
    with np.errstate(over="ignore"):
        x = np.column_stack([to_numbers(table[c])[0].to_numpy() for c in cols]).astype(np.float32)  # (N, D)
        norm = np.linalg.norm(x, axis=1)
    ok = np.isfinite(x).all(axis=1) & (norm > 0)
    errors = [
        error_record(table["image_id"].iat[r], int(r), None, "embedding",
                     f"embedding columns {prefix}* are missing, not finite or all zero")
        for r in np.flatnonzero(~ok)
    ]
    rows = np.flatnonzero(ok)
    z = x[rows] / norm[rows, None]
    found_a, found_b, found_d = [], [], []
    for start in range(0, len(rows), block):
        sim = z[start:start + block] @ z.T  # (B, N)
        i, j = np.nonzero(1.0 - sim <= threshold)
        i = i + start
        keep = i < j
        found_a.append(rows[i[keep]])
        found_b.append(rows[j[keep]])
        found_d.append(np.clip(1.0 - sim[i[keep] - start, j[keep]], 0.0, 2.0))

    def cat(parts: list[np.ndarray], dt: type) -> np.ndarray:
        return np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)

    frame = pd.DataFrame({"a": cat(found_a, np.int64), "b": cat(found_b, np.int64),
                          "distance": cat(found_d, np.float64)})
    return frame, errors


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id_1": pd.Series([], dtype=object), "image_id_2": pd.Series([], dtype=object),
        "kind": pd.Series([], dtype=object), "distance": pd.Series([], dtype=np.float64),
        "method": pd.Series([], dtype=object),
    })


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value)))


def _check_arguments(*, threshold: Any, search_radius: Any, bands: Any, embedding_threshold: Any,
                     embedding_prefix: Any, images: Any, near: Any, n_jobs: Any, progress: Any) -> None:
    """Refuse an argument of :func:`find_duplicates` of the wrong type or out of range, naming it."""
    problems = []
    if not _is_real(threshold) or not 0.0 <= threshold <= 1.0:
        problems.append(f"threshold={threshold!r}: expected a fraction of bits in [0, 1]")
    if not _is_int(search_radius) or not 0 <= search_radius <= 64:
        problems.append(f"search_radius={search_radius!r}: expected an integer number of bits in 0-64")
    if not (bands == "auto" if isinstance(bands, str) else _is_int(bands) and 2 <= bands <= 8):
        problems.append(f"bands={bands!r}: expected 'auto' or an integer between 2 and 8")
    if embedding_threshold is not None and (not _is_real(embedding_threshold)
                                            or not 0.0 <= embedding_threshold <= 2.0):
        problems.append(f"embedding_threshold={embedding_threshold!r}: expected None or a cosine "
                        "distance in [0, 2]")
    if not isinstance(embedding_prefix, str) or not embedding_prefix:
        problems.append(f"embedding_prefix={embedding_prefix!r}: expected a non-empty column-name prefix")
    for arg, value in (("images", images), ("near", near)):
        if not isinstance(value, (bool, np.bool_)):
            problems.append(f"{arg}={value!r}: expected True or False")
    if n_jobs is not None and (not _is_int(n_jobs) or n_jobs < 1):
        problems.append(f"n_jobs={n_jobs!r}: expected None or a positive number of threads")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        problems.append(f"progress={progress!r}: expected None, True or False")
    if problems:
        raise DermctxError("find_duplicates: " + "; ".join(problems))


def find_duplicates(
    table: pd.DataFrame,
    *,
    near: bool = True,
    threshold: float = 0.2,
    search_radius: int = 8,
    bands: int | str = "auto",
    embedding_threshold: float | None = None,
    embedding_prefix: str = "emb_",
    images: bool = True,
    n_jobs: int | None = None,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find exact and near-duplicate images in a lesion table.

    Parameters
    ----------
    table : DataFrame
        A lesion table with ``image_id`` and ``path`` columns (see :mod:`dermctx.table`).
    near : bool
        Report near duplicates (re-encoded, resized, cropped by up to ~15 %, flipped, rotated by
        90 degrees, slightly recoloured). ``False`` reports exact duplicates only.
    threshold : float
        Largest fine-hash distance (fraction of the 256 fine bits that differ, 0-1) of a near
        pair. The default, 0.2, came from the threshold sweep in ``benchmarks/dedup_real.py``
        (real ISIC images: near copies mostly below 0.1, distinct images rarely below 0.25).
    search_radius : int
        Largest 64-bit hash distance (bits) of a candidate pair before the fine check.
    bands : int or "auto"
        Bands of the multi-index hash search: every candidate within ``bands - 1`` bits is found,
        most further ones too. ``"auto"`` (:func:`auto_bands`): about log2(4 N) bits a band, 5
        bands for 1,000 images, 3 for 400,000 (see ``benchmarks/results/dedup.md`` for the
        recall each gives).
    embedding_threshold : float, optional
        Also report pairs whose embeddings (columns starting with ``embedding_prefix``) have
        cosine distance ``1 - cos`` at most this value, as ``kind="near"``, ``method="embedding"``.
        This compares all pairs in blocks (O(N^2 D) flops): fine for tens of thousands of rows.
    embedding_prefix : str
        Prefix of the embedding columns.
    images : bool
        Hash the image files (``False``: embeddings only; ``path`` is not needed then).
    n_jobs : int, optional
        Decoding threads (default: the number of CPUs, at most 8).
    progress : bool, optional
        Show a progress bar (default: only when writing to a terminal).

    Returns
    -------
    pairs : DataFrame
        One row per pair, columns :data:`PAIR_COLUMNS`: ``image_id_1 < image_id_2``;
        ``kind`` ``"exact"`` (identical decoded pixels) or ``"near"``; ``distance`` (0 for exact,
        the fine-hash distance 0-1 for ``method="phash"``, the cosine distance for
        ``method="embedding"``); ``method`` ``"pixels"``, ``"phash"`` or ``"embedding"``. A pair
        found by both images and embeddings is listed once (the image result). ``pairs.attrs``
        holds ``n_images`` (rows hashed) and ``n_rows`` (rows in the table).
    errors : DataFrame
        The errors table (:func:`dermctx.errors_frame`): one row per table row that could not be
        read (stage ``"path"`` or ``"decode"``), that was hashed but failed the full decode of the
        exact check (stage ``"pixels"``; its near pairs are kept) or could not be embedded (stage
        ``"embedding"``). With ``images=True`` every row of ``table`` is either counted in
        ``pairs.attrs["n_images"]`` or in ``errors`` (stages path, decode, pixels).

    Raises
    ------
    TableError
        ``table`` is not a DataFrame, names a column twice, lacks ``image_id`` (or ``path`` when
        ``images=True``), has ``images=True`` and no path on any row (a table read without
        ``image_dir=``), has duplicate image ids, or has no embedding columns when
        ``embedding_threshold`` is given.
    DermctxError
        An argument of the wrong type or out of range (``threshold="x"``, ``bands=1``,
        ``n_jobs=0``...), naming it and what it takes; or ``images=False`` without an
        ``embedding_threshold``.
    """
    _check_arguments(threshold=threshold, search_radius=search_radius, bands=bands,
                     embedding_threshold=embedding_threshold, embedding_prefix=embedding_prefix,
                     images=images, near=near, n_jobs=n_jobs, progress=progress)
    id_list = _checked_image_ids(table, images=images, embedding_threshold=embedding_threshold)
    n_jobs = n_jobs or min(8, os.cpu_count() or 1)
    error_records: list[dict[str, Any]] = []
    found: list[pd.DataFrame] = []
    n_images = 0

    if images:
        image_found, errs, n_images = _image_duplicates(
            table, id_list, near=near, threshold=threshold, search_radius=search_radius,
            bands=bands, n_jobs=n_jobs, progress=progress)
        error_records += errs
        found.append(image_found)

    if embedding_threshold is not None:
        emb, errs = _embedding_pairs(table, embedding_prefix, float(embedding_threshold))
        error_records += errs
        found.append(emb.assign(kind="near", method="embedding"))

    errors = errors_frame(error_records).sort_values("row", kind="stable").reset_index(drop=True)
    pairs = _pairs_frame(found, id_list)
    pairs.attrs.update(n_rows=len(table), n_images=n_images)
    return pairs, errors


# --- the steps of find_duplicates -------------------------------------------------------------


def _checked_image_ids(table: Any, *, images: bool, embedding_threshold: float | None) -> list[str]:
    """The image ids of ``table`` (stripped text), after checking it is a lesion table with the
    columns the comparison needs and unique ids (TableError), and that there is something to
    compare (DermctxError)."""
    if not isinstance(table, pd.DataFrame):
        raise TableError(f"expected a lesion table (DataFrame), got {type(table).__name__}")
    refuse_duplicate_columns(table, "find_duplicates")
    need = ["image_id"] + (["path"] if images else [])
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise TableError(f"find_duplicates needs column(s) {missing}; found {list(table.columns)[:20]}")
    if images and len(table) and table["path"].isna().all():
        raise TableError(
            "find_duplicates compares pixels, but column 'path' is empty on every row: read the "
            "table with its images (dermctx.read_table(..., image_dir=FOLDER)), or compare "
            "embeddings only (images=False, embedding_threshold=...)")
    ids = as_texts(table["image_id"]).str.strip()
    if ids.duplicated().any():
        dup = sorted(set(ids[ids.duplicated()]))[:5]
        raise TableError(f"column 'image_id' has duplicate values {dup}; each image must appear once")
    if not images and embedding_threshold is None:
        raise DermctxError("nothing to compare: images=False needs an embedding_threshold")
    return ids.tolist()


def _image_duplicates(
    table: pd.DataFrame, id_list: list[str], *, near: bool, threshold: float, search_radius: int,
    bands: int | str, n_jobs: int, progress: bool | None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], int]:
    """Pairs found from the pixels: hash every image, search candidate pairs, confirm exact ones.

    Returns rows ``(a, b, kind, distance, method)`` of table positions, the error records
    (stages path, decode, pixels) and the number of images hashed and fully decoded.
    """
    paths = table["path"].astype(object).where(table["path"].notna(), None).tolist()
    hashes, errors = _hash_all(paths, id_list, n_jobs, progress)
    # search wide enough for the exact check (identical pixels decoded along different
    # paths differ a little in the thumbnail), then apply ``threshold`` to near pairs
    cand = _image_pairs(_stack(hashes), threshold=max(threshold, _EXACT_CHECK),
                        search_radius=search_radius, bands=bands)
    cand, failed = _confirm_exact(cand, paths, id_list, n_jobs, progress)
    exact = (cand["kind"] == "exact").to_numpy()
    cand = cand[exact | ((cand["distance"] <= threshold).to_numpy() & near)]
    return cand[["a", "b", "kind", "distance", "method"]], errors + failed, len(hashes) - len(failed)


def _confirm_exact(cand: pd.DataFrame, paths: list[Any], id_list: list[str], n_jobs: int,
                   progress: bool | None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Label candidate pairs: ``exact`` (method ``pixels``, distance 0) where the thumbnails agree
    and the full decoded pixels are identical, else ``near`` (method ``phash``). Returns the
    labelled pairs and an error record (stage ``pixels``) per image whose full decode failed."""
    thumb = cand["same_thumb"]
    digests = _digest_rows(sorted(set(cand.loc[thumb, "a"]) | set(cand.loc[thumb, "b"])),
                           paths, n_jobs, progress)
    failed = [error_record(id_list[row], row, str(paths[row]), "pixels", value)
              for row, value in digests.items()
              if isinstance(value, BaseException)]  # hashed, but the full decode failed
    exact = np.array([
        bool(same) and isinstance(digests.get(a), str) and digests.get(a) == digests.get(b)
        for a, b, same in zip(cand["a"], cand["b"], cand["same_thumb"], strict=True)
    ], dtype=bool)
    cand = cand.assign(kind=np.where(exact, "exact", "near"),
                       method=np.where(exact, "pixels", "phash"))
    cand.loc[exact, "distance"] = 0.0
    return cand, failed


def _pairs_frame(found: list[pd.DataFrame], id_list: list[str]) -> pd.DataFrame:
    """The pairs frame (:data:`PAIR_COLUMNS`) from rows ``(a, b, kind, distance, method)`` of
    table positions: image ids in canonical order, one row per pair, sorted."""
    if not found or sum(len(f) for f in found) == 0:
        return _empty_pairs()
    allp = pd.concat(found, ignore_index=True)
    id_arr = np.asarray(id_list, dtype=object)
    pairs = as_pairs(pd.DataFrame({
        "image_id_1": id_arr[allp["a"].to_numpy(dtype=np.int64)],
        "image_id_2": id_arr[allp["b"].to_numpy(dtype=np.int64)],
        "kind": allp["kind"].astype(object).to_numpy(),
        "distance": allp["distance"].to_numpy(dtype=np.float64),
        "method": allp["method"].astype(object).to_numpy(),
    }))
    return pairs.sort_values(["image_id_1", "image_id_2"], kind="stable").reset_index(drop=True)


def duplicate_groups(pairs: pd.DataFrame, image_ids: Any = None) -> pd.Series:
    """Group id per image: images linked by a chain of duplicate pairs share a group.

    Parameters
    ----------
    pairs : DataFrame
        Duplicate pairs (:func:`find_duplicates` output, or an ISIC duplicates CSV layout).
    image_ids : sequence of str, optional
        Every image to label (e.g. ``table["image_id"]``); images in no pair get a group of
        their own. Default: the images named in ``pairs``.

    Returns
    -------
    Series of int, indexed by image_id, named ``"duplicate_group"``
        Groups numbered 0.. in order of first appearance.
    """
    canon = as_pairs(pairs, name="pairs")
    if image_ids is None:
        nodes = pd.unique(np.concatenate([canon["image_id_1"].to_numpy(dtype=object),
                                          canon["image_id_2"].to_numpy(dtype=object)]))
    else:
        nodes = pd.Index(pd.Series(list(image_ids), dtype=object).astype(str).str.strip())
        if not nodes.is_unique:
            raise TableError("duplicate_groups: image_ids must be unique")
    nodes = list(nodes)
    labels = link_components(nodes, (canon["image_id_1"].tolist(), canon["image_id_2"].tolist()))
    return pd.Series(labels, index=pd.Index(nodes, name="image_id", dtype=object),
                     name="duplicate_group")

