"""Tests of dermctx.cohort: the cohort table ("Table 1") and its renderings.

Real-data tests check the ISIC 2020 and HAM10000 descriptors' published counts; every other
expected number is computed here from the raw CSV with plain pandas, independent of dermctx.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dermctx
from dermctx.cli import main
from dermctx.cohort import (
    S_AGE,
    S_DIAGNOSIS,
    S_DX_TYPE,
    S_LESIONS,
    S_PATIENTS,
    S_PER_PATIENT,
    S_SEX,
    S_SITE,
    S_SITE_MEL,
    S_TIMEPOINTS,
    cohort_counts,
    cohort_table,
    to_html,
    to_latex,
    to_markdown,
    to_text,
)
from dermctx.errors import TableError

ISIC_SITE = "anatom_site_general_challenge"


def value(counts: pd.DataFrame, section: str, row: str, group: str = "Total") -> float:
    return float(counts.loc[(section, row), (group, "value")])


def percent(counts: pd.DataFrame, section: str, row: str, group: str = "Total") -> float:
    return float(counts.loc[(section, row), (group, "percent")])


def synthetic() -> pd.DataFrame:
    """3 patients: P1 (melanoma, 3 lesions), P2 (no melanoma, 2 lesions), P3 (no melanoma, 1)."""
    return pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e", "f"],
        "patient_id": ["P1", "P1", "P1", "P2", "P2", "P3"],
        "age": [60, 60, np.nan, np.nan, np.nan, 30],
        "sex": ["male", "male", "male", None, "unknown", "female"],
        "site": ["torso", None, "head/neck", "torso", "", "lower extremity"],
        "target": [1, 0, 0, 0, 0, 0],
        "fold": [0, 1, 1, 0, 0, 1],
    })


# --- real data: the published descriptors ---------------------------------------------------


@pytest.fixture(scope="module")
def isic_raw(isic_dir) -> pd.DataFrame:
    return pd.read_csv(isic_dir / "ISIC_2020_Training_GroundTruth.csv")


@pytest.fixture(scope="module")
def isic_counts(isic_dir) -> pd.DataFrame:
    return cohort_counts(dermctx.read_table(isic_dir / "ISIC_2020_Training_GroundTruth.csv"))


def test_isic2020_matches_descriptor_table1(isic_counts):
    c = isic_counts
    # Rotemberg et al. 2021 (Sci Data 8:34), Table 1
    assert value(c, S_PATIENTS, "total") == 2056
    assert value(c, S_PATIENTS, "total", "with melanoma") == 428
    assert value(c, S_PATIENTS, "total", "without melanoma") == 2056 - 428
    assert round(percent(c, S_PATIENTS, "total", "with melanoma"), 1) == 20.8
    assert value(c, S_LESIONS, "total") == 33126
    assert value(c, S_LESIONS, "melanoma") == 584
    assert value(c, S_LESIONS, "benign") == 33126 - 584
    assert value(c, S_LESIONS, "melanoma", "without melanoma") == 0
    assert round(value(c, S_PER_PATIENT, "mean"), 1) == 16.1
    assert value(c, S_PER_PATIENT, "Q1") == 5
    assert value(c, S_PER_PATIENT, "median") == 12
    assert value(c, S_PER_PATIENT, "Q3") == 22
    # v1 has no lesion ids: one lesion per image, so no separate images row
    assert (S_LESIONS, "images") not in c.index


def test_isic2020_rows_match_raw_csv(isic_counts, isic_raw):
    c, raw = isic_counts, isic_raw
    site = raw[ISIC_SITE].fillna("unknown")
    for name, n in site.value_counts().items():
        assert value(c, S_SITE, name) == n, name
        n_mel = int(raw.loc[site == name, "target"].sum())
        assert value(c, S_SITE_MEL, name) == n_mel, name
        assert percent(c, S_SITE_MEL, name) == pytest.approx(100 * n_mel / n)
    assert sum(value(c, S_SITE, s) for s in site.unique()) == len(raw)
    # per patient: the patient's sex (constant within a patient in this CSV), mean age
    per_patient = raw.groupby("patient_id").agg(sex=("sex", "first"), age=("age_approx", "mean"))
    assert value(c, S_SEX, "male") == (per_patient["sex"] == "male").sum()
    assert value(c, S_SEX, "female") == (per_patient["sex"] == "female").sum()
    assert value(c, S_SEX, "unknown") == per_patient["sex"].isna().sum() > 0
    assert value(c, S_AGE, "mean age per patient (years)") == pytest.approx(per_patient["age"].mean())
    assert value(c, S_AGE, "patients with unknown age") == per_patient["age"].isna().sum()
    # biopsy proxy: ISIC 2020 marks lesions without a specific diagnosis as "unknown"
    n_unknown = int((raw["diagnosis"] == "unknown").sum())
    assert value(c, S_LESIONS, "not biopsied (diagnosis 'unknown')") == n_unknown
    assert value(c, S_LESIONS, "specific diagnosis (histopathology or follow-up)") == len(raw) - n_unknown
    for dx, n in raw["diagnosis"].value_counts().items():
        assert value(c, S_DIAGNOSIS, dx) == n


def test_isic2020_v2_counts_lesions_and_images(isic_dir):
    raw = pd.read_csv(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv")
    c = cohort_counts(dermctx.read_table(isic_dir / "ISIC_2020_Training_GroundTruth_v2.csv"), by=None)
    assert list(c.columns.get_level_values(0).unique()) == ["Total"]
    assert value(c, S_LESIONS, "images") == len(raw) == 33126
    assert value(c, S_LESIONS, "total") == raw["lesion_id"].nunique() == 32701
    lesion_mel = raw.groupby("lesion_id")["target"].max()
    assert value(c, S_LESIONS, "melanoma") == (lesion_mel == 1).sum()


def test_ham10000_matches_descriptor(ham_dir):
    raw = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    c = cohort_counts(dermctx.read_table(ham_dir / "HAM10000_metadata.csv"))
    # Tschandl et al. 2018 (Sci Data 5:180161)
    assert value(c, S_DIAGNOSIS, "nv") == 6705
    assert value(c, S_DIAGNOSIS, "mel") == 1113
    for dx, n in raw["dx"].value_counts().items():
        assert value(c, S_DIAGNOSIS, dx) == n
    assert round(percent(c, S_DX_TYPE, "histopathology"), 1) == 53.3
    assert value(c, S_DX_TYPE, "follow-up") == (raw["dx_type"] == "follow_up").sum()
    assert value(c, S_LESIONS, "images") == 10015
    assert value(c, S_LESIONS, "total") == raw["lesion_id"].nunique() == 7470
    histo_lesions = raw.loc[raw["dx_type"] == "histo", "lesion_id"].nunique()
    assert value(c, S_LESIONS, "biopsied (histopathology)") == histo_lesions
    text = cohort_table(dermctx.read_table(ham_dir / "HAM10000_metadata.csv")).pipe(to_markdown)
    assert "6,705" in text and "53.3%" in text


# --- synthetic: counting rules --------------------------------------------------------------


def test_missing_values_are_counted_as_unknown_never_dropped():
    c = cohort_counts(synthetic())
    assert value(c, S_PATIENTS, "total") == 3
    assert value(c, S_SEX, "unknown") == 1  # P2: None and "unknown"
    assert value(c, S_SEX, "male") + value(c, S_SEX, "female") + value(c, S_SEX, "unknown") == 3
    assert value(c, S_AGE, "patients with unknown age") == 1  # P2
    assert value(c, S_AGE, "mean age per patient (years)") == pytest.approx((60 + 30) / 2)
    assert value(c, S_SITE, "unknown") == 2  # None and ""
    assert value(c, S_SITE, "torso") == 2
    assert sum(value(c, S_SITE, r) for r in c.loc[S_SITE].index) == 6
    assert value(c, S_SITE_MEL, "torso") == 1
    assert percent(c, S_SITE_MEL, "torso") == 50.0
    assert percent(c, S_SEX, "unknown") == pytest.approx(100 / 3)


def test_patient_class_groups():
    c = cohort_counts(synthetic())
    assert list(c.columns.get_level_values(0).unique()) == ["with melanoma", "without melanoma", "Total"]
    assert value(c, S_PATIENTS, "total", "with melanoma") == 1
    assert value(c, S_PATIENTS, "total", "without melanoma") == 2
    assert value(c, S_LESIONS, "total", "with melanoma") == 3
    assert percent(c, S_LESIONS, "total", "with melanoma") == 50.0
    assert value(c, S_PER_PATIENT, "mean", "without melanoma") == 1.5
    assert value(c, S_PER_PATIENT, "median", "Total") == 2
    assert np.isnan(percent(c, S_PATIENTS, "total", "Total"))
    assert np.isnan(percent(c, S_PER_PATIENT, "mean", "Total"))


def test_unlabelled_patients_form_their_own_group():
    t = synthetic()
    t["target"] = [1, 0, np.nan, np.nan, np.nan, 0]
    c = cohort_counts(t)
    assert list(c.columns.get_level_values(0).unique()) == [
        "with melanoma", "without melanoma", "unlabelled", "Total"]
    assert value(c, S_PATIENTS, "total", "unlabelled") == 1  # P2
    assert value(c, S_LESIONS, "label unknown") == 3
    none_labelled = cohort_counts(t.drop(columns="target"))
    assert list(none_labelled.columns.get_level_values(0).unique()) == ["unlabelled", "Total"]


def test_by_column_counts_a_patient_in_each_of_their_groups():
    c = cohort_counts(synthetic(), by="fold")
    assert list(c.columns.get_level_values(0).unique()) == ["0", "1", "Total"]
    assert c.columns.names[0] == "fold"
    # fold 0: P1 (a), P2 (d, e); fold 1: P1 (b, c), P3 (f)
    assert value(c, S_PATIENTS, "total", "0") == 2
    assert value(c, S_PATIENTS, "total", "1") == 2
    assert value(c, S_PATIENTS, "total") == 3
    assert value(c, S_LESIONS, "melanoma", "0") == 1
    assert value(c, S_PER_PATIENT, "mean", "1") == 1.5  # P1 has 2 lesions in fold 1, P3 one
    s = cohort_counts(synthetic(), by="site")
    assert list(s.columns.get_level_values(0).unique()) == [
        "head/neck", "lower extremity", "torso", "unknown", "Total"]
    assert value(s, S_PATIENTS, "total", "torso") == 2  # P1 and P2
    assert value(s, S_PATIENTS, "total", "unknown") == 2  # P1 (b) and P2 (e)


def test_float_fold_column_is_named_as_integers():
    t = synthetic().assign(fold=[0.0, 1.0, 1.0, 0.0, np.nan, 1.0])
    c = cohort_counts(t, by="fold")
    assert list(c.columns.get_level_values(0).unique()) == ["0", "1", "unknown", "Total"]
    assert value(c, S_LESIONS, "total", "unknown") == 1


def test_lesions_vs_images_and_biopsy_from_dx_type():
    t = pd.DataFrame({
        "image_id": ["a", "b", "c", "d"],
        "patient_id": ["P1", "P1", "P1", "P2"],
        "lesion_id": ["L1", "L1", "L2", "L3"],
        "target": [1, 1, 0, 0],
        "diagnosis": ["mel", "mel", "nv", "nv"],
        "dx_type": ["histo", "histo", "follow_up", None],
    })
    c = cohort_counts(t, by=None)
    assert value(c, S_LESIONS, "total") == 3
    assert value(c, S_LESIONS, "images") == 4
    assert value(c, S_LESIONS, "melanoma") == 1
    assert value(c, S_LESIONS, "biopsied (histopathology)") == 1
    assert value(c, S_LESIONS, "not biopsied (follow-up, consensus, confocal)") == 1
    assert value(c, S_LESIONS, "biopsy unknown (no ground-truth type)") == 1
    assert value(c, S_DX_TYPE, "histopathology") == 2
    assert value(c, S_DX_TYPE, "unknown") == 1
    assert value(c, S_DIAGNOSIS, "mel") == 2
    assert value(c, S_PER_PATIENT, "mean") == 1.5


def test_timepoints_per_patient_when_present():
    t = synthetic()
    assert S_TIMEPOINTS not in cohort_counts(t).index.get_level_values(0)
    t["study_date"] = ["2020-01-01", "2020-01-01", "2021-01-01", "2020-05-05", None, "2019-01-01"]
    c = cohort_counts(t)
    assert value(c, S_TIMEPOINTS, "mean") == pytest.approx((2 + 1 + 1) / 3)
    assert value(c, S_TIMEPOINTS, "Q3") == 1.5


def test_bad_input_raises_table_error_naming_the_problem():
    with pytest.raises(TableError, match="'nosuch'"):
        cohort_counts(synthetic(), by="nosuch")
    with pytest.raises(TableError, match="patient_id"):
        cohort_table(synthetic().drop(columns="patient_id"))
    with pytest.raises(TableError, match="'sex'"):
        cohort_table(synthetic().assign(sex="x"))
    with pytest.raises(TableError, match="'visit'"):
        cohort_counts(synthetic(), timepoint="visit")


def test_input_is_not_changed():
    t = synthetic()
    before = t.copy()
    cohort_table(t, by="site")
    pd.testing.assert_frame_equal(t, before)


# --- display and renderings -----------------------------------------------------------------


def test_cohort_table_cells_are_counts_with_percentages():
    t = cohort_table(synthetic())
    assert list(t.columns) == ["with melanoma", "without melanoma", "Total"]
    assert t.index.names == ["section", "row"]
    assert t.loc[(S_PATIENTS, "total"), "with melanoma"] == "1 (33.3%)"
    assert t.loc[(S_PATIENTS, "total"), "Total"] == "3"
    assert t.loc[(S_SEX, "unknown"), "Total"] == "1 (33.3%)"
    assert t.loc[(S_PER_PATIENT, "mean"), "without melanoma"] == "1.5"
    assert t.loc[(S_AGE, "mean age per patient (years)"), "Total"] == "45"


def test_renderings_contain_the_numbers():
    big = pd.DataFrame({
        "image_id": [f"i{k}" for k in range(1500)],
        "patient_id": [f"p{k % 700}" for k in range(1500)],
        "target": [int(k == 3) for k in range(1500)],
        "diagnosis": ["a_b & c"] * 1500,
    })
    t = cohort_table(big)
    md, page, tex = to_markdown(t), to_html(t), to_latex(t)
    for text in (md, page, tex):
        assert "1,500" in text and "700" in text and "with melanoma" in text
    n_sections = len(t.index.get_level_values(0).unique())
    assert "| **patients** |" in md and md.count("\n") == 2 + n_sections + len(t)
    assert "1,500 (100.0%)" in md
    assert "<table" in page and "a_b &amp; c" in page and "1,500 (100.0%)" in page
    assert r"1,500 (100.0\%)" in tex and r"a\_b \& c" in tex
    assert tex.startswith(r"\begin{tabular}{lrrr}") and tex.rstrip().endswith(r"\end{tabular}")


def test_to_text_shows_every_column_aligned_whatever_the_width():
    import doctest

    import dermctx.cohort

    t = cohort_table(synthetic(), by="fold")
    text = to_text(t)
    lines = text.splitlines()
    assert lines[0].split() == ["0", "1", "Total"]
    assert len({len(line) for line in lines if line.startswith("  ")}) == 1  # one width
    n_sections = len(t.index.get_level_values(0).unique())
    assert len(lines) == 1 + n_sections + len(t)
    total = next(line for line in lines if line.startswith("  total"))
    assert total.split()[-1] == "3"  # the patients' total, right-aligned under "Total"
    with pd.option_context("display.width", 40, "display.max_columns", 2):
        assert "..." in str(t) and "..." not in to_text(t)  # pandas elides; to_text does not
    assert doctest.testmod(dermctx.cohort).failed == 0


def test_cli_describe(tmp_path, capsys):
    path = tmp_path / "t.csv"
    synthetic().to_csv(path, index=False)
    assert main(["describe", str(path), "--by", "fold", "--format", "tex"]) == 0
    out = capsys.readouterr().out
    assert r"\begin{tabular}" in out and r"2 (66.7\%)" in out
    out_file = tmp_path / "cohort.html"
    assert main(["describe", str(path), "--format", "html", "--out", str(out_file)]) == 0
    assert "1 (33.3%)" in out_file.read_text()
    assert main(["describe", str(path), "--by", "nosuch"]) == 2  # bad input
    assert "nosuch" in capsys.readouterr().err
