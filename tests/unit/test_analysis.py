"""Throughput and scaling definitions on hand-made events with known answers."""

import math

import pandas as pd
import pytest

from scaleprof.analysis.scaling import add_scaling_columns, predictions
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


def test_efficiency_against_same_device_one_worker_median():
    runs = pd.DataFrame(
        {
            "model": ["m"] * 5,
            "device": ["cpu", "cpu", "cpu", "gpu", "gpu"],
            "workers": [1, 1, 4, 2, 1],
            "status": ["ok", "ok", "ok", "ok", "skipped"],
            "throughput": [90.0, 110.0, 300.0, 1000.0, float("nan")],
            "kind": ["fixed-split"] * 5,
        }
    )
    out = add_scaling_columns(runs)
    assert out.loc[2, "speedup"] == pytest.approx(3.0)
    assert out.loc[2, "scaling_efficiency"] == pytest.approx(0.75)
    # the GPU group has no ok 1-worker run: no baseline, no made-up efficiency
    assert math.isnan(out.loc[3, "scaling_efficiency"])


def test_predicted_efficiency_is_against_the_measured_one_worker_baseline():
    """`predict`'s efficiency means what the runs table's means: X(N) / (N x measured X(1)), not the
    law's own fitted X(1). Amdahl-shaped points: X(1) = 100 measured, so E(4) = X_pred(4) / 400."""
    runs = pd.DataFrame({
        "model": ["m"] * 4, "device": ["cpu"] * 4, "workers": [1, 2, 3, 4], "status": ["ok"] * 4,
        "kind": ["fixed-split"] * 4, "throughput": [100.0, 180.0, 240.0, 280.0],
    })  # fmt: skip
    table = predictions(runs, [4, 8])
    at4 = table[table["workers"] == 4].iloc[0]
    assert at4["efficiency"] == pytest.approx(at4["throughput"] / 400)
    no_baseline = predictions(runs[runs["workers"] > 1], [8])
    assert math.isnan(no_baseline["efficiency"].iloc[0])  # nothing measured at 1 worker: no made-up figure


def test_wall_phases_cut_the_run_at_its_marks_and_add_up_to_wall_time():
    import pandas as pd

    from scaleprof.analysis.summarize import WALL_PHASES, wall_phases

    lifecycle = pd.DataFrame(
        {"event": ["worker_start", "worker_start", "worker_end", "worker_end"], "time": [110.0, 111.0, 140.0, 141.5]}
    )
    epochs = pd.DataFrame({"epoch_start": [113.0, 113.2, 125.0], "epoch_time_s": [10.0, 9.0, 12.0]})
    phases = wall_phases({"started_at": 100.0, "ended_at": 143.0}, lifecycle, epochs)
    assert phases == {"launch_s": 10.0, "setup_s": 3.0, "training_s": 24.0, "finish_s": 4.5, "teardown_s": 1.5}
    assert list(phases) == list(WALL_PHASES) and sum(phases.values()) == 43.0
    assert wall_phases({"started_at": 100.0}, lifecycle, epochs) == {}  # a run still running has no end mark
