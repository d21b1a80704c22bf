"""Scoring in chunks of whole patients, from Parquet, locally and on Ray: equal to one-shot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermctx.errors import DermctxWarning, ModelError, TableError
from dermctx.models.gbm import MetadataGBM
from dermctx.models.ranker import ContextRanker
from dermctx.scoring import score_parquet, score_table
from dermctx.synthetic import make_ugly_duckling
from dermctx.table import validate_table


def _lesions(n_patients: int, seed: int) -> pd.DataFrame:
    t = make_ugly_duckling(n_patients, dim=8, random_state=seed).drop(columns=["diagnosis"])
    t["cnn_score"] = np.random.default_rng(seed).uniform(0.01, 0.6, len(t))
    return t


@pytest.fixture(scope="module")
def model() -> ContextRanker:
    train = _lesions(150, 0)
    return ContextRanker(gbm=MetadataGBM(n_estimators=30), n_folds=3).fit(train, train["target"])


@pytest.fixture(scope="module")
def lesions() -> pd.DataFrame:
    test = _lesions(120, 1).drop(columns=["target"]).sample(frac=1.0, random_state=2).reset_index(drop=True)
    test.loc[5, "cnn_score"] = 2.0  # an error row
    test.loc[17, "patient_id"] = None  # another
    return test


def test_chunks_of_patients_equal_one_shot(model, lesions):
    one, one_errors = model.rank(lesions)
    chunked, errors = score_table(model, lesions, chunk_patients=7, progress=False)
    assert list(chunked["image_id"]) == list(one["image_id"])
    np.testing.assert_allclose(chunked["score"], one["score"], rtol=0, atol=1e-12)
    assert list(chunked["patient_rank"]) == list(one["patient_rank"])
    assert list(errors["row"]) == list(one_errors["row"]) == [5, 17]
    assert len(chunked) + len(errors) == len(lesions)
    with pytest.raises(TableError, match="chunk_patients"):
        score_table(model, lesions, chunk_patients=0)


def test_parquet_streams_patients_split_across_row_groups(model, lesions, tmp_path):
    src = tmp_path / "lesions.parquet"
    lesions.assign(notes="not read").to_parquet(src, index=False, row_group_size=97)  # patients scattered
    errors = score_parquet(model, src, tmp_path / "scores.parquet", chunk_patients=11, progress=False)
    out = pd.read_parquet(tmp_path / "scores.parquet").sort_values("row")
    one, _ = model.rank(lesions)
    np.testing.assert_allclose(out["score"], one["score"], rtol=0, atol=1e-12)
    assert list(out["image_id"]) == list(one["image_id"]) and list(errors["row"]) == [5, 17]
    assert len(out) + len(errors) == len(lesions)
    with pytest.raises(TableError, match="cnn_score"):
        lesions.drop(columns="cnn_score").to_parquet(tmp_path / "no_cnn.parquet")
        score_parquet(model, tmp_path / "no_cnn.parquet", tmp_path / "x.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TableError, match=r"broken\.parquet"):
        score_parquet(model, tmp_path / "broken.parquet", tmp_path / "x.parquet")
    with pytest.raises(ModelError, match=r"backend"):
        score_parquet(model, src, tmp_path / "x.parquet", backend="spark")


def test_ray_scoring_equals_local(model, lesions, tmp_path, local_ray):
    src = tmp_path / "lesions.parquet"
    lesions.to_parquet(src, index=False, row_group_size=200)
    local_errors = score_parquet(model, src, tmp_path / "local.parquet", chunk_patients=30, progress=False)
    ray_errors = score_parquet(model, src, tmp_path / "ray.parquet", chunk_patients=30, backend="ray",
                               ray_actors=1, progress=False)
    a = pd.read_parquet(tmp_path / "local.parquet").sort_values("row")
    b = pd.read_parquet(tmp_path / "ray.parquet").sort_values("row")
    assert list(a["row"]) == list(b["row"])
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=1e-12)
    assert list(ray_errors["row"]) == list(local_errors["row"])


def test_cli_score_streams_parquet_in_chunks_and_explains(model, lesions, tmp_path):
    from dermctx.cli import main

    model.save(tmp_path / "m")
    lesions.to_parquet(tmp_path / "new.parquet", index=False)
    assert main(["score", str(tmp_path / "new.parquet"), "--model", str(tmp_path / "m"),
                 "--out", str(tmp_path / "s.parquet"), "--chunk-patients", "9", "--explain"]) == 1  # rows 5, 17
    out = pd.read_parquet(tmp_path / "s.parquet").sort_values("row")
    one, _ = model.rank(lesions, explain=True)
    np.testing.assert_allclose(out["score"], one["score"], rtol=0, atol=1e-12)
    assert list(out["explanation"]) == list(one["explanation"])
    errors = pd.read_csv(tmp_path / "s.errors.csv")
    assert list(errors["row"]) == [5, 17]
    assert main(["score", str(tmp_path / "new.parquet"), "--model", str(tmp_path / "m"),
                 "--out", str(tmp_path / "s.csv"), "--backend", "ray"]) == 2  # ray needs Parquet out


def test_ids_copies_and_outputs_that_would_mislead_are_refused(model, lesions, tmp_path):
    no_ids = lesions.drop(columns="image_id")
    chunked, _ = score_table(model, no_ids, chunk_patients=3, progress=False)
    one, _ = model.rank(no_ids)
    assert list(chunked["image_id"]) == list(one["image_id"])  # input positions, as rank() names them
    copy = pd.concat([lesions, lesions.iloc[[0]]], ignore_index=True)  # a row twice
    scores, errors = score_table(model, copy, chunk_patients=4, progress=False)
    assert len(lesions) in errors["row"].tolist() and "appears on an earlier row" in " ".join(errors["message"])
    assert len(scores) + len(errors) == len(copy)
    with pytest.raises(TableError, match="more than once"):
        score_table(model, pd.concat([lesions, lesions[["patient_id"]]], axis=1))
    src = tmp_path / "in.parquet"
    lesions.to_parquet(src, index=False)
    with pytest.raises(TableError, match="is the input table"):
        score_parquet(model, src, src)
    (tmp_path / "folder").mkdir()
    with pytest.raises(TableError, match="a folder"):
        score_parquet(model, src, tmp_path / "folder")
    empty, _ = score_table(model, lesions.iloc[:0], progress=False)
    assert empty.columns[0] == "row" and len(empty) == 0


def test_cli_fits_context_features_without_a_cnn(tmp_path):
    from dermctx.cli import main
    from dermctx.synthetic import make_tbp_patients

    t = make_tbp_patients(40, lesions_per_patient=(5, 15), melanoma_rate=0.05, random_state=0)
    t.drop(columns=["planted_feature", "planted_direction"]).to_csv(tmp_path / "t.csv", index=False)
    assert main(["fit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--score-col", "none",
                 "--context-features", "tbp_lv_areaMM2,tbp_lv_norm_color"]) == 0
    loaded = ContextRanker.load(tmp_path / "m")
    assert loaded.score_col is None and loaded.context_features_ == ["tbp_lv_areaMM2", "tbp_lv_norm_color"]


def test_rows_sharing_an_image_id_are_refused_across_chunks(model, lesions, tmp_path):
    """Two rows of one image that differ (here: two patients) are both error rows, whichever chunk
    each falls in; an exact copy of a row is refused and the first scored; rank, chunks and
    Parquet agree, and the patients that lose a lesion are warned about."""
    table = lesions.drop(index=[5, 17]).reset_index(drop=True)
    other = int(np.flatnonzero(table["patient_id"] != table["patient_id"].iloc[0])[-1])
    table.loc[other, "image_id"] = table["image_id"].iloc[0]  # another patient's row, the same image id
    table = pd.concat([table, table.iloc[[3]]], ignore_index=True)  # an exact copy of row 3
    copy_row = len(table) - 1
    src = tmp_path / "shared.parquet"
    table.to_parquet(src, index=False, row_group_size=50)

    def from_parquet():
        errors = score_parquet(model, src, tmp_path / "s.parquet", chunk_patients=1, progress=False)
        return pd.read_parquet(tmp_path / "s.parquet"), errors

    results = {}
    for name, run in [("rank", lambda: model.rank(table)),
                      ("chunks", lambda: score_table(model, table, chunk_patients=1, progress=False)),
                      ("parquet", from_parquet)]:
        with pytest.warns(DermctxWarning, match="lost lesions"):
            scores, errors = run()
        results[name] = errors
        assert list(errors["row"]) == [0, other, copy_row], name
        assert "with different values (column 'patient_id'" in errors["message"].iloc[0]
        assert f"rows 0, {other}" in errors["message"].iloc[1]
        assert "(row 3, identical)" in errors["message"].iloc[2]
        assert len(scores) == len(table) - 3
    pd.testing.assert_frame_equal(results["rank"], results["chunks"])
    pd.testing.assert_frame_equal(results["rank"], results["parquet"])
    assert 3 in set(scores["row"]) and 0 not in set(scores["row"])  # the Parquet run's scores


def test_ids_with_spaces_are_the_same_ids_everywhere(model, lesions, tmp_path):
    """' P1' and 'P1' are one patient (as validate_table and the command line read them): rank,
    chunks and Parquet score it as one set, equal to the clean table; ' I3 ' repeats 'I3'."""
    clean = lesions.drop(index=[5, 17]).reset_index(drop=True)
    spaced = clean.copy()
    spaced["patient_id"] = [p if i % 2 else f" {p}  " for i, p in enumerate(spaced["patient_id"])]
    want, _ = model.rank(clean)
    src = tmp_path / "spaced.parquet"
    spaced.to_parquet(src, index=False, row_group_size=40)
    chunks, errors = score_table(model, spaced, chunk_patients=1, progress=False)
    score_parquet(model, src, tmp_path / "s.parquet", chunk_patients=1, progress=False)
    streamed = pd.read_parquet(tmp_path / "s.parquet").sort_values("row")
    for got in (model.rank(spaced)[0], chunks, streamed):
        np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=1e-12)
        assert list(got["patient_id"]) == list(want["patient_id"])
    # an image id with spaces around it is the id without them: a copy, refused
    copy = pd.concat([clean, clean.iloc[[4]].assign(image_id=f"  {clean['image_id'].iloc[4]} ")], ignore_index=True)
    copy.to_parquet(src, index=False)
    for errors in (model.rank(copy)[1], score_table(model, copy, chunk_patients=1, progress=False)[1],
                   score_parquet(model, src, tmp_path / "s.parquet", chunk_patients=1, progress=False)):
        assert list(errors["row"]) == [len(clean)] and "(row 4, identical)" in errors["message"].iloc[0]


def test_parquet_rows_sharing_an_image_id_are_compared_on_every_column(model, lesions, tmp_path):
    """Two rows of one image that differ only in a column the model does not read are still two
    different rows: both refused, from Parquet as from a DataFrame."""
    table = lesions.drop(index=[5, 17]).reset_index(drop=True).assign(note="")
    table = pd.concat([table, table.iloc[[3]].assign(note="re-exported")], ignore_index=True)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.warns(DermctxWarning, match="lost lesions"):
        errors = score_parquet(model, tmp_path / "t.parquet", tmp_path / "s.parquet", progress=False)
    assert list(errors["row"]) == [3, len(table) - 1]
    assert "column 'note': '' vs 're-exported'" in errors["message"].iloc[0]
    with pytest.warns(DermctxWarning, match="lost lesions"):
        assert list(model.rank(table)[1]["row"]) == [3, len(table) - 1]


def test_ids_mixing_text_and_whole_number_floats_are_one_id(model, lesions):
    """'100' on some rows and 100.0 on others (a concat of a text table and one whose ids had a
    gap) are one patient, and an image id 5007 / 5007.0 repeats itself, as validate_table reads them."""
    clean = lesions.drop(index=[5, 17]).reset_index(drop=True)
    codes = {p: 100 + k for k, p in enumerate(clean["patient_id"].unique())}
    mixed = clean.assign(patient_id=[str(codes[p]) if i % 2 else float(codes[p])
                                     for i, p in enumerate(clean["patient_id"])]).astype({"patient_id": object})
    want, _ = model.rank(clean.assign(patient_id=clean["patient_id"].map(codes).astype(str)))
    for got in (model.rank(mixed)[0], score_table(model, mixed, chunk_patients=1, progress=False)[0]):
        assert list(got["patient_id"]) == list(want["patient_id"])
        np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=1e-12)
    images = clean.assign(image_id=np.arange(5000, 5000 + len(clean))).astype({"image_id": object})
    copy = pd.concat([images, images.iloc[[7]].assign(image_id=5007.0)], ignore_index=True)
    errors = model.rank(copy)[1]
    assert list(errors["row"]) == [len(images)] and "(row 7, identical)" in errors["message"].iloc[0]


def test_cells_that_are_no_id_are_error_rows_never_another_patient(model, lesions, tmp_path):
    """A patient id held in a list, a True/False, bytes that are not UTF-8 or a float too large
    for a whole number was read as text and scored as a made-up patient (or crashed the batch):
    each is that row's error, on every path, and fitting refuses it, as validate_table does."""
    clean = lesions.drop(index=[5, 17]).reset_index(drop=True)
    bad = clean.astype({"patient_id": object})
    bad.at[2, "patient_id"] = [bad.at[2, "patient_id"]]
    bad.at[4, "patient_id"] = True
    bad.at[6, "patient_id"] = b"\xff\xfe"
    bad.at[8, "patient_id"] = 2.0 ** 60
    for scores, errors in (model.rank(bad), score_table(model, bad, chunk_patients=1, progress=False)):
        assert list(errors["row"]) == [2, 4, 6, 8]
        assert all("expected a text id" in m for m in errors["message"])
        assert len(scores) == len(bad) - 4 and "['" not in " ".join(scores["patient_id"])
    with pytest.raises(TableError, match="expected a text id"):
        ContextRanker(n_folds=3).fit(bad, np.r_[np.ones(20), np.zeros(len(bad) - 20)])
    for cell in (True, 2.0 ** 60):
        table = pd.DataFrame({"image_id": ["a", "b"], "patient_id": [cell, "P2"], "target": [0, 1]})
        with pytest.raises(TableError, match="not an id"):
            validate_table(table, labelled=True)
