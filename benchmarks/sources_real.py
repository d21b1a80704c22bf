"""Read every real public file in ../shared with `dermctx.read_table` and describe each cohort.

For each file: the layout recognised, rows, patients, lesions, rows without a lesion id, labelled
rows and target = 1 rows, whether the patient ids name real patients, the read time, and any
warning. Then one cohort table ("Table 1") per newly supported file. Writes
``results/sources_real.md`` and ``results/sources_real.json``.

    python benchmarks/sources_real.py
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

import dermctx
from dermctx.cohort import cohort_table, to_markdown

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
FILES: list[tuple[str, dict]] = [
    ("data/isic2020/ISIC_2020_Training_GroundTruth.csv", {}),
    ("data/isic2020/ISIC_2020_Training_GroundTruth_v2.csv", {}),
    ("data/isic2020/train_with_image_sizes.csv", {}),
    ("data/isic2020/test.csv", {}),
    ("data/ham10000/HAM10000_metadata.csv", {}),
    ("data/isic2019/ISIC_2019_Training_Metadata.csv",
     {"labels": "data/isic2019/ISIC_2019_Training_GroundTruth.csv"}),
    ("data/isic2019/ISIC_2019_Training_GroundTruth.csv", {}),
    ("data/isic2019/ISIC_2019_Test_Metadata.csv", {}),
    ("data/isic2024/isic2024_train_subset_1954.csv", {}),
    ("data/isic2024/isic2024_train_first100.csv", {}),
    ("fieldcases/archive_site_column/isic2020_archive_style.csv", {}),
    ("fieldcases/pad_ufes20/metadata.csv", {"image_dir": "fieldcases/pad_ufes20/images"}),
    ("fieldcases/placeholder_patient_ids/isic2020_plus_external.csv", {"unknown_patients": "own"}),
    ("fieldcases/lesion_ids_per_patient/clinic_export.csv", {"lesion_ids": "per_patient"}),
]
COHORTS = ("data/isic2019/ISIC_2019_Training_Metadata.csv", "data/isic2024/isic2024_train_subset_1954.csv",
           "fieldcases/pad_ufes20/metadata.csv")


def describe(relative: str, options: dict) -> tuple[dict, pd.DataFrame]:
    kwargs = {k: (SHARED / v if k in ("labels", "image_dir") else v) for k, v in options.items()}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = dermctx.read_table(SHARED / relative, **kwargs)
    seconds = time.perf_counter() - start
    no_lesion = int((table["lesion_id"] == table["image_id"]).sum())
    row = {
        "file": relative,
        "options": ", ".join(f"{k}={v!r}" for k, v in options.items()) or "",
        "layout": table.attrs["format"],
        "rows": len(table),
        "patients": int(table["patient_id"].nunique()),
        "patient context": dermctx.has_patient_context(table),
        "lesions": int(table["lesion_id"].nunique()),
        "rows without lesion id": no_lesion,
        "labelled": int(table["target"].notna().sum()),
        "target = 1": int((table["target"] == 1).sum()),
        "target means": table.attrs["target_meaning"].split(" (")[0],
        "seconds": round(seconds, 2),
        "warnings": len([w for w in caught if issubclass(w.category, dermctx.DermctxWarning)]),
    }
    return row, table


def _markdown(frame: pd.DataFrame) -> str:
    cells = [list(map(str, frame.columns))] + [[str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([lines[0], "|" + "---|" * len(frame.columns), *lines[1:]])


def main() -> None:
    rows, tables = [], {}
    for relative, options in FILES:
        if not (SHARED / relative).exists():
            raise SystemExit(f"{SHARED / relative} is missing; this benchmark reads ../shared")
        row, table = describe(relative, options)
        rows.append(row)
        tables[relative] = table
        print(f"{relative}: {row['layout']}, {row['rows']} rows, {row['target = 1']} target = 1")
    frame = pd.DataFrame(rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Every real file, read by `dermctx.read_table`",
        "",
        f"Written {stamp} by `python benchmarks/sources_real.py`. 'lesions' counts lesion ids; a row",
        "without one is its own lesion ('rows without lesion id' counts the rows whose lesion_id is",
        "their image id). 'seconds' is the wall time of `read_table` on the shared 2-core machine.",
        "",
        _markdown(frame),
        "",
    ]
    for relative in COHORTS:
        lines += [f"## Cohort of `{relative}`", "", cohort_table(tables[relative]).pipe(to_markdown), ""]
    out = HERE / "results" / "sources_real.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    (HERE / "results" / "sources_real.json").write_text(
        json.dumps({"written": stamp, "files": rows}, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
