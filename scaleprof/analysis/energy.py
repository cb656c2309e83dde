"""GPU energy per training sample: the one definition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def energy(row: dict[str, Any], system: pd.DataFrame, span: tuple[float, float] | None) -> dict[str, float]:
    """GPU energy per sample: the workers' mean NVML power over the steady window's span (every sample
    when the run has no window) over the throughput."""
    samples = system.dropna(subset=["gpu_power_w"])
    if span is not None:
        within = samples[(samples["time"] >= span[0]) & (samples["time"] <= span[1])]
        samples = within if not within.empty else samples
    if samples.empty:
        return {}
    watts = float(samples.groupby("rank")["gpu_power_w"].mean().sum())
    out = {"gpu_power_w": watts}
    if row.get("throughput") and np.isfinite(row["throughput"]):
        out["energy_per_sample_j"] = watts / row["throughput"]
    return out
