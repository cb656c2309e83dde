"""The placement a run realised: where each worker ran, and how that differs from what was asked."""

from __future__ import annotations

import pandas as pd

from scaleprof.analysis.frames import column, of_kind
from scaleprof.records import EventKind, Lifecycle


def placement_warning(nodes_requested: int | None, gpus_per_worker: float, starts: pd.DataFrame) -> str:
    """Where the realised placement (its workers' starts) differs from the one asked for ('' when it does not)."""
    warnings = []
    realized = starts["node_id"].nunique()
    if nodes_requested and realized != nodes_requested:
        warnings.append(f"asked for {nodes_requested} node(s), the workers ran on {realized}")
    if gpus_per_worker:
        uuids = column(starts, "gpu_uuid")
        if uuids.isna().any():
            warnings.append("some workers' GPUs could not be identified through NVML")
        elif uuids.nunique() < len(uuids) and gpus_per_worker >= 1:
            warnings.append("workers that asked for whole GPUs share a GPU (same UUID)")
    return "; ".join(warnings)


def workers_table(events: pd.DataFrame) -> pd.DataFrame:
    lifecycle = of_kind(events, EventKind.LIFECYCLE)
    if lifecycle.empty or "event" not in lifecycle:
        return pd.DataFrame()
    starts = lifecycle[lifecycle["event"] == Lifecycle.WORKER_START]
    keep = [
        "run_id",
        "attempt",
        "rank",
        "node_id",
        "hostname",
        "pid",
        "device",
        "torch_threads",
        "gpu_uuid",
        "gpu_name",
        "gpu_unavailable",
        "versions",
        "node_cpus",
        "gpu_driver",
        "gpu_topology",
        "nccl_env",
    ]
    table = starts[[c for c in keep if c in starts]].set_index(["run_id", "attempt", "rank"])
    # A sampler that failed mid-run (NVML gone) says why in a later event: the latest reason wins.
    later = lifecycle[lifecycle["event"] == Lifecycle.GPU_UNAVAILABLE]
    if not later.empty:
        reasons = later.groupby(["run_id", "attempt", "rank"])["reason"].last()
        table["gpu_unavailable"] = reasons.reindex(table.index).fillna(table.get("gpu_unavailable"))
    return table.sort_index().reset_index()
