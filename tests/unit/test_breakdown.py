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
