"""dermctx: patient-context melanoma ranking.

Score a patient's whole lesion set, not one image at a time: per-lesion CNN embeddings grouped by
patient, a set-transformer "ugly duckling" model over the set, and LightGBM on metadata plus
patient-relative features.

The public API is re-exported here. Heavy modules (torch, timm, LightGBM) are imported on first
use, so ``import dermctx`` stays fast.
"""

from __future__ import annotations

import importlib as _importlib
import pkgutil as _pkgutil
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    # errors
    "DermctxError": "dermctx.errors",
    "TableError": "dermctx.errors",
    "ImageError": "dermctx.errors",
    "ModelError": "dermctx.errors",
    "LeakageError": "dermctx.errors",
    "MetricError": "dermctx.errors",
    "errors_frame": "dermctx.errors",
    # the lesion table
    "validate_table": "dermctx.table",
    "read_table": "dermctx.io.registry",
    "embedding_columns": "dermctx.table",
    "has_patient_context": "dermctx.table",
    # loaders
    "read_isic2020": "dermctx.io.isic",
    "read_isic_duplicates": "dermctx.io.isic",
    "write_isic_duplicates": "dermctx.io.isic",
    "read_ham10000": "dermctx.io.ham",
    "read_isic2019": "dermctx.io.isic2019",
    "DermctxWarning": "dermctx.errors",
    "write_dicom": "dermctx.io.dicom",
    "read_dicom": "dermctx.io.dicom",
    "read_dicom_dir": "dermctx.io.dicom",
    "write_dicom_dir": "dermctx.io.dicom",
    "load_image": "dermctx.io.images",
    "table_from_folder": "dermctx.io.image_folder",
    # splits and duplicates
    "PatientKFold": "dermctx.splits",
    "check_leakage": "dermctx.splits",
    "find_duplicates": "dermctx.dedup",
    "duplicate_groups": "dermctx.dedup",
    # metrics (also as the module dermctx.metrics)
    "auc": "dermctx.metrics",
    "partial_auc": "dermctx.metrics",
    "within_patient_auc": "dermctx.metrics",
    "topk_rate": "dermctx.metrics",
    "topk_sensitivity": "dermctx.metrics",
    "patient_bootstrap": "dermctx.metrics",
    "paired_bootstrap": "dermctx.metrics",
    # features and models
    "patient_context_features": "dermctx.features",
    "MetadataGBM": "dermctx.models.gbm",
    "SetTransformer": "dermctx.models.set_transformer",
    "SetTransformerConfig": "dermctx.models.set_transformer",
    "SetRanker": "dermctx.models.set_transformer",
    "ContextRanker": "dermctx.models.ranker",
    # from a patient's images to ranked lesions
    "LesionPipeline": "dermctx.pipeline",
    # embeddings
    "Embedder": "dermctx.embed",
    "read_embeddings": "dermctx.embed",
    "save_checkpoint": "dermctx.embed",
    # lesion CNN training and interpretation
    "train_lesion_cnn": "dermctx.train",
    "TrainResult": "dermctx.train",
    "lr_range_test": "dermctx.optim",
    "grad_cam": "dermctx.explain",
    "guided_backprop": "dermctx.explain",
    "confusion_pairs": "dermctx.explain",
    # evaluation and reporting
    "benchmark": "dermctx.benchmarking",
    "write_report": "dermctx.report",
    "write_patient_page": "dermctx.patient_page",
    "Taxonomy": "dermctx.taxonomy",
    "cohort_table": "dermctx.cohort",
    "make_ugly_duckling": "dermctx.synthetic",
    "make_tbp_patients": "dermctx.synthetic",
    # photos with several lesions: detector boxes -> lesion crops; detection metrics
    "read_yolo": "dermctx.io.boxes",
    "read_coco": "dermctx.io.boxes",
    "crop_lesions": "dermctx.crops",
    "embed_crops": "dermctx.crops",
    "detection_metrics": "dermctx.detection",
    "DetectionMetrics": "dermctx.detection",
    "mean_average_precision": "dermctx.detection",
}

__all__ = sorted([*_API, "__version__"])


# every module and subpackage of dermctx (``dermctx.cohort``, ``dermctx.io``...), imported on first use
_SUBMODULES = frozenset(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return _importlib.import_module(f"dermctx.{name}")
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'dermctx' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """The public API, the submodules and ``__version__``; no implementation details."""
    return sorted({*_API, *_SUBMODULES, "__version__"})


if TYPE_CHECKING:  # static type checkers and IDEs see the real imports
    from dermctx.benchmarking import benchmark
    from dermctx.cohort import cohort_table
    from dermctx.dedup import duplicate_groups, find_duplicates
    from dermctx.embed import Embedder, read_embeddings, save_checkpoint
    from dermctx.errors import (
        DermctxError,
        DermctxWarning,
        ImageError,
        LeakageError,
        MetricError,
        ModelError,
        TableError,
        errors_frame,
    )
    from dermctx.explain import confusion_pairs, grad_cam, guided_backprop
    from dermctx.features import patient_context_features
    from dermctx.io.dicom import read_dicom, read_dicom_dir, write_dicom, write_dicom_dir
    from dermctx.io.ham import read_ham10000
    from dermctx.io.image_folder import table_from_folder
    from dermctx.io.images import load_image
    from dermctx.io.isic import read_isic2020, read_isic_duplicates, write_isic_duplicates
    from dermctx.io.isic2019 import read_isic2019
    from dermctx.io.registry import read_table
    from dermctx.metrics import (
        auc,
        paired_bootstrap,
        partial_auc,
        patient_bootstrap,
        topk_rate,
        topk_sensitivity,
        within_patient_auc,
    )
    from dermctx.models.gbm import MetadataGBM
    from dermctx.models.ranker import ContextRanker
    from dermctx.models.set_transformer import SetRanker, SetTransformer, SetTransformerConfig
    from dermctx.optim import lr_range_test
    from dermctx.patient_page import write_patient_page
    from dermctx.pipeline import LesionPipeline
    from dermctx.report import write_report
    from dermctx.splits import PatientKFold, check_leakage
    from dermctx.synthetic import make_ugly_duckling
    from dermctx.table import embedding_columns, has_patient_context, validate_table
    from dermctx.taxonomy import Taxonomy
    from dermctx.train import TrainResult, train_lesion_cnn
