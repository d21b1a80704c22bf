"""Quickstart: does patient context improve on a CNN alone? SIIM-ISIC 2020, end to end.

1. Read the ISIC 2020 metadata and join the shared out-of-fold CNN scores (``pred`` ->
   ``cnn_score``: a real EfficientNet-B1 that never saw the patient it scored).
2. Describe the cohort (``cohort_table``: the "Table 1" of a paper).
3. Split by patient, keeping duplicate images together (``PatientKFold(duplicates=...)``) and
   prove it (``check_leakage``).
4. Fit ``ContextRanker`` on the training patients, score the held-out ones.
5. Compare with the CNN alone: pooled AUC, within-patient AUC ("is the melanoma the patient's
   ugly duckling?") and top-1 (share of melanoma patients whose top-ranked lesion is a melanoma),
   each with a 95% CI from resampling patients, and the paired difference.

::

    python examples/quickstart.py                      # 5 folds, every scored patient
    python examples/quickstart.py --max-patients 400 --n-boot 500   # a quick look

Run ``python examples/quickstart.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

import dermctx
from dermctx import metrics

DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--n-splits", type=int, default=5, help="patient folds (default 5)")
    parser.add_argument("--max-patients", type=int, default=None,
                        help="use at most this many (randomly chosen) patients (default: all)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    isic = args.data_dir / "isic2020"
    metadata = isic / "ISIC_2020_Training_GroundTruth_v2.csv"
    oof = isic / "oof_effnet_b1_dev.csv"
    duplicates_csv = isic / "ISIC_2020_Training_Duplicates.csv"
    for path in (metadata, oof, duplicates_csv):
        if not path.is_file():
            sys.exit(f"data not found: {path}\n(pass --data-dir, or see ../shared/data/README.md)")

    # 1. the lesion table (validated: ids, age, sex, site vocabulary) + the CNN's scores
    table = dermctx.read_isic2020(metadata)
    scores = pd.read_csv(oof, usecols=["image_name", "pred"], dtype={"image_name": str})
    scores = scores.rename(columns={"image_name": "image_id", "pred": "cnn_score"})
    table = table.merge(scores, on="image_id", how="inner", validate="one_to_one")
    if args.max_patients is not None:
        ids = table["patient_id"].drop_duplicates()
        keep = ids.sample(min(args.max_patients, len(ids)), random_state=args.seed)
        table = table[table["patient_id"].isin(keep)].reset_index(drop=True)

    # 2. the cohort, by whether the patient has a melanoma
    print(f"{len(table)} lesions of {table['patient_id'].nunique()} patients with a CNN score\n")
    print(dermctx.cohort_table(table).to_string())

    # 3. patient folds; the ISIC duplicate pairs (same image twice) must not straddle a split
    duplicates = dermctx.read_isic_duplicates(duplicates_csv)
    cv = dermctx.PatientKFold(args.n_splits, random_state=args.seed, duplicates=duplicates)

    # 4. out-of-fold ContextRanker scores: every patient is scored by a model that never saw them
    context = np.full(len(table), np.nan)
    for train_idx, test_idx in tqdm(list(cv.split(table)), desc="folds", unit="fold"):
        train, test = table.iloc[train_idx], table.iloc[test_idx]
        dermctx.check_leakage(train, test, duplicates=duplicates)  # raises LeakageError on a leak
        ranker = dermctx.ContextRanker(random_state=args.seed).fit(train, train["target"])
        context[test_idx] = ranker.predict_proba(test)[:, 1]
    print(f"\nno patient, lesion, image or duplicate pair on both sides of any of the {args.n_splits} splits")

    # 5. the two rankings on the same lesions, CIs from resampling patients
    y, pid, cnn = table["target"].to_numpy(), table["patient_id"].to_numpy(), table["cnn_score"].to_numpy()
    rows = []
    for name in ("auc", "within_patient_auc", "top1"):  # keys of metrics.METRICS
        ci = {}
        for who, s in (("CNN alone", cnn), ("ContextRanker", context)):
            ci[who] = metrics.patient_bootstrap(name, y, s, pid, n_boot=args.n_boot,
                                                random_state=args.seed)
        diff = metrics.paired_bootstrap(name, y, context, cnn, pid, n_boot=args.n_boot,
                                        random_state=args.seed)
        rows.append({
            "metric": metrics.METRICS[name].label,
            **{who: f"{r.estimate:.3f} ({r.low:.3f}-{r.high:.3f})" for who, r in ci.items()},
            "difference": f"{diff.estimate:+.3f} ({diff.low:+.3f} to {diff.high:+.3f})",
        })
    print(f"\nout-of-fold, {table['patient_id'].nunique()} patients, {int(y.sum())} melanomas; "
          f"95% CI from {args.n_boot} patient resamples:")
    print(pd.DataFrame(rows).to_string(index=False))
    print("\n(difference = ContextRanker - CNN alone, paired on the same resamples; "
          "a CI that spans 0 is no evidence of a gain)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
