from __future__ import annotations

import json
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from dermctx import DermctxError, benchmark
from dermctx.benchmarking import BENCHMARK_METRICS, BenchmarkResult
from dermctx.metrics import auc, paired_bootstrap, patient_bootstrap, topk_rate


def _table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """Patients of 3-12 lesions; a noisy CNN score; melanomas in about half the patients."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        n = int(rng.integers(3, 13))
        target = np.zeros(n, dtype=int)
        if p % 2 == 0:
            target[rng.integers(n)] = 1
        for i in range(n):
            rows.append({"image_id": f"IMG_{p:03d}_{i:02d}", "patient_id": f"P{p:03d}",
                         "age": float(rng.integers(20, 80)), "sex": ["male", "female"][p % 2],
                         "site": ["torso", "head/neck"][i % 2], "target": target[i]})
    t = pd.DataFrame(rows)
    t["cnn_score"] = 1 / (1 + np.exp(-(2.0 * t["target"] + rng.normal(size=len(t)) - 2.5)))
    return t


class PatientMemory(ClassifierMixin, BaseEstimator):
    """Scores 1 for a lesion of a patient seen in fit, else the CNN score / 10: a leak detector."""

    def fit(self, X, y):
        self.patients_ = set(X["patient_id"])
        self.columns_ = list(X.columns)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        seen = X["patient_id"].isin(self.patients_).to_numpy()
        p = np.where(seen, 1.0, X["cnn_score"].to_numpy() / 10)
        return np.c_[1 - p, p]


class ScoreLR(ClassifierMixin, BaseEstimator):
    """Logistic regression on the CNN score's logit."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def _x(self, X):
        p = np.clip(X["cnn_score"].to_numpy(float), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))[:, None]

    def fit(self, X, y):
        self.lr_ = LogisticRegression(C=self.C).fit(self._x(X), y)
        self.classes_ = self.lr_.classes_
        return self

    def predict_proba(self, X):
        return self.lr_.predict_proba(self._x(X))


def test_out_of_fold_predictions_never_come_from_a_model_that_saw_the_patient():
    t = _table()
    r = benchmark(t, {"cnn": None, "memory": PatientMemory()}, score_col="cnn_score", folds=4,
                  seeds=(0, 1), n_boot=50, metrics=["auc"], progress=False)
    p = r.predictions
    assert len(p) == 2 * len(t)
    assert set(p["seed"]) == {0, 1}
    # a model fitted on a lesion's patient would have scored it 1.0
    assert (p["memory"] < 1.0).all()
    np.testing.assert_allclose(p["memory"], p["cnn"] / 10)
    # every patient sits in exactly one fold per seed, and the folds differ between seeds
    assert (p.groupby(["seed", "patient_id"])["fold"].nunique() == 1).all()
    assert set(p["fold"]) == {0, 1, 2, 3}
    f0 = p[p.seed == 0].set_index("image_id")["fold"]
    f1 = p[p.seed == 1].set_index("image_id")["fold"]
    assert (f0 != f1.loc[f0.index]).any()
    # rows of each seed are in input order
    assert list(p[p.seed == 1]["image_id"]) == list(t["image_id"])


class ColumnSpy(PatientMemory):
    """Records the columns of every X it is fitted on (shared by its clones)."""

    fitted_on: ClassVar[list[list[str]]] = []

    def fit(self, X, y):
        ColumnSpy.fitted_on.append(list(X.columns))
        return super().fit(X, y)


def test_label_columns_never_reach_the_estimator():
    t = _table()
    t["diagnosis"] = np.where(t["target"] == 1, "melanoma", "nevus")
    t["fold"] = 0
    est = ColumnSpy()
    ColumnSpy.fitted_on.clear()
    benchmark(t, {"m": est}, folds=3, n_boot=20, metrics=["auc"], progress=False)
    assert len(ColumnSpy.fitted_on) == 3
    for cols in ColumnSpy.fitted_on:
        assert "cnn_score" in cols and "patient_id" in cols
        assert not {"target", "diagnosis", "fold"} & set(cols)
    assert not hasattr(est, "patients_")  # the estimator passed in is cloned, never fitted


def test_raw_score_metrics_match_dermctx_metrics():
    t = _table(seed=1)
    r = benchmark(t, {"CNN alone": "score"}, score_col="cnn_score", folds=3, n_boot=200,
                  random_state=7, progress=False)
    m = r.metrics.set_index("metric")
    y, s, pid = t["target"], t["cnn_score"], t["patient_id"]
    assert m.loc["auc", "estimate"] == pytest.approx(auc(y, s))
    assert m.loc["top3", "estimate"] == pytest.approx(topk_rate(y, s, pid, k=3))
    boot = patient_bootstrap("auc", y, s, pid, n_boot=200, random_state=7)
    assert m.loc["auc", "ci_low"] == pytest.approx(boot.low)
    assert m.loc["auc", "ci_high"] == pytest.approx(boot.high)
    assert m.loc["auc", "n_patients"] == 60
    assert m.loc["auc", "n_melanomas"] == 30
    assert list(r.metrics["metric"]) == list(BENCHMARK_METRICS)
    assert len(r.differences) == 0
    for row in r.metrics.itertuples():
        if row.missing_reason:  # no patient has over 15 lesions: every resample gives 1.000
            assert row.metric == "top15_sensitivity" and row.estimate == 1.0
            assert np.isnan(row.ci_low) and "bootstrap degenerate" in row.missing_reason
        else:
            assert row.ci_low <= row.estimate <= row.ci_high


def test_fold_auc_is_the_mean_of_fold_aucs():
    t = _table(seed=2)
    r = benchmark(t, {"cnn": None, "lr": ScoreLR()}, score_col="cnn_score", folds=3,
                  seeds=(0, 1), n_boot=30, metrics=["fold_auc"], progress=False)
    p = r.predictions
    want = np.mean([
        np.mean([auc(g["target"], g["lr"]) for _, g in ps.groupby("fold")])
        for _, ps in p.groupby("seed")
    ])
    got = r.metrics.set_index(["model", "metric"]).loc[("lr", "fold_auc"), "estimate"]
    assert got == pytest.approx(want)
    per_seed = r.per_seed[(r.per_seed.model == "lr")]["value"]
    assert np.mean(per_seed) == pytest.approx(want)


def test_differences_are_paired_bootstrap_against_the_reference():
    t = _table(seed=3)
    rng = np.random.default_rng(0)
    t["worse"] = t["cnn_score"] + rng.normal(scale=0.3, size=len(t))
    r = benchmark(t, {"cnn": None, "worse": "worse"}, score_col="cnn_score", n_boot=300,
                  random_state=5, metrics=["auc", "top1"], progress=False)
    assert r.reference == "cnn"
    d = r.differences.set_index("metric")
    want = paired_bootstrap("auc", t["target"], t["worse"], t["cnn_score"], t["patient_id"],
                            n_boot=300, random_state=5)
    assert d.loc["auc", "difference"] == pytest.approx(want.estimate)
    assert d.loc["auc", "ci_low"] == pytest.approx(want.low)
    assert d.loc["auc", "difference"] < 0
    assert set(d["model"]) == {"worse"}


def test_seed_average_and_same_numbers_twice():
    t = _table(seed=4)
    kw = dict(score_col="cnn_score", folds=3, seeds=(0, 1, 2), n_boot=50,
              metrics=["auc", "within_patient_auc"], progress=False)
    a = benchmark(t, {"cnn": None, "lr": ScoreLR()}, **kw)
    b = benchmark(t, {"cnn": None, "lr": ScoreLR()}, **kw)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    ps = a.per_seed[(a.per_seed.model == "lr") & (a.per_seed.metric == "auc")]
    assert len(ps) == 3
    est = a.metrics.set_index(["model", "metric"]).loc[("lr", "auc"), "estimate"]
    assert est == pytest.approx(ps["value"].mean())
    for seed, g in a.predictions.groupby("seed"):
        assert auc(g["target"], g["lr"]) == pytest.approx(
            ps.set_index("seed").loc[seed, "value"])


def test_json_and_markdown(tmp_path):
    t = _table(seed=5)
    r = benchmark(t, {"cnn": None, "lr": ScoreLR()}, score_col="cnn_score", folds=3, n_boot=50,
                  progress=False)
    assert isinstance(r, BenchmarkResult)
    r.to_json(tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["reference"] == "cnn"
    assert {d["metric"] for d in data["metrics"]} == set(BENCHMARK_METRICS)
    assert data["config"]["folds"] == 3 and data["config"]["fitted_models"] == ["lr"]
    md = r.to_markdown()
    assert md.count("| lr |") == 2 and "| cnn |" in md
    assert "AUC" in md and "[" in md
    assert r.summary().shape == (2, len(BENCHMARK_METRICS))


def test_bad_input_raises_naming_the_problem():
    t = _table()
    with pytest.raises(DermctxError, match="score_col"):
        benchmark(t, {"cnn": None}, progress=False)
    with pytest.raises(DermctxError, match="'nope'"):
        benchmark(t, {"x": "nope"}, progress=False)
    with pytest.raises(DermctxError, match="non-empty mapping"):
        benchmark(t, {}, progress=False)
    with pytest.raises(DermctxError, match="expected a scikit-learn"):
        benchmark(t, {"x": 3}, progress=False)
    with pytest.raises(DermctxError, match="unknown metric"):
        benchmark(t, {"cnn": None}, score_col="cnn_score", metrics=["f1"], progress=False)
    with pytest.raises(DermctxError, match="reference"):
        benchmark(t, {"cnn": None}, score_col="cnn_score", reference="x", progress=False)
    bad = t.copy()
    bad.loc[3, "cnn_score"] = np.nan
    with pytest.raises(DermctxError, match="row 3"):
        benchmark(bad, {"cnn": None}, score_col="cnn_score", progress=False)
    unlabelled = t.copy()
    unlabelled.loc[5, "target"] = np.nan
    with pytest.raises(DermctxError, match="target"):
        benchmark(unlabelled, {"cnn": None}, score_col="cnn_score", progress=False)


def test_dermctx_benchmark_stays_callable_after_importing_the_module():
    # a fresh interpreter: importing the modules behind the function first must leave
    # dermctx.benchmark bound to the function
    code = (
        "import dermctx, pandas as pd\n"
        "from dermctx.report import write_report\n"
        "from dermctx.benchmarking import BenchmarkResult\n"
        "t = pd.DataFrame({'image_id': list('abcdefgh'), 'patient_id': list('aabbccdd'),\n"
        "                  'target': [1, 0, 0, 1, 1, 0, 0, 1], 's': [.9, .1, .2, .8, .7, .3, .4, .6]})\n"
        "r = dermctx.benchmark(t, {'s': 's'}, folds=2, n_boot=5, metrics=['auc'], min_melanomas=1,\n"
        "                      progress=False)\n"
        "assert isinstance(r, BenchmarkResult)\n"
        "print(r.metrics['estimate'].iloc[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(1.0)


def test_duplicates_keep_linked_patients_in_one_fold():
    t = _table(n_patients=40, seed=6)
    pairs = pd.DataFrame({"image_id_1": ["IMG_000_00", "IMG_002_00"],
                          "image_id_2": ["IMG_001_00", "IMG_003_00"]})  # P000~P001, P002~P003
    r = benchmark(t, {"cnn": None}, score_col="cnn_score", folds=5, seeds=(0, 1, 2), n_boot=10,
                  metrics=["auc"], duplicates=pairs, progress=False)
    fold = r.predictions.groupby(["seed", "patient_id"])["fold"].first().unstack("patient_id")
    assert (fold["P000"] == fold["P001"]).all() and (fold["P002"] == fold["P003"]).all()


def test_how_the_diagnosis_was_made_never_reaches_the_estimator():
    # HAM10000's dx_type (histo is ordered for suspicious lesions) and dx derive from the label
    t = _table()
    t["dx_type"] = np.where(t["target"] == 1, "histo", "follow_up")
    t["dx"] = np.where(t["target"] == 1, "mel", "nv")
    ColumnSpy.fitted_on.clear()
    benchmark(t, {"m": ColumnSpy()}, folds=3, n_boot=20, metrics=["auc"], progress=False)
    assert len(ColumnSpy.fitted_on) == 3
    for cols in ColumnSpy.fitted_on:
        assert not {"dx_type", "dx"} & set(cols)


def test_metric_keys_and_labels_come_from_the_one_registry():
    from dermctx.metrics import METRICS

    t = _table(seed=7)
    t["p"] = t["cnn_score"]
    r = benchmark(t, {"cnn": None, "p": "p"}, score_col="cnn_score", n_boot=30,
                  metrics=["brier_score", "pauc80", "auc"], progress=False)
    assert list(r.metrics["metric"].unique()) == ["auc", "pauc80", "brier_score"]  # registry order
    md = r.to_markdown()
    assert "| model | AUC | pAUC (TPR > 0.8) | Brier score |" in md
    assert set(BENCHMARK_METRICS) <= set(METRICS)
    with pytest.raises(DermctxError, match="unknown metric"):
        benchmark(t, {"cnn": None}, score_col="cnn_score", metrics=["partial_auc"], progress=False)


def test_the_old_benchmarking_metrics_dict_is_deprecated():
    import dermctx.benchmarking as B

    with pytest.warns(FutureWarning, match="dermctx.benchmarking: METRICS is deprecated, use "
                                           "dermctx.metrics.METRICS"):
        old = B.METRICS
    assert list(old) == list(BENCHMARK_METRICS)
    assert old["pauc80"] == ("pAUC (TPR > 0.8)", True)  # the old form: (label, higher is better)
    with pytest.warns(FutureWarning):
        from dermctx.benchmarking import METRICS  # noqa: F401
    assert "METRICS" not in B.__all__


# --- display and missing figures --------------------------------------------------------------


def test_too_few_melanomas_leave_the_figure_missing_with_the_reason():
    t = _table(n_patients=16)  # 8 melanomas, in 8 patients
    r = benchmark(t, {"cnn": None, "same": "cnn_score"}, score_col="cnn_score", n_boot=50,
                  metrics=["auc", "within_patient_auc", "top1"], progress=False)
    m = r.metrics.set_index("metric")
    assert m["estimate"].isna().all() and m["ci_low"].isna().all()
    assert m.loc["auc", "missing_reason"].iloc[0] == "too few melanomas: 8; need >= 10"
    assert m.loc["top1", "missing_reason"].iloc[0] == (
        "too few patients with a melanoma: 8; need >= 10")
    assert r.differences["difference"].isna().all()
    assert (r.differences["missing_reason"] != "").all()
    assert r.per_seed["value"].isna().all()
    assert r.config["min_melanomas"] == 10
    text = str(r)
    assert "n/a (too few melanomas: 8; need >= 10): AUC" in text
    assert "0.000 [0.000, 0.000]" not in text
    assert "n/a (too few melanomas: 8; need >= 10): AUC" in r.to_markdown()
    assert json.loads(r.to_json())["metrics"][0]["estimate"] is None
    # with a lower minimum the figures are computed
    low = benchmark(t, {"cnn": None}, score_col="cnn_score", n_boot=50, metrics=["auc"],
                    min_melanomas=8, progress=False)
    assert low.metrics["estimate"].iloc[0] == pytest.approx(auc(t["target"], t["cnn_score"]))


def test_result_displays_in_a_terminal_and_a_notebook():
    t = _table()
    r = benchmark(t, {"CNN alone": None, "LR": ScoreLR()}, score_col="cnn_score", folds=3,
                  n_boot=100, metrics=["auc", "pauc80", "top1"], progress=False)
    assert repr(r) == ("BenchmarkResult(models=['CNN alone', 'LR'], reference='CNN alone', "
                       "n_patients=60, n_melanomas=30)")
    lines = str(r).splitlines()
    m = r.metrics.set_index(["model", "metric"])
    auc_line = next(line for line in lines if line.startswith("AUC "))
    for model in ("CNN alone", "LR"):
        row = m.loc[(model, "auc")]
        assert f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in auc_line
    header = next(line for line in lines if "CNN alone" in line and "LR" in line)
    # columns line up: each model's figure ends where its name ends
    assert auc_line.rstrip().endswith(
        f"{m.loc[('LR', 'auc'), 'ci_high']:.3f}]") and len(auc_line) == len(header)
    assert any(line.startswith("Difference against CNN alone") for line in lines)
    assert "LR - CNN alone" in str(r)
    d = r.differences.set_index("metric").loc["auc"]
    assert f"{d['difference']:+.3f}" in str(r)
    html = r._repr_html_()
    assert html.startswith("<div><table>") and html.count("<tr>") == 1 + 2 + 1 + 1
    assert "LR &minus; CNN alone" in html and "pAUC (TPR &gt; 0.8)" in html
    assert f"[{m.loc[('LR', 'auc'), 'ci_low']:.3f}, {m.loc[('LR', 'auc'), 'ci_high']:.3f}]" in html


def test_given_folds_are_used_as_they_are_and_checked_for_leaks():
    import dermctx
    from dermctx.errors import DermctxError, LeakageError

    rng = np.random.default_rng(3)
    pid = np.repeat([f"P{i:02d}" for i in range(40)], 5)
    y = (rng.uniform(size=len(pid)) < 0.2).astype(int)
    t = pd.DataFrame({"image_id": [f"I{i:03d}" for i in range(len(pid))], "patient_id": pid,
                      "target": y, "cnn_score": np.clip(0.3 * y + rng.uniform(0, 0.7, len(pid)), 0, 1)})
    t["fold"] = pd.factorize(t["patient_id"])[0] % 3
    models = {"CNN": "cnn_score", "LR": ScoreLR()}
    r = dermctx.benchmark(t, models, folds="fold", n_boot=50, min_melanomas=1, progress=False)
    assert (r.predictions["fold"].to_numpy() == t["fold"].to_numpy()).all()
    assert r.config["folds"] == 3 and r.config["folds_given"] and "3 given folds" in r.to_markdown()
    same = dermctx.benchmark(t, models, folds=t["fold"].to_numpy(), n_boot=50, min_melanomas=1, progress=False)
    np.testing.assert_allclose(same.predictions["LR"], r.predictions["LR"])
    leaky = t.assign(fold=np.arange(len(t)) % 3)  # a patient's lesions in several folds
    with pytest.raises(LeakageError):
        dermctx.benchmark(leaky, models, folds="fold", n_boot=50, progress=False)
    with pytest.raises(DermctxError, match="one split"):
        dermctx.benchmark(t, models, folds="fold", seeds=(0, 1), n_boot=50, progress=False)
