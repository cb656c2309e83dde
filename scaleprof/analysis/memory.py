"""Peak memory per worker process: what each rank held at most, on the host and, with a GPU, on the device."""

from __future__ import annotations

import pandas as pd

KEYS = ["run_id", "placement", "rank"]


def worker_memory_peaks(timeline: pd.DataFrame) -> pd.DataFrame:
    """Per run and rank: the peak resident memory of its process (`host RSS`) and, where a GPU was used, the
    peak GPU memory (`GPU used`), in MiB, one row per kind (columns: run_id, placement, rank, memory, mb);
    empty without monitor samples."""
    if timeline.empty or "rss_mb" not in timeline:
        return pd.DataFrame(columns=[*KEYS, "memory", "mb"])
    peaks = timeline.groupby(KEYS, as_index=False)["rss_mb"].max()
    frames = [peaks.assign(memory="host RSS", mb=peaks["rss_mb"])[[*KEYS, "memory", "mb"]]]
    if "gpu_mem_used_mb" in timeline and timeline["gpu_mem_used_mb"].notna().any():
        gpu = timeline.groupby(KEYS, as_index=False)["gpu_mem_used_mb"].max()
        frames.append(gpu.assign(memory="GPU used", mb=gpu["gpu_mem_used_mb"])[[*KEYS, "memory", "mb"]])
    return pd.concat(frames, ignore_index=True)
