"""Speedup, scaling efficiency and predicted efficiency against known answers."""

import math

import pandas as pd
import pytest

from scaleprof.analysis.scaling import add_scaling_columns, predictions


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
