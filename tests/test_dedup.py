"""Duplicate detection: exact and near copies of small synthetic textured images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageOps

from dermctx.dedup import (
    CROP_LEVELS,
    DIHEDRAL,
    PAIR_COLUMNS,
    auto_bands,
    duplicate_groups,
    find_duplicates,
    image_hashes,
    search_hashes,
)
from dermctx.errors import DermctxError, TableError


def _texture(seed: int, w: int = 200, h: int = 150) -> Image.Image:
    """A smooth random colour texture with a dark blob: distinct for distinct seeds."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((9, 12, 3)) * 255).astype(np.uint8))
    arr = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    blob = np.exp(-(((yy - cy) / (0.2 * h)) ** 2 + ((xx - cx) / (0.15 * w)) ** 2))
    arr = arr * (1 - 0.7 * blob[..., None]) + rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _crop(im: Image.Image, frac: float) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * frac), round(h * frac)
    return im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


ALTERATIONS = {
    "jpeg70": lambda im: im,  # saved at quality 70 below
    "resize50": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "crop90": lambda im: _crop(im, 0.9),
    "crop86": lambda im: _crop(im, 0.86),
    "flip_lr": ImageOps.mirror,
    "flip_ud": ImageOps.flip,
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "bright110": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
    "bright90": lambda im: ImageEnhance.Brightness(im).enhance(0.9),
}


@pytest.fixture(scope="module")
def image_table(tmp_path_factory) -> pd.DataFrame:
    """6 distinct originals (PNG); exact copies of o0; every alteration of o1; a bad file; no path."""
    d = tmp_path_factory.mktemp("dedup")
    rows = []
    originals = {}
    for i in range(6):
        im = _texture(i)
        originals[i] = im
        im.save(d / f"o{i}.png")
        rows.append((f"o{i}", str(d / f"o{i}.png")))
    originals[0].save(d / "o0_copy.bmp")  # same pixels, other bytes and format
    rows.append(("o0_copy", str(d / "o0_copy.bmp")))
    # a JPEG, the same JPEG with a comment segment (other bytes), and its decoded pixels as PNG
    _texture(10).save(d / "j.jpg", quality=90)
    raw = (d / "j.jpg").read_bytes()
    (d / "j_comment.jpg").write_bytes(raw[:2] + b"\xff\xfe\x00\x07hello" + raw[2:])
    Image.open(d / "j.jpg").save(d / "j_pixels.png")
    rows += [("j", str(d / "j.jpg")), ("j_comment", str(d / "j_comment.jpg")),
             ("j_pixels", str(d / "j_pixels.png"))]
    for name, alter in ALTERATIONS.items():
        path = d / f"o1_{name}.jpg"
        alter(originals[1]).save(path, quality=70 if name == "jpeg70" else 92)
        rows.append((f"o1_{name}", str(path)))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows.append(("broken", str(d / "broken.jpg")))
    rows.append(("no_path", None))
    return pd.DataFrame(rows, columns=["image_id", "path"])


@pytest.fixture(scope="module")
def found(image_table):
    return find_duplicates(image_table, n_jobs=2, progress=False)


def _pair_set(pairs: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(pairs["image_id_1"], pairs["image_id_2"], strict=True))


def test_pairs_frame_contract(found):
    pairs, _ = found
    assert list(pairs.columns) == list(PAIR_COLUMNS)
    assert (pairs["image_id_1"] < pairs["image_id_2"]).all()
    assert not pairs.duplicated(["image_id_1", "image_id_2"]).any()
    assert set(pairs["kind"]) <= {"exact", "near"}
    assert pairs["distance"].between(0, 1).all()


def test_exact_copy_found_as_exact(found):
    pairs, _ = found
    row = pairs[(pairs["image_id_1"] == "o0") & (pairs["image_id_2"] == "o0_copy")]
    assert len(row) == 1
    assert row["kind"].iat[0] == "exact" and row["method"].iat[0] == "pixels"
    assert row["distance"].iat[0] == 0.0
    # the JPEG trio: same pixels across bytes and formats
    exact = pairs[pairs["kind"] == "exact"]
    assert _pair_set(exact) == {("o0", "o0_copy"), ("j", "j_comment"), ("j", "j_pixels"),
                                ("j_comment", "j_pixels")}


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
def test_each_alteration_found_as_near(found, alteration):
    pairs, _ = found
    hit = pairs[(pairs["image_id_1"] == "o1") & (pairs["image_id_2"] == f"o1_{alteration}")]
    assert len(hit) == 1, f"o1_{alteration} not paired with o1"
    assert hit["kind"].iat[0] == "near"


def test_distinct_images_not_paired(found):
    pairs, _ = found
    group = {"o0": 0, "o0_copy": 0, **{f"o{i}": i for i in range(1, 6)},
             "j": 10, "j_comment": 10, "j_pixels": 10}
    group.update({f"o1_{a}": 1 for a in ALTERATIONS})
    g1 = pairs["image_id_1"].map(group)
    g2 = pairs["image_id_2"].map(group)
    assert (g1 == g2).all(), pairs[g1 != g2]
    # the altered copies of o1 are also paired with one another (same photograph)
    n_o1 = 1 + len(ALTERATIONS)
    assert ((g1 == 1).sum()) >= n_o1 - 1


def test_corrupt_and_missing_files_go_to_errors(found, image_table):
    pairs, errors = found
    assert list(errors.columns) == ["image_id", "row", "path", "stage", "message"]
    by_id = errors.set_index("image_id")
    assert by_id.loc["broken", "stage"] == "decode"
    assert "broken.jpg" in by_id.loc["broken", "message"]
    assert by_id.loc["no_path", "stage"] == "path"
    assert by_id.loc["broken", "row"] == image_table.index[image_table["image_id"] == "broken"][0]
    # every input row is hashed or in errors, and the run went on
    assert pairs.attrs["n_images"] + len(errors) == len(image_table)
    assert pairs.attrs["n_rows"] == len(image_table)
    assert len(pairs) > 0


def test_near_false_reports_exact_only(image_table):
    pairs, errors = find_duplicates(image_table, near=False, n_jobs=1, progress=False)
    assert _pair_set(pairs) == {("o0", "o0_copy"), ("j", "j_comment"), ("j", "j_pixels"),
                                ("j_comment", "j_pixels")}
    assert set(pairs["kind"]) == {"exact"}
    assert len(errors) == 2


def test_threshold_zero_keeps_only_identical_hashes(image_table):
    pairs, _ = find_duplicates(image_table, threshold=0.0, n_jobs=1, progress=False)
    assert (pairs["distance"] == 0).all()
    assert ("o0", "o0_copy") in _pair_set(pairs)


def test_dihedral_hashes_match_transformed_images():
    grey = np.asarray(_texture(3).convert("L"), dtype=np.float32)
    grey = grey[:, :150]  # square, so that transposes keep the thumbnail grid exact
    base = image_hashes(grey)
    transforms = {
        "identity": grey,
        "flip_lr": grey[:, ::-1],
        "flip_ud": grey[::-1, :],
        "rot180": grey[::-1, ::-1],
        "transpose": grey.T,
        "rot90_cw": np.rot90(grey, k=-1),
        "rot90_ccw": np.rot90(grey, k=1),
        "transverse": np.rot90(grey, k=2).T,
    }
    for k, name in enumerate(DIHEDRAL):
        moved = image_hashes(np.ascontiguousarray(transforms[name]))
        assert moved["query"][0] == base["query"][k], name
        assert (moved["query_fine"][0] == base["query_fine"][k]).all(), name
    assert base["index"].shape == (len(CROP_LEVELS),)
    assert base["index"][0] == base["query"][0]  # full view, upright


def test_search_matches_brute_force_within_guarantee():
    rng = np.random.default_rng(0)
    index = rng.integers(0, 2**63, size=3000, dtype=np.int64).astype(np.uint64)
    query = rng.integers(0, 2**63, size=500, dtype=np.int64).astype(np.uint64)
    # plant neighbours at 0..3 bits of random index entries
    for q in range(0, 500, 2):
        j = int(rng.integers(0, len(index)))
        flips = rng.choice(64, size=int(rng.integers(0, 4)), replace=False)
        query[q] = index[j] ^ np.uint64(int(sum(1 << int(b) for b in flips)))
    qpos, ipos, dist = search_hashes(query, index, radius=3, bands=4)
    brute = np.bitwise_count(query[:, None] ^ index[None, :])
    bq, bi = np.nonzero(brute <= 3)
    assert set(zip(qpos.tolist(), ipos.tolist(), strict=True)) == set(zip(bq.tolist(), bi.tolist(), strict=True))
    assert (dist == brute[qpos, ipos]).all()
    assert len(qpos) >= 250


def test_auto_bands_widens_bands_with_more_hashes():
    assert auto_bands(4 * 1_000) == 5
    assert auto_bands(4 * 400_000) == 3
    assert all(3 <= auto_bands(n) <= 6 for n in (0, 1, 10, 10**9))


def test_search_rejects_bad_bands():
    with pytest.raises(DermctxError, match="bands"):
        search_hashes(np.zeros(2, np.uint64), np.zeros(2, np.uint64), radius=1, bands=1)


def test_bad_tables_raise(image_table):
    with pytest.raises(TableError, match="path"):
        find_duplicates(image_table[["image_id"]], progress=False)
    twice = pd.concat([image_table.iloc[:2], image_table.iloc[:1]], ignore_index=True)
    with pytest.raises(TableError, match="duplicate"):
        find_duplicates(twice, progress=False)
    with pytest.raises(DermctxError, match="threshold"):
        find_duplicates(image_table, threshold=3, progress=False)


def test_table_without_any_image_path_is_refused(image_table):
    # a table read without image_dir= has a path column that is empty on every row: comparing its
    # pixels would return no pairs and one error per row, which reads like "no duplicates"
    no_paths = image_table.assign(path=None)
    with pytest.raises(TableError, match=r"'path' is empty on every row.*image_dir="):
        find_duplicates(no_paths, progress=False)
    # comparing embeddings needs no path
    emb = no_paths.assign(emb_0=1.0, emb_1=np.arange(len(no_paths), dtype=float))
    pairs, _ = find_duplicates(emb, images=False, embedding_threshold=0.0, progress=False)
    assert pairs.attrs["n_images"] == 0
    # one row with a path is enough to compare pixels; the others go to the errors table
    some = image_table.assign(path=[image_table["path"].iloc[0]] + [None] * (len(image_table) - 1))
    _, errors = find_duplicates(some, progress=False)
    assert len(errors) == len(image_table) - 1 and set(errors["stage"]) == {"path"}


def test_embedding_pairs():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(6, 16)).astype(np.float32)
    emb[3] = emb[0] + 0.01 * rng.normal(size=16)  # 3 is a near copy of 0
    emb[5] = np.nan  # cannot be compared
    table = pd.DataFrame(emb, columns=[f"emb_{i:04d}" for i in range(16)])
    table.insert(0, "image_id", [f"i{k}" for k in range(6)])
    pairs, errors = find_duplicates(table, images=False, embedding_threshold=0.01)
    assert _pair_set(pairs) == {("i0", "i3")}
    assert pairs["method"].iat[0] == "embedding" and pairs["kind"].iat[0] == "near"
    assert 0 <= pairs["distance"].iat[0] < 0.01
    assert errors["image_id"].tolist() == ["i5"] and errors["stage"].tolist() == ["embedding"]
    with pytest.raises(TableError, match="emb_"):
        find_duplicates(table[["image_id"]], images=False, embedding_threshold=0.1)


def test_duplicate_groups_links_chains():
    pairs = pd.DataFrame({"image_id_1": ["a", "b", "x"], "image_id_2": ["b", "c", "y"]})
    groups = duplicate_groups(pairs)
    assert groups["a"] == groups["b"] == groups["c"]
    assert groups["x"] == groups["y"] != groups["a"]
    full = duplicate_groups(pairs, image_ids=["z", "c", "a", "b", "x", "y"])
    assert full.index.tolist() == ["z", "c", "a", "b", "x", "y"]
    assert full["z"] not in set(full.drop("z"))
    assert full.name == "duplicate_group"
    isic = pd.DataFrame({"image_name_1": ["ISIC_2"], "image_name_2": ["ISIC_1"]})
    g = duplicate_groups(isic)
    assert g["ISIC_1"] == g["ISIC_2"]


@pytest.mark.parametrize("fmt, columns", [
    ("dermctx", list(PAIR_COLUMNS)),
    ("training", ["image_name_1", "image_name_2"]),
    ("challenge", ["ISIC_id", "ISIC_id_paired", "partition"]),
])
def test_cli_dedup_writes_pairs(image_table, tmp_path, fmt, columns):
    from dermctx.cli import main

    table = image_table[image_table["image_id"].isin(["o0", "o0_copy", "o1", "o1_flip_lr", "o2", "broken"])]
    table = table.assign(patient_id="p1", target=[0, 0, 1, 1, np.nan, 0])
    src = tmp_path / "table.csv"
    table.to_csv(src, index=False)
    out = tmp_path / "pairs.csv"
    assert main(["dedup", str(src), "--out", str(out), "--layout", fmt, "--jobs", "1"]) == 1  # "broken" failed
    written = pd.read_csv(out)
    assert list(written.columns) == columns
    assert {tuple(r) for r in written.iloc[:, :2].to_numpy()} == {("o0", "o0_copy"), ("o1", "o1_flip_lr")}
    if fmt == "challenge":
        assert set(written["partition"]) == {"train"}
    errors = pd.read_csv(tmp_path / "pairs.errors.csv")
    assert errors["image_id"].tolist() == ["broken"]


def test_real_isic_images_exact_and_rotated_copies(isic_images, tmp_path):
    manifest = pd.read_csv(isic_images / "manifest.csv").sort_values("bytes").head(4)
    rows = [(r.image_name, str(isic_images / r.file)) for r in manifest.itertuples()]
    first = manifest.iloc[0]
    raw = (isic_images / first["file"]).read_bytes()
    (tmp_path / "same.jpg").write_bytes(raw[:2] + b"\xff\xfe\x00\x06copy" + raw[2:])
    Image.open(isic_images / first["file"]).transpose(Image.Transpose.ROTATE_90).resize(
        (240, 320)).save(tmp_path / "rot.jpg", quality=75)
    rows += [("same", str(tmp_path / "same.jpg")), ("rot", str(tmp_path / "rot.jpg"))]
    pairs, errors = find_duplicates(pd.DataFrame(rows, columns=["image_id", "path"]), progress=False)
    assert len(errors) == 0
    name = first["image_name"]
    kinds = {(a, b): k for a, b, k in zip(pairs["image_id_1"], pairs["image_id_2"], pairs["kind"], strict=True)}
    assert kinds[(name, "same")] == "exact"
    assert kinds[tuple(sorted((name, "rot")))] == "near"
    others = set(manifest["image_name"]) - {name}
    assert not (set(pairs["image_id_1"]) | set(pairs["image_id_2"])) & others
