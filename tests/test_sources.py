"""The registry of sources: recognition by header, each source's declaration, and real files.

Real-data tests skip with a reason when ``../shared/data`` is absent.
"""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pandas as pd
import pytest

import dermctx
from dermctx import DermctxWarning, LeakageError, TableError, has_patient_context, read_table
from dermctx.cohort import S_LESIONS, S_PATIENTS, S_SITE, cohort_counts, cohort_table, to_markdown
from dermctx.io.registry import SOURCES, detect_source, label_columns
from dermctx.table import PROXY_PATIENT_SOURCES, SITES


def value(counts: pd.DataFrame, section: str, row: str) -> float:
    return counts.loc[(section, row), ("Total", "value")]


# --- the registry -------------------------------------------------------------------------------


def test_every_source_is_recognised_by_its_own_signature():
    for source in SOURCES:
        for signature in source.signatures:
            assert detect_source(signature) is source, (source.name, sorted(signature))


def test_source_names_are_unique_and_proxies_declared_once():
    names = [s.name for s in SOURCES]
    assert len(set(names)) == len(names)
    # has_patient_context reads the source column; it must know every proxy-patient source
    assert {s.name for s in SOURCES if not s.patient_context} == set(PROXY_PATIENT_SOURCES)


def test_unknown_layout_lists_the_known_ones(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(TableError, match=r"odd\.csv: unknown table layout.*Known layouts: .*ISIC 2019"
                                         r".*PAD-UFES-20.*A lesion table has the columns"):
        read_table(path)
    with pytest.raises(TableError, match=r"source='nope': expected one of"):
        read_table(path, source="nope")


def test_read_table_says_which_source_it_chose(tmp_path, caplog):
    path = tmp_path / "m.csv"
    pd.DataFrame({"isic_id": ["ISIC_1"], "patient_id": ["IP_1"], "tbp_lv_A": [1.0],
                  "target": [0]}).to_csv(path, index=False)
    with caplog.at_level("INFO", logger="dermctx"):
        table = read_table(path)
    assert table.attrs["format"] == "isic2024"
    assert "read as ISIC 2024 (SLICE-3D) metadata" in caplog.text


def test_every_sources_label_columns_are_refused_by_name():
    names = label_columns()
    for source in SOURCES:
        for col in source.label_columns:
            assert col.lower() in names, (source.name, col)
    with pytest.raises(LeakageError, match=r"'iddx_3'.*diagnosis hierarchy"):
        dermctx.ContextRanker(extra_features=["iddx_3"]).fit(pd.DataFrame({
            "patient_id": ["a", "b"], "cnn_score": [0.2, 0.7], "iddx_3": ["x", "y"], "target": [0, 1]}))


# --- readers: inputs that used to break ---------------------------------------------------------


def test_csv_gz_parquet_and_frames_read_alike(tmp_path):
    frame = pd.DataFrame({"image_name": ["ISIC_1", "ISIC_2"], "patient_id": ["IP_007", "IP_007"],
                          "target": [0, 1]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        frame.to_csv(f, index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    tables = [read_table(tmp_path / n) for n in ("t.csv", "t.csv.gz", "t.parquet")] + [read_table(frame)]
    for table in tables:
        assert table["patient_id"].tolist() == ["IP_007", "IP_007"]
        assert table.attrs["format"] == "isic2020"


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("t.csv", b"image_id,patient_id,site,site\na,p,torso,torso\n",
         r"column name\(s\) \['site'\] appear more than once"),
        ("t.csv.gz", b"not gzip at all", r"cannot be read"),
        ("t.csv", "image_id,patient_id\n\xe9\xe9,p\n".encode("latin-1"), r"cannot be read"),
        ("t.parquet", b"PAR1 but not parquet", r"cannot be read"),
        ("t.csv", b'image_id,patient_id\na,p\nb,p,extra,fields\n', r"cannot be read"),
    ],
)
def test_unreadable_files_raise_table_errors_naming_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TableError, match=match) as info:
        read_table(path)
    assert str(path) in str(info.value)


def test_duplicate_column_names_in_a_frame_are_refused():
    frame = pd.DataFrame([["a", "p", "torso", "torso"]], columns=["image_id", "patient_id", "site", "site"])
    with pytest.raises(TableError, match=r"\['site'\] appear more than once"):
        read_table(frame)
    with pytest.raises(TableError, match=r"\['site'\] appear more than once"):
        dermctx.validate_table(frame)


def test_a_column_that_looks_like_site_is_never_silently_dropped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("image_id,patient_id,anatom_site_general\na,p1,anterior torso\n")
    with pytest.raises(TableError, match=r"'anatom_site_general' looks like the lesion table's 'site'"):
        read_table(path)


@pytest.mark.parametrize("width", ["45.5", "1e400", "-3", "wide"])
def test_bad_image_sizes_name_the_row(tmp_path, width):
    path = tmp_path / "sizes.csv"
    path.write_text(f"image_name,patient_id,target,width,height\nISIC_1,IP_1,0,6000,4000\nISIC_2,IP_1,0,{width},4000\n")
    with pytest.raises(TableError, match=r"'width' has values .* at row 1 \(image_id 'ISIC_2'\)"):
        read_table(path)


def test_image_dir_attaches_paths_for_a_canonical_table(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"x")
    path = tmp_path / "t.csv"
    path.write_text("image_id,patient_id\na,p1\nb,p1\n")
    table = read_table(path, image_dir=tmp_path / "img")
    assert table["path"].iloc[0] == str(tmp_path / "img" / "a.jpg")
    assert "not found" in table["image_error"].iloc[1] and pd.isna(table["image_error"].iloc[0])
    # a table that already has paths: the folder would replace them, so it is refused
    path.write_text("image_id,patient_id,path\na,p1,/data/a.jpg\n")
    with pytest.raises(TableError, match=r"already has image paths"):
        read_table(path, image_dir=tmp_path / "img")


# --- ISIC 2019 ----------------------------------------------------------------------------------


def _shared_dir(shared_data, name):
    path = shared_data / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing")
    return path


@pytest.fixture(scope="module")
def isic2019(shared_data):
    return _shared_dir(shared_data, "isic2019")


@pytest.fixture(scope="module")
def isic2019_table(isic2019):
    return read_table(isic2019 / "ISIC_2019_Training_Metadata.csv",
                      labels=isic2019 / "ISIC_2019_Training_GroundTruth.csv")


def test_isic2019_metadata_and_ground_truth(isic2019, isic2019_table):
    t = isic2019_table
    assert t.attrs["format"] == "isic2019" and not has_patient_context(t)
    assert len(t) == 25_331 and int(t["target"].sum()) == 4_522
    given = t["lesion_id"] != t["image_id"]
    assert t.loc[given, "lesion_id"].nunique() == 11_847 and int((~given).sum()) == 2_084
    # no patient ids: the lesion stands in, rows without a lesion are their own patient
    assert (t.loc[given, "patient_id"] == t.loc[given, "lesion_id"]).all()
    assert t.loc[~given, "patient_id"].str.startswith("unknown:").all()
    # archive site terms mapped, the raw term kept
    raw = pd.read_csv(isic2019 / "ISIC_2019_Training_Metadata.csv")
    assert set(t["site"].dropna()) <= set(SITES)
    assert (t["site_detail"].fillna("") == raw["anatom_site_general"].fillna("")).all()
    assert (t.loc[raw["anatom_site_general"].eq("posterior torso").to_numpy(), "site"] == "torso").all()
    gt = pd.read_csv(isic2019 / "ISIC_2019_Training_GroundTruth.csv")
    assert t["diagnosis"].value_counts().to_dict() == {c: int(n) for c, n in gt.iloc[:, 1:].sum().items() if n}


def test_isic2019_merged_file_and_test_metadata(isic2019, isic2019_table, tmp_path):
    meta = pd.read_csv(isic2019 / "ISIC_2019_Training_Metadata.csv")
    merged = meta.merge(pd.read_csv(isic2019 / "ISIC_2019_Training_GroundTruth.csv"), on="image")
    merged.to_csv(tmp_path / "merged.csv", index=False)
    again = read_table(tmp_path / "merged.csv")
    assert again["target"].tolist() == isic2019_table["target"].tolist()
    test = read_table(isic2019 / "ISIC_2019_Test_Metadata.csv")
    assert len(test) == 8_238 and test["target"].isna().all()


def test_isic2019_ground_truth_must_cover_every_image(isic2019, tmp_path):
    gt = pd.read_csv(isic2019 / "ISIC_2019_Training_GroundTruth.csv").iloc[1:]
    with pytest.raises(TableError, match=r"ISIC_0000000.*no row in the ground truth"):
        read_table(isic2019 / "ISIC_2019_Training_Metadata.csv", labels=gt)


def test_isic2019_cohort_table(isic2019_table):
    c = cohort_counts(isic2019_table, by=None)
    assert value(c, S_LESIONS, "images") == 25_331
    assert value(c, S_LESIONS, "total") == 11_847 + 2_084
    assert value(c, S_PATIENTS, "total") == 11_847 + 2_084  # proxies: one per lesion
    assert value(c, S_SITE, "torso") > 0
    assert "13,931" in cohort_table(isic2019_table, by=None).pipe(to_markdown)


def test_one_hot_rows_that_are_not_one_class_name_the_row(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1,0,0,0,0,0,0\nISIC_2,1,1,0,0,0,0,0\n")
    with pytest.raises(TableError, match=r"row 1 \(image_id 'ISIC_2'\).*exactly one class"):
        read_table(path)
    path.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1.0,0.0,0,0,0,0,0\nISIC_2,0,0,0,0,0,1,0\n")
    t = read_table(path)
    assert t.attrs["format"] == "isic2018" and t["target"].tolist() == [1, 0]
    assert t["diagnosis"].tolist() == ["MEL", "DF"] and not has_patient_context(t)


# --- ISIC archive exports -----------------------------------------------------------------------


def test_archive_export_diagnosis_hierarchy_and_sites(tmp_path):
    path = tmp_path / "metadata.csv"
    pd.DataFrame({
        "isic_id": ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"],
        "patient_id": ["IP_1", "IP_1", "IP_2", "IP_2"],
        "anatom_site_general": ["anterior torso", "lateral torso", "head/neck", None],
        "diagnosis_1": ["Malignant", "Benign", "Malignant", None],
        "diagnosis_2": ["Malignant melanocytic proliferations (Melanoma)",
                        "Benign melanocytic proliferations", "Malignant epidermal proliferations", None],
        "diagnosis_3": ["Melanoma in situ", "Nevus", "Basal cell carcinoma", None],
        "attribution": "Hospital", "copyright_license": "CC-BY",
    }).to_csv(path, index=False)
    t = read_table(path)
    assert t.attrs["format"] == "isic_archive"
    assert t["target"].tolist()[:3] == [1, 0, 0] and np.isnan(t["target"].iloc[3])
    assert t["diagnosis"].tolist()[:3] == ["Melanoma in situ", "Nevus", "Basal cell carcinoma"]
    assert t["site"].tolist()[:3] == ["torso", "torso", "head/neck"]
    assert t["site_detail"].tolist()[:2] == ["anterior torso", "lateral torso"]
    assert t["attribution"].tolist()[0] == "Hospital"


def test_archive_export_without_patient_ids_needs_an_explicit_choice(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("isic_id,diagnosis,age_approx\nISIC_1,melanoma,40\nISIC_2,nevus,\n")
    with pytest.raises(TableError, match=r"no 'patient_id' column.*unknown_patients='own'"):
        read_table(path)
    t = read_table(path, unknown_patients="own")
    assert t["patient_id"].tolist() == ["unknown:ISIC_1", "unknown:ISIC_2"]
    assert t["target"].tolist() == [1, 0]


# --- ISIC 2024 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isic2024(shared_data):
    return _shared_dir(shared_data, "isic2024")


@pytest.fixture(scope="module")
def isic2024_table(isic2024):
    return read_table(isic2024 / "isic2024_train_subset_1954.csv")


def test_isic2024_subset(isic2024_table):
    t = isic2024_table
    assert t.attrs["format"] == "isic2024" and "malignant" in t.attrs["target_meaning"]
    assert len(t) == 1_954 and int(t["target"].sum()) == 977
    tbp = [c for c in t.columns if c.startswith("tbp_lv_") and c != "tbp_lv_dnn_lesion_confidence"]
    assert len(tbp) == 34
    text = {"tbp_lv_location", "tbp_lv_location_simple"}
    assert all(t[c].dtype == float for c in tbp if c not in text)
    assert set(t["site"].dropna()) <= set(SITES)
    c = cohort_counts(t, by=None)
    assert value(c, S_LESIONS, "total") == 1_954  # one image per lesion in this subset
    assert value(c, S_PATIENTS, "total") == t["patient_id"].nunique()


def test_isic2024_leading_index_column_is_dropped(isic2024):
    t = read_table(isic2024 / "isic2024_train_first100.csv")
    assert len(t) == 100 and not any(str(c).startswith("Unnamed") for c in t.columns)
    assert t["image_id"].iloc[0] == pd.read_csv(isic2024 / "isic2024_train_first100.csv")["isic_id"].iloc[0]


@pytest.mark.parametrize("column", ["iddx_full", "iddx_1", "mel_thick_mm", "mel_mitotic_index",
                                   "tbp_lv_dnn_lesion_confidence", "kfold"])
def test_isic2024_label_columns_refused_by_every_estimator(isic2024_table, column):
    t = isic2024_table.assign(cnn_score=0.5)
    col = "diagnosis" if column == "iddx_full" else column
    assert col in t.columns
    with pytest.raises(LeakageError, match=repr(col)):
        dermctx.ContextRanker(extra_features=[col]).fit(t, t["target"])
    with pytest.raises(LeakageError, match=repr(col)):
        dermctx.MetadataGBM().fit(t[["age", col]], t["target"])
    with pytest.raises(LeakageError, match=repr(col)):
        dermctx.SetRanker(embedding_prefix=None, features=[col]).fit(t, t["target"])


def test_a_column_present_on_one_class_only_is_refused_whatever_its_name(isic2024_table):
    t = isic2024_table.assign(cnn_score=0.5, thickness=isic2024_table["mel_thick_mm"])
    assert t.loc[t["thickness"].notna(), "target"].eq(1).all()  # melanomas only, by design
    with pytest.raises(LeakageError, match=r"'thickness' is given only on rows with label 1"):
        dermctx.ContextRanker(extra_features=["thickness"]).fit(t, t["target"])
    with pytest.raises(LeakageError, match=r"'thickness' is given only on rows with label 1"):
        dermctx.MetadataGBM().fit(t[["age", "thickness"]], t["target"])
    with pytest.raises(LeakageError, match=r"'thickness' is given only on rows with label 1"):
        dermctx.SetRanker(embedding_prefix=None, features=["thickness"]).fit(t, t["target"])


def test_isic2024_features_are_accepted(isic2024_table):
    t = isic2024_table.assign(cnn_score=0.5)
    rows = t["tbp_lv_areaMM2"].notna()  # the 2024 rows (the appended 2020 rows have none)
    model = dermctx.MetadataGBM(n_estimators=5).fit(t.loc[rows, ["age", "tbp_lv_areaMM2"]], t.loc[rows, "target"])
    assert model.predict_proba(t.loc[rows, ["age", "tbp_lv_areaMM2"]]).shape == (int(rows.sum()), 2)


# --- PAD-UFES-20 --------------------------------------------------------------------------------


def test_pad_ufes20_layout(fieldcases):
    folder = fieldcases / "pad_ufes20"
    t = read_table(folder / "metadata.csv", image_dir=folder / "images")
    raw = pd.read_csv(folder / "metadata.csv")
    assert t.attrs["format"] == "pad_ufes20" and has_patient_context(t)
    assert t["target"].tolist() == (raw["diagnostic"] == "MEL").astype(int).tolist()
    assert t["site_detail"].tolist() == raw["region"].tolist()
    assert set(t["site"]) <= set(SITES)
    assert dict(zip(raw["region"], t["site"], strict=True)) == {
        "NECK": "head/neck", "FACE": "head/neck", "FOREARM": "upper extremity",
        "NOSE": "head/neck", "BACK": "torso", "CHEST": "torso"}
    assert t["image_error"].isna().all()
    assert [p.split("/")[-1] for p in t["path"]] == raw["img_id"].tolist()
    assert t["sex"].tolist()[:2] == ["female", "female"]
    image = dermctx.load_image(t["path"].iloc[0], 64)  # RGBA PNGs load as RGB
    assert image.shape == (64, 64, 3)
    with pytest.raises(LeakageError, match=r"'biopsed'"):
        dermctx.ContextRanker(score_col=None, extra_features=["biopsed"]).fit(t, t["target"])


def test_outsized_patient_warning_and_none_on_isic2020(isic_dir):
    rows = [("IP_BIG", i) for i in range(60)] + [(f"IP_{p}", i) for p in range(40) for i in range(2)]
    table = pd.DataFrame({"image_id": [f"I{p}_{i}" for p, i in rows], "patient_id": [p for p, _ in rows]})
    with pytest.warns(DermctxWarning, match=r"patient 'IP_BIG' holds 60 of 140 rows"):
        dermctx.validate_table(table)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DermctxWarning)
        read_table(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv")


# --- found by trying dermctx as a new user ------------------------------------------------------


def test_isic2024_missing_features_on_one_class_and_label_copies_are_refused(isic2024_table):
    t = isic2024_table.assign(cnn_score=0.5)
    # the appended ISIC 2020 rows (all target 1) have every 2024 feature empty
    with pytest.raises(LeakageError, match=r"'tbp_lv_areaMM2' is missing on 584 of the 977 rows with label 1"):
        dermctx.ContextRanker(extra_features=["tbp_lv_areaMM2"]).fit(t, t["target"])
    copy = t.assign(is_bad=np.where(t["target"] == 1, "YES", "no"))
    with pytest.raises(LeakageError, match=r"'is_bad' takes two values that are exactly the two classes"):
        dermctx.MetadataGBM().fit(copy[["age", "is_bad"]], copy["target"])


def test_isic2024_says_its_target_is_malignant(isic2024, capsys):
    with pytest.warns(DermctxWarning, match=r"target = 1 means malignant"):
        read_table(isic2024 / "isic2024_train_subset_1954.csv")
    assert dermctx.cli.main(["validate", str(isic2024 / "isic2024_train_subset_1954.csv")]) == 0
    assert "977 with target 1 (malignant" in capsys.readouterr().err


def test_blank_diagnoses(tmp_path):
    path = tmp_path / "archive.csv"
    path.write_text("isic_id,patient_id,diagnosis\nISIC_1,IP_1,melanoma\nISIC_2,IP_1,\n")
    t = read_table(path)
    assert t["target"].iloc[0] == 1 and np.isnan(t["target"].iloc[1])
    path.write_text("lesion_id,image_id,dx\nHAM_1,ISIC_1,mel\nHAM_2,ISIC_2,\n")
    with pytest.raises(TableError, match=r"'dx' has values \['\(blank\)'\] at row 1 \(image_id 'ISIC_2'\)"):
        read_table(path)


def test_a_written_ham10000_table_reads_back(ham_dir, tmp_path):
    out = tmp_path / "ham.csv"
    assert dermctx.cli.main(["validate", str(ham_dir / "HAM10000_metadata.csv"), "--out", str(out)]) == 0
    again = read_table(out)
    assert again.attrs["format"] == "table" and len(again) == 10_015
    assert not has_patient_context(again)  # the source column still says HAM10000
    assert again["diagnosis"].tolist() == read_table(ham_dir / "HAM10000_metadata.csv")["diagnosis"].tolist()


def test_messages_name_the_raw_column_and_the_fix(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("patient_id,lesion_id,img_id,diagnostic,region\nPAT_1,1,a.png,MEL,SHIN\n")
    with pytest.raises(TableError, match=r"column 'region' has site terms \['SHIN'\]"):
        read_table(path)
    path.write_bytes("image_id,patient_id\n\xe9,p\n".encode("latin-1"))
    with pytest.raises(TableError, match=r"not UTF-8.*save the file as UTF-8"):
        read_table(path)
    with pytest.raises(TableError, match=r"is a folder.*read_dicom_dir"):
        read_table(tmp_path)
