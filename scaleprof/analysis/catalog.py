"""The studies under a directory, one row each: for `scaleprof ls` and the index page beside them.

Read from each study's own files (the manifest, the run records and, once rendered, runs.parquet); a
damaged study is listed with what is wrong rather than stopping the listing.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.records import RunStatus
from scaleprof.telemetry.store import RUNS_TABLE, StoreError, StudyStore


def _headline(runs: pd.DataFrame) -> dict[str, Any]:
    ok = runs[(runs["status"] == RunStatus.OK) & runs["throughput"].notna()] if "throughput" in runs else runs.iloc[0:0]
    if ok.empty:
        return {}
    best = ok.loc[ok["throughput"].idxmax()]
    out: dict[str, Any] = {
        "best_throughput": float(best["throughput"]),
        "best_placement": f"{best['model']} on {best['placement']}",
    }
    scaled = ok.dropna(subset=["scaling_efficiency"]) if "scaling_efficiency" in ok else ok.iloc[0:0]
    if not scaled.empty and scaled["workers"].max() > 1:
        top = scaled[scaled["workers"] == scaled["workers"].max()]
        out["efficiency"] = float(np.median(top["scaling_efficiency"]))
        out["efficiency_workers"] = int(top["workers"].iloc[0])
    return out


def study_row(directory: Path) -> dict[str, Any]:
    store = StudyStore(directory)
    row: dict[str, Any] = {
        "study": directory.name,
        "path": str(directory),
        "report": (directory / "report.html").exists(),
    }
    try:
        manifest = store.manifest()
    except StoreError as err:
        return {**row, "problem": err.problem}
    created = manifest.created_at
    row["experiment"] = manifest.experiment.name
    row["created"] = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created is not None else ""
    statuses = Counter(str(final.outcome.status) for final in store.final_run_records().values())
    row["runs"] = sum(statuses.values())
    for status in (RunStatus.OK, RunStatus.SKIPPED, RunStatus.FAILED, RunStatus.UNMEASURED):
        row[str(status)] = statuses.pop(str(status), 0)
    row["unfinished"] = sum(statuses.values())  # planned, placed, running: an interrupted study
    if (directory / RUNS_TABLE).exists():
        try:
            row.update(_headline(pd.read_parquet(directory / RUNS_TABLE)))
        except Exception:  # a damaged table: the listing says so, the study's own report will say more
            row["problem"] = f"{RUNS_TABLE} unreadable"
    return row


def list_studies(root: Path) -> list[dict[str, Any]]:
    """Every study directory directly under `root` (or `root` itself), newest first."""
    candidates = [root] if StudyStore(root).exists() else sorted(p for p in root.iterdir() if p.is_dir())
    rows = [study_row(p) for p in candidates if StudyStore(p).exists()]
    return sorted(rows, key=lambda r: r.get("created", ""), reverse=True)
