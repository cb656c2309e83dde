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


def test_steady_state_excludes_first_epoch_and_takes_the_slowest_rank():
    # epoch 1: 10 slow steps; epochs 2-3: 10 steps each, rank 1 a little slower than rank 0
    rows = [(r, 0, s, 10, 1.0) for r in (0, 1) for s in range(10)]
    rows += [(r, e, s, 10, 0.1 if r == 0 else 0.125) for r in (0, 1) for e in (1, 2) for s in range(10)]
    tp = steady_state_throughput(steps_frame(rows), warmup_steps=5)
    assert tp.samples_per_s == pytest.approx(400 / (20 * 0.125))  # all samples over rank 1's 20 steps
    assert tp.window is not None
    assert tp.window.start == 10 and tp.window.steps == 20 and tp.window.first_epoch == 1
    assert "after epoch 1" in tp.basis
    assert tp.low == pytest.approx(tp.samples_per_s) and tp.high == pytest.approx(tp.samples_per_s)  # no noise


def test_single_epoch_uses_steps_after_warmup():
    steps = steps_frame([(r, 0, s, 10, 1.0 if s < 2 else 0.5) for r in (0, 1) for s in range(6)])
    tp = steady_state_throughput(steps, warmup_steps=2)
    # 4 steady steps x 10 samples x 2 ranks in 4 x 0.5 s
    assert tp.samples_per_s == pytest.approx(80 / 2.0)
    assert "after the first 2 steps" in tp.basis


def test_a_transient_that_outlasts_epoch_one_is_cut_too():
    # step times settle only 20 steps into epoch 2 (say cuDNN autotuning or a cache filling)
    rows = [
        (0, e, s, 10, 0.5 if (e == 0 or (e == 1 and s < 20)) else 0.1 + 0.001 * (s % 3))
        for e in (0, 1, 2)
        for s in range(60)
    ]
    tp = steady_state_throughput(steps_frame(rows), warmup_steps=5)
    assert tp.window is not None
    assert tp.window.floor == 60 and tp.window.start == 80
    assert "settled 20 steps later" in tp.basis
    assert tp.samples_per_s == pytest.approx(100, rel=0.02)  # 10 samples per ~0.101 s


def test_no_steps_gives_nan_with_reason():
    tp = steady_state_throughput(steps_frame([]), 5)
    assert math.isnan(tp.samples_per_s) and "no training steps" in tp.basis
