"""MFU from counted FLOPs and the measured peak."""

import pytest


def test_mfu_from_counted_flops_and_measured_peak(study):
    _, tables, _ = study
    runs = tables.runs.set_index("placement")
    assert runs.loc["cpu-1", "mfu"] == pytest.approx(1e6 * 200 / 1e9)  # 1 MFLOP/sample x 200/s on a 1 GFLOP/s worker
    assert runs.loc["cpu-2", "mfu"] == pytest.approx(1e6 * 300 / (2 * 1e9))
    assert runs.loc["cpu-1", "peak_flops_basis"].startswith("measured")


CPU_MODES = [
    ("bf16", "bfloat16", "bf16"),
    (None, "bfloat16", "bf16"),
    ("fp32", "float32", "fp32"),
    (None, None, "fp32"),
]


@pytest.mark.parametrize(("reported", "dtype", "expected"), CPU_MODES)
def test_a_cpu_run_names_its_math_mode_as_a_gpu_run_does(reported, dtype, expected):
    """A CPU run in bf16 measured its bf16 matmul peak: its math mode says bf16 (a study from before workers
    reported the mode: from the math dtype), not nothing."""
    import pandas as pd

    from scaleprof.analysis.mfu import utilisation_of_peak
    from scaleprof.records import Lifecycle

    info = {
        "event": Lifecycle.MODEL_INFO,
        "flops_per_sample": 1e6,
        "parameters": 10,
        "cpu_peak_flops": 1e9,
        "math_dtype": dtype,
        "math_mode": reported,
    }
    out = utilisation_of_peak({"gpus": 0, "workers": 1, "throughput": 100.0}, pd.DataFrame([info]), pd.DataFrame())
    assert out["math_mode"] == expected
    assert out["mfu"] == pytest.approx(1e6 * 100 / 1e9)
