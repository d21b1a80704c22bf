"""A lesion table from a folder of images: what a clinic has for a patient.

:func:`table_from_folder` turns a folder of dermoscopy images (JPEG, PNG, TIFF, DICOM...) into a
lesion table, one row per image, with ``image_id`` from the file name without its extension:

* **one patient per folder** (default): the images directly in the folder are one patient's,
  named by ``patient_id`` or, without it, by the folder's name;
* **one patient per sub-folder** (``recursive=True``): each sub-folder is one patient, named by
  the sub-folder, holding every image below it;
* **DICOM files** carry their own patient id, age, sex and site in their headers; a value given
  as an argument that disagrees with a header is refused, naming the file.

Sites come from the DICOM headers or from an optional table (CSV or Parquet: an image id or file
name and a site per row); a table that names images the folder does not hold, or misses images
it does hold, is refused listing both, never matched by guesswork.

What is read: every file except hidden ones (names starting with ".") and those whose extension
says they are not images (:data:`NOT_IMAGE_SUFFIXES`: ``.txt``, ``.csv``, ``.json``, ``.pdf``...;
listed in ``table.attrs["skipped"]``). Any other file is tried as an image: only its header is
read here (size and, for DICOM, the metadata), and a file that cannot be read becomes a row of
the errors table naming it, never silence. Pixels are decoded later, by whoever reads the images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermctx.errors import (
    DermctxError,
    ImageError,
    TableError,
    error_record,
    errors_frame,
)
from dermctx.io.images import is_dicom_file
from dermctx.table import SITES, normalise_site, validate_table

__all__ = ["NOT_IMAGE_SUFFIXES", "table_from_folder"]

#: Extensions (lower case) of files that are clearly not images: skipped, and listed in
#: ``table.attrs["skipped"]``. Any other file, with any extension or none, is tried as an image.
NOT_IMAGE_SUFFIXES: frozenset[str] = frozenset({
    ".txt", ".csv", ".tsv", ".json", ".md", ".rst", ".html", ".htm", ".xml", ".pdf", ".doc",
    ".docx", ".xls", ".xlsx", ".ods", ".odt", ".rtf", ".log", ".ini", ".cfg", ".yaml", ".yml",
    ".toml", ".parquet", ".pq", ".zip", ".gz", ".tar", ".7z", ".rar", ".py", ".sh", ".bat",
    ".db", ".sqlite", ".lnk", ".url", ".mp3", ".wav", ".mp4", ".mov", ".avi",
    ".safetensors", ".pth", ".pt", ".pkl",
})
_SITE_ID_COLUMNS = ("image_id", "image_name", "image", "file", "filename", "file_name", "isic_id")
_SITE_COLUMNS = ("site", "anatom_site_general_challenge", "anatom_site_general", "localization",
                 "anatomic_site")
_SEX_WORDS = {"male": "male", "m": "male", "female": "female", "f": "female"}
_STAGE = "table_from_folder"


@dataclass
class ImageScan:
    """A lesion table of image files, its errors, each row's input position and skipped files."""

    table: pd.DataFrame
    errors: pd.DataFrame
    rows: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def table_from_folder(
    folder: str | PathLike[str],
    *,
    patient_id: str | None = None,
    sites: str | PathLike[str] | pd.DataFrame | Mapping[str, Any] | None = None,
    age: float | None = None,
    sex: str | None = None,
    recursive: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A lesion table of the images in a folder: one patient per folder, per sub-folder, or per
    DICOM header.

    Parameters
    ----------
    folder : path
        A folder of images (JPEG, PNG, TIFF, BMP, WebP, DICOM...).
    patient_id : str, optional
        The patient of every image (``recursive=False`` only). Default: the DICOM header's
        ``PatientID``, else the folder's name.
    sites : path, DataFrame or mapping, optional
        Each image's anatomic site: a CSV/Parquet file or DataFrame with an id column
        (``image_id``, ``image_name``, ``file``...: the file name with or without its extension)
        and a site column (``site``, ``anatom_site_general_challenge``, ``localization``...), or
        a mapping id -> site. Raw terms ("anterior torso", "back") are mapped to the table's
        sites; an empty cell is a missing site. It must name every image of the folder once and
        nothing else.
    age : float, optional
        The patient's age in years, [0, 120], for every image.
    sex : {"male", "female", "m", "f"}, optional
        The patient's sex, for every image.
    recursive : bool
        False (default): the images directly in ``folder`` are one patient (an image in a
        sub-folder is not read: it becomes an error row naming it). True: each sub-folder of ``folder`` is one patient named by
        the sub-folder, with every image at any depth below it; an image directly in
        ``folder`` then belongs to no patient and is an error row.

    Returns
    -------
    table : DataFrame
        The validated lesion table (:func:`dermctx.validate_table`), one row per readable image
        in sorted path order: ``image_id`` (file name without extension), ``patient_id``,
        ``lesion_id`` (= ``image_id``), ``age``, ``sex``, ``site``, ``path``, ``source``
        (``"folder"`` or ``"dicom"``), ``width`` and ``height`` (pixels, from the file's header).
        ``table.attrs["skipped"]`` lists the files left out as not images.
    errors : DataFrame
        The errors table (:func:`dermctx.errors_frame`): one row per file tried that is not a
        readable image or whose DICOM header is out of range; ``row`` is the file's position
        among the files tried. ``len(table) + len(errors)`` is the number of files tried.

    Raises
    ------
    ImageError
        ``folder`` is not a folder.
    TableError
        Naming the file(s): no image file in the folder; two files with one image id (the same
        name with two extensions); a ``patient_id``, ``age``, ``sex`` or site that disagrees
        with a DICOM header; a ``sites`` table that names images not in the folder or misses
        images of it, repeats an image, or holds a site outside the vocabulary; ``patient_id``
        with ``recursive=True``; an ``age`` or ``sex`` outside the vocabulary.

    Examples
    --------
    >>> table, errors = dermctx.table_from_folder("clinic/IP_0001", age=45, sex="female",
    ...                                           sites="clinic/IP_0001/sites.csv")  # doctest: +SKIP
    """
    scan = scan_folder(folder, patient_id=patient_id, sites=sites, age=age, sex=sex, recursive=recursive)
    return scan.table, scan.errors


def scan_folder(folder: Any, *, patient_id: str | None, sites: Any, age: Any, sex: Any,
                 recursive: bool) -> ImageScan:
    """:func:`table_from_folder`, keeping each row's input position."""
    from dermctx.io._common import require_path

    if not isinstance(folder, (str, PathLike)):
        raise ImageError(f"expected a folder of images (a path), got {type(folder).__name__}")
    folder = Path(folder)
    require_path(folder, "folder (expected a folder of one patient's images)", folder=True)
    if not isinstance(recursive, (bool, np.bool_)):
        raise TableError(f"recursive={recursive!r}; expected True or False")
    if recursive and patient_id is not None:
        raise TableError(f"{folder}: patient_id={patient_id!r} with recursive=True; each sub-folder "
                         "is then its own patient, named by the sub-folder")
    files: list[tuple[Path, str | None]] = []  # (file, the patient its place in the folder gives)
    top, subfolders = _list(folder)
    unread: list[Path] = []  # images in sub-folders of a one-patient folder: error rows, never silence
    if recursive:
        files += [(p, None) for p in top]
        for sub in subfolders:
            files += [(p, sub.name) for p in _walk(sub)]
    else:
        files += [(p, folder.name) for p in top]
        unread = [p for sub in subfolders for p in _walk(sub)]
    return _scan_files(files, name=str(folder), patient_id=patient_id, sites=sites, age=age, sex=sex,
                       unread=unread,
                       where=("it holds only sub-folders: one folder is one patient's images (score a "
                              "sub-folder, or read one patient per sub-folder with recursive=True)"
                              if subfolders and not top and not recursive else ""))


def scan_paths(
    paths: Sequence[str | PathLike[str]],
    *,
    patient_id: str | None = None,
    sites: Any = None,
    age: float | None = None,
    sex: str | None = None,
) -> ImageScan:
    """A lesion table of a list of image files of one patient (in the order given); see
    :func:`table_from_folder`. A file that is not DICOM needs ``patient_id``; a path that is not
    an existing file raises :class:`ImageError` naming it."""
    if isinstance(paths, (str, PathLike)) or not isinstance(paths, Sequence):
        raise ImageError(f"expected a folder or a list of image paths, got {type(paths).__name__}")
    files: list[tuple[Path, str | None]] = []
    for p in paths:
        if not isinstance(p, (str, PathLike)):
            raise ImageError(f"expected image paths, got a {type(p).__name__} ({str(p)[:60]!r})")
        from dermctx.io._common import require_path

        if Path(p).is_dir():
            raise ImageError(f"{p}: a folder in a list of image files; give one folder, or image files")
        require_path(Path(p), "image file", folder=False)
        files.append((Path(p), None))
    return _scan_files(files, name="the image list", patient_id=patient_id, sites=sites, age=age,
                       sex=sex, explicit=True)


def _list(folder: Path) -> tuple[list[Path], list[Path]]:
    """The visible files and sub-folders directly in ``folder``, sorted."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise ImageError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc
    files, dirs = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            dirs.append(Path(entry.path))
        elif entry.is_file():
            files.append(Path(entry.path))
    return files, dirs


def _walk(folder: Path) -> list[Path]:
    """Every visible file below ``folder``, sorted by path."""
    from dermctx.io.dicom import scan_files

    return scan_files(folder, recursive=True)


def _check_age_sex(age: Any, sex: Any) -> tuple[float | None, str | None]:
    if age is not None:
        if isinstance(age, bool) or not isinstance(age, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(float(age)) and 0 <= float(age) <= 120):
            raise TableError(f"age={age!r}; expected the patient's age in years, a number in [0, 120]")
        age = float(age)
    if sex is not None:
        word = _SEX_WORDS.get(str(sex).strip().lower()) if isinstance(sex, str) else None
        if word is None:
            raise TableError(f"sex={sex!r}; expected 'male' or 'female' (or 'm', 'f')")
        sex = word
    return age, sex


def _read_sites(sites: Any) -> tuple[dict[str, str | None], str]:
    """Site per image id or file name, and how to name the sites table in messages."""
    if isinstance(sites, Mapping):
        frame, name = pd.DataFrame({"image_id": list(sites), "site": list(sites.values())}), "sites"
    else:
        from dermctx.io._common import read_csv_frame

        frame, name = read_csv_frame(sites, id_columns=_SITE_ID_COLUMNS, what="sites table")
    id_col = next((c for c in _SITE_ID_COLUMNS if c in frame.columns), None)
    site_col = next((c for c in _SITE_COLUMNS if c in frame.columns), None)
    if id_col is None or site_col is None:
        raise TableError(f"{name}: expected an image id column (one of {list(_SITE_ID_COLUMNS)}) and a "
                         f"site column (one of {list(_SITE_COLUMNS)}); found columns {list(frame.columns)[:20]}")
    keys = frame[id_col].astype(object).map(lambda v: "" if v is None or pd.isna(v) else str(v).strip())
    blank = (keys == "").to_numpy()
    if blank.any():
        raise TableError(f"{name}: column {id_col!r} is empty at row(s) {np.flatnonzero(blank)[:5].tolist()}; "
                         "every row names one image")
    dup = keys.duplicated(keep=False).to_numpy()
    if dup.any():
        raise TableError(f"{name}: image(s) {sorted(set(keys[dup]))[:5]} appear on several rows; one row per image")
    site, _ = normalise_site(frame[site_col].astype(object).where(frame[site_col].notna(), None))
    site = site.map(lambda v: None if v is None or str(v).strip().lower() in ("", "unknown", "nan") else v)
    bad = (site.notna() & ~site.isin(SITES)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"{name}: row {i} (image {keys.iloc[i]!r}) has site {frame[site_col].iloc[i]!r}; "
                         f"expected one of {list(SITES)}, a term such as 'anterior torso', or empty")
    return dict(zip(keys, site, strict=True)), name


def _match_sites(sites: dict[str, str | None], name: str, files: list[Path]) -> list[str | None]:
    """Each file's site from the sites table (by file name, or by name without extension)."""
    found: list[str | None] = []
    used: set[str] = set()
    missing: list[str] = []
    for path in files:
        key = path.name if path.name in sites else path.stem if path.stem in sites else None
        if key is None:
            missing.append(path.name)
            found.append(None)
        else:
            used.add(key)
            found.append(sites[key])
    unknown = [k for k in sites if k not in used]
    if missing or unknown:
        parts = []
        if unknown:
            parts.append(f"names {len(unknown)} image(s) not in the folder ({unknown[:5]})")
        if missing:
            parts.append(f"has no row for {len(missing)} image(s) of the folder ({missing[:5]})")
        raise TableError(f"{name}: {' and '.join(parts)}; give one row per image (an empty site where "
                         "it is unknown)")
    return found


def _agree(header: Any, given: Any, what: str, path: Path) -> Any:
    """The header's value, or the given one; refuse a given value that contradicts the header."""
    missing = header is None or (isinstance(header, float) and math.isnan(header))
    if missing:
        return given
    if given is not None:
        differs = abs(float(header) - float(given)) >= 1 if what == "age" else header != given
        if differs:
            raise TableError(f"{path}: its DICOM header gives {what} {header!r}, but {what} {given!r} was "
                             f"given; this file is not the stated patient's, or the {what} is wrong")
    return header


def _not_image(path: Path) -> bool:
    """Hidden files and clearly-not-image extensions (:data:`NOT_IMAGE_SUFFIXES`)."""
    return path.name.startswith(".") or path.suffix.lower() in NOT_IMAGE_SUFFIXES


def _scan_files(files: list[tuple[Path, str | None]], *, name: str, patient_id: Any, sites: Any, age: Any,
                sex: Any, where: str = "", explicit: bool = False, unread: Sequence[Path] = ()) -> ImageScan:
    """The lesion table of ``files`` (each with the patient its folder gives, or None); the image
    files of ``unread`` (in sub-folders of a one-patient folder) become error rows."""
    from PIL import Image

    from dermctx.io.dicom import header_record, read_dataset

    if patient_id is not None and (not isinstance(patient_id, str) or not patient_id.strip()):
        raise TableError(f"patient_id={patient_id!r}; expected the patient's id (text)")
    age, sex = _check_age_sex(age, sex)
    is_skipped = [_not_image(p) for p, _ in files]
    skipped = [str(p) for (p, _), s in zip(files, is_skipped, strict=True) if s]
    tried = [f for f, s in zip(files, is_skipped, strict=True) if not s]
    if not tried:
        extra = f" ({len(skipped)} file(s) skipped as not images, e.g. {Path(skipped[0]).name})" if skipped else ""
        raise TableError(f"{name}: no image files{extra}" + (f"; {where}" if where else ""))
    by_id: dict[str, Path] = {}
    for path, _ in tried:
        if path.stem in by_id:
            raise TableError(f"{by_id[path.stem]} and {path}: two files with image id {path.stem!r} (the "
                             "same name with two extensions); keep one, or rename one")
        by_id[path.stem] = path
    site_of: list[str | None] = [None] * len(tried)
    if sites is not None:
        site_map, site_name = _read_sites(sites)
        site_of = _match_sites(site_map, site_name, [p for p, _ in tried])

    records, rows, errors = [], [], []
    for row, ((path, owner), site) in enumerate(zip(tried, site_of, strict=True)):
        record: dict[str, Any] = {"image_id": path.stem, "path": str(path), "site": site}
        try:
            if not path.is_file():
                raise ImageError(f"{path}: no such file")
            if is_dicom_file(path):
                head = header_record(read_dataset(path, stop_before_pixels=True), path, "stem")
                record.update(
                    patient_id=_agree(head["patient_id"], patient_id, "patient id", path) or owner,
                    age=_agree(head["age"], age, "age", path), sex=_agree(head["sex"], sex, "sex", path),
                    site=_agree(head["site"], site, "site", path),
                    width=head["width"], height=head["height"], source="dicom")
            else:
                with Image.open(path) as im:  # the header only: size and format
                    record.update(width=im.width, height=im.height)
                record.update(patient_id=patient_id or owner, age=age, sex=sex, source="folder")
        except TableError:
            raise
        except DermctxError as exc:
            errors.append(error_record(path.stem, row, str(path), _STAGE, str(exc)))
            continue
        except Exception as exc:  # Pillow raises many kinds on a file that is not an image
            errors.append(error_record(path.stem, row, str(path), _STAGE,
                                       f"{path}: not a readable image ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:200]}); expected a JPEG, PNG, "
                                       "TIFF or DICOM file"))
            continue
        if record["patient_id"] is None:
            if explicit:  # a list of files: whose they are is the caller's to say
                raise TableError(f"{path}: no patient id (not a DICOM file with a PatientID); pass "
                                 "patient_id (CLI: --patient-id)")
            errors.append(error_record(path.stem, row, str(path), _STAGE,
                                       f"{path}: the image is directly in {name}, whose sub-folders are the "
                                       "patients; move it into its patient's sub-folder"))
            continue
        records.append(record)
        rows.append(row)
    for row, path in enumerate((p for p in unread if not _not_image(p)), start=len(tried)):
        errors.append(error_record(path.stem, row, str(path), _STAGE,
                                   f"{path}: not read: it is in the sub-folder {path.parent.name!r} of {name}, "
                                   "and only the images directly in the folder are this patient's; move it "
                                   "up, or score that sub-folder on its own"))
    columns = ["image_id", "patient_id", "age", "sex", "site", "path", "width", "height", "source"]
    table = pd.DataFrame.from_records(records, columns=columns)
    table["lesion_id"] = table["image_id"]
    for col in ("width", "height"):
        table[col] = table[col].astype("Int64")
    table["age"] = table["age"].astype(float)
    table = validate_table(table, name=name)
    table.attrs["skipped"] = skipped
    return ImageScan(table, errors_frame(errors), rows, skipped)
