"""Does the patient-bootstrap 95% CI of the AUC cover the true AUC about 95% of the time?

Simulates many datasets of patients whose lesions are correlated (a patient-level effect on
both melanoma risk and on every score of that patient), computes
``dermctx.metrics.patient_bootstrap(auc, ...)`` on each, and counts how often the CI contains the
true AUC of the generator (the AUC of a very large sample from the same generator). For contrast
it also runs the naive lesion-level bootstrap (every lesion its own "patient"), which ignores the
correlation.

Run by hand (the defaults took 590 s, and 856 s at a busier moment, on 2 cores shared with
other jobs; ``--no-naive`` skips the contrast and roughly halves that)::

    nice python benchmarks/bootstrap_coverage.py

Writes ``benchmarks/results/bootstrap_coverage.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dermctx.metrics import auc, patient_bootstrap

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Generator:
    """Patients with correlated lesions, loosely shaped like ISIC 2020 (16 lesions, ~2% melanoma).

    lesions per patient: 1 + Poisson(mean_lesions - 1)
    melanoma:            Bernoulli(sigmoid(base_logit + risk_sd * u_p)),  u_p ~ N(0, 1) per patient
    score:               shift * y + patient_sd * b_p + N(0, 1),          b_p ~ N(0, 1) per patient
    """

    mean_lesions: float = 16.0
    base_logit: float = -4.6
    risk_sd: float = 1.5
    shift: float = 2.0
    patient_sd: float = 1.0

    def sample(
        self, n_patients: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(y, s, patient)`` arrays of shape (n,) for ``n_patients`` patients."""
        sizes = 1 + rng.poisson(self.mean_lesions - 1, n_patients)
        patient = np.repeat(np.arange(n_patients), sizes)
        u = rng.normal(size=n_patients)[patient]
        b = rng.normal(size=n_patients)[patient]
        p = 1 / (1 + np.exp(-(self.base_logit + self.risk_sd * u)))
        y = (rng.random(len(patient)) < p).astype(np.int8)
        s = self.shift * y + self.patient_sd * b + rng.normal(size=len(patient))
        return y, s, patient


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson 95% interval of a proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-datasets", type=int, default=500)
    parser.add_argument(
        "--n-patients", type=int, default=300, help="patients per simulated dataset"
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per dataset")
    parser.add_argument(
        "--truth-patients", type=int, default=400_000, help="patients in the 'true AUC' sample"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-naive", action="store_true", help="skip the lesion-level bootstrap contrast"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bootstrap_coverage")
    args = parser.parse_args(argv)

    gen = Generator()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    y_big, s_big, _ = gen.sample(args.truth_patients, rng)
    true_auc = auc(y_big, s_big)
    print(f"true AUC {true_auc:.5f} from {len(y_big):,} lesions ({int(y_big.sum()):,} melanomas)")
    del y_big, s_big

    hits = {"patient": 0, "lesion": 0}
    widths: dict[str, list[float]] = {"patient": [], "lesion": []}
    estimates, n_lesions, n_mel, skipped = [], [], [], 0
    for i in tqdm(range(args.n_datasets), desc="datasets"):
        y, s, patient = gen.sample(args.n_patients, rng)
        if y.sum() == 0 or y.sum() == len(y):
            skipped += 1
            continue
        estimates.append(auc(y, s))
        n_lesions.append(len(y))
        n_mel.append(int(y.sum()))
        kinds = (
            {"patient": patient}
            if args.no_naive
            else {"patient": patient, "lesion": np.arange(len(y))}
        )
        for kind, groups in kinds.items():
            res = patient_bootstrap(
                "auc", y, s, groups, n_boot=args.n_boot, random_state=args.seed * 100_003 + i
            )
            hits[kind] += int(res.low <= true_auc <= res.high)
            widths[kind].append(res.high - res.low)
    n = args.n_datasets - skipped
    elapsed = time.perf_counter() - start

    result = {
        "benchmark": "bootstrap_coverage",
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(
            ["python benchmarks/bootstrap_coverage.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "generator": asdict(gen),
        "n_datasets": n,
        "n_skipped_one_class": skipped,
        "n_patients_per_dataset": args.n_patients,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "true_auc": true_auc,
        "truth_sample_patients": args.truth_patients,
        "mean_lesions_per_dataset": float(np.mean(n_lesions)),
        "mean_melanomas_per_dataset": float(np.mean(n_mel)),
        "mean_estimate": float(np.mean(estimates)),
        "sd_estimate": float(np.std(estimates, ddof=1)),
        "coverage": {},
        "seconds": round(elapsed, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    for kind in hits:
        if not widths[kind]:
            continue
        lo, hi = wilson(hits[kind], n)
        result["coverage"][kind] = {
            "covered": hits[kind],
            "rate": hits[kind] / n,
            "wilson_95ci": [lo, hi],
            "mean_ci_width": float(np.mean(widths[kind])),
        }
    write(result, args.out)
    return result


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    cov = result["coverage"]
    lines = [
        "# Patient-bootstrap CI coverage of the AUC",
        "",
        f"Produced by `{result['command'].strip()}` on {result['date_utc']} UTC "
        f"({result['seconds']} s, {result['machine']}).",
        "",
        f"{result['n_datasets']} simulated datasets of {result['n_patients_per_dataset']} patients "
        f"(on average {result['mean_lesions_per_dataset']:.0f} lesions and "
        f"{result['mean_melanomas_per_dataset']:.1f} melanomas each); "
        f"{result['n_boot']} bootstrap resamples per dataset (fewer than the library default of 2000, "
        "to keep the run short).",
        f"Datasets with a single class skipped: {result['n_skipped_one_class']}.",
        "",
        f"True AUC {result['true_auc']:.4f}, the AUC of one sample of {result['truth_sample_patients']:,} "
        "patients from the same generator. Across datasets the AUC estimate averaged "
        f"{result['mean_estimate']:.4f} (SD {result['sd_estimate']:.4f}).",
        "",
        "Generator: "
        + ", ".join(f"{k}={v}" for k, v in result["generator"].items())
        + " (see `Generator` in the script: a patient-level effect on melanoma risk and on every score).",
        "",
        "| bootstrap | resamples | CI covers true AUC | 95% CI of the coverage (Wilson) | mean CI width |",
        "|---|---|---|---|---|",
    ]
    names = {
        "patient": "patients (dermctx.patient_bootstrap)",
        "lesion": "lesions (naive, ignores patients)",
    }
    for kind, c in cov.items():
        lines.append(
            f"| {names[kind]} | {result['n_boot']} | {c['covered']}/{result['n_datasets']} = {c['rate']:.1%} | "
            f"{c['wilson_95ci'][0]:.1%} to {c['wilson_95ci'][1]:.1%} | {c['mean_ci_width']:.4f} |"
        )
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
