"""Steady state, measured: where a run's step times settle, and how sure its figures are.

The one home of the steady-state window and of the interval every headline figure carries.

- **The step series** of a run: one point per step index (epoch, step), the slowest rank's step time
  over the samples all ranks trained in it (seconds per sample; a short last batch stays comparable).
- **Warm-up** (`warmup_end`): a floor, then a rule. The floor is epoch 1 when the run has two or more
  epochs (start-up effects, first pass over the data, lazy allocation), else `train.warmup_steps`.
  After the floor the MSER-5 rule (White, 1997; Franklin & White, 2008) decides whether step times
  were still settling: the series is cut into means of 5 steps, and the truncation d (in those
  batches, searched over the first half) that minimises the standard error of the remaining mean,
  sum((Z_j - mean)^2) / (m - d)^2, is added to the floor. A transient that outlasts the floor is cut
  (never short of it, in the tests' step changes); on a settled series the rule usually cuts nothing,
  and by chance sometimes a few batches more (a known trait of MSER: fewer steps, no bias). The
  window is recorded per run and drawn on the
  step-time chart.
- **Interval** (`batch_means_interval`): step times are autocorrelated (a slow phase lasts several
  steps), so a naive standard error is too narrow. Non-overlapping batch means with floor(sqrt(n))
  steps per batch (Flegal & Jones, 2010) and a t-interval over the batches; for throughput the
  interval of seconds per sample is inverted.
- **Floor of steady steps** (`evaluation.min_steady_steps`, 30 by default): fewer steady steps per
  worker give fewer than 5 batch means, whose t-interval (4 degrees of freedom) is wider than the
  differences a study wants to see; such figures are marked low-confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

MSER_BATCH = 5
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    batches: int  # batch means the interval rests on (0: none could be made)


NO_INTERVAL = Interval(math.nan, math.nan, math.nan, 0)

# The runs table's figures that carry a 95% interval: figure -> (low column, high column).
INTERVAL_COLUMNS = {
    "throughput": ("throughput_low", "throughput_high"),
    "scaling_efficiency": ("scaling_efficiency_low", "scaling_efficiency_high"),
    "cost_per_sample_usd": ("cost_per_sample_low_usd", "cost_per_sample_high_usd"),
}


def relative_half_width(value: Any, low: Any, high: Any) -> Any:
    """Half an interval over its figure (0.05 = ±5%); numbers or columns."""
    return (high - low) / 2 / abs(value)


def batch_means_interval(values: np.ndarray | pd.Series, level: float = LEVEL) -> Interval:
    """The mean of an autocorrelated series with a `level` interval from non-overlapping batch means of
    floor(sqrt(n)) values each; the oldest values that do not fill a batch are left out. NaN bounds
    with fewer than 2 batches (a single value)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return NO_INTERVAL
    size = max(1, math.isqrt(len(x)))
    batches = len(x) // size
    if batches < 2:
        return Interval(float(x.mean()), math.nan, math.nan, batches)
    means = x[len(x) - batches * size :].reshape(batches, size).mean(axis=1)
    mean = float(means.mean())
    half = float(stats.t.ppf(0.5 + level / 2, batches - 1)) * float(means.std(ddof=1)) / math.sqrt(batches)
    return Interval(mean, mean - half, mean + half, batches)


def mser_truncation(series: np.ndarray | pd.Series, batch: int = MSER_BATCH) -> int:
    """MSER-5: how many leading values to drop (a multiple of `batch`) so the rest's mean has the
    smallest standard error; the cut is searched over the first half of the series only."""
    x = np.asarray(series, dtype=float)
    m = len(x) // batch
    if m < 4:
        return 0
    z = x[: m * batch].reshape(m, batch).mean(axis=1)
    best, best_d = math.inf, 0
    for d in range(m // 2 + 1):
        rest = z[d:]
        score = float(((rest - rest.mean()) ** 2).sum()) / len(rest) ** 2
        if score < best:
            best, best_d = score, d
    return best_d * batch


def step_series(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per step index of a run, in order: epoch, step, samples (all ranks), step_s (the
    slowest rank's) and s_per_sample."""
    grouped = steps.groupby(["epoch", "step"], sort=True)
    series = pd.DataFrame({"samples": grouped["samples"].sum(), "step_s": grouped["step_s"].max()}).reset_index()
    series["s_per_sample"] = series["step_s"] / series["samples"].where(series["samples"] > 0)
    return series


@dataclass(frozen=True)
class Window:
    """A run's steady-state window, in step indices of its step series."""

    start: int  # first steady step index (the warm-up steps per worker)
    floor: int  # where the rule's floor put it before MSER-5
    steps: int  # steady steps per worker
    basis: str  # said in the report beside the throughput
    first_epoch: int  # the first (0-based) epoch whose steps are all steady

    def epochs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of a frame with a 0-based `epoch` column whose steps all lie in the window."""
        return frame[frame["epoch"] >= self.first_epoch] if self.steps > 0 else frame.iloc[0:0]


def warmup_floor(series: pd.DataFrame, warmup_steps: int) -> tuple[int, str]:
    if series.empty:
        return 0, ""
    if int(series["epoch"].max()) >= 1:
        return int((series["epoch"] < 1).sum()), "epoch 1"
    return min(warmup_steps, len(series)), f"the first {warmup_steps} steps"


def steady_window(series: pd.DataFrame, warmup_steps: int) -> Window:
    floor, floor_label = warmup_floor(series, warmup_steps)
    extra = mser_truncation(series["s_per_sample"].iloc[floor:].to_numpy())
    start = floor + extra
    steps = len(series) - start
    if steps <= 0:
        return Window(start, floor, 0, f"no step after the warm-up ({floor_label})", 0)
    first = series.iloc[start]
    first_epoch = int(first["epoch"]) + (1 if int(first["step"]) > 0 else 0)
    settled = f"; step times settled {extra} steps later (MSER-5)" if extra else ""
    return Window(start, floor, steps, f"steps after {floor_label} (warm-up){settled}", first_epoch)


def in_window(steps: pd.DataFrame, series: pd.DataFrame, window: Window) -> pd.DataFrame:
    """The step events (every rank's) whose step index is in the window."""
    keep = series.iloc[window.start :][["epoch", "step"]]
    return steps.merge(keep, on=["epoch", "step"], how="inner")


def scale_interval(value: float, per_sample: Interval) -> tuple[float, float]:
    """The interval of a throughput `value` from the interval of seconds per sample: the relative
    bounds of 1 / (seconds per sample), applied to the value."""
    if not (math.isfinite(value) and math.isfinite(per_sample.low) and per_sample.mean > 0):
        return math.nan, math.nan
    high = value * per_sample.mean / per_sample.low if per_sample.low > 0 else math.inf
    return value * per_sample.mean / per_sample.high, high


def ratio_interval(
    value: float, numerator: tuple[float, float, float], denominator: tuple[float, float, float]
) -> tuple[float, float]:
    """The interval of value = a / b from a's and b's (value, low, high), their log half-widths added in
    quadrature (independent measurements): e.g. scaling efficiency from X(N) and X(1)."""
    halves = []
    for mid, low, high in (numerator, denominator):
        if not all(math.isfinite(v) and v > 0 for v in (mid, low, high)):
            return math.nan, math.nan
        halves.append((math.log(high) - math.log(low)) / 2)
    if not (math.isfinite(value) and value > 0):
        return math.nan, math.nan
    half = math.hypot(*halves)
    return value * math.exp(-half), value * math.exp(half)


def time_span(steady: pd.DataFrame) -> tuple[float, float] | None:
    """The wall-clock span of the window's steps (seconds since the epoch): from the start of its first
    step to the end of its last, over all ranks. A step event is stamped when its step ends."""
    if steady.empty or "time" not in steady:
        return None
    return float((steady["time"] - steady["step_s"]).min()), float(steady["time"].max())
