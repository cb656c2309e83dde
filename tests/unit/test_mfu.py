"""MFU from counted FLOPs and the measured peak."""

import pytest


def test_mfu_from_counted_flops_and_measured_peak(study):
    _, tables, _ = study
    runs = tables.runs.set_index("placement")
    assert runs.loc["cpu-1", "mfu"] == pytest.approx(1e6 * 200 / 1e9)  # 1 MFLOP/sample x 200/s on a 1 GFLOP/s worker
    assert runs.loc["cpu-2", "mfu"] == pytest.approx(1e6 * 300 / (2 * 1e9))
    assert runs.loc["cpu-1", "peak_flops_basis"].startswith("measured")
