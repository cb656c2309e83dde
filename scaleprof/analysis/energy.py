"""GPU energy per training sample and per run: the one definition.

Where the GPU has NVML's cumulative energy counter (Volta and newer), a rank's steady-state power is
the counter's increase between its first and last reading inside the steady window over the time
between them: exact, whatever the board's power readings average over. Otherwise it is the mean of
the monitor's power readings (`nvmlDeviceGetPowerUsage`, itself an average over a board-defined
window on A100 and newer), and `energy_basis` says so. Energy per sample = the ranks' summed power /
throughput; energy per run = the counter's increase over the whole run, summed over ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

COUNTER, SAMPLED = "NVML energy counter", "mean of sampled NVML power (no energy counter)"


def _counter_watts(readings: pd.DataFrame) -> float | None:
    """Summed over ranks: each rank's counter increase / the seconds between its first and last reading."""
    total, ranks = 0.0, 0
    for _, rank in readings.groupby("rank"):
        rank = rank.sort_values("time")
        seconds = float(rank["time"].iloc[-1] - rank["time"].iloc[0])
        if len(rank) < 2 or seconds <= 0:
            return None
        total += float(rank["gpu_energy_mj"].iloc[-1] - rank["gpu_energy_mj"].iloc[0]) / 1000 / seconds
        ranks += 1
    return total if ranks else None


def energy(row: dict[str, Any], system: pd.DataFrame, span: tuple[float, float] | None) -> dict[str, Any]:
    """gpu_power_w, energy_per_sample_j, energy_run_j and energy_basis (see module docstring)."""
    out: dict[str, Any] = {}
    within = system if span is None else system[(system["time"] >= span[0]) & (system["time"] <= span[1])]
    if "gpu_energy_mj" in system:
        counted = system.dropna(subset=["gpu_energy_mj"])
        watts = _counter_watts(within.dropna(subset=["gpu_energy_mj"]))
        if watts is not None:
            out.update(gpu_power_w=watts, energy_basis=COUNTER)
        if not counted.empty:
            spans = counted.groupby("rank")["gpu_energy_mj"].agg(lambda e: e.max() - e.min())
            out["energy_run_j"] = float(spans.sum()) / 1000
    if "gpu_power_w" not in out and "gpu_power_w" in system:
        samples = within.dropna(subset=["gpu_power_w"])
        samples = samples if not samples.empty else system.dropna(subset=["gpu_power_w"])
        if not samples.empty:
            out.update(gpu_power_w=float(samples.groupby("rank")["gpu_power_w"].mean().sum()), energy_basis=SAMPLED)
    if "gpu_power_w" in out and row.get("throughput") and np.isfinite(row["throughput"]):
        out["energy_per_sample_j"] = out["gpu_power_w"] / row["throughput"]
    return out
