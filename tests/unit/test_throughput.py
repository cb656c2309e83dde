"""The throughput definition on hand-made events with known answers."""

import math

import pandas as pd
import pytest

from scaleprof.analysis.throughput import global_epochs, steady_state_throughput


def epochs_frame(rows):
    return pd.DataFrame(rows, columns=["rank", "epoch", "samples", "epoch_time_s"])


def steps_frame(rows):
    return pd.DataFrame(rows, columns=["rank", "epoch", "step", "samples", "step_s"])


def test_global_epoch_is_summed_samples_over_slowest_rank():
    frame = global_epochs(epochs_frame([(0, 0, 100, 2.0), (1, 0, 100, 4.0)]))
    assert frame.loc[0, "samples"] == 200 and frame.loc[0, "epoch_time_s"] == 4.0
    assert frame.loc[0, "throughput"] == 50.0


def test_steady_state_excludes_first_epoch():
    epochs = epochs_frame([(0, 0, 100, 10.0), (0, 1, 100, 1.0), (0, 2, 100, 3.0)])
    tp = steady_state_throughput(epochs, steps_frame([]), warmup_steps=5)
    assert tp.samples_per_s == pytest.approx(200 / 4.0)
    assert "epoch 1 excluded" in tp.basis


def test_single_epoch_uses_steps_after_warmup():
    steps = steps_frame([(r, 0, s, 10, 1.0 if s < 2 else 0.5) for r in (0, 1) for s in range(6)])
    tp = steady_state_throughput(epochs_frame([(0, 0, 60, 4.0), (1, 0, 60, 4.0)]), steps, warmup_steps=2)
    # 4 steady steps x 10 samples x 2 ranks in 4 x 0.5 s
    assert tp.samples_per_s == pytest.approx(80 / 2.0)
    assert "first 2" in tp.basis


def test_no_epoch_gives_nan_with_reason():
    tp = steady_state_throughput(epochs_frame([]), steps_frame([]), 5)
    assert math.isnan(tp.samples_per_s) and tp.basis == "no completed epoch"
