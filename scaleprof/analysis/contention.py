"""Contention: did something outside the run compete for its node's CPUs or its GPUs?

Each worker's monitor samples its own process tree's CPU (the worker and its loader processes) and
the whole node's. Per node, over the run's steady window: outside = the node's mean busy CPU minus
the mean of every worker's tree on that node (100 = one core). The run is `contended` when, on any
node, processes outside it used `monitor.contention_share` of the node's CPUs or more on average, or
when any of its GPUs ran a process that is not one of its workers. The outside share includes Ray's
own daemons and scaleprof's driver and aggregator where they share the node (a few percent of a core).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from scaleprof.analysis.frames import column

NO_CONTENTION: dict[str, Any] = {
    "contended": False,
    "outside_cpu_pct": math.nan,
    "outside_cpu_share": math.nan,
    "gpu_other_processes": math.nan,
}


def contention(
    system: pd.DataFrame, starts: pd.DataFrame, span: tuple[float, float] | None, share: float
) -> dict[str, Any]:
    """contended, outside_cpu_pct (the busiest node's, 100 = one core), outside_cpu_share (of that node's
    CPUs) and gpu_other_processes (the most processes seen on one of the run's GPUs beyond its own)."""
    if system.empty or "node_cpu_pct" not in system or starts.empty or "node_cpus" not in starts:
        return dict(NO_CONTENTION)
    samples = system if span is None else system[(system["time"] >= span[0]) & (system["time"] <= span[1])]
    samples = samples.dropna(subset=["node_cpu_pct", "cpu_pct"])
    if samples.empty:
        return dict(NO_CONTENTION)
    own = samples["cpu_pct"] + column(samples, "children_cpu_pct").reindex(samples.index).fillna(0.0)
    samples = samples.assign(own=own)
    cpus = starts.groupby("node_id")["node_cpus"].max()
    worst_pct, worst_share = -math.inf, -math.inf
    for node, group in samples.groupby("node_id"):
        node_busy = float(group["node_cpu_pct"].mean())
        mine = float(group.groupby("rank")["own"].mean().sum())
        outside = max(0.0, node_busy - mine)
        node_share = outside / (100.0 * float(cpus.get(node, math.nan)))
        if node_share > worst_share or math.isnan(worst_share):
            worst_pct, worst_share = outside, node_share
    out = {"outside_cpu_pct": worst_pct, "outside_cpu_share": worst_share, "gpu_other_processes": math.nan}
    if "gpu_processes" in samples and "gpu_uuid" in starts:
        ours = starts.dropna(subset=["gpu_uuid"]).groupby("gpu_uuid")["rank"].nunique()
        by_rank = starts.set_index("rank")["gpu_uuid"]
        seen = samples.dropna(subset=["gpu_processes"]).assign(gpu_uuid=lambda f: f["rank"].map(by_rank))
        if not seen.empty:
            most = seen.groupby("gpu_uuid")["gpu_processes"].max()
            out["gpu_other_processes"] = float(max(0.0, (most - ours.reindex(most.index).fillna(0)).max()))
    out["contended"] = bool(
        (math.isfinite(worst_share) and worst_share >= share) or (out["gpu_other_processes"] or 0) > 0
    )
    return out
