"""Derive ``dermctx/data/tbp_calibration.json``, the calibration of :func:`dermctx.synthetic.make_tbp_patients`.

Run by hand from the repository root (needs ``../shared/data``)::

    python benchmarks/make_tbp_calibration.py

It reads ``isic2024/isic2024_train_subset_1954.csv`` (ISIC 2024 / SLICE-3D training rows, ISIC
Archive, CC BY-NC 4.0; see ``dermctx/data/README.md``), keeps the 1,370 rows that have the
lesion-visualiser features (977 benign, 393 malignant; the 584 ISIC 2020 rows appended to the file
have none) and writes, in the transformed space of :data:`dermctx.synthetic.TBP_TRANSFORMS`:

* the real range of each of the 33 columns (:data:`dermctx.synthetic.TBP_COLUMNS`);
* the benign site offsets: mean of the benign rows of each ISIC 2024 site term minus the benign
  mean (rows with a site; no shrinkage: the smallest site, head/neck, has 39 benign rows);
* per class (``benign`` = target 0; ``malignant`` = target 1; ``melanoma`` = the malignant rows
  whose ``iddx_2`` is a malignant melanocytic proliferation): the mean and SD of ``x - o_site``,
  the correlation matrix shrunk by Ledoit-Wolf (on the standardised residuals), the counts of
  age, sex and site, and the share of missing values of each column;
* the phenotype share of each column: the one-way ANOVA intraclass correlation of the benign
  residuals over the patients with >= 2 benign rows, its SE from 500 patient bootstraps, and
  the share used, shrunk towards the mean over columns by empirical Bayes
  (``w = tau² / (tau² + se²)``, ``tau²`` the spread of the ICCs beyond their noise) and clipped
  to [0, 0.9].

Numbers are rounded (6 significant digits; correlations to 4 decimals) and written with sorted
keys, so re-running gives the same file byte for byte. ``tests/test_synthetic.py`` checks that the
stored file equals :func:`derive`'s output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.covariance import ledoit_wolf

from dermctx.synthetic import (
    TBP_CALIBRATION,
    TBP_COLUMNS,
    TBP_STEPS,
    TBP_TRANSFORMS,
    tbp_forward,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DERMCTX_SHARED_DATA", ROOT.parent / "shared" / "data"))
SUBSET = "isic2024/isic2024_train_subset_1954.csv"
MELANOMA_IDDX2 = "Malignant melanocytic proliferations (Melanoma)"
N_BOOT = 500


def _r(x: float, digits: int = 6) -> float:
    return float(f"{float(x):.{digits}g}")


def _rl(values: Any, digits: int = 6) -> list[float]:
    return [_r(v, digits) for v in np.asarray(values, dtype=float)]


def _counts(values: pd.Series) -> dict[str, int]:
    v = values.dropna()
    keys = v.map(lambda a: str(int(a)) if isinstance(a, float) else str(a))
    return {k: int(c) for k, c in keys.value_counts().sort_index().items()}


def _icc(n_g: np.ndarray, sums: np.ndarray, ssw_g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One-way random-effects ICC of each column (unbalanced ANOVA; may be below 0).

    From each patient's row count ``n_g`` (G,), column sums ``sums`` (G, F) and within-patient
    sums of squares ``ssw_g`` (G, F), each patient counted ``w`` times (B, G): one ICC per row of
    ``w`` (B, F). ``w`` of ones is the plain estimate; multinomial counts are patient bootstraps.
    """
    k = w.sum(axis=1)  # (B,) patients
    n_total = w @ n_g  # (B,) rows
    grand = (w @ sums) / n_total[:, None]  # (B, F)
    means = sums / n_g[:, None]  # (G, F)
    # sum_g w_g n_g (mean_g - grand)^2 = sum_g w_g n_g mean_g^2 - N grand^2
    ssb = (w * n_g) @ means**2 - n_total[:, None] * grand**2
    msb = ssb / (k - 1)[:, None]
    msw = (w @ ssw_g) / (n_total - k)[:, None]
    n0 = (n_total - (w @ n_g**2) / n_total) / (k - 1)
    between = (msb - msw) / n0[:, None]
    return between / (between + msw)


def _phenotype_share(resid: np.ndarray, patient: np.ndarray) -> dict[str, Any]:
    counts = pd.Series(patient).value_counts()
    keep = np.isin(patient, counts[counts >= 2].index)
    resid, patient = resid[keep], patient[keep]
    resid = (resid - resid.mean(axis=0)) / resid.std(axis=0)
    _, inverse = np.unique(patient, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    n_g = np.bincount(inverse).astype(float)
    sums = np.zeros((n_groups, resid.shape[1]))
    np.add.at(sums, inverse, resid)
    ssw_g = np.zeros_like(sums)
    np.add.at(ssw_g, inverse, (resid - (sums / n_g[:, None])[inverse]) ** 2)
    icc = _icc(n_g, sums, ssw_g, np.ones((1, n_groups)))[0]
    rng = np.random.default_rng(0)
    boot_w = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=N_BOOT).astype(float)
    se = _icc(n_g, sums, ssw_g, boot_w).std(axis=0, ddof=1)
    centre = float(icc.mean())
    tau2 = max(float(icc.var(ddof=1) - (se**2).mean()), 0.0)
    weight = tau2 / (tau2 + se**2)
    share = np.clip(weight * icc + (1 - weight) * centre, 0.0, 0.9)
    return {
        "method": "one-way ANOVA intraclass correlation of standardised benign residuals (x - "
                  "class mean - site offset, transformed space), patients with >= 2 benign rows; "
                  f"SE from {N_BOOT} patient bootstraps (seed 0); share = w * icc + (1 - w) * mean "
                  "icc, w = tau2 / (tau2 + se^2), clipped to [0, 0.9]",
        "n_patients": n_groups,
        "n_rows": len(patient),
        "icc": _rl(icc, 4),
        "se": _rl(se, 4),
        "tau2": _r(tau2, 4),
        "mean_icc": _r(centre, 4),
        "share": _rl(share, 4),
        "mean_share": _r(share.mean(), 4),
    }


def derive(csv_path: Path) -> dict[str, Any]:
    """The calibration dictionary (as stored in JSON) from the ISIC 2024 subset."""
    from dermctx.table import normalise_site

    raw = pd.read_csv(csv_path, low_memory=False)
    cols = list(TBP_COLUMNS)
    rows = raw[raw[[c for c in cols if c.startswith("tbp_lv_")]].notna().any(axis=1)].reset_index(drop=True)
    x = np.column_stack([tbp_forward(rows[c].to_numpy(float), TBP_TRANSFORMS[c]) for c in cols])
    site_term = rows["anatom_site_general"].where(rows["anatom_site_general"].notna(), None)
    site_ok, _ = normalise_site(site_term.astype(object))
    if site_ok.notna().sum() != site_term.notna().sum():
        raise SystemExit("a site term of the file is not known to dermctx")
    classes = {
        "benign": (rows["target"] == 0).to_numpy(),
        "malignant": (rows["target"] == 1).to_numpy(),
        "melanoma": ((rows["target"] == 1) & (rows["iddx_2"] == MELANOMA_IDDX2)).to_numpy(),
    }
    ben = classes["benign"]
    sites = sorted(site_term[ben].dropna().unique())
    known = ben & site_term.notna().to_numpy()
    mu_known = x[known].mean(axis=0)
    offsets = {s: x[ben & (site_term == s).to_numpy()].mean(axis=0) - mu_known for s in sites}
    offset_rows = np.zeros_like(x)
    for s, o in offsets.items():
        offset_rows[(site_term == s).to_numpy()] = o
    adjusted = x - offset_rows  # the class means and covariances are of x - o_site

    out_classes: dict[str, Any] = {}
    resid_benign = None
    for name, mask in classes.items():
        a = adjusted[mask]
        mean, sd = a.mean(axis=0), a.std(axis=0, ddof=1)
        zs = (a - mean) / sd
        cov, shrink = ledoit_wolf(zs, assume_centered=True)
        corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
        sub = rows[mask]
        missing = {c: _r(sub[c].isna().mean(), 4) for c in cols}
        missing.update({"age": _r(sub["age_approx"].isna().mean(), 4),
                        "sex": _r(sub["sex"].isna().mean(), 4),
                        "site": _r(sub["anatom_site_general"].isna().mean(), 4)})
        out_classes[name] = {
            "n": int(mask.sum()),
            "n_patients": int(sub["patient_id"].nunique()),
            "mean": _rl(mean),
            "sd": _rl(sd),
            "corr": [[round(float(v), 4) for v in row] for row in corr],
            "shrinkage": _r(shrink, 4),
            "age": _counts(sub["age_approx"]),
            "sex": _counts(sub["sex"]),
            "site": _counts(sub["anatom_site_general"]),
            "missing": missing,
        }
        if name == "benign":
            resid_benign = a - mean
    assert resid_benign is not None
    return {
        "source": {
            "file": SUBSET,
            "sha256": hashlib.sha256(Path(csv_path).read_bytes()).hexdigest(),
            "rows_used": len(rows),
            "what": "ISIC 2024 Challenge (SLICE-3D) training rows with lesion-visualiser "
                    "features: all 393 malignant rows and 977 benign rows of a public competition "
                    "solution's subset (median 2 rows per patient)",
            "licence": "CC BY-NC 4.0 (ISIC Archive; some rows CC BY)",
            "script": "benchmarks/make_tbp_calibration.py",
        },
        "columns": cols,
        "transforms": {c: TBP_TRANSFORMS[c] for c in cols},
        "steps": dict(TBP_STEPS),
        "range": {c: [_r(rows[c].min(), 8), _r(rows[c].max(), 8)] for c in cols},
        "sites": sites,
        "site_offset": {s: _rl(o) for s, o in offsets.items()},
        "classes": out_classes,
        "phenotype_share": _phenotype_share(resid_benign, rows.loc[ben, "patient_id"].to_numpy()),
    }


def dumps(calibration: dict[str, Any]) -> str:
    """The stored text: sorted keys, compact, one trailing newline."""
    return json.dumps(calibration, sort_keys=True, separators=(",", ":")) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=SHARED / SUBSET)
    parser.add_argument("--out", type=Path, default=ROOT / "dermctx" / "data" / TBP_CALIBRATION)
    args = parser.parse_args()
    cal = derive(args.csv)
    text = dumps(cal)
    args.out.write_text(text, encoding="utf-8")
    share = cal["phenotype_share"]
    print(f"{args.out}: {len(text.encode()) / 1e3:.1f} KB, sha256 "
          f"{hashlib.sha256(text.encode()).hexdigest()}")
    print(f"rows {cal['source']['rows_used']}: " + ", ".join(
        f"{k} {v['n']} ({v['n_patients']} patients)" for k, v in cal["classes"].items()))
    print(f"phenotype share: mean ICC {share['mean_icc']} over {share['n_patients']} patients "
          f"({share['n_rows']} rows), tau2 {share['tau2']}, mean share {share['mean_share']}")
    for c, icc, se, s in zip(cal["columns"], share["icc"], share["se"], share["share"], strict=True):
        print(f"  {c:30s} icc {icc:+.3f} (se {se:.3f}) -> share {s:.3f}")


if __name__ == "__main__":
    main()
