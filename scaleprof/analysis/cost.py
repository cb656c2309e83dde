"""Cost per sample, per epoch and to a target accuracy, from the pricing rows in the manifest.

cost per sample = sum over nodes billed of (price per hour x billed seconds / 3600) / samples.
- billing `node`: every node the run's workers landed on is billed whole;
- billing `share`: the run pays its share of one node type's price: its GPUs over the node's GPUs,
  or its CPUs over the node's vCPUs, whichever is larger (a per-resource price for partial nodes).
Steady state bills steady-state seconds (samples / throughput); end to end bills the run's wall
time, start-up included, over every sample it trained.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scaleprof.config import CostSpec
    from scaleprof.pricing import NodePrice

COST_COLUMNS = [
    "node_type", "price_per_hour_usd", "billed_nodes", "cost_per_hour_usd", "cost_per_sample_usd",
    "cost_per_sample_e2e_usd", "cost_per_epoch_usd", "cost_run_usd", "cost_to_target_usd",
    "cost_per_sample_low_usd", "cost_per_sample_high_usd",
]  # fmt: skip


# Cost per sample is quoted per million samples (USD per 1M): the one place that scaling lives.
QUOTED_SAMPLES = 1_000_000


def usd_per_million(cost_per_sample_usd: float) -> float:
    """A cost per sample as USD per QUOTED_SAMPLES samples."""
    return cost_per_sample_usd * QUOTED_SAMPLES


def cost_per_sample_usd(cost_per_hour_usd: float, throughput: float) -> float:
    """USD per training sample at a steady throughput: USD per second / samples per second."""
    if not throughput or not np.isfinite(throughput):
        return math.nan
    return cost_per_hour_usd / 3600 / throughput


def throughput_for_cost(cost_per_hour_usd: float, max_cost_per_sample_usd: float) -> float:
    """The throughput at which a placement billed `cost_per_hour_usd` costs `max_cost_per_sample_usd` per sample
    (cost_per_sample_usd solved for the throughput): slower costs more per sample."""
    return cost_per_hour_usd / 3600 / max_cost_per_sample_usd


def hourly_rate(run: pd.Series, price: NodePrice, billing: str) -> tuple[float, float]:
    """(billed nodes, USD per hour) for one run (NaN per hour on a node type with no price)."""
    if billing == "share":
        shares = [run["cpus"] / price.vcpus]
        if price.gpus:
            shares.append(run["gpus"] / price.gpus)
        billed = max(shares)
    else:
        realized = run.get("nodes_realized")
        billed = float(realized) if realized is not None and np.isfinite(realized) else 1.0
    per_hour = price.price_per_hour_usd
    return billed, billed * per_hour if per_hour is not None else math.nan


def time_to_target_s(epochs: pd.DataFrame, target: float) -> float:
    """Training seconds until validation accuracy first reaches `target` (NaN if it never did)."""
    reached = epochs[epochs["val_accuracy"] >= target].sort_values("epoch")
    if reached.empty:
        return float("nan")
    first = int(reached["epoch"].iloc[0])
    return float(epochs[epochs["epoch"] <= first]["epoch_time_s"].sum())


def add_cost_columns(
    runs: pd.DataFrame, epochs: pd.DataFrame, pricing: dict[str, NodePrice], cost: CostSpec
) -> pd.DataFrame:
    """The cost columns of each finished run priced by the study's `pricing` rows (its manifest's), billed as
    the experiment's `cost` says."""
    runs = runs.copy()
    for column in COST_COLUMNS[1:]:  # node_type comes from the run record
        runs[column] = np.nan
    target = cost.target_accuracy
    for i, run in runs.iterrows():
        price = pricing.get(run.get("node_type") or "")
        if price is None or price.price_per_hour_usd is None or run["status"] != "ok":
            continue
        billed, per_hour = hourly_rate(run, price, cost.billing)
        per_s = per_hour / 3600
        runs.at[i, "price_per_hour_usd"] = price.price_per_hour_usd
        runs.at[i, "billed_nodes"] = billed
        runs.at[i, "cost_per_hour_usd"] = per_hour
        runs.at[i, "cost_per_sample_usd"] = cost_per_sample_usd(per_hour, run["throughput"])
        # its 95% interval: the throughput interval's bounds, swapped (more samples per second cost less each)
        runs.at[i, "cost_per_sample_low_usd"] = cost_per_sample_usd(per_hour, run.get("throughput_high", math.nan))
        runs.at[i, "cost_per_sample_high_usd"] = cost_per_sample_usd(per_hour, run.get("throughput_low", math.nan))
        runs.at[i, "cost_per_sample_e2e_usd"] = per_s * run["wall_s"] / run["samples_total"]
        runs.at[i, "cost_per_epoch_usd"] = per_s * run["epoch_time_s"]
        runs.at[i, "cost_run_usd"] = per_s * run["wall_s"]
        if target is not None and not epochs.empty:
            train_s = time_to_target_s(epochs[epochs["run_id"] == run["run_id"]], target)
            runs.at[i, "cost_to_target_usd"] = per_s * (run["startup_s"] + train_s)
    return runs
