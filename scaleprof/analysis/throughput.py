"""The one definition of throughput scaleprof uses everywhere.

Throughput is global training samples per second in steady state. The first epoch pays for Ray
worker start-up effects, lazy allocation and cold caches, so when a run has two or more epochs
steady state is epochs 2..E. With a single epoch, steady state is that epoch's steps after the
first `warmup_steps`. An epoch's global time is its slowest rank's (DDP ranks finish together).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Throughput:
    samples_per_s: float
    basis: str  # says which part of the run was counted, for the report


def global_epochs(epoch_events: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch of one run: samples summed over ranks, time of the slowest rank."""
    grouped = epoch_events.groupby("epoch")
    frame = pd.DataFrame(
        {
            "samples": grouped["samples"].sum(),
            "epoch_time_s": grouped["epoch_time_s"].max(),
            "ranks": grouped["rank"].nunique(),
        }
    ).reset_index()
    frame["throughput"] = frame["samples"] / frame["epoch_time_s"]
    return frame


def steady_epoch_numbers(epochs: int) -> list[int]:
    return list(range(1, epochs)) if epochs > 1 else []


def steady_epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """The steady-state rows of a frame with a 0-based `epoch` column (epochs 2..E of the run). Empty
    when the run had a single epoch: then steady state is counted in steps (`steady_steps`)."""
    if frame.empty:
        return frame
    return frame[frame["epoch"].isin(steady_epoch_numbers(int(frame["epoch"].max()) + 1))]


def steady_steps(steps: pd.DataFrame, warmup_steps: int) -> pd.DataFrame:
    """The steady-state step events of one run: those of epochs 2..E, or with a single epoch the steps
    after the first `warmup_steps`."""
    if steps.empty:
        return steps
    steady = steady_epochs(steps)
    return steady if not steady.empty else steps[steps["step"] >= warmup_steps]


def steady_state_throughput(
    epoch_events: pd.DataFrame, step_events: pd.DataFrame, warmup_steps: int, per_epoch: pd.DataFrame | None = None
) -> Throughput:
    """Steady-state global throughput of one run (see module docstring); `per_epoch` is
    `global_epochs(epoch_events)` when the caller already has it."""
    if epoch_events.empty:
        return Throughput(float("nan"), "no completed epoch")
    per_epoch = global_epochs(epoch_events) if per_epoch is None else per_epoch
    if not per_epoch["samples"].sum():
        return Throughput(float("nan"), "no training steps were recorded (the loop did not iterate session.steps)")
    n_epochs = int(per_epoch["epoch"].max()) + 1
    steady = steady_epochs(per_epoch)
    if not steady.empty:
        basis = (
            f"epochs 2-{n_epochs} (epoch 1 excluded as warm-up)"
            if n_epochs > 2
            else "epoch 2 (epoch 1 excluded as warm-up)"
        )
        return Throughput(float(steady["samples"].sum() / steady["epoch_time_s"].sum()), basis)
    steps = steady_steps(step_events, warmup_steps)
    if steps.empty:
        return Throughput(float("nan"), f"single epoch shorter than the {warmup_steps} warm-up steps")
    per_rank = steps.groupby("rank").agg(samples=("samples", "sum"), time=("step_s", "sum"))
    value = per_rank["samples"].sum() / per_rank["time"].max()
    return Throughput(float(value), f"single epoch, steps after the first {warmup_steps} (warm-up)")


def percentile(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else float("nan")
