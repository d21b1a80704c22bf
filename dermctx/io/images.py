"""Read one lesion image (JPEG, PNG, DICOM, ...) as a square uint8 RGB array of a given size.

:func:`load_image` is the single entry point every image consumer uses (embeddings, duplicate
detection, figures). It is built for large dermoscopy originals (ISIC 2020 averages 12.7
megapixels): a JPEG is decoded at a reduced scale in the DCT domain (Pillow's ``Image.draft``)
to the smallest scale that still keeps at least :data:`DRAFT_OVERSAMPLE` times the output
resolution, and only then resized with an antialiasing (BICUBIC) filter. That is many times
faster than a full decode and within ~40-55 dB PSNR of it (see ``benchmarks/image_load.py``).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import PIL
from PIL import Image, ImageOps

from dermctx.errors import ImageError

__all__ = ["ASPECTS", "COLOUR_CONSTANCY", "DRAFT_OVERSAMPLE", "ImageCache", "colour_constancy", "file_stamps",
           "load_image"]

Aspect = Literal["crop", "pad", "squash"]
ASPECTS: tuple[str, ...] = ("crop", "pad", "squash")
COLOUR_CONSTANCY: tuple[str, ...] = ("shades_of_grey", "grey_world")

#: A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose size is still at least this
#: many times the resized size (before cropping/padding) in both directions, then resized with a
#: BICUBIC filter. Over 330 combinations of ISIC image geometry (640x480 to 6000x4000), output
#: size (224-512 px) and aspect mode, the result stays within 42.7 dB PSNR (worst case) of a full
#: decode at 1.25, against 28.8 dB at 1.0 and 50.7 dB at 2.0 (``benchmarks/image_load.py``).
DRAFT_OVERSAMPLE: float = 1.25

_RESAMPLE = Image.Resampling.BICUBIC
_DICOM_SUFFIXES = {".dcm", ".dicom"}


def _is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA/NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and value != value


def _source_path(source: Any) -> tuple[Path, str]:
    """The file a source names, and how to name the source in messages."""
    if isinstance(source, (str, PathLike)):
        return Path(source), str(source)
    if isinstance(source, Mapping) or (hasattr(source, "index") and hasattr(source, "get")):
        # a lesion-table row (pandas Series) or a dict with a "path" entry
        path = source.get("path")
        image_id = source.get("image_id")
        who = f"image_id {image_id!r}" if image_id is not None else "row"
        if path is None or _is_missing(path) or str(path).strip() == "":
            raise ImageError(f"{who}: the lesion-table row has no 'path'; expected an image file path")
        return Path(str(path)), f"{path} ({who})"
    raise ImageError(
        f"expected a path or a lesion-table row with a 'path' entry, got {type(source).__name__}"
    )


def file_stamps(paths: Any) -> pd.DataFrame:
    """Size and modification / status-change times of each image file, to notice later edits.

    Parameters
    ----------
    paths : iterable of path or None
        Image file paths (a lesion table's ``path`` column); None or blank for rows without one.

    Returns
    -------
    DataFrame
        One row per path, in order: ``path`` (as text, "" for none), ``size`` (bytes),
        ``mtime_ns`` and ``ctime_ns`` (nanoseconds, ``os.stat``); -1 in the last three where the
        file is absent or unreadable.
    """
    paths = list(paths)
    rows = []
    for path in paths:
        st = None
        if not _is_missing(path) and str(path).strip():
            try:
                st = Path(str(path)).stat()
            except (OSError, ValueError):  # absent, unreadable, or a name the OS refuses
                st = None
        rows.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns) if st is not None else (-1, -1, -1))
    frame = pd.DataFrame(rows, columns=["size", "mtime_ns", "ctime_ns"], dtype=np.int64)
    frame.insert(0, "path", ["" if _is_missing(p) else str(p) for p in paths])
    return frame


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM file: a DICOM suffix, or no suffix and the ``DICM`` marker at byte 128."""
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    if path.suffix:  # a named image format: do not sniff
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


#: Largest (resized image pixels) / (output pixels) for aspect="crop": a longer strip is refused
#: instead of being resized to a huge intermediate.
MAX_CROP_BLOWUP = 16


def _target_size(w: int, h: int, size: int, aspect: str) -> tuple[int, int]:
    """Size (w, h) the image is resized to before a centre crop ("crop") or padding ("pad").

    The side that sets the scale is exactly ``size``; the other is rounded (at least ``size``
    for "crop", at most ``size`` and at least 1 for "pad").
    """
    if aspect == "squash":
        return size, size
    if aspect == "crop":
        scale = size / min(w, h)
        tw, th = max(size, round(w * scale)), max(size, round(h * scale))
    else:
        scale = size / max(w, h)
        tw, th = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
    return tw, th


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an RGB image: 16-bit and float images stretched to 0-255, transparency over black."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.round(arr).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        background = Image.new("RGB", im.size, (0, 0, 0))
        rgba = im.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def open_image(path: Path, where: str, target: tuple[int, int] | None, aspect: str) -> Image.Image:
    """Decode ``path`` as an RGB PIL image, upright, at a draft scale suited to ``target``."""
    try:
        exists = path.exists()
    except (OSError, ValueError) as exc:  # a name the OS refuses (too long, NUL byte)
        raise ImageError(f"{where[:300]}: not a usable file name ({type(exc).__name__}: {exc.args[-1]})") from exc
    if not exists:
        raise ImageError(f"{where}: no such file")
    if is_dicom_file(path):
        from dermctx.io.dicom import read_dicom  # lazy: pydicom only when needed

        try:
            rgb, _meta = read_dicom(path)
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(f"{where}: cannot read DICOM ({type(exc).__name__}: {exc})") from exc
        return to_rgb(Image.fromarray(np.ascontiguousarray(rgb)))
    try:
        with Image.open(path) as src:
            if target is not None and aspect == "crop":
                tw, th = _target_size(src.width, src.height, target[0], aspect)
                if tw * th > MAX_CROP_BLOWUP * target[0] ** 2:  # a 1 x 3000 strip would become 512 x 1.5M
                    raise ImageError(
                        f"{where}: {src.width} x {src.height} pixels; resizing its short side to "
                        f"{target[0]} for a centre crop would make {tw} x {th} pixels. Expected a "
                        f"photo with an aspect ratio below {MAX_CROP_BLOWUP}:1 (or use aspect='pad')")
            if target is not None and src.format in ("JPEG", "MPO"):
                tw, th = _target_size(src.width, src.height, target[0], aspect)
                src.draft("RGB", (math.ceil(tw * DRAFT_OVERSAMPLE), math.ceil(th * DRAFT_OVERSAMPLE)))
            im = ImageOps.exif_transpose(src)  # an upright, loaded copy (raises on truncated data)
            im.load()
        return to_rgb(im)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(
            f"{where}: cannot decode image ({type(exc).__name__}: {exc}); "
            "expected a readable JPEG, PNG, TIFF or DICOM file"
        ) from exc


def colour_constancy(image: np.ndarray, method: str = "shades_of_grey", power: float = 6.0
                     ) -> np.ndarray:
    """Colour-constancy correction of an RGB image.

    Estimates the illuminant as the per-channel Minkowski ``power``-mean (``power=6``:
    "shades of grey", as used by ISIC 2019/2020 winning entries; ``power=1``: "grey world") and
    rescales each channel so that the illuminant becomes neutral grey of the same intensity.

    Parameters
    ----------
    image : ndarray, uint8, shape (H, W, 3)
    method : {"shades_of_grey", "grey_world"}
        ``"grey_world"`` forces ``power=1``.
    power : float
        Minkowski norm of "shades_of_grey".

    Returns
    -------
    ndarray, uint8, shape (H, W, 3)
    """
    if method not in COLOUR_CONSTANCY:
        raise ImageError(f"colour_constancy must be one of {list(COLOUR_CONSTANCY)} or None, got {method!r}")
    p = 1.0 if method == "grey_world" else float(power)
    img = image.astype(np.float32)
    illum = np.power(np.mean(np.power(img, p), axis=(0, 1)), 1.0 / p)  # (3,)
    norm = float(np.sqrt(np.sum(illum**2)))
    if norm == 0.0:  # an all-black image has no illuminant to correct
        return image.copy()
    gain = norm / (np.maximum(illum, 1e-6) * np.sqrt(3.0))  # (3,)
    return np.clip(np.rint(img * gain), 0, 255).astype(np.uint8)


_correct_colour = colour_constancy  # load_image's argument of the same name shadows it


def load_image(
    source: str | PathLike[str] | Mapping[str, Any] | Any,
    size: int,
    *,
    aspect: Aspect = "crop",
    colour_constancy: str | None = None,
) -> np.ndarray:
    """Read an image as a square RGB uint8 array of ``size`` x ``size`` pixels.

    Parameters
    ----------
    source : path or lesion-table row
        A JPEG, PNG, TIFF or DICOM file (DICOM by suffix ``.dcm`` or by its ``DICM`` magic), or a
        row of a lesion table (a pandas Series or dict) whose ``path`` names one.
    size : int
        Output side in pixels.
    aspect : {"crop", "pad", "squash"}
        ``"crop"``: resize the short side to ``size`` and centre-crop (timm's eval transform with
        ``crop_pct=1``); ``"pad"``: resize the long side to ``size`` and centre the image on black;
        ``"squash"``: resize both sides to ``size``, ignoring the aspect ratio.
    colour_constancy : {"shades_of_grey", "grey_world"} or None
        Colour-constancy correction (see :func:`colour_constancy`), applied to the resized image
        before cropping or padding.

    Returns
    -------
    ndarray, uint8, shape (size, size, 3)
        The upright image (EXIF orientation applied), RGB.

    Raises
    ------
    ImageError
        The file is missing, unreadable, truncated or not an image, its name is not usable (the
        message names it), a 1 x N strip too long to crop (``aspect="crop"``), or an argument is
        not one of the values above.
    """
    if not isinstance(aspect, str) or aspect not in ASPECTS:
        raise ImageError(f"aspect must be one of {list(ASPECTS)}, got {aspect!r}")
    if colour_constancy is not None and (not isinstance(colour_constancy, str)
                                         or colour_constancy not in COLOUR_CONSTANCY):
        raise ImageError(
            f"colour_constancy must be one of {list(COLOUR_CONSTANCY)} or None, got {colour_constancy!r}"
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ImageError(f"size must be a positive integer number of pixels, got {size!r}")
    size = int(size)
    path, where = _source_path(source)
    im = open_image(path, where, (size, size), aspect)

    tw, th = _target_size(im.width, im.height, size, aspect)
    if (tw, th) != im.size:
        im = im.resize((tw, th), _RESAMPLE)
    arr = np.asarray(im, dtype=np.uint8)  # (th, tw, 3)
    if colour_constancy is not None:
        arr = _correct_colour(arr, colour_constancy)
    if aspect == "crop":
        top, left = (th - size) // 2, (tw - size) // 2
        arr = arr[top : top + size, left : left + size]
    elif aspect == "pad":
        out = np.zeros((size, size, 3), dtype=np.uint8)
        top, left = (size - th) // 2, (size - tw) // 2
        out[top : top + th, left : left + tw] = arr
        arr = out
    return np.ascontiguousarray(arr)


class ImageCache:
    """Decoded images on disk, so that a file is decoded and resized once, not every epoch.

    Decoding a dermoscopy original costs far more than the network's step on a GPU (ISIC 2020
    JPEGs are 640x480 to 6000x4000 pixels): :func:`load_image`'s output is kept as one ``.rgb``
    file per image under ``folder``. An entry is keyed by the file's resolved path, device,
    inode, size and modification *and* status-change times (``st_ctime``, which a tool that
    restores the modification time after an edit cannot set back), by the output size, aspect
    and colour constancy, and by what else shapes the decode (:data:`DRAFT_OVERSAMPLE`, the
    Pillow version): an edited file or other settings are decoded afresh. Not seen: an edit that
    changes none of those times, such as a second write through an already-dirty memory map;
    clear the cache after editing images that way. Each entry ends with a SHA-1 of its key and
    pixels (about 0.5 ms per 384 px image), so a truncated, damaged or swapped entry is detected
    and decoded again, never served. A served image is bit-identical to a fresh decode.
    Files that fail to decode are not cached (the error comes again, with its message). Writes
    go to a temporary name and are renamed, so several DataLoader workers may share a folder.
    At 384 px an image takes 432 KiB (14 GiB for the 33,126 ISIC 2020 images).

    Parameters
    ----------
    folder : path
        The cache folder (created when missing). Safe to delete at any time.

    Raises
    ------
    OSError
        An entry cannot be written (the message names the cache folder).
    """

    VERSION = 2  # part of every key: raise it when load_image's output or the entry format changes

    def __init__(self, folder: str | PathLike[str]):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"ImageCache({str(self.folder)!r})"

    def load(self, source: Any, size: int, *, aspect: Aspect = "crop",
             colour_constancy: str | None = None) -> np.ndarray:
        """:func:`load_image` through the cache: same arguments, same result and errors."""
        path, _ = _source_path(source)
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is None or isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            # a missing file or a bad argument: load_image raises, with its message
            return load_image(source, size, aspect=aspect, colour_constancy=colour_constancy)
        key = repr((self.VERSION, str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns, int(size), aspect, colour_constancy, DRAFT_OVERSAMPLE,
                    PIL.__version__)).encode()
        name = hashlib.sha1(key).hexdigest()
        file = self.folder / name[:2] / f"{name}.rgb"
        n = int(size) * int(size) * 3
        try:
            data = file.read_bytes()
        except OSError:  # not cached yet (or unreadable): decoded afresh
            data = b""
        if len(data) == n + 20 and hashlib.sha1(key + data[:n]).digest() == data[n:]:
            return np.frombuffer(data[:n], dtype=np.uint8).reshape(int(size), int(size), 3).copy()
        arr = load_image(source, size, aspect=aspect, colour_constancy=colour_constancy)
        pixels = arr.tobytes()
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        except OSError as exc:
            raise OSError(exc.errno, f"image cache {self.folder}: cannot write there ({exc.strerror})") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pixels + hashlib.sha1(key + pixels).digest())
            os.replace(tmp, file)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise OSError(exc.errno, f"image cache {self.folder}: cannot write {file.name} ({exc.strerror})") from exc
        return arr
