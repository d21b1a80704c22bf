"""Tests of dermctx.io.images.load_image: sizes, aspect modes, EXIF, draft decoding, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermctx.errors import DermctxError, ImageError
from dermctx.io.images import ImageCache, colour_constancy, load_image


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _halves(w: int, h: int, left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    """A w x h image: left half one colour, right half another."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = left
    arr[:, w // 2 :] = right
    return Image.fromarray(arr)


def _smooth(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth, lesion-like synthetic RGB image (low-frequency content plus mild noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack(
        [
            150 + 60 * np.sin(6 * xx + 1) * np.cos(4 * yy),
            110 + 50 * np.cos(5 * xx) * np.sin(7 * yy + 2),
            90 + 40 * np.sin(3 * xx + 4 * yy),
        ],
        axis=-1,
    )
    arr += rng.normal(0, 2, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("aspect", ["crop", "pad", "squash"])
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_output_shape_dtype(tmp_path: Path, aspect: str, fmt: str) -> None:
    path = tmp_path / f"a.{fmt}"
    _halves(90, 60).save(path)
    out = load_image(path, 32, aspect=aspect)
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


def test_crop_centre_and_pad_borders(tmp_path: Path) -> None:
    # 300 x 100: red | green | blue thirds. "crop" keeps the green centre only.
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100] = (255, 0, 0)
    arr[:, 100:200] = (0, 255, 0)
    arr[:, 200:] = (0, 0, 255)
    path = tmp_path / "thirds.png"
    Image.fromarray(arr).save(path)

    crop = load_image(path, 50, aspect="crop")
    assert np.all(crop[:, 3:-3, 1] > 200) and np.all(crop[:, 3:-3, [0, 2]] < 50)

    pad = load_image(path, 60, aspect="pad")  # resized to 60 x 20, centred on black
    assert np.all(pad[:19] == 0) and np.all(pad[-19:] == 0)
    assert pad[30, 5, 0] > 200 and pad[30, 30, 1] > 200 and pad[30, 55, 2] > 200

    squash = load_image(path, 60, aspect="squash")
    assert squash[5, 5, 0] > 200 and squash[55, 55, 2] > 200  # all three thirds survive


def test_lesion_table_row_source(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _halves(40, 40).save(path)
    row = pd.DataFrame({"image_id": ["x"], "patient_id": ["p"], "path": [str(path)]}).iloc[0]
    np.testing.assert_array_equal(load_image(row, 16), load_image(path, 16))
    np.testing.assert_array_equal(load_image({"path": str(path)}, 16), load_image(path, 16))


def test_exif_orientation_honoured(tmp_path: Path) -> None:
    # stored wide (80 x 40, red left / blue right), tagged orientation 6 = "rotate 90 CW to view":
    # the upright image is tall with red on top and blue at the bottom.
    im = _halves(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as check:
        assert check.getexif()[0x0112] == 6

    out = load_image(path, 40, aspect="pad")  # upright 40 x 80 -> 20 x 40, centred
    assert np.all(out[:, :8] == 0) and np.all(out[:, -8:] == 0)  # tall: black left and right
    assert out[5, 20, 0] > 200 and out[5, 20, 2] < 60  # red on top
    assert out[35, 20, 2] > 200 and out[35, 20, 0] < 60  # blue at the bottom


def test_large_jpeg_is_draft_decoded_and_close_to_full_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(_smooth(1600, 1200)).save(path, quality=92)
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC))

    decoded_sizes = []
    original_load = Image.Image.load

    def spy_load(self):  # records the size the JPEG decoder actually produced
        result = original_load(self)
        if getattr(self, "format", None) == "JPEG":
            decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(Image.Image, "load", spy_load)
    fast = load_image(path, 64, aspect="squash")
    assert decoded_sizes and max(decoded_sizes)[0] == 200  # 1/8 scale: 200 x 150 >= 2 x 64
    assert _psnr(fast, full) > 35.0


def test_colour_constancy(tmp_path: Path) -> None:
    arr = _smooth(64, 48)
    cast = np.clip(arr.astype(np.float32) * [1.3, 1.0, 0.7], 0, 255).astype(np.uint8)
    path = tmp_path / "cast.png"
    Image.fromarray(cast).save(path)

    grey = load_image(path, 48, aspect="squash", colour_constancy="grey_world")
    means = grey.reshape(-1, 3).astype(float).mean(0)
    assert np.ptp(means) < 3.0  # grey world: equal channel means
    assert np.ptp(cast.reshape(-1, 3).mean(0)) > 40  # ... which the input did not have

    sog = colour_constancy(cast, "shades_of_grey")
    p6 = np.power(np.mean(sog.astype(float) ** 6, axis=(0, 1)), 1 / 6)
    assert np.ptp(p6) < 0.03 * p6.mean()  # shades of grey: equal Minkowski-6 norms
    uniform = np.full((8, 8, 3), (200, 100, 50), dtype=np.uint8)
    out = colour_constancy(uniform, "shades_of_grey")
    assert np.ptp(out[0, 0].astype(int)) <= 1  # a uniformly tinted image becomes grey
    assert np.array_equal(colour_constancy(np.zeros((4, 4, 3), np.uint8)), np.zeros((4, 4, 3)))


def test_truncated_and_unreadable_files_raise_image_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_smooth(200, 150)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")

    for bad in (truncated, garbage):
        with pytest.raises(ImageError, match=bad.name):
            load_image(bad, 32)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg", 32)
    with pytest.raises(ImageError, match=r"image_id 'x'.*path"):
        load_image(pd.Series({"image_id": "x", "path": None}), 32)
    string_row = pd.DataFrame({"image_id": ["y"], "path": pd.array([None], dtype="string")}).iloc[0]
    with pytest.raises(ImageError, match=r"image_id 'y'.*no 'path'"):
        load_image(string_row, 32)


def test_bad_arguments(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    _halves(20, 20).save(path)
    with pytest.raises(ImageError, match="aspect"):
        load_image(path, 16, aspect="stretch")  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="colour_constancy"):
        load_image(path, 16, colour_constancy="retinex")
    with pytest.raises(DermctxError, match="size"):
        load_image(path, 0)
    with pytest.raises(ImageError, match="expected a path"):
        load_image(42, 16)  # type: ignore[arg-type]


def test_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((10, 10), 128, np.uint8)).save(grey)
    assert np.all(load_image(grey, 8) == 128)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((10, 10, 4), (10, 20, 30, 255), np.uint8)).save(rgba)
    assert tuple(load_image(rgba, 8)[4, 4]) == (10, 20, 30)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.linspace(0, 65535, 100).reshape(10, 10).astype(np.uint16)).save(deep)
    out = load_image(deep, 10)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_dicom_source_uses_read_dicom(tmp_path: Path) -> None:
    dicom = pytest.importorskip("dermctx.io.dicom", reason="dermctx.io.dicom not available")
    src = tmp_path / "src.jpg"
    Image.fromarray(_smooth(64, 48)).save(src, quality=95)
    row = {"image_id": "x", "patient_id": "p"}
    dcm = dicom.write_dicom(src, row, tmp_path / "x.dcm")
    ref = load_image(src, 48, aspect="squash")  # 64 x 48 -> 48 x 48: no draft scaling
    np.testing.assert_array_equal(load_image(dcm, 48, aspect="squash"), ref)
    bare = tmp_path / "no_suffix"  # recognised by its DICM magic, not its name
    bare.write_bytes(Path(dcm).read_bytes())
    np.testing.assert_array_equal(load_image(bare, 48, aspect="squash"), ref)
    not_dicom = tmp_path / "fake.dcm"
    not_dicom.write_bytes(b"\0" * 200)
    with pytest.raises(ImageError, match=r"fake\.dcm"):
        load_image(not_dicom, 16)


def test_real_isic_original_squash_close_to_full_decode(isic_images: Path) -> None:
    manifest = pd.read_csv(isic_images / "manifest.csv")
    big = manifest.sort_values("bytes").iloc[len(manifest) // 2]  # a typical original
    path = isic_images / big["file"]
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB").resize((128, 128), Image.Resampling.BICUBIC))
    fast = load_image(path, 128, aspect="squash")
    assert _psnr(fast, full) >= 40.0


def test_a_long_strip_is_refused_not_resized_to_gigabytes(tmp_path):
    from PIL import Image

    from dermctx import ImageError, load_image

    path = tmp_path / "strip.png"
    Image.new("RGB", (3000, 1)).save(path)
    with pytest.raises(ImageError, match=r"strip\.png: 3000 x 1 pixels.*aspect='pad'"):
        load_image(path, 512)
    assert load_image(path, 64, aspect="pad").shape == (64, 64, 3)


def test_image_cache_gives_the_decoded_image_and_decodes_each_file_once(tmp_path, monkeypatch):
    import dermctx.io.images as images

    path = tmp_path / "a.jpg"
    Image.fromarray(_smooth(300, 200)).save(path, quality=90)
    cache = ImageCache(tmp_path / "cache")
    first = cache.load(path, 64, colour_constancy="grey_world")
    np.testing.assert_array_equal(first, load_image(path, 64, colour_constancy="grey_world"))
    assert len(list((tmp_path / "cache").rglob("*.rgb"))) == 1
    calls = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda *a, **k: calls.append(a) or real(*a, **k))
    np.testing.assert_array_equal(cache.load(path, 64, colour_constancy="grey_world"), first)
    assert calls == []  # read from the cache
    cache.load(path, 64)  # other settings: decoded and kept apart
    cache.load(path, 32, colour_constancy="grey_world")
    assert len(calls) == 2 and len(list((tmp_path / "cache").rglob("*.rgb"))) == 3
    # a changed file is decoded afresh, never served from the old entry
    Image.fromarray(255 - _smooth(300, 200)).save(path, quality=95)
    np.testing.assert_array_equal(cache.load(path, 64, colour_constancy="grey_world"),
                                  real(path, 64, colour_constancy="grey_world"))
    assert len(calls) == 3
    # damaged entries (emptied, truncated, pixels zeroed at the same length, another image's entry
    # copied over it) are decoded again and rewritten, never served
    entries = sorted((tmp_path / "cache").rglob("*.rgb"))
    expected = real(path, 64, colour_constancy="grey_world")
    entry = next(e for e in entries if e.stat().st_size == 64 * 64 * 3 + 20 and e.read_bytes()[:-20] == expected.tobytes())
    other = next(e for e in entries if e != entry and e.stat().st_size == entry.stat().st_size)
    damages = [b"", entry.read_bytes()[:1000], bytes(64 * 64 * 3) + entry.read_bytes()[-20:], other.read_bytes()]
    for k, damaged in enumerate(damages):
        entry.write_bytes(damaged)
        np.testing.assert_array_equal(cache.load(path, 64, colour_constancy="grey_world"), expected)
        assert len(calls) == 4 + k
    np.testing.assert_array_equal(cache.load(path, 64, colour_constancy="grey_world"), expected)
    assert len(calls) == 3 + len(damages)  # rewritten: read from the cache again


def test_image_cache_decodes_a_file_edited_in_place_with_its_modification_time_restored(tmp_path):
    import os

    path = tmp_path / "a.tif"  # uncompressed: an edit of pixel bytes keeps the file's size
    Image.fromarray(_smooth(120, 80)).save(path)
    cache = ImageCache(tmp_path / "cache")
    before = cache.load(path, 32)
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 3000] = bytes(3000)  # as an editor that keeps the size...
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and restores the modification time
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    after = cache.load(path, 32)
    np.testing.assert_array_equal(after, load_image(path, 32))
    assert not np.array_equal(after, before)


def test_image_cache_decodes_afresh_when_the_decoding_settings_change(tmp_path, monkeypatch):
    import dermctx.io.images as images

    path = tmp_path / "a.jpg"
    Image.fromarray(_smooth(1200, 800)).save(path, quality=90)
    cache = ImageCache(tmp_path / "cache")
    before = cache.load(path, 64)
    monkeypatch.setattr(images, "DRAFT_OVERSAMPLE", 8.0)  # a finer JPEG draft: other pixels
    fresh = load_image(path, 64)
    assert not np.array_equal(fresh, before)
    np.testing.assert_array_equal(cache.load(path, 64), fresh)


def test_image_cache_says_when_its_folder_cannot_be_written(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_smooth(60, 40)).save(path)
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(OSError, match=r"image cache .*afile: cannot write there"):
        ImageCache(tmp_path / "afile").load(path, 16)


def test_image_cache_keeps_load_images_errors_and_caches_no_failure(tmp_path):
    cache = ImageCache(tmp_path / "cache")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    for source, size in ((bad, 64), (tmp_path / "missing.jpg", 64), (bad, 0), (bad, True)):
        with pytest.raises(ImageError) as cached:
            cache.load(source, size)
        with pytest.raises(ImageError) as plain:
            load_image(source, size)
        assert str(cached.value) == str(plain.value)
    assert not list((tmp_path / "cache").rglob("*.rgb"))
