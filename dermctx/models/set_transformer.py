"""The set-transformer "ugly duckling" model: score each lesion against the patient's other lesions.

This module keeps the import path ``dermctx.models.set_transformer`` working; the code lives in
two modules with one job each:

* :mod:`dermctx.models.set_modules`: the torch modules (:class:`SetTransformer`, its
  :class:`SetTransformerConfig` and the blocks :class:`MAB`, :class:`SAB`, :class:`ISAB`);
* :mod:`dermctx.models.set_ranker`: :class:`SetRanker`, the scikit-learn estimator that reads a
  lesion table and trains a :class:`SetTransformer` on it.

See ``docs/set_transformer.md``.
"""

from __future__ import annotations

from dermctx.models.set_modules import ISAB, MAB, SAB, SetTransformer, SetTransformerConfig
from dermctx.models.set_modules import MLP as MLP  # importable from here as before the split
from dermctx.models.set_modules import Attention as Attention
from dermctx.models.set_ranker import SetRanker

__all__ = ["ISAB", "MAB", "SAB", "SetRanker", "SetTransformer", "SetTransformerConfig"]
