"""The step breakdown: the probed all-reduce comes out of backward."""

import pytest


def test_step_breakdown_takes_the_probed_all_reduce_out_of_backward(study):
    _, tables, _ = study
    runs = tables.runs.set_index("placement")
    step = 1 / 3  # cpu-2: 4 steps in 4/3 s
    assert runs.loc["cpu-2", "step_allreduce_s"] == pytest.approx(0.05)
    assert runs.loc["cpu-2", "step_backward_compute_s"] == pytest.approx(0.4 * step - 0.05)
    assert runs.loc["cpu-2", "step_forward_s"] == pytest.approx(0.3 * step)
    assert runs.loc["cpu-2", "step_other_s"] == pytest.approx(0.1 * step)
    assert runs.loc["cpu-1", "step_allreduce_s"] == 0.0  # one worker: nothing to synchronise


def test_without_a_probe_several_workers_backward_stays_whole_and_never_called_compute():
    import math

    import pandas as pd

    from scaleprof.analysis.breakdown import step_breakdown

    steps = pd.DataFrame(
        {"data_s": [0.1], "forward_s": [0.2], "backward_s": [0.5], "optimizer_s": [0.1], "step_s": [1.0]}
    )
    unprobed = step_breakdown(steps, pd.DataFrame(), workers=2)
    assert unprobed["step_backward_unsplit_s"] == 0.5
    assert math.isnan(unprobed["step_allreduce_s"]) and math.isnan(unprobed["step_backward_compute_s"])
    single = step_breakdown(steps, pd.DataFrame(), workers=1)
    assert single["step_allreduce_s"] == 0.0 and single["step_backward_compute_s"] == 0.5
    # a loop that marks no phases gives no breakdown at all, rather than zeros
    assert step_breakdown(steps.assign(forward_s=float("nan")), pd.DataFrame(), workers=2) == {}
