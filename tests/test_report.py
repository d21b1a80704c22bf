from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermctx import DermctxError, benchmark, write_report
from dermctx.report import REPORT_SECTIONS


class _Page(HTMLParser):
    """Collects section ids, <img> sources and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "img":
            self.images.append(a)

    def handle_data(self, data):
        self.text.append(data)


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(src: str) -> Image.Image:
    assert src.startswith("data:image/"), src[:40]
    header, payload = src.split(",", 1)
    assert header.endswith(";base64")
    img = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    img.load()
    return img


def _scores(tmp_path, n_patients: int = 24, with_images: bool = True) -> pd.DataFrame:
    """Patients of 3-7 lesions, a melanoma in every other one (12 melanomas by default: above
    dermctx.metrics.MIN_MELANOMAS, so the whole-table figures are shown)."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_patients):
        n = int(rng.integers(3, 8))
        mel = int(rng.integers(n)) if p % 2 == 0 else -1
        for i in range(n):
            rows.append({
                "image_id": f"IMG_{p:02d}_{i}", "patient_id": f"P{p:02d}",
                "age": float(rng.integers(20, 85)), "sex": ["male", "female"][p % 2],
                "site": ["torso", "lower extremity", None][i % 3],
                "diagnosis": "melanoma" if i == mel else "nevus",
                "target": int(i == mel), "source": ["isic2020", "clinic"][p % 2],
            })
    t = pd.DataFrame(rows)
    t["cnn"] = 1 / (1 + np.exp(-(2.5 * t["target"] + rng.normal(size=len(t)) - 2)))
    t["ranker"] = np.clip(t["cnn"] + rng.normal(scale=0.05, size=len(t)), 0, 1)
    if with_images:
        paths = []
        for i, image_id in enumerate(t["image_id"]):
            path = tmp_path / f"{image_id}.jpg"
            Image.new("RGB", (40 + i % 7, 30), (200, 120 + i % 100, 90)).save(path)
            paths.append(str(path))
        t["path"] = paths
        t.loc[1, "path"] = str(tmp_path / "missing.jpg")  # an unreadable image must not stop it
    return t


def test_report_html_has_every_section_and_every_image_decodes(tmp_path):
    t = _scores(tmp_path)
    t.loc[t["patient_id"] == "P03", "ranker"] = 9.425e-05  # f"{x:.4g}" would print 9.425e-05
    out = tmp_path / "rep"
    path = write_report(t, out, score_cols=["cnn", "ranker"], n_patients=24, n_boot=50,
                        progress=False)
    assert path == out / "report.html"
    page = _parse(path)
    assert page.sections == list(REPORT_SECTIONS)
    assert len(page.images) >= 3
    plots = {img["alt"] for img in page.images if img["alt"] in {"roc", "pr", "reliability"}}
    assert plots == {"roc", "pr", "reliability"}
    thumbs = [img for img in page.images if "thumb" in img.get("class", "")]
    assert len(thumbs) >= len(t) - 1 - 8  # every readable lesion shown (at most 15 per patient)
    for img in page.images:
        im = _decode(img["src"])
        assert im.size[0] > 0 and im.size[1] > 0
    for img in thumbs:  # the default thumb_size (128), embedded at twice that for the zoom
        assert _decode(img["src"]).size == (256, 256)
    # no external resource: the page is self-contained
    html = path.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    text = " ".join(page.text)
    assert "\u2605" in text  # melanomas are marked
    patients = html[html.index('<section id="patients">'):html.index('<section id="method">')]
    words = re.sub(r'src="[^"]*"|<[^>]*>', " ", patients)  # the text a person reads
    assert "%" in words and not re.search(r"\d[eE][-+]?\d", words)  # percentages, never 1e-05
    for f in ("metrics.json", "metrics.md", "roc.png", "pr.png", "reliability.png",
              "subgroups.csv", "calibration.csv", "operating_points.csv", "predictions.csv"):
        assert (out / f).stat().st_size > 0, f
    for f in ("roc.png", "pr.png", "reliability.png"):
        assert Image.open(out / f).format == "PNG"
    errors = pd.read_csv(out / "report.errors.csv")
    assert list(errors["image_id"]) == ["IMG_00_1"] and errors["stage"].iloc[0] == "thumbnail"


def test_report_tables(tmp_path):
    t = _scores(tmp_path, with_images=False)
    out = tmp_path / "rep"
    write_report(t, out, score_cols=["cnn", "ranker"], n_patients=3, n_boot=50, progress=False)
    data = json.loads((out / "metrics.json").read_text())
    assert data["reference"] == "cnn"
    assert {m["model"] for m in data["metrics"]} == {"cnn", "ranker"}
    assert "fold_auc" not in {m["metric"] for m in data["metrics"]}  # ready-made scores
    sub = pd.read_csv(out / "subgroups.csv", keep_default_na=False)
    assert set(sub["by"]) == {"all", "sex", "age_band", "site", "source"}
    assert "unknown" in set(sub[sub["by"] == "site"]["group"])  # missing sites kept, not dropped
    site_rows = sub[(sub["by"] == "site") & (sub["model"] == "cnn")]
    assert site_rows["n_images"].sum() == len(t)
    # one key per metric in every file (dermctx.metrics.METRICS), one label in the page
    assert {"auc", "pauc80", "within_patient_auc", "top1"} <= set(sub.columns)
    assert not {"partial_auc", "topk_rate"} & set(sub.columns)
    assert {m["metric"] for m in data["metrics"]} >= {"pauc80", "top1"}
    html = (out / "report.html").read_text()
    subgroups = html[html.index('<section id="subgroups">'):html.index('<section id="patients">')]
    assert "pAUC (TPR &gt; 0.8)" in subgroups and "top-1 rate" in subgroups and "pAUC80" not in html
    calib = pd.read_csv(out / "calibration.csv")
    assert set(calib["group"]) == {"all", "isic2020", "clinic"}
    brier = calib[(calib.model == "cnn") & (calib.group == "all")]["brier_score"].iloc[0]
    assert brier == pytest.approx(np.mean((t["cnn"] - t["target"]) ** 2))
    ops = pd.read_csv(out / "operating_points.csv")
    assert len(ops) == 2 * 4
    from dermctx.metrics import sensitivity_at_specificity, specificity_at_sensitivity

    row = ops[(ops.model == "ranker") & (ops.measure == "sensitivity")].iloc[0]
    point = sensitivity_at_specificity(t["target"], t["ranker"], specificity=0.90)
    assert row["estimate"] == pytest.approx(point.sensitivity)
    assert row["specificity_reached"] >= 0.90 and row["ci_low"] <= row["estimate"] <= row["ci_high"]
    row = ops[(ops["model"] == "cnn") & (ops["at"] == "sensitivity >= 0.95")].iloc[0]
    assert row["estimate"] == pytest.approx(
        specificity_at_sensitivity(t["target"], t["cnn"], sensitivity=0.95).specificity)
    page = _parse(out / "report.html")
    assert sum(1 for img in page.images if "thumb" in img.get("class", "")) == 0


def test_report_from_benchmark_result_and_non_probability_scores(tmp_path):
    t = _scores(tmp_path, with_images=False)
    t["logit"] = np.log(t["cnn"] / (1 - t["cnn"]))  # not a probability: no calibration
    r = benchmark(t, {"cnn": None, "logit": "logit"}, score_col="cnn", folds=2, n_boot=30,
                  metrics=["auc", "top1"], progress=False)
    path = write_report(r, tmp_path / "rep2", n_boot=30, progress=False)
    page = _parse(path)
    assert page.sections == list(REPORT_SECTIONS)
    calib = pd.read_csv(tmp_path / "rep2" / "calibration.csv")
    assert set(calib["model"]) == {"cnn"}
    assert {img["alt"] for img in page.images} >= {"roc", "pr", "reliability"}


def test_report_errors(tmp_path):
    t = _scores(tmp_path, with_images=False)
    with pytest.raises(DermctxError, match="score_cols"):
        write_report(t, tmp_path / "x", progress=False)
    with pytest.raises(DermctxError, match="nope"):
        write_report(t, tmp_path / "x", score_cols=["nope"], progress=False)
    with pytest.raises(DermctxError, match="BenchmarkResult"):
        write_report([1, 2], tmp_path / "x", progress=False)


def test_patient_view_shows_the_context_explanation(tmp_path):
    t = _scores(tmp_path, with_images=False)

    def explain(pid):
        if pid == "P00":
            raise DermctxError("cannot explain P00")
        ids = t.loc[t["patient_id"] == pid, "image_id"].tolist()
        return pd.DataFrame({"image_id": ids, "raised_by": [ids[-1]] * len(ids),
                             "raised_by_change": 0.25, "lowered_by": None,
                             "lowered_by_change": 0.0})

    path = write_report(t, tmp_path / "rep", score_cols=["cnn", "ranker"], n_patients=24,
                        n_boot=20, explain=explain, progress=False)
    text = " ".join(_parse(path).text)
    assert "caused by another lesion" in text
    assert "Raised most by the presence of" in text and "+25 pp" in text  # 0.25, in points
    assert "Lowered most by the presence of" not in text  # lowered_by None: nothing to show
    errors = pd.read_csv(tmp_path / "rep" / "report.errors.csv")
    assert list(errors["stage"]) == ["explain"] and "P00" in errors["message"].iloc[0]


def test_reliability_plot_draws_no_empty_bin_at_the_axis_floor():
    from dermctx.metrics import reliability_curve
    from dermctx.report import _reliability_figure

    rng = np.random.default_rng(0)
    p = np.sort(rng.uniform(0.0005, 0.5, 400))
    y = np.zeros(400, dtype=int)
    y[[250, 330, 360, 370, 390, 395, 399]] = 1  # the lowest deciles hold no melanoma
    frame = pd.DataFrame({"target": y, "m": p})
    fig, left_out = _reliability_figure(frame, ["m"])
    curve = reliability_curve(y, p, n_bins=10, strategy="quantile")
    ax = fig.axes[0]
    points = ax.lines[0].get_xydata()  # the model's line; the diagonal comes after
    assert (points > 0).all()
    assert len(points) == int((curve["observed_rate"] > 0).sum()) < len(curve)
    assert left_out == {"m": (int((curve["observed_rate"] == 0).sum()), len(curve))}
    np.testing.assert_allclose(points[:, 1], curve.loc[curve["observed_rate"] > 0,
                                                       "observed_rate"])
    assert points[:, 1].min() > ax.get_ylim()[0]  # nothing pinned to the floor
    assert ax.get_xlim()[0] <= points[:, 0].min()


def test_report_subgroups_have_a_difference_column_and_missing_reasons(tmp_path):
    t = _scores(tmp_path, n_patients=40, with_images=False)  # 20 melanomas
    out = tmp_path / "rep"
    write_report(t, out, score_cols=["cnn", "ranker"], n_patients=2, n_boot=50, progress=False)
    sub = pd.read_csv(out / "subgroups.csv", keep_default_na=False, na_values=[""])
    ranker = sub[sub["model"] == "ranker"]
    assert set(ranker["reference"]) == {"cnn"}
    assert {"auc_difference", "auc_difference_low", "auc_difference_high",
            "auc_difference_missing_reason"} <= set(sub.columns)
    whole = ranker[ranker["by"] == "all"].iloc[0]
    from dermctx.metrics import paired_bootstrap

    d = paired_bootstrap("auc", t["target"], t["ranker"], t["cnn"], t["patient_id"], n_boot=50)
    assert whole["auc_difference"] == pytest.approx(d.estimate)
    assert sub.loc[sub["model"] == "cnn", "auc_difference"].isna().all()  # the reference itself
    # subgroups with fewer than 10 melanomas: missing, with the reason, never 0.000 [0.000, 0.000]
    thin = sub[sub["n_melanomas"] < 10]
    assert len(thin) and thin["auc"].isna().all()
    assert (thin["auc_missing_reason"].str.startswith("too few melanomas: ")).all()
    html = (out / "report.html").read_text()
    section = html[html.index('<section id="subgroups">'):html.index('<section id="patients">')]
    assert "difference to cnn" in section
    n = int(thin["n_melanomas"].iloc[0])
    assert f"n/a: too few melanomas: {n}; need ≥ 10" in section
    for m in ("auc", "pauc80", "within_patient_auc", "top1"):  # no zero-width CI is shown
        shown = sub[m].notna() & sub[f"{m}_low"].notna()
        assert (sub.loc[shown, f"{m}_low"] < sub.loc[shown, f"{m}_high"]).all()
        assert (sub.loc[sub[m].notna() & ~shown, f"{m}_missing_reason"] != "").all()
    assert "reference" in pd.read_csv(out / "subgroups.csv").columns


def test_report_of_too_few_melanomas_is_written_with_reasons(tmp_path):
    t = _scores(tmp_path, n_patients=10, with_images=False)  # 5 melanomas
    out = tmp_path / "few"
    path = write_report(t, out, score_cols=["cnn", "ranker"], n_patients=2, n_boot=20,
                        progress=False)
    html = path.read_text()
    models = html[html.index('<section id="models">'):html.index('<section id="differences">')]
    assert "n/a" in models and "too few melanomas: 5; need ≥ 10" in models
    ops = pd.read_csv(out / "operating_points.csv")
    assert ops["estimate"].isna().all() and (ops["missing_reason"] != "").all()
    assert "too few melanomas: 5" in (out / "metrics.md").read_text()
