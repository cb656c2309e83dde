"""The one definition of throughput scaleprof uses everywhere.

Throughput is global training samples per second in steady state: over the steps of a run's steady
window (analysis/steady.py: epoch 1 or `train.warmup_steps` as the floor, then the MSER-5 rule), the
samples all ranks trained over the slowest rank's summed step time. A step's time runs from the end
of the previous step (or the epoch's start) to its end, so a rank's step times sum to its epoch
times. Its 95% interval comes from batch means of the run's step series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaleprof.analysis.steady import (
    Window,
    batch_means_interval,
    in_window,
    scale_interval,
    steady_window,
    step_series,
)


@dataclass(frozen=True, eq=False)
class Throughput:
    samples_per_s: float
    basis: str  # says which part of the run was counted, for the report
    low: float = math.nan  # 95% interval
    high: float = math.nan
    window: Window | None = None
    series: pd.DataFrame | None = None  # the run's step series (analysis/steady.step_series)
    steady: pd.DataFrame | None = None  # the step events (every rank's) in the window


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


def steady_state_throughput(step_events: pd.DataFrame, warmup_steps: int) -> Throughput:
    """Steady-state global throughput of one run (see module docstring)."""
    if step_events.empty:
        return Throughput(math.nan, "no training steps were recorded (the loop did not iterate session.steps)")
    step_events = without_traced_steps(step_events)
    series = step_series(step_events)
    window = steady_window(series, warmup_steps)
    if window.steps <= 0:
        return Throughput(math.nan, window.basis, window=window, series=series, steady=step_events.iloc[0:0])
    steps = in_window(step_events, series, window)
    per_rank = steps.groupby("rank").agg(samples=("samples", "sum"), time=("step_s", "sum"))
    value = float(per_rank["samples"].sum() / per_rank["time"].max())
    per_sample = batch_means_interval(series["s_per_sample"].iloc[window.start :])
    low, high = scale_interval(value, per_sample)
    return Throughput(value, window.basis, low, high, window, series, steps)


def without_traced_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """The step events less every rank's events of the step indices torch.profiler traced on any rank
    (a traced rank slows the others at the next collective)."""
    if "profiled" not in steps or not steps["profiled"].eq(True).any():
        return steps
    traced = steps.loc[steps["profiled"].eq(True), ["epoch", "step"]].drop_duplicates()
    marked = steps.merge(traced.assign(_traced=True), on=["epoch", "step"], how="left")
    return marked[marked["_traced"].isna()].drop(columns="_traced")


def percentile(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else float("nan")
