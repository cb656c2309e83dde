"""Where a step's time goes: data, forward, backward compute, gradient all-reduce, optimiser, other."""

from __future__ import annotations

import pandas as pd

BREAKDOWN_COLUMNS = [
    "step_data_s", "step_forward_s", "step_backward_compute_s", "step_allreduce_s", "step_backward_unsplit_s",
    "step_optimizer_s", "step_other_s",
]  # fmt: skip


def step_breakdown(steps: pd.DataFrame, probe: pd.DataFrame, workers: int) -> dict[str, float]:
    """Mean time per step split into data, forward, backward compute, gradient all-reduce, optimiser
    and other. The all-reduce share is measured by the sync probe (backward with minus without
    DDP's gradient sync); it is taken out of the backward time, where DDP spends it. With one worker
    there is nothing to synchronise (0); with several and no probe (a user loop that did not call
    `session.measure_allreduce`), the backward is reported whole as `step_backward_unsplit_s`,
    all-reduce inside it, never as compute."""
    if "forward_s" not in steps or steps["forward_s"].isna().all():
        return {}
    mean = steps[["data_s", "forward_s", "backward_s", "optimizer_s", "step_s"]].mean()
    nan = float("nan")
    out = {
        "step_data_s": float(mean["data_s"]),
        "step_forward_s": float(mean["forward_s"]),
        "step_optimizer_s": float(mean["optimizer_s"]),
        "step_other_s": float(
            max(mean["step_s"] - mean[["data_s", "forward_s", "backward_s", "optimizer_s"]].sum(), 0)
        ),
        "step_backward_compute_s": nan,
        "step_allreduce_s": nan,
        "step_backward_unsplit_s": nan,
    }
    probed = probe["allreduce_s"].dropna() if "allreduce_s" in probe else pd.Series(dtype=float)
    if workers == 1 or not probed.empty:  # one worker: nothing to synchronise (its probe is the wrapper's)
        allreduce = float(probed.median()) if workers > 1 else 0.0
        allreduce = min(allreduce, float(mean["backward_s"]))
        out.update(step_backward_compute_s=float(mean["backward_s"]) - allreduce, step_allreduce_s=allreduce)
    else:
        out["step_backward_unsplit_s"] = float(mean["backward_s"])
    return out
