"""A clinic's view: rank one patient's lesions for melanoma, with the context explanation.

A dermatologist compares each lesion with the patient's others (the "ugly duckling" sign).
``ContextRanker.score_patient`` does the same: it scores the patient's whole lesion set together
and says, for each lesion, which other lesion most raised or lowered its score.

The model is fitted here on other ISIC 2020 patients (their CNN scores from the shared
out-of-fold file), or loaded from a folder written earlier with ``--save-model``::

    python examples/score_one_patient.py                        # fit, then score one patient
    python examples/score_one_patient.py --save-model model/    # ... and keep the model
    python examples/score_one_patient.py --model model/ --patient IP_0147446

Run ``python examples/score_one_patient.py --help`` for every option.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

import dermctx

# ../shared/data relative to the repository (or $DERMCTX_SHARED_DATA, as the tests use)
DEFAULT_DATA = Path(
    os.environ.get("DERMCTX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def load_scored_lesions(data_dir: Path) -> pd.DataFrame:
    """ISIC 2020 lesion table joined with the shared out-of-fold CNN scores (``cnn_score``)."""
    isic = data_dir / "isic2020"
    metadata = isic / "ISIC_2020_Training_GroundTruth_v2.csv"
    oof = isic / "oof_effnet_b1_dev.csv"
    for path in (metadata, oof):
        if not path.is_file():
            sys.exit(f"data not found: {path}\n(pass --data-dir, or see ../shared/data/README.md)")
    table = dermctx.read_isic2020(metadata)
    scores = pd.read_csv(oof, usecols=["image_name", "pred"], dtype={"image_name": str})
    scores = scores.rename(columns={"image_name": "image_id", "pred": "cnn_score"})
    # inner join: only the patients the CNN scored out of fold can be used
    return table.merge(scores, on="image_id", how="inner", validate="one_to_one")


def pick_patient(table: pd.DataFrame) -> str:
    """A default patient for the demonstration: the largest set that contains a melanoma."""
    per_patient = table.groupby("patient_id").agg(n=("image_id", "size"), mel=("target", "sum"))
    with_mel = per_patient[per_patient["mel"] > 0].sort_values(["n", "mel"], ascending=False)
    return str(with_mel.index[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--patient", help="patient_id to score (default: the largest set with a melanoma)")
    parser.add_argument("--model", type=Path, help="load a model folder written by --save-model instead of fitting")
    parser.add_argument("--save-model", type=Path, help="write the fitted model to this folder")
    parser.add_argument("--max-patients", type=int, default=None,
                        help="fit on at most this many (randomly chosen) other patients (default: all)")
    parser.add_argument("--top", type=int, default=20, help="print the top N lesions (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    table = load_scored_lesions(args.data_dir)
    patient = args.patient or pick_patient(table)
    lesions = table[table["patient_id"] == patient]
    if lesions.empty:
        sys.exit(f"patient {patient!r} has no CNN-scored lesions in {args.data_dir}")

    if args.model is not None:
        ranker = dermctx.ContextRanker.load(args.model)
        print(f"loaded model from {args.model}")
    else:
        # fit on other patients only: the patient we score must be unseen by the model
        others = table[table["patient_id"] != patient]
        if args.max_patients is not None:
            ids = others["patient_id"].drop_duplicates()
            keep = ids.sample(min(args.max_patients, len(ids)), random_state=args.seed)
            others = others[others["patient_id"].isin(keep)]
        print(f"fitting ContextRanker on {others['patient_id'].nunique()} other patients "
              f"({len(others)} lesions, {int(others['target'].sum())} melanomas)")
        ranker = dermctx.ContextRanker(random_state=args.seed).fit(others, others["target"])
        if args.save_model is not None:
            ranker.save(args.save_model)
            print(f"saved model to {args.save_model}")

    # the whole set at once: a lesion's context is the other lesions passed with it
    ranked = ranker.score_patient(lesions)
    ranked = ranked.merge(lesions[["image_id", "cnn_score", "site", "target"]], on="image_id", how="left")

    age, sex = lesions["age"].median(), lesions["sex"].dropna()
    print(f"\npatient {patient}: {len(lesions)} lesions, "
          f"age {'unknown' if pd.isna(age) else f'{age:.0f}'}, {sex.iloc[0] if len(sex) else 'sex unknown'}")
    print("score: calibrated melanoma probability; raised/lowered by: the lesion whose presence moved it most")
    print("(the label 'truth' is shown for this demonstration only; it is not an input)\n")
    header = f"{'rank':>4}  {'image_id':<13} {'score':>7} {'cnn':>7}  {'site':<16} {'raised by':<24} {'lowered by':<24} truth"
    print(header)
    print("-" * len(header))
    for row in ranked.head(args.top).itertuples(index=False):
        raised = f"{row.raised_by} (+{row.raised_by_change:.4f})" if isinstance(row.raised_by, str) else "-"
        lowered = f"{row.lowered_by} ({row.lowered_by_change:.4f})" if isinstance(row.lowered_by, str) else "-"
        truth = "melanoma" if row.target == 1 else ""
        site = row.site if isinstance(row.site, str) else "unknown"
        print(f"{row.rank:>4}  {row.image_id:<13} {row.score:7.4f} {row.cnn_score:7.4f}  {site:<16} "
              f"{raised:<24} {lowered:<24} {truth}")
    if len(ranked) > args.top:
        print(f"... {len(ranked) - args.top} more lesions (--top {len(ranked)} shows all)")
    top = ranked.iloc[0]
    print(f"\nmost suspicious: {top['image_id']} (score {top['score']:.4f})")
    mel_ranks = ranked.loc[ranked["target"] == 1, "rank"].tolist()
    if mel_ranks:
        print(f"this patient's melanoma(s) ranked {mel_ranks} of {len(ranked)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
