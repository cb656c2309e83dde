"""Where a step's time goes: data, forward, backward compute, gradient all-reduce, optimiser, other."""

from __future__ import annotations

import pandas as pd

BREAKDOWN_COLUMNS = [
    "step_data_s", "step_forward_s", "step_backward_compute_s", "step_allreduce_s", "step_optimizer_s",
    "step_other_s",
]  # fmt: skip


def step_breakdown(steps: pd.DataFrame, probe: pd.DataFrame) -> dict[str, float]:
    """Mean time per step split into data, forward, backward compute, gradient all-reduce, optimiser
    and other. The all-reduce share is measured by the sync probe (backward with minus without
    DDP's gradient sync); it is taken out of the backward time, where DDP spends it."""
    if "forward_s" not in steps:
        return {}
    mean = steps[["data_s", "forward_s", "backward_s", "optimizer_s", "step_s"]].mean()
    allreduce = float(probe["allreduce_s"].median()) if "allreduce_s" in probe else 0.0
    allreduce = min(allreduce, float(mean["backward_s"]))
    other = mean["step_s"] - mean[["data_s", "forward_s", "backward_s", "optimizer_s"]].sum()
    return {
        "step_data_s": float(mean["data_s"]),
        "step_forward_s": float(mean["forward_s"]),
        "step_backward_compute_s": float(mean["backward_s"]) - allreduce,
        "step_allreduce_s": allreduce,
        "step_optimizer_s": float(mean["optimizer_s"]),
        "step_other_s": float(max(other, 0.0)),
    }
