"""Speedup and scaling efficiency against the 1-worker run of the same model and device kind.

S(N) = X(N) / X(1) and E(N) = S(N) / N, whether the study used weak scaling (per-worker batch fixed)
or strong scaling (global batch fixed); the report says which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def speedup(throughput: float, baseline_throughput: float) -> float:
    if not baseline_throughput or not np.isfinite(baseline_throughput):
        return float("nan")
    return throughput / baseline_throughput


def scaling_efficiency(throughput: float, workers: int, baseline_throughput: float) -> float:
    return speedup(throughput, baseline_throughput) / workers


def add_scaling_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `baseline_throughput`, `speedup` and `scaling_efficiency` to a runs table.

    The baseline of a (model, device) group is the median throughput of its ok 1-worker runs;
    a group without one gets NaN, never a made-up baseline.
    """
    runs = runs.copy()
    fixed = runs["kind"] == "fixed-split" if "kind" in runs else True
    ok_single = runs[(runs["status"] == "ok") & (runs["workers"] == 1) & fixed]
    baselines = ok_single.groupby(["model", "device"])["throughput"].median()
    keys = list(zip(runs["model"], runs["device"]))
    runs["baseline_throughput"] = [baselines.get(k, float("nan")) for k in keys]
    runs["speedup"] = [speedup(x, b) for x, b in zip(runs["throughput"], runs["baseline_throughput"])]
    runs["scaling_efficiency"] = runs["speedup"] / runs["workers"]
    if "kind" in runs:  # cross-validation folds repeat the reference placement: not a scaling point
        runs.loc[runs["kind"] == "cv", ["speedup", "scaling_efficiency"]] = float("nan")
    return runs
