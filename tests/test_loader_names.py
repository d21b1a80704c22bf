"""Every loader names its input ``path``; the old keyword names still work, with a FutureWarning."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

import dermctx
from dermctx.errors import ModelError
from dermctx.explain import load_classifier
from dermctx.io.isic import SOURCE as ISIC2020
from dermctx.io.source import read_source

#: The public loaders: each one's first argument (read_source: its second) is ``path``.
LOADERS = [
    dermctx.read_table, dermctx.read_isic2020, dermctx.read_isic2019, dermctx.read_ham10000,
    dermctx.read_isic_duplicates, dermctx.read_dicom, dermctx.read_dicom_dir, dermctx.read_yolo,
    dermctx.read_coco, dermctx.read_embeddings, dermctx.TrainResult.load, dermctx.ContextRanker.load,
    dermctx.SetRanker.load, load_classifier,
]


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__qualname__)
def test_a_loaders_first_argument_is_path(loader):
    params = [p for p in inspect.signature(loader).parameters if p not in ("self", "cls")]
    assert params[0] == "path", params
    assert list(inspect.signature(read_source).parameters)[:2] == ["source", "path"]


def _isic2020() -> pd.DataFrame:
    return pd.DataFrame({"image_name": ["a", "b"], "patient_id": ["p", "q"], "target": [0, 1]})


def _isic2019() -> tuple[pd.DataFrame, pd.DataFrame]:
    meta = pd.DataFrame({"image": ["I1"], "age_approx": [40], "anatom_site_general": ["torso"],
                         "lesion_id": ["L1"], "sex": ["male"]})
    truth = pd.DataFrame({"image": ["I1"], **{c: [0.0] for c in
                                              ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")}})
    truth["NV"] = 1.0
    return meta, truth


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    labels, photos, coco = tmp_path / "labels", tmp_path / "photos", tmp_path / "coco.json"
    labels.mkdir()
    photos.mkdir()
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    return labels, photos, coco


def _calls(tmp_path: Path):
    """(name, call with the old keywords, call with the new ones, old names) for each loader."""
    meta, truth = _isic2019()
    labels, photos, coco = _folders(tmp_path)
    ham = pd.DataFrame({"lesion_id": ["L1"], "image_id": ["I1"], "dx": ["nv"]})
    return [
        ("read_isic2020", lambda: dermctx.read_isic2020(csv=_isic2020()),
         lambda: dermctx.read_isic2020(path=_isic2020()), ["csv"]),
        ("read_ham10000", lambda: dermctx.read_ham10000(csv=ham),
         lambda: dermctx.read_ham10000(path=ham), ["csv"]),
        ("read_isic2019", lambda: dermctx.read_isic2019(csv=meta, ground_truth=truth),
         lambda: dermctx.read_isic2019(path=meta, labels=truth), ["csv", "ground_truth"]),
        ("read_source", lambda: read_source(ISIC2020, csv=_isic2020()),
         lambda: read_source(ISIC2020, path=_isic2020()), ["csv"]),
        ("read_dicom_dir", lambda: dermctx.read_dicom_dir(directory=photos),
         lambda: dermctx.read_dicom_dir(path=photos), ["directory"]),
        ("read_yolo", lambda: dermctx.read_yolo(labels_dir=labels, images_dir=photos),
         lambda: dermctx.read_yolo(path=labels, image_dir=photos), ["labels_dir", "images_dir"]),
        ("read_coco", lambda: dermctx.read_coco(coco, images_dir=photos),
         lambda: dermctx.read_coco(path=coco, image_dir=photos), ["images_dir"]),
    ]


def _same(a, b) -> None:
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                    strict=True):
        pd.testing.assert_frame_equal(x, y)


def test_old_keyword_names_still_work_with_a_future_warning(tmp_path):
    for name, old, new, old_names in _calls(tmp_path):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # the new names warn of nothing
            expected = new()
        with pytest.warns(FutureWarning) as record:
            got = old()
        messages = [str(w.message) for w in record if w.category is FutureWarning]
        for old_name in old_names:
            assert any(f"{old_name}= is deprecated, use " in m for m in messages), (name, messages)
        assert all(w.filename == __file__ for w in record), name  # pointing at the caller
        _same(got, expected)


def test_old_keyword_names_of_folder_and_file_loaders(tmp_path):
    with pytest.warns(FutureWarning, match="store= is deprecated, use path="), \
            pytest.raises(ModelError, match="no embedding store here"):
        dermctx.read_embeddings(store=tmp_path / "nowhere")
    with pytest.warns(FutureWarning, match="out_dir= is deprecated, use path="), \
            pytest.raises(ModelError, match="not a finished train_lesion_cnn folder"):
        dermctx.TrainResult.load(out_dir=tmp_path)
    with pytest.warns(FutureWarning, match="checkpoint= is deprecated, use path="), \
            pytest.raises(ModelError):
        load_classifier(checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="both csv= and path="):
        dermctx.read_isic2020(csv=_isic2020(), path=_isic2020())
