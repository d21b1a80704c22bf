"""DICOM: wrap a baseline JPEG unchanged in a VL Photographic Image, and read such files back.

Tag map (lesion table -> DICOM), used by :func:`write_dicom` and read back by :func:`read_dicom`
and :func:`read_dicom_dir`:

=============== ======================================================================
image_id        SOPInstanceUID = UID derived from the image id; the raw id in the private
                block ``"dermctx"`` (group 0x0011), element 0x01 (UT)
patient_id      PatientID; StudyInstanceUID = UID derived from the patient id (one study
                per patient)
lesion_id       SeriesDescription and private element 0x02 (UT); SeriesInstanceUID =
                UID derived from patient and lesion ids (one series per lesion)
age             PatientAge, whole years as "045Y" (rounded to the nearest year)
sex             PatientSex "M" / "F" (empty when missing)
site            AnatomicRegionSequence, one item coded in the local scheme
                ``99DERMCTX`` (CodeValue = CodeMeaning = the ISIC 2020 site term)
site_detail     private element 0x03 (UT): the source's raw site term
source          private element 0x04 (UT)
width, height   Columns, Rows (from the JPEG frame header)
=============== ======================================================================

Fixed: Modality ``XC`` (external-camera photography), SOP class VL Photographic Image Storage,
transfer syntax JPEG Baseline (1.2.840.10008.1.2.4.50), PhotometricInterpretation
``YBR_FULL_422`` for 3-channel JPEG (``RGB`` when an Adobe marker says the JPEG holds RGB,
``MONOCHROME2`` for 1 channel), LossyImageCompression ``01`` / ``ISO_10918_1``.
A JPEG whose EXIF Orientation is not 1 is refused (viewers turn it; a DICOM would not).
Labels (target, diagnosis) are never written: join them by image id
(``read_dicom_dir(folder, labels=csv)``, with ``id_from`` choosing the id: the private id or
SOPInstanceUID, the file name, or any DICOM text attribute; files that match no label row are
counted in a warning).

Reading (:func:`read_dicom`): the decoder depends on the transfer syntax only, never on which
optional packages are installed: Pillow for JPEG Baseline, JPEG Extended and JPEG 2000, pydicom's
own decoders for uncompressed (incl. big endian and deflated) and RLE Lossless data; JPEG
Lossless, JPEG-LS, HTJ2K and others are refused. Only 8-bit single-frame images are read:
YBR_FULL(_422) is converted with libjpeg's integer arithmetic, PALETTE COLOR looked up in its
colour table (16-bit entries ``>> 8``), MONOCHROME1 inverted, grey repeated over three channels.

The site is coded in a local scheme because the DICOM/SNOMED anatomic terms have no single
concept for "palms/soles" or "oral/genital", and BodyPartExamined (a CS value) cannot hold the
"/" of the ISIC terms; a local scheme keeps the table's vocabulary exact on a round trip.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    RLELossless,
    VLPhotographicImageStorage,
    generate_uid,
)
from tqdm.auto import tqdm

from dermctx._deprecation import renamed_parameters
from dermctx.errors import (
    DermctxError,
    DermctxWarning,
    ImageError,
    TableError,
    error_record,
    errors_frame,
)
from dermctx.io._common import require_path
from dermctx.table import SITES, normalise_site, validate_table

__all__ = [
    "PRIVATE_CREATOR",
    "SITE_SCHEME",
    "read_dicom",
    "read_dicom_dir",
    "write_dicom",
    "write_dicom_dir",
]

#: Private creator of the dermctx block (group 0x0011) holding the raw ids.
PRIVATE_CREATOR = "dermctx"
PRIVATE_GROUP = 0x0011
#: Coding scheme of the site in AnatomicRegionSequence (a local scheme: "99" prefix).
SITE_SCHEME = "99DERMCTX"
_PRIVATE = {"image_id": 0x01, "lesion_id": 0x02, "site_detail": 0x03, "source": 0x04}

#: The pydicom decoding plugin used for each transfer syntax read_dicom decodes: Pillow for the
#: JPEG syntaxes it handles, pydicom's own decoder for RLE, none to choose for native data. Fixed,
#: so that pixels never depend on which optional decoders (pylibjpeg, GDCM) are installed.
_DECODERS: dict[str, str] = {
    JPEGBaseline8Bit: "pillow", JPEGExtended12Bit: "pillow", JPEG2000Lossless: "pillow",
    JPEG2000: "pillow", RLELossless: "pydicom", ExplicitVRLittleEndian: "",
    ImplicitVRLittleEndian: "", DeflatedExplicitVRLittleEndian: "", ExplicitVRBigEndian: "",
}
_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
                 "YBR_ICT", "YBR_RCT")
_SEXES = {"M": "male", "F": "female", "O": None, "": None}
#: ``id_from`` choices besides DICOM keywords, described as in messages.
_ID_SOURCES = {"auto": "the dermctx private image id, else SOPInstanceUID",
               "dermctx": "the dermctx private image id", "stem": "the file name without extension"}
#: Keys tried when no file matched a label row, to suggest the one that would.
_ID_SUGGEST = ("stem", "dermctx", "SOPInstanceUID", "AccessionNumber")
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UI", "UR", "UT"}
_HEADER_COLUMNS = ["image_id", "patient_id", "lesion_id", "age", "sex", "site", "site_detail",
                   "width", "height", "path", "source", "sop_instance_uid", "modality"]

# JPEG start-of-frame markers (all but DHT 0xC4, JPG 0xC8, DAC 0xCC), and the names of the
# non-baseline ones for error messages.
_SOF = {0xC0 + i for i in range(16)} - {0xC4, 0xC8, 0xCC}
_SOF_NAMES = {0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
              0xC9: "arithmetic-coded", 0xCA: "arithmetic progressive"}


def _ybr_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables of libjpeg's integer YCbCr -> RGB conversion (jdcolor.c, 16-bit fixed point)."""
    x = np.arange(256, dtype=np.int64) - 128
    one_half, fix = 1 << 15, (lambda v: int(v * 65536 + 0.5))
    cr_r = (fix(1.40200) * x + one_half) >> 16
    cb_b = (fix(1.77200) * x + one_half) >> 16
    cbcr_g = (-fix(0.34414) * x[:, None] - fix(0.71414) * x[None, :] + one_half) >> 16
    return cr_r.astype(np.int16), cb_b.astype(np.int16), cbcr_g.astype(np.int16).ravel()


_CR_R, _CB_B, _CBCR_G = _ybr_tables()


def _ybr_full_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """YCbCr (full range, JFIF) to RGB with libjpeg's exact integer arithmetic.

    Bit-identical to what libjpeg (and so Pillow) gives when it decodes a JPEG straight to RGB,
    which floating-point conversions are not (they differ by 1 on a few pixels).
    ``ycc``: uint8, shape (H, W, 3); returns uint8, shape (H, W, 3).
    """
    y = ycc[..., 0].astype(np.int16)
    cb, cr = ycc[..., 1], ycc[..., 2]
    out = np.empty(ycc.shape, dtype=np.uint8)
    out[..., 0] = np.clip(y + _CR_R[cr], 0, 255)
    out[..., 1] = np.clip(y + _CBCR_G[(cb.astype(np.intp) << 8) | cr], 0, 255)
    out[..., 2] = np.clip(y + _CB_B[cb], 0, 255)
    return out


def _uid(*parts: str) -> UID:
    """A deterministic UID from ``parts`` (JSON-encoded so that ("ab", "c") != ("a", "bc"))."""
    return generate_uid(entropy_srcs=[json.dumps(["dermctx", *parts])])


def _jpeg_header(data: bytes, name: str) -> dict[str, Any]:
    """Parse the marker segments of a JPEG up to its scan; check it is complete baseline JPEG.

    Returns ``{"width", "height", "components", "adobe_transform"}``. Raises :class:`ImageError`
    for anything that is not a complete 8-bit baseline (SOF0) JPEG.
    """
    if data[:2] != b"\xff\xd8":
        raise ImageError(f"{name}: not a JPEG file (no start-of-image marker); expected a baseline JPEG")
    pos, n = 2, len(data)
    frame: dict[str, Any] | None = None
    adobe: int | None = None
    while True:
        while pos < n and data[pos] != 0xFF:  # tolerate stray bytes between segments
            pos += 1
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos + 2 >= n:
            raise ImageError(f"{name}: truncated JPEG (file ends inside the header, {n} bytes)")
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        if marker == 0xD9:
            raise ImageError(f"{name}: JPEG has no image data (end-of-image before any scan)")
        length = int.from_bytes(data[pos:pos + 2], "big")
        segment = data[pos + 2:pos + length]
        if length < 2 or pos + length > n:
            raise ImageError(f"{name}: truncated JPEG (segment 0xFF{marker:02X} runs past the end)")
        if marker in _SOF:
            if marker != 0xC0:
                kind = _SOF_NAMES.get(marker, f"SOF 0xFF{marker:02X}")
                raise ImageError(
                    f"{name}: {kind} JPEG; expected baseline JPEG (SOF0), which is what the DICOM "
                    "JPEG Baseline transfer syntax holds. Re-encode the image as baseline JPEG"
                )
            if segment[0] != 8:
                raise ImageError(f"{name}: {segment[0]}-bit JPEG; expected 8-bit baseline JPEG")
            frame = {
                "height": int.from_bytes(segment[1:3], "big"),
                "width": int.from_bytes(segment[3:5], "big"),
                "components": segment[5],
            }
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        elif marker == 0xDA:  # start of scan: entropy-coded data follows, up to end-of-image
            break
        pos += length
    if frame is None:
        raise ImageError(f"{name}: JPEG has no frame header (SOF0) before its scan")
    if frame["width"] == 0 or frame["height"] == 0:
        raise ImageError(f"{name}: JPEG frame header gives size {frame['width']}x{frame['height']}")
    # Inside entropy-coded data every 0xFF is stuffed (FF00) or a restart marker, so the last
    # FFD9 after the scan start is the end-of-image marker; a cut-off file has none.
    if data.rfind(b"\xff\xd9", pos) < 0:
        raise ImageError(
            f"{name}: truncated JPEG (no end-of-image marker after the scan; {n} bytes); "
            "expected a complete file"
        )
    frame["adobe_transform"] = adobe
    return frame


def _photometric(info: Mapping[str, Any], name: str) -> str:
    comps, adobe = info["components"], info["adobe_transform"]
    if comps == 1:
        return "MONOCHROME2"
    if comps == 3:
        return "RGB" if adobe == 0 else "YBR_FULL_422"
    raise ImageError(f"{name}: JPEG with {comps} channels (CMYK?); expected 1 (grey) or 3 (colour)")


def _check_upright(data: bytes, name: str) -> None:
    """Refuse a JPEG whose EXIF Orientation asks viewers to turn it (anything but 1 or absent).

    Viewers and :func:`dermctx.io.images.load_image` apply the orientation; a DICOM has no such
    tag, so the wrapped bytes would show turned against the JPEG. Pillow cannot rotate a JPEG
    without re-encoding it, so the file is refused rather than altered.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(0x0112)
    except Exception as exc:  # Pillow raises many kinds on odd EXIF blocks; name the file
        raise ImageError(
            f"{name}: cannot read the JPEG's EXIF block ({type(exc).__name__}: {exc})"
        ) from exc
    if orientation is not None and orientation != 1:
        raise ImageError(
            f"{name}: EXIF Orientation is {orientation!r}: the pixels are stored rotated or flipped "
            "and viewers (and dermctx.load_image) turn them upright, but DICOM has no orientation "
            "tag, so the DICOM would show them turned. Expected Orientation 1 or none: rotate the "
            "JPEG losslessly first (e.g. `exiftran -ai FILE`, or `jpegtran` with the matching "
            "-rotate/-flip and the tag reset to 1), or re-encode it upright"
        )


def _get(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key) if hasattr(row, "get") else None
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    text = str(value).strip()
    return text if text else None


def _age_string(age: Any, name: str) -> str:
    if age is None:
        return ""
    try:
        years = float(age)
    except (TypeError, ValueError):
        raise TableError(f"{name}: 'age' is {age!r}; expected years in [0, 120] or missing") from None
    if not math.isfinite(years) or not 0 <= years <= 120:
        raise TableError(f"{name}: 'age' is {age!r}; expected years in [0, 120] or missing")
    return f"{round(years):03d}Y"


def write_dicom(
    jpeg_path: str | PathLike[str],
    row: Mapping[str, Any] | pd.Series,
    out_path: str | PathLike[str],
) -> Path:
    """Wrap a baseline JPEG, byte for byte, in a DICOM VL Photographic Image file.

    Parameters
    ----------
    jpeg_path : path
        An 8-bit baseline JPEG (1 or 3 channels). Its bytes are stored unchanged (encapsulated,
        never re-encoded), so the DICOM decodes to exactly the JPEG's pixels.
    row : mapping or Series
        One lesion-table row: ``image_id`` and ``patient_id`` (required), ``lesion_id``, ``age``,
        ``sex``, ``site``, ``site_detail``, ``source`` (optional). See the module's tag map.
    out_path : path
        The DICOM file to write (parent folders are created).

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ImageError
        ``jpeg_path`` is missing, not a JPEG, truncated, progressive or otherwise not baseline,
        or has an EXIF Orientation other than 1 (its pixels are stored turned; see the message
        for the lossless fix).
    TableError
        ``row`` lacks an image or patient id, or has an age, sex or site outside the table's
        vocabulary.
    """
    jpeg_path, out_path = _path(jpeg_path, "a JPEG file"), _path(out_path, "a DICOM file to write")
    image_id = _get(row, "image_id")
    where = f"row image_id {image_id!r}" if image_id else "row"
    for key in ("image_id", "patient_id"):
        if _get(row, key) is None:
            raise TableError(f"write_dicom: {where} has no {key!r}; a DICOM file needs one")
    try:
        data = jpeg_path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise ImageError(f"{jpeg_path}: cannot read the JPEG ({getattr(exc, 'strerror', None) or exc})") from exc
    info = _jpeg_header(data, str(jpeg_path))
    _check_upright(data, str(jpeg_path))
    photometric = _photometric(info, str(jpeg_path))

    patient_id = _get(row, "patient_id")
    lesion_id = _get(row, "lesion_id") or image_id
    sex = (_get(row, "sex") or "").lower()
    if sex not in ("", "male", "female"):
        raise TableError(f"write_dicom: {where}: 'sex' is {sex!r}; expected male, female or missing")
    site = (_get(row, "site") or "").lower() or None
    if site is not None and site not in SITES:
        raise TableError(f"write_dicom: {where}: 'site' is {site!r}; expected one of {list(SITES)}")

    sop_uid = _uid("image", image_id)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLPhotographicImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = VLPhotographicImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("patient", patient_id)
    ds.SeriesInstanceUID = _uid("lesion", patient_id, lesion_id)
    ds.Modality = "XC"
    ds.PatientID = patient_id
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = {"male": "M", "female": "F"}.get(sex, "")
    ds.PatientAge = _age_string(_get(row, "age"), f"write_dicom: {where}")
    ds.StudyDate = ds.StudyTime = ds.ContentDate = ds.ContentTime = ""
    ds.AcquisitionDateTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ds.AccessionNumber = ""
    ds.Manufacturer = ""
    ds.SeriesNumber = ds.InstanceNumber = None
    ds.SeriesDescription = lesion_id[:64]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    region = []
    if site is not None:
        item = Dataset()
        item.CodeValue = site
        item.CodingSchemeDesignator = SITE_SCHEME
        item.CodeMeaning = site
        region.append(item)
    ds.AnatomicRegionSequence = region

    ds.SamplesPerPixel = 1 if photometric == "MONOCHROME2" else 3
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = info["height"], info["width"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for key, element in _PRIVATE.items():
        value = image_id if key == "image_id" else lesion_id if key == "lesion_id" else _get(row, key)
        if value is not None:
            block.add_new(element, "UT", value)

    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_path, enforce_file_format=True)
    return out_path


def _file_name(image_id: str) -> str:
    """A safe file name for an image id: the id itself when it is plain, else a cleaned id + hash."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}", image_id):
        return f"{image_id}.dcm"
    digest = hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', image_id)[:100].strip('._')}-{digest}.dcm"


def write_dicom_dir(
    table: pd.DataFrame,
    out_dir: str | PathLike[str],
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write one DICOM file per row of a lesion table with image paths (see :func:`write_dicom`).

    Parameters
    ----------
    table : DataFrame
        A lesion table with ``path`` set (e.g. ``read_isic2020(csv, image_dir=...)``). Rows with
        a non-missing ``image_error`` or no ``path`` are not written and go to ``errors``.
    out_dir : path
        Folder for the files, named ``<image_id>.dcm`` (ids that are not plain file names are
        cleaned and given a short hash, so no file lands outside ``out_dir``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    written : DataFrame
        The rows written, with ``path`` set to the DICOM file and ``jpeg_path`` to the source.
    errors : DataFrame
        The errors table, one row per row not written (``row`` is its 0-based position).
        ``len(written) + len(errors) == len(table)``.
    """
    table = validate_table(table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_errors = table["image_error"] if "image_error" in table.columns else None
    done: list[int] = []
    dicom_paths: list[str] = []
    errors: list[dict[str, Any]] = []
    rows = table.to_dict("records")
    for pos, row in enumerate(tqdm(rows, desc="to-dicom", unit="image", disable=not progress)):
        source = row.get("path")
        try:
            if image_errors is not None and not pd.isna(image_errors.iloc[pos]):
                raise ImageError(str(image_errors.iloc[pos]))
            if source is None or pd.isna(source):
                raise ImageError(f"row {pos} (image_id {row['image_id']!r}): no image path")
            out = write_dicom(source, row, out_dir / _file_name(row["image_id"]))
        except DermctxError as exc:
            errors.append(error_record(row["image_id"], pos, source, "write_dicom", str(exc)))
            continue
        done.append(pos)
        dicom_paths.append(str(out))
    written = table.iloc[done].copy()
    written["jpeg_path"] = written["path"]
    written["path"] = dicom_paths
    return written.reset_index(drop=True), errors_frame(errors)


def _private(ds: Dataset, key: str) -> str | None:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return None
    element = _PRIVATE[key]
    if element not in block:
        return None
    value = str(block[element].value).strip()
    return value or None


def _check_id_from(id_from: str) -> str:
    """``id_from`` itself when it is a named source or the keyword of a DICOM text attribute."""
    tag = tag_for_keyword(id_from) if isinstance(id_from, str) else None
    if id_from not in _ID_SOURCES and (tag is None or dictionary_VR(tag) not in _TEXT_VRS):
        raise TableError(
            f"id_from={id_from!r}: expected one of {list(_ID_SOURCES)} or the keyword of a DICOM "
            "text attribute holding the image id, such as 'AccessionNumber' or 'SOPInstanceUID'"
        )
    return id_from


def _image_id(ds: Dataset, path: Path, id_from: str) -> str | None:
    """The image id of one file by ``id_from`` (see :func:`read_dicom_dir`); None if it has none."""
    if id_from == "auto":
        return _image_id(ds, path, "dermctx") or _image_id(ds, path, "SOPInstanceUID")
    if id_from == "dermctx":
        return _private(ds, "image_id")
    value = path.stem if id_from == "stem" else ds.get(id_from)
    text = "" if value is None else str(value).strip()
    return text or None


def _age_years(ds: Dataset, name: str) -> float:
    """PatientAge ("045Y", "006M", ...) in years, NaN when empty; ImageError outside [0, 120]."""
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if not text:
        return np.nan
    units = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
    try:
        years = float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError):
        raise ImageError(f"{name}: PatientAge {text!r}; expected a DICOM age such as '045Y'") from None
    if not (math.isfinite(years) and 0 <= years <= 120):
        raise ImageError(f"{name}: PatientAge {text!r} is {years:g} years; expected years in [0, 120]")
    return years


def header_record(ds: Dataset, path: Path, id_from: str) -> dict[str, Any]:
    """The lesion-table fields of one DICOM header (see the module's tag map).

    ``image_id`` (by ``id_from``) and ``patient_id`` are None when the header has none; an age,
    sex or image size outside what a lesion table holds raises :class:`ImageError` naming the file.
    """
    name = str(path)
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageError(f"{name}: DICOM file holds no image (no Rows/Columns); expected an image")
    image_id = _image_id(ds, path, id_from)
    sex_code = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex_code not in _SEXES:
        raise ImageError(
            f"{name}: PatientSex {sex_code!r}; expected 'M', 'F', 'O' (other: read as missing) or empty"
        )
    site, site_detail = None, _private(ds, "site_detail")
    for item in ds.get("AnatomicRegionSequence", []) or []:
        if str(item.get("CodingSchemeDesignator", "")).strip() == SITE_SCHEME:
            code = str(item.get("CodeValue", "")).strip()
            if code not in SITES:  # dermctx's own scheme holds only the table's terms
                raise ImageError(f"{name}: AnatomicRegionSequence code {code!r} in scheme "
                                 f"{SITE_SCHEME}; expected one of {list(SITES)}")
            site = code
            break
    if site is None:  # a DICOM not written by dermctx: try its region or body part as a raw term
        raw = None
        for item in ds.get("AnatomicRegionSequence", []) or []:
            raw = item.get("CodeMeaning") or raw
        raw = raw or ds.get("BodyPartExamined")
        if raw:
            mapped, _ = normalise_site(pd.Series([str(raw)], dtype=object))
            site = mapped.iloc[0] if mapped.iloc[0] in SITES else None
            site_detail = site_detail or str(raw)
    return {
        "image_id": image_id,
        "patient_id": str(ds.get("PatientID", "") or "").strip() or None,
        "lesion_id": _private(ds, "lesion_id") or image_id,
        "age": _age_years(ds, name),
        "sex": _SEXES[sex_code],
        "site": site,
        "site_detail": site_detail,
        "width": int(ds.Columns),
        "height": int(ds.Rows),
        "path": name,
        "source": _private(ds, "source") or "dicom",
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "modality": str(ds.get("Modality", "")),
    }


def _table_record(ds: Dataset, path: Path, id_from: str) -> dict[str, Any]:
    """:func:`header_record` for a table row, which needs an image id and a patient id."""
    record = header_record(ds, path, id_from)
    if record["image_id"] is None:
        raise ImageError(
            f"{path}: no image id by id_from={id_from!r} ({_ID_SOURCES.get(id_from, id_from)}: "
            "empty or absent); a lesion table needs an image id per file"
        )
    if record["patient_id"] is None:
        raise ImageError(f"{path}: PatientID is empty; a lesion table needs a patient id per image")
    return record


def scan_files(directory: Path, recursive: bool) -> list[Path]:
    """The regular files of a folder (and its sub-folders), sorted, skipping names starting "."

    Sub-folders that cannot be listed are skipped with a :class:`DermctxWarning` naming them.
    """
    unreadable: list[str] = []
    files: list[Path] = []
    if recursive:
        walker = os.walk(directory, onerror=lambda exc: unreadable.append(str(exc.filename)))
    else:
        try:
            names = [e.name for e in os.scandir(directory)]
        except OSError as exc:
            raise ImageError(f"{directory}: cannot list the folder ({exc.strerror or exc})") from exc
        walker = iter([(str(directory), [], names)])
    for root, dirs, names in walker:
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                files.append(path)
    if unreadable:  # stack: scan_files < read_dicom_dir < its renamed_parameters wrapper < the caller
        warnings.warn(f"{directory}: {len(unreadable)} folder(s) could not be read and were skipped "
                      f"(e.g. {unreadable[:3]})", DermctxWarning, stacklevel=4)
    return sorted(files)


def _path(value: Any, what: str) -> Path:
    """``value`` as a Path; ImageError when it is not a path at all."""
    if not isinstance(value, (str, PathLike)):
        raise ImageError(f"expected {what} (a path), got {type(value).__name__}")
    return Path(value)


def read_dataset(path: Path, *, stop_before_pixels: bool) -> Dataset:
    """``pydicom.dcmread`` of ``path``, raising :class:`ImageError` for a missing or non-DICOM file."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ImageError(f"{path}: not a DICOM file ({exc}); expected a DICOM Part 10 file") from exc
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except Exception as exc:  # truncated, damaged or odd files raise many kinds; name the file
        raise ImageError(f"{path}: cannot read the DICOM file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from exc


def _palette_to_rgb(ds: Dataset, indices: np.ndarray, name: str) -> np.ndarray:
    """Look a PALETTE COLOR image up in its colour table: uint8 RGB (16-bit entries >> 8)."""
    try:
        rgb = apply_color_lut(indices, ds)
        entries, _, bits = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    except Exception as exc:  # missing or malformed tables raise many kinds; name the file
        raise ImageError(
            f"{name}: cannot apply the palette colour table ({type(exc).__name__}: {exc})"
        ) from exc
    if rgb.shape[-1] != 3:
        raise ImageError(f"{name}: palette with an alpha table; expected an opaque (RGB) palette")
    if rgb.dtype == np.uint8 and (entries or 65536) > 256:  # pydicom would wrap indices > 255
        raise ImageError(f"{name}: palette of {entries or 65536} 8-bit entries; expected at most 256 "
                         "8-bit entries, or 16-bit entries")
    if rgb.dtype == np.uint16 and bits == 16:
        return (rgb >> 8).astype(np.uint8)  # exact for tables made as v * 256 and as v * 257
    if rgb.max(initial=0) > 255:
        raise ImageError(f"{name}: palette entries above 255 in a table declared {bits}-bit")
    return rgb.astype(np.uint8)


def _decode(ds: Dataset, name: str) -> np.ndarray:
    """The pixels of a single-frame 8-bit DICOM image as uint8 RGB, shape (H, W, 3).

    The decoder is fixed by the transfer syntax (:data:`_DECODERS`); YBR_FULL(_422) data is
    converted with libjpeg's integer arithmetic, MONOCHROME1 inverted, PALETTE COLOR looked up.
    """
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if ts not in _DECODERS:
        supported = "; ".join(UID(uid).name for uid in _DECODERS)
        raise ImageError(
            f"{name}: pixel data in transfer syntax {ts.name!r} ({ts or 'none given'}); dermctx "
            f"decodes {supported} (with Pillow and pydicom only, so that pixels never depend on "
            "optional decoders such as pylibjpeg or GDCM). Convert the file first, e.g. "
            "`gdcmconv --raw IN OUT`"
        )
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    j2k_only = pi in ("YBR_ICT", "YBR_RCT") and ts not in (JPEG2000, JPEG2000Lossless)
    if pi not in _PHOTOMETRICS or j2k_only:
        raise ImageError(
            f"{name}: PhotometricInterpretation {pi!r} in {ts.name}; expected one of "
            f"{list(_PHOTOMETRICS)} (YBR_ICT and YBR_RCT in JPEG 2000 only)"
        )
    frames = ds.get("NumberOfFrames") or 1
    if str(frames).strip() != "1":
        raise ImageError(f"{name}: NumberOfFrames is {frames}; expected a single-frame image")
    bits = [ds.get(key) for key in ("BitsAllocated", "BitsStored", "PixelRepresentation")]
    if pi != "PALETTE COLOR" and bits != [8, 8, 0]:
        raise ImageError(
            f"{name}: {pi} pixels with BitsAllocated, BitsStored, PixelRepresentation = {bits}; "
            "expected 8-bit unsigned pixels [8, 8, 0] (or a PALETTE COLOR image). Deeper images "
            "need a window to scale them to 8 bits, which dermctx does not guess: convert the "
            "file to 8 bits first"
        )
    ybr = pi in ("YBR_FULL", "YBR_FULL_422")
    try:
        pixels = pixel_array(ds, decoding_plugin=_DECODERS[ts], raw=ybr)
    except Exception as exc:  # the decoders raise many kinds; name the file whatever it is
        raise ImageError(f"{name}: cannot decode the pixels ({type(exc).__name__}: {exc})") from exc
    if pi == "PALETTE COLOR":
        return _palette_to_rgb(ds, pixels, name)
    if pi == "MONOCHROME1":
        pixels = 255 - pixels  # 0 is white
    if pixels.ndim == 2 and pi.startswith("MONOCHROME"):
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(
            f"{name}: {pi} pixel array has shape {pixels.shape}; expected one (H, W, 3) frame"
        )
    return np.ascontiguousarray(_ybr_full_to_rgb(pixels) if ybr else pixels)


def read_dicom(
    path: str | PathLike[str], *, id_from: str = "auto"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one DICOM image: pixels as RGB and the lesion-table fields of its header.

    The decoder depends on the transfer syntax only, never on which optional packages are
    installed: Pillow (through pydicom) for JPEG Baseline, JPEG Extended and JPEG 2000; pydicom's
    own decoders for uncompressed (little or big endian, deflated) and RLE Lossless data. Other
    transfer syntaxes (JPEG Lossless, JPEG-LS, HTJ2K, ...) are refused. YBR_FULL and YBR_FULL_422
    are converted to RGB with libjpeg's integer arithmetic, so a file written by
    :func:`write_dicom` decodes to Pillow's decode of the original JPEG, bit for bit (pydicom's
    floating-point conversion is off by 1 on a few pixels of some images). PALETTE COLOR is looked
    up in the file's colour table (16-bit entries scaled to 8 bits by ``>> 8``), MONOCHROME1 is
    inverted, and grey images are repeated over three channels.

    Parameters
    ----------
    path : path
        A DICOM Part 10 file holding one 8-bit image (or a PALETTE COLOR image).
    id_from : str
        Where ``meta["image_id"]`` comes from; see :func:`read_dicom_dir`.

    Returns
    -------
    pixels : ndarray of uint8, shape (H, W, 3)
        RGB pixels.
    meta : dict
        ``image_id, patient_id, lesion_id, age`` (years, float or NaN), ``sex, site, site_detail,
        width, height, path, source, sop_instance_uid, modality`` and
        ``photometric_interpretation``, ``transfer_syntax``. ``image_id`` and ``patient_id`` are
        None when the header has none: pixels need no ids.

    Raises
    ------
    ImageError
        Naming the file: not a path, not a DICOM file, a damaged or unreadable header element, no
        image, a PatientAge outside [0, 120] years or not a DICOM age, an unknown PatientSex, a
        transfer syntax or photometric interpretation that is not supported, more than one
        frame, pixels that are not 8-bit, or pixels that cannot be decoded.
    TableError
        ``id_from`` is not a valid choice.
    """
    id_from, path = _check_id_from(id_from), _path(path, "a DICOM file")
    ds = read_dataset(path, stop_before_pixels=False)
    try:  # pydicom parses elements lazily: a damaged one raises here, of many kinds
        meta = header_record(ds, path, id_from)
        meta["photometric_interpretation"] = str(ds.get("PhotometricInterpretation", ""))
        meta["transfer_syntax"] = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if "PixelData" not in ds:
            raise ImageError(f"{path}: DICOM file has no pixel data")
        return _decode(ds, str(path)), meta
    except DermctxError:
        raise
    except Exception as exc:
        raise ImageError(f"{path}: unreadable DICOM header ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from exc


def _read_labels(labels: str | PathLike[str] | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Labels keyed by image id: any layout :func:`dermctx.read_table` knows, or a plain CSV."""
    from dermctx.io._common import read_csv_frame
    from dermctx.io.registry import detect_source, read_table

    frame, name = read_csv_frame(labels, id_columns=("image_id", "image_name", "patient_id",
                                                     "lesion_id", "image", "isic_id"), what="labels")
    try:
        source = detect_source(frame.columns, name)
    except TableError:  # a plain CSV: image_id (or image_name) and label columns
        source = None
    if source is not None:
        frame = read_table(frame, source=source.name)
    elif "image_name" in frame.columns and "image_id" not in frame.columns:
        frame = frame.rename(columns={"image_name": "image_id"})
    if "image_id" not in frame.columns:
        raise TableError(f"{name}: labels need an 'image_id' (or 'image_name') column; found {list(frame.columns)}")
    ids = frame["image_id"].astype(str).str.strip()
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise TableError(
            f"{name}: column 'image_id' repeats at rows {np.flatnonzero(dup)[:5].tolist()}; "
            "each image needs one label row"
        )
    return frame.assign(image_id=ids).set_index("image_id"), name


def _invalid_rows(table: pd.DataFrame) -> dict[int, str]:
    """Positions of the rows that fail :func:`validate_table` on their own, with its message.

    Each file's header is checked alone so that one bad file never sinks the folder.
    """
    with warnings.catch_warnings():  # the final validation of the whole table warns once
        warnings.simplefilter("ignore", DermctxWarning)
        try:
            validate_table(table)
            return {}
        except TableError:
            pass
        bad = {}
        for pos in range(len(table)):
            try:
                validate_table(table.iloc[[pos]], name=table["path"].iloc[pos])
            except TableError as exc:
                bad[pos] = str(exc)
        return bad


def _join_labels(table: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Fill ``table`` from ``labels`` (indexed by image id): header values win."""
    joined = labels.reindex(table["image_id"].to_numpy())
    for col in joined.columns:
        values = joined[col].to_numpy()
        if col not in table.columns:
            table[col] = values
        elif col not in ("image_id", "path", "source"):
            table[col] = table[col].astype(object).where(table[col].notna(), values)
    return table


def _match_report(
    ids: pd.Series, labels: pd.Index, other_ids: list[dict[str, str | None]], id_from: str, name: str
) -> int:
    """Warn when files match no label row, suggesting another ``id_from`` when none did.

    Returns the number of files that matched a label row.
    """
    matched = ids.isin(labels).to_numpy()
    n, k = len(ids), int(matched.sum())
    if k == n:
        return k
    message = (f"{name}: {k} of {n} files matched a label row by image id (id_from={id_from!r}); "
               f"{n - k} did not (e.g. {ids[~matched].tolist()[:3]}) and keep their label columns "
               "missing")
    if k == 0:
        counts = {key: sum(other[key] in labels for other in other_ids)
                  for key in _ID_SUGGEST if key != id_from}
        best = max(counts, key=lambda key: counts[key], default=None)
        if best is not None and counts[best]:
            message += (f". {counts[best]} of {n} files would match by "
                        f"{_ID_SOURCES.get(best, best)}: pass id_from={best!r}")
    # stack: _match_report < read_dicom_dir < its renamed_parameters wrapper < the caller
    warnings.warn(message, DermctxWarning, stacklevel=4)
    return k


@renamed_parameters(directory="path")
def read_dicom_dir(
    path: str | PathLike[str],
    labels: str | PathLike[str] | pd.DataFrame | None = None,
    *,
    id_from: str = "auto",
    recursive: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build a lesion table from the headers of every DICOM file in a folder (no pixel decoding).

    Parameters
    ----------
    path : path
        Folder to scan. Every regular file (names starting with "." skipped) is tried, whatever
        its extension, in sorted path order. (``directory=`` is a deprecated alias.)
    labels : path or DataFrame, optional
        Labels joined by image id: a lesion table, an ISIC 2020 or HAM10000 CSV, or any CSV or
        frame with ``image_id`` (or ``image_name``) and e.g. ``target``, ``diagnosis``. Values
        from the DICOM header win; a label column fills the columns the header lacks or leaves
        missing. Label rows with no DICOM file are ignored; files with no label row keep
        ``target`` missing and are counted in a :class:`~dermctx.errors.DermctxWarning`.
    id_from : str
        Where each file's ``image_id`` (the key the labels join on) comes from:
        ``"auto"`` (the dermctx private image id where the file has one, else SOPInstanceUID),
        ``"dermctx"`` (the private image id only; files without it become errors), ``"stem"``
        (the file name without its extension, e.g. ``ISIC_0152307`` for ``ISIC_0152307.dcm``),
        or the keyword of any DICOM text attribute (e.g. ``"AccessionNumber"``). A file whose
        chosen id is empty becomes an error.
    recursive : bool
        Also scan sub-folders.

    Returns
    -------
    table : DataFrame
        The validated lesion table, one row per readable DICOM image, ``path`` set to its file,
        ``source`` as written (``"dicom"`` for files from elsewhere), plus ``width``, ``height``,
        ``sop_instance_uid`` and ``modality``. With ``labels``, ``table.attrs["labels_matched"]``
        and ``table.attrs["labels_unmatched"]`` count the rows that did and did not match a label
        row; ``table.attrs["id_from"]`` is ``id_from``.
    errors : DataFrame
        The errors table (:func:`dermctx.errors.errors_frame`), one row per file that is not a
        readable DICOM image, has no image id (by ``id_from``) or patient id, has a header value
        outside the table's vocabulary (e.g. PatientAge ``"300Y"``) or repeats an image id;
        ``row`` is the file's position in the scan. ``len(table) + len(errors)`` is the number
        of files scanned.

    Warns
    -----
    DermctxWarning
        With ``labels``, when some files match no label row: how many of how many, naming a few;
        when none match, also which other ``id_from`` would match and how many files (the key is
        never switched silently).

    Raises
    ------
    ImageError
        ``path`` is not a folder (or not a path).
    TableError
        ``id_from`` is not a valid choice, ``labels`` cannot be read or lacks ``image_id``, or the
        joined labels are invalid.

    A file that cannot be read or whose header is damaged or out of range never raises: it is
    a row of ``errors``. Sub-folders that cannot be listed are skipped with a
    :class:`~dermctx.errors.DermctxWarning` naming them.
    """
    id_from, directory = _check_id_from(id_from), _path(path, "a folder of DICOM files")
    require_path(directory, "folder: not a folder of DICOM files", folder=True)
    label_frame, label_name = _read_labels(labels) if labels is not None else (None, "")
    files = scan_files(directory, recursive)
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    other_ids: list[dict[str, str | None]] = []  # the ids by other keys, for the label report
    errors: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row, path in enumerate(files):
        try:
            ds = read_dataset(path, stop_before_pixels=True)
            record = _table_record(ds, path, id_from)
            ids = ({key: _image_id(ds, path, key) for key in _ID_SUGGEST}
                   if label_frame is not None else {})
        except ImageError as exc:
            errors.append(error_record(None, row, str(path), "read_dicom_dir", str(exc)))
            continue
        except Exception as exc:  # pydicom parses lazily: a damaged element raises many kinds
            errors.append(error_record(None, row, str(path), "read_dicom_dir",
                                       f"{path}: unreadable DICOM header ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:200]})"))
            continue
        if record["image_id"] in seen:
            errors.append(error_record(
                record["image_id"], row, str(path), "read_dicom_dir",
                f"{path}: image_id {record['image_id']!r} was already read from {seen[record['image_id']]}",
            ))
            continue
        seen[record["image_id"]] = str(path)
        records.append(record)
        rows.append(row)
        if label_frame is not None:
            other_ids.append(ids)
    table = pd.DataFrame.from_records(records, columns=_HEADER_COLUMNS)
    table["width"] = table["width"].astype("Int64")
    table["height"] = table["height"].astype("Int64")
    bad = _invalid_rows(table)
    for pos, message in bad.items():
        errors.append(error_record(table["image_id"].iloc[pos], rows[pos], table["path"].iloc[pos],
                                   "read_dicom_dir", message))
    keep = [pos for pos in range(len(table)) if pos not in bad]
    table = table.iloc[keep].reset_index(drop=True)
    name, matched = str(directory), 0
    if label_frame is not None:
        name = f"{directory} + {label_name}"
        matched = _match_report(table["image_id"], label_frame.index,
                                [other_ids[pos] for pos in keep], id_from, name)
        table = _join_labels(table, label_frame)
    result = validate_table(table, name=name)
    result.attrs["id_from"] = id_from
    if label_frame is not None:
        result.attrs.update(labels_matched=matched, labels_unmatched=len(result) - matched)
    return result, errors_frame(sorted(errors, key=lambda e: e["row"]))
