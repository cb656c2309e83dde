"""GPU energy per training sample: the one definition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.throughput import steady_epochs


def energy(row: dict[str, Any], system: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, float]:
    """GPU energy per sample: the workers' mean NVML power in steady state over the throughput."""
    steady = steady_epochs(epochs)
    window = steady if not steady.empty else epochs
    start = float(window["epoch_start"].min())
    end = float((window["epoch_start"] + window["epoch_time_s"]).max())
    samples = system[(system["time"] >= start) & (system["time"] <= end)].dropna(subset=["gpu_power_w"])
    if samples.empty:
        samples = system.dropna(subset=["gpu_power_w"])
    if samples.empty:
        return {}
    watts = float(samples.groupby("rank")["gpu_power_w"].mean().sum())
    out = {"gpu_power_w": watts}
    if row.get("throughput") and np.isfinite(row["throughput"]):
        out["energy_per_sample_j"] = watts / row["throughput"]
    return out
