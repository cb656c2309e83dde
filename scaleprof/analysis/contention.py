"""Contention: did something outside the run compete for its node's CPUs or its GPUs?

One worker per node samples the node's busy CPU and the part Ray's own processes used (the raylet and
everything under it, its daemons, a local study's driver: telemetry.monitor.NodeSampler), 100 = one
core. Over the run's steady window, outside = the mean of (node - Ray) per node. The run is
`contended` when, on any node, processes outside Ray used `monitor.contention_share` of the node's
CPUs or more on average, or when one of its GPUs ran a process that is not one of its workers.
Other Ray jobs' workers on the same node count as Ray's (not flagged): the GPU check still sees them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

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
    if system.empty or starts.empty:
        return dict(NO_CONTENTION)
    samples = system if span is None else system[(system["time"] >= span[0]) & (system["time"] <= span[1])]
    if "node_cpu_pct" in system and not samples["node_cpu_pct"].notna().any():
        samples = system  # a window shorter than the monitor's interval: the run's samples as a whole
    out = dict(NO_CONTENTION)
    if {"node_cpu_pct", "ray_cpu_pct"} <= set(samples) and "node_cpus" in starts:
        node = samples.dropna(subset=["node_cpu_pct", "ray_cpu_pct"])
        cpus = starts.groupby("node_id")["node_cpus"].max()
        for node_id, group in node.groupby("node_id"):
            outside = float((group["node_cpu_pct"] - group["ray_cpu_pct"]).clip(lower=0).mean())
            node_share = outside / (100.0 * float(cpus.get(node_id, math.nan)))
            if math.isnan(out["outside_cpu_share"]) or node_share > out["outside_cpu_share"]:
                out["outside_cpu_pct"], out["outside_cpu_share"] = outside, node_share
    if "gpu_processes" in samples and "gpu_uuid" in starts:
        ours = starts.dropna(subset=["gpu_uuid"]).groupby("gpu_uuid")["rank"].nunique()
        by_rank = starts.set_index("rank")["gpu_uuid"]
        seen = samples.dropna(subset=["gpu_processes"]).assign(gpu_uuid=lambda f: f["rank"].map(by_rank))
        if not seen.empty:
            most = seen.groupby("gpu_uuid")["gpu_processes"].max()
            out["gpu_other_processes"] = float(max(0.0, (most - ours.reindex(most.index).fillna(0)).max()))
    cpu_busy = math.isfinite(out["outside_cpu_share"]) and out["outside_cpu_share"] >= share
    gpu_shared = math.isfinite(out["gpu_other_processes"]) and out["gpu_other_processes"] > 0
    out["contended"] = bool(cpu_busy or gpu_shared)
    return out
