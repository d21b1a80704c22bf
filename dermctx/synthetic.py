"""Synthetic lesion tables with a known "ugly duckling" signal, for tests and benchmarks.

:func:`make_ugly_duckling` draws patients whose lesion embeddings cluster around a
patient-specific centre. A melanoma is drawn from the *population* distribution of lesions, not
from its own patient's cluster: over all patients, melanomas and benign lesions have exactly the
same distribution (so no single-lesion model can beat AUC 0.5 in expectation), yet within its
patient a melanoma is an outlier (so a model that sees the patient's other lesions can find it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermctx.errors import DermctxError
from dermctx.table import SITES, embedding_column_names

__all__ = ["make_ugly_duckling"]


def make_ugly_duckling(
    n_patients: int,
    *,
    lesions_per_patient: int | tuple[int, int] = (4, 30),
    dim: int = 16,
    melanoma_rate: float = 0.05,
    centre_scale: float = 1.0,
    within_scale: float = 0.5,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """A lesion table whose melanomas are outliers within their patient but not globally.

    For patient ``p`` a centre ``c_p ~ N(0, centre_scale² I)`` is drawn; each benign lesion is
    ``c_p + N(0, within_scale² I)``. Each melanoma is drawn from
    ``N(0, (centre_scale² + within_scale²) I)``, independent of ``c_p``: exactly the marginal
    distribution of benign lesions over all patients, but far from its own patient's centre.
    Age, sex and site are drawn independently of the label.

    Parameters
    ----------
    n_patients : int
        Number of patients (>= 1).
    lesions_per_patient : int or (low, high)
        Lesions per patient: a fixed number, or drawn uniformly from ``low..high`` (inclusive).
    dim : int
        Embedding width: columns ``emb_0000 .. emb_{dim-1}`` (float32).
    melanoma_rate : float
        Probability that a lesion is a melanoma, in [0, 1). Each patient keeps at least one
        benign lesion, so the rate realised is slightly below this on tiny sets.
    centre_scale, within_scale : float
        Standard deviations of the patient centres and of lesions around their centre. The smaller
        ``within_scale / centre_scale``, the more a melanoma stands out within its patient.
    random_state : int or None
        Seed; the same seed gives the same table.

    Returns
    -------
    DataFrame
        One row per lesion, in patient order: ``image_id, patient_id, lesion_id, age, sex, site,
        diagnosis, target, path, source`` (``"synthetic"``) and ``emb_*`` (float32). Ids carry
        the seed (``"syn7-P00000"``, ``"syn7-I0000000"``), so tables drawn with different seeds
        can be concatenated without sharing a patient.
    """
    if int(n_patients) != n_patients or n_patients < 1:
        raise DermctxError(f"n_patients must be a positive integer, got {n_patients!r}")
    if isinstance(lesions_per_patient, (int, np.integer)):
        low = high = int(lesions_per_patient)
    else:
        try:
            low, high = (int(v) for v in lesions_per_patient)
        except (TypeError, ValueError) as exc:
            raise DermctxError(
                f"lesions_per_patient must be an int or a (low, high) pair, got {lesions_per_patient!r}"
            ) from exc
    if low < 1 or high < low:
        raise DermctxError(f"lesions_per_patient must satisfy 1 <= low <= high, got ({low}, {high})")
    if not 0 <= melanoma_rate < 1:
        raise DermctxError(f"melanoma_rate must be in [0, 1), got {melanoma_rate!r}")
    if dim < 1:
        raise DermctxError(f"dim must be >= 1, got {dim!r}")
    if centre_scale <= 0 or within_scale <= 0:
        raise DermctxError(
            f"centre_scale and within_scale must be > 0, got {centre_scale!r}, {within_scale!r}"
        )

    rng = np.random.default_rng(random_state)
    n_per = rng.integers(low, high + 1, size=n_patients)  # (P,)
    n = int(n_per.sum())
    patient = np.repeat(np.arange(n_patients), n_per)  # (n,)
    centres = rng.normal(0.0, centre_scale, size=(n_patients, dim))  # (P, dim)
    benign = centres[patient] + rng.normal(0.0, within_scale, size=(n, dim))  # (n, dim)
    population = rng.normal(0.0, np.hypot(centre_scale, within_scale), size=(n, dim))  # (n, dim)

    target = rng.random(n) < melanoma_rate  # (n,)
    # keep one benign lesion per patient: a set made only of melanomas has no "normal" to differ from
    starts = np.concatenate([[0], np.cumsum(n_per)[:-1]])
    all_mel = np.add.reduceat(target, starts) == n_per
    target[starts[all_mel]] = False
    emb = np.where(target[:, None], population, benign).astype(np.float32)

    tag = "syn" if random_state is None else f"syn{random_state}"  # draws with other seeds do not collide
    pid = np.array([f"{tag}-P{p:05d}" for p in range(n_patients)], dtype=object)[patient]
    image_id = np.array([f"{tag}-I{i:07d}" for i in range(n)], dtype=object)
    table = pd.DataFrame(
        {
            "image_id": image_id,
            "patient_id": pid,
            "lesion_id": image_id,
            "age": np.round(rng.uniform(20, 85, n_patients)[patient] / 5) * 5,
            "sex": np.array(["male", "female"], dtype=object)[rng.integers(0, 2, n_patients)][patient],
            "site": np.array(SITES[:4], dtype=object)[rng.integers(0, 4, n)],
            "diagnosis": np.where(target, "melanoma", "nevus").astype(object),
            "target": target.astype(int),
            "path": None,
            "source": "synthetic",
        }
    )
    emb_frame = pd.DataFrame(emb, columns=embedding_column_names(dim))
    return pd.concat([table, emb_frame], axis=1)
