from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dermctx import DermctxError, Taxonomy
from dermctx.taxonomy import BUILTIN_TAXONOMIES

ISIC2020_DIAGNOSES = [
    "nevus", "melanoma", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis",
    "solar lentigo", "cafe-au-lait macule", "atypical melanocytic proliferation", "unknown",
]
HAM10000_DX = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.mark.parametrize("name", sorted(BUILTIN_TAXONOMIES))
def test_builtin_covers_every_source_label(name):
    tax = Taxonomy.builtin(name)
    expected = ISIC2020_DIAGNOSES if name.startswith("isic2020") else HAM10000_DX
    assert sorted(tax.leaves) == sorted(expected)
    want = ["benign", "malignant"] if name.endswith("binary") else [
        "benign", "malignant", "non-neoplastic"]
    assert tax.classes() == want


def test_malignant_classes():
    ham = Taxonomy.builtin("ham10000-binary")
    assert ham.map(HAM10000_DX) == [
        "malignant", "malignant", "benign", "benign", "malignant", "benign", "benign"]
    isic = Taxonomy.builtin("isic2020-esteva3")
    assert isic.parent("melanoma") == "malignant"
    assert isic.parent("cafe-au-lait macule") == "non-neoplastic"
    assert isic.parent("unknown") == "benign"


def test_isic_binary_agrees_with_benign_malignant_column(isic_dir):
    gt = pd.read_csv(isic_dir / "ISIC_2020_Training_GroundTruth.csv")
    mapped = Taxonomy.builtin("isic2020-binary").map(gt["diagnosis"])
    assert (mapped.to_numpy() == gt["benign_malignant"].to_numpy()).all()


def test_ham_real_codes_all_known(ham_dir):
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    mapped = Taxonomy.builtin("ham10000-esteva3").map(meta["dx"])
    assert mapped.notna().all()
    assert (mapped == "malignant").sum() == meta["dx"].isin(["mel", "bcc", "akiec"]).sum()


def test_aggregate_sums_children_hand_worked():
    tax = Taxonomy({"benign": {"melanocytic": ["nv"], "keratinocytic": ["bkl", "df"]},
                    "malignant": ["mel"]}, name="toy")
    assert tax.leaves == ["nv", "bkl", "df", "mel"]
    assert tax.depth == 2
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.0, 0.0, 0.3]])
    top = tax.aggregate(p)
    assert list(top.columns) == ["benign", "malignant"]
    np.testing.assert_allclose(top.to_numpy(), [[0.6, 0.4], [0.7, 0.3]])
    fine = tax.aggregate(p, depth=2)
    assert list(fine.columns) == ["melanocytic", "keratinocytic", "mel"]
    np.testing.assert_allclose(fine.to_numpy(), [[0.1, 0.5, 0.4], [0.7, 0.0, 0.3]])


def test_empty_inference_class_gets_zero():
    out = Taxonomy.builtin("ham10000-esteva3").aggregate(np.full((3, 7), 1 / 7))
    np.testing.assert_allclose(out["non-neoplastic"], 0.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 20),
       name=st.sampled_from(sorted(BUILTIN_TAXONOMIES)))
def test_summed_probabilities_stay_a_distribution(seed, n, name):
    tax = Taxonomy.builtin(name)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(len(tax.leaves), 0.3), size=n)
    frame = pd.DataFrame(p, columns=tax.leaves).iloc[:, ::-1]  # column order must not matter
    out = tax.aggregate(frame)
    assert out.shape == (n, len(tax.classes()))
    assert (out.to_numpy() >= 0).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
    # the malignant probability is exactly the sum of the malignant leaves
    mal = [leaf for leaf in tax.leaves if tax.parent(leaf) == "malignant"]
    np.testing.assert_allclose(out["malignant"], frame[mal].sum(axis=1))


def test_errors_name_the_problem():
    tax = Taxonomy.builtin("ham10000-binary")
    with pytest.raises(DermctxError, match="'scc'"):
        tax.map(["nv", "scc"])
    with pytest.raises(DermctxError, match=r"shape \(n, 7\)"):
        tax.aggregate(np.ones((2, 3)) / 3)
    with pytest.raises(DermctxError, match=r"rows \[1\]"):
        tax.aggregate(np.array([[1, 0, 0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0, 0, 0]]))
    with pytest.raises(DermctxError, match="missing"):
        tax.aggregate(pd.DataFrame({"nv": [1.0]}))
    with pytest.raises(DermctxError, match="expected one of"):
        Taxonomy.builtin("esteva9")
    with pytest.raises(DermctxError, match="twice"):
        Taxonomy({"a": ["x"], "b": ["x"]})


def test_map_keeps_missing_and_index():
    s = pd.Series(["mel", None, "nv"], index=[10, 11, 12])
    out = Taxonomy.from_mapping({"mel": "malignant", "nv": "benign"}).map(s)
    assert list(out.index) == [10, 11, 12]
    assert out.iloc[0] == "malignant" and out.iloc[1] is None and out.iloc[2] == "benign"
