"""Where a run's wall time goes: launch, setup, compile, training, finish, teardown (they add up to wall_s),
and the wait for its resources before that (on an autoscaling cluster, for the nodes to be added)."""

from __future__ import annotations

import pandas as pd

from scaleprof.records import Lifecycle

# In order; explained in the report's notes.
WALL_PHASES = {"launch_s": "launch", "setup_s": "setup", "compile_phase_s": "compile", "training_s": "training",
               "finish_s": "finish", "teardown_s": "teardown"}  # fmt: skip
# Before the run's wall time: waiting for its placement group (not launch cost; not in wall_s or its cost).
WAIT_PHASE = {"wait_s": "resource wait"}


def wall_phases(
    started_at: float | None, ended_at: float | None, lifecycle: pd.DataFrame, epochs: pd.DataFrame
) -> dict[str, float]:
    """The run's wall time (from `started_at` to `ended_at`, the run record's; None: not reached) cut at its
    workers' first start, first epoch, last epoch end and last exit (the last attempt's; its launch includes
    any failed attempts before it). torch.compile's time, spent inside the first steps, is taken out of
    training as a phase of its own: a fixed cost, like launch."""
    if epochs.empty or lifecycle.empty or started_at is None or ended_at is None:
        return {}
    starts = lifecycle[lifecycle["event"] == Lifecycle.WORKER_START]["time"]
    ends = lifecycle[lifecycle["event"] == Lifecycle.WORKER_END]["time"]
    if starts.empty or ends.empty:
        return {}
    marks = [
        started_at,
        float(starts.min()),
        float(epochs["epoch_start"].min()),
        float((epochs["epoch_start"] + epochs["epoch_time_s"]).max()),
        float(ends.max()),
        ended_at,
    ]
    names = [name for name in WALL_PHASES if name != "compile_phase_s"]
    phases = {name: max(0.0, b - a) for name, a, b in zip(names, marks, marks[1:])}
    compiled = float(epochs.groupby("epoch")["compile_s"].max().fillna(0).sum()) if "compile_s" in epochs else 0.0
    phases["compile_phase_s"] = min(compiled, phases["training_s"])
    phases["training_s"] -= phases["compile_phase_s"]
    return {name: phases[name] for name in WALL_PHASES}
