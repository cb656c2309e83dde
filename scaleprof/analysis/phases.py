"""Where a run's wall time goes: launch, setup, training, finish, teardown (they add up to wall_s)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from scaleprof.records import Lifecycle

# In order; explained in the report's notes.
WALL_PHASES = {"launch_s": "launch", "setup_s": "setup", "training_s": "training", "finish_s": "finish",
               "teardown_s": "teardown"}  # fmt: skip


def wall_phases(record: dict[str, Any], lifecycle: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, float]:
    """The run's wall time cut at its workers' first start, first epoch, last epoch end and last exit
    (the last attempt's; its launch includes any failed attempts before it)."""
    if epochs.empty or lifecycle.empty or "started_at" not in record or "ended_at" not in record:
        return {}
    starts = lifecycle[lifecycle["event"] == Lifecycle.WORKER_START]["time"]
    ends = lifecycle[lifecycle["event"] == Lifecycle.WORKER_END]["time"]
    if starts.empty or ends.empty:
        return {}
    marks = [
        record["started_at"],
        float(starts.min()),
        float(epochs["epoch_start"].min()),
        float((epochs["epoch_start"] + epochs["epoch_time_s"]).max()),
        float(ends.max()),
        record["ended_at"],
    ]
    return {name: max(0.0, b - a) for name, a, b in zip(WALL_PHASES, marks, marks[1:])}
