"""The inference probe on the CPU with real timing (the Ray actor wraps this same class)."""

from typing import Any

import pytest

from scaleprof.config import Experiment
from scaleprof.execution.inference import InferenceProbe
from scaleprof.execution.prepare import prepare

EXPERIMENT: dict[str, Any] = {
    "name": "inf",
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "placements": [{"name": "cpu-1", "workers": 1}],
    "evaluation": {"inference": {"batch_sizes": [64, 1, 8], "warmup": 3, "iterations": 40, "devices": ["cpu"]}},
}


@pytest.fixture(scope="module")
def rows():
    exp = Experiment.model_validate(EXPERIMENT)
    return InferenceProbe(exp.resolved(), "mlp", "cpu", prepare(exp).for_inference()).run()


def test_rows_per_batch_size_with_ordered_percentiles(rows):
    assert [r["batch_size"] for r in rows] == [1, 8, 64]  # sorted, as the config normalises them
    for r in rows:
        assert r["status"] == "ok" and r["iterations"] == 40
        assert 0 < r["latency_p50_s"] <= r["latency_p95_s"] <= r["latency_p99_s"]
        assert r["throughput"] == pytest.approx(r["batch_size"] / r["latency_mean_s"])
        assert r["peak_mem_mb"] > 50 and r["memory_kind"] == "process RSS"
        assert r["channels_last"] is False and r["amp"] is False and r["compile"] is False


# How throughput grows with the batch is a timing claim: benchmarks/inference_batches.py measures it.


def test_amp_is_ignored_on_cpu_and_channels_last_recorded():
    settings = {**EXPERIMENT, "model": {"name": "small-cnn"}}
    settings["evaluation"] = {
        "inference": {"batch_sizes": [4], "warmup": 1, "iterations": 3, "amp": True, "channels_last": True}
    }
    exp = Experiment.model_validate(settings)
    (row,) = InferenceProbe(exp.resolved(), "small-cnn", "cpu", prepare(exp).for_inference()).run()
    assert row["status"] == "ok" and row["amp"] is False and row["channels_last"] is True
