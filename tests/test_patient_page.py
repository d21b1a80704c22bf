from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import dermctx
from dermctx import DermctxError, errors_frame
from dermctx.errors import error_record
from dermctx.patient_page import DISCLAIMER, patient_cards_html, write_patient_page

SCIENTIFIC = re.compile(r"\d[eE][-+]?\d")
EVIL = '<script>alert("x")</script>&"'


class _Page(HTMLParser):
    """The text, the <img> tags and the cards (their order and ids) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[dict[str, str]] = []
        self.cards: list[dict[str, str]] = []
        self.attrs: list[str] = []  # every attribute value but image sources
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        self.attrs += [v for k, v in a.items() if k != "src"]
        if tag == "img":
            self.images.append(a)
        if tag == "article":
            self.cards.append(a)

    def handle_data(self, data):
        if self.lasttag != "style":  # the page's text, not its CSS (colours such as #e8e6e0)
            self.text.append(data)

    @property
    def all_text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text))


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _decode(src: str) -> Image.Image:
    header, payload = src.split(",", 1)
    assert header == "data:image/jpeg;base64"
    img = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    img.load()
    return img


def _scores(ids: list[str]) -> pd.DataFrame:
    """Scores as ``ContextRanker.score_patient`` gives them, with every optional column, shuffled."""
    n = len(ids)
    score = np.array([0.31, 0.12, 0.012, 0.0035, 9.425e-05, 0.99999, 2e-7][:n])
    order = np.argsort(-score, kind="stable")
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(1, n + 1)
    frame = pd.DataFrame({
        "image_id": ids, "score": score, "rank": rank,
        "cnn_score": [0.05, 0.2, 0.0001, 0.5, 0.3, 0.01, 0.02][:n],
        "explanation": ["raises: tbp_lv_areaMM2 higher than 5 of the patient's 6 other lesions "
                        "(+3.1 SD from their mean); CNN score 12% (higher than 4 of 6) | lowers: "
                        "age 34"] * n,
        "raised_by": [ids[(i + 1) % n] for i in range(n)], "raised_by_change": 1.2e-5,
        "lowered_by": [ids[(i + 2) % n] for i in range(n)], "lowered_by_change": -0.051,
        "most_similar": [[ids[(i + 1) % n], ids[(i + 3) % n]] for i in range(n)],
        "least_similar": [ids[(i + 2) % n] for i in range(n)],
        "target": [0, 0, 1, 0, 0, 0, 0][:n],
    })
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture(params=["png", "real-jpeg"])
def lesion_images(request, tmp_path) -> dict[str, Path]:
    """Five lesion images: PNGs drawn here, or real ISIC 2020 JPEGs (skipped when absent)."""
    if request.param == "png":
        out = {}
        for i in range(5):
            arr = np.full((90 + 10 * i, 120, 3), (200, 160 - 20 * i, 140), dtype=np.uint8)
            arr[30:60, 40:80] = (90 + 20 * i, 40, 30)
            path = tmp_path / f"lesion{i}.png"
            Image.fromarray(arr).save(path)
            out[f"IMG_{i}"] = path
        return out
    folder = request.getfixturevalue("isic_images")
    jpegs = sorted(folder.glob("ISIC_*.jpg"))[:5]
    if len(jpegs) < 5:
        pytest.skip(f"real data not available: fewer than 5 JPEGs in {folder}")
    return {p.stem: p for p in jpegs}


def test_page_from_images(lesion_images, tmp_path):
    ids = [*lesion_images, EVIL, "corrupt"]
    images: dict[str, object] = dict(lesion_images)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    images["corrupt"] = tmp_path / "corrupt.jpg"
    images[EVIL] = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    scores = _scores(ids)
    given = errors_frame([error_record("gone", 6, "/clinic/gone.dcm", "read", "ImageError: truncated")])
    path = write_patient_page(
        scores, tmp_path / "out", images=images, errors=given,
        patient={"patient_id": "IP_<b>1</b>", "age": 55.0, "sex": "female"},
        provenance={"model": "ContextRanker", "trained_on": "SIIM-ISIC 2020, 1,152 patients",
                    "held_out_auc": (0.91234, 0.8876, 0.9481), "created": "2025-01-31"},
        thumb_size=96)
    assert path == tmp_path / "out" / "patient.html"
    html = path.read_text(encoding="utf-8")
    page = _parse(html)
    text = page.all_text

    # one card per lesion, in rank order; one large thumbnail per readable image
    by_rank = scores.sort_values("rank")["image_id"].tolist()
    assert len(page.cards) == len(ids)
    assert [c["id"] for c in page.cards] == [f"lesion-{k}" for k in range(1, len(ids) + 1)]
    thumbs = [img for img in page.images if img.get("class") == "thumb"]
    assert [t["alt"] for t in thumbs] == [f"lesion {i}" for i in by_rank if i != "corrupt"]
    for t in thumbs:
        assert _decode(t["src"]).size == (192, 192)  # twice thumb_size, for the enlarged view
    minis = [img for img in page.images if img.get("class") == "mini"]
    assert minis and all(_decode(m["src"]).size == (112, 112) for m in minis)
    ranks = re.findall(r"rank #(\d+) of 7 in context", text)
    assert ranks == [str(k) for k in range(1, 8)]

    # numbers as people read them, never in scientific notation
    for chunk in [text, *page.attrs]:
        assert not SCIENTIFIC.search(chunk), SCIENTIFIC.search(chunk)
    for shown in ("31%", "12%", "1.2%", "0.35%", "< 0.1%", "> 99.9%", "0.912 [0.888, 0.948]",
                  "-5.1 pp", "< 0.01 pp"):
        assert shown in text, shown
    # the CNN alone's rank among these rows, beside the rank in context
    first = scores.loc[scores["rank"] == 1].iloc[0]
    cnn_rank = int((scores["cnn_score"] > first["cnn_score"]).sum()) + 1
    assert f"rank #1 of 7 in context, CNN alone #{cnn_rank} (" in text

    # the header: facts, provenance, disclaimer
    assert "Research aid, not a diagnosis." in text and DISCLAIMER.split(". ", 1)[1] in text
    assert "SIIM-ISIC 2020, 1,152 patients" in text and "female" in text
    assert "IP_<b>1</b>" in text and "<b>1</b>" not in html  # escaped
    assert "★ melanoma" in text  # target marks the melanoma (research report)

    # the corrupt image: a visible placeholder and an entry under "Could not be scored"
    assert text.count("unreadable image") == 1
    errors_section = html[html.index('id="errors"'):]
    assert "Could not be scored" in errors_section
    assert "corrupt.jpg" in errors_section and "cannot decode image" in errors_section
    assert "/clinic/gone.dcm" in errors_section and "truncated" in errors_section
    assert errors_section.count("<tr>") == 1 + 2  # header, the given error, the thumbnail

    # the malicious id is text, never markup; the page is self-contained, without script
    assert EVIL in text
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('<a class="open"') == len(thumbs)  # every thumbnail enlarges


def test_cards_without_images_and_reused_by_the_report():
    scores = _scores([f"L{i}" for i in range(4)]).drop(columns=["target"])
    errors: list[dict] = []
    html = patient_cards_html(scores, errors=errors, id_prefix="p3-")
    page = _parse(html)
    assert not page.images and not errors
    assert [c["id"] for c in page.cards] == ["p3-lesion-1", "p3-lesion-2", "p3-lesion-3", "p3-lesion-4"]
    assert 'href="#p3-lesion-' in html  # related lesions link to their cards
    assert "★" not in page.all_text
    # other models' ranks and non-probability scores (the report's case)
    scores["logit"] = np.linspace(-3, 4, len(scores))
    scores["logit_rank"] = [4, 3, 2, 1]
    text = _parse(patient_cards_html(scores, compare={"logit": ("logit", "logit_rank")},
                                     probability_cols={"score"})).all_text
    assert "logit #4 (-3)" in text and "CNN alone" not in text


def test_missing_and_unreadable_images_are_shown_and_recorded_once(tmp_path):
    scores = _scores(["a", "b", "c"])
    errors: list[dict] = []
    images = {"a": tmp_path / "missing.jpg", "b": np.zeros((4, 4), dtype=np.uint8)}  # c: none
    html = patient_cards_html(scores, images=images, errors=errors, thumb_size=64)
    text = _parse(html).all_text
    assert text.count("unreadable image") == 2 and text.count("no image") >= 1
    assert sorted(e["image_id"] for e in errors) == ["a", "b"]  # once each, though shown as minis too
    assert all(e["stage"] == "thumbnail" for e in errors)
    assert "no such file" in next(e["message"] for e in errors if e["image_id"] == "a")
    assert "RGB uint8 array" in next(e["message"] for e in errors if e["image_id"] == "b")


def test_dicom_image_on_the_page(isic_images, tmp_path):
    jpeg = sorted(isic_images.glob("ISIC_*.jpg"))[0]
    dcm = dermctx.write_dicom(jpeg, {"image_id": jpeg.stem, "patient_id": "P1"}, tmp_path / "a.dcm")
    scores = pd.DataFrame({"image_id": [jpeg.stem], "score": [0.2], "rank": [1]})
    path = write_patient_page(scores, tmp_path / "p.html", images={jpeg.stem: dcm}, thumb_size=64)
    thumbs = [i for i in _parse(path.read_text()).images if i.get("class") == "thumb"]
    assert len(thumbs) == 1 and _decode(thumbs[0]["src"]).size == (128, 128)


def test_bad_scores_are_refused_naming_the_problem(tmp_path):
    good = pd.DataFrame({"image_id": ["a", "b"], "score": [0.2, 0.1], "rank": [1, 2]})
    with pytest.raises(DermctxError, match=r"lack the column\(s\) \['rank'\]"):
        write_patient_page(good.drop(columns="rank"), tmp_path / "x.html")
    with pytest.raises(DermctxError, match=r"'a'.*more than once"):
        patient_cards_html(pd.concat([good, good.iloc[:1]]))
    with pytest.raises(DermctxError, match="'score' is not a number at row 1"):
        patient_cards_html(good.assign(score=[0.2, "high"]))
    with pytest.raises(DermctxError, match="one patient"):
        patient_cards_html(good.assign(patient_id=["P1", "P2"]))
    with pytest.raises(DermctxError, match="DataFrame"):
        patient_cards_html([1, 2])  # type: ignore[arg-type]
    with pytest.raises(DermctxError, match="compare"):
        patient_cards_html(good, compare={"CNN": "cnn_score"})
    with pytest.raises(DermctxError, match="errors table"):
        write_patient_page(good, tmp_path / "x.html", errors=[{"message": "x"}])  # type: ignore[arg-type]
    assert not (tmp_path / "x.html").exists()


def test_exported_lazily():
    assert dermctx.write_patient_page is write_patient_page
    assert "write_patient_page" in dermctx.__all__
