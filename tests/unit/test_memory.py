"""Peak memory per worker (analysis/memory.py) on hand-made monitor samples."""

import pandas as pd

from scaleprof.analysis.memory import worker_memory_peaks


def test_each_ranks_peak_host_and_gpu_memory():
    samples = pd.DataFrame(
        {
            "run_id": ["r"] * 4,
            "placement": ["p"] * 4,
            "rank": [0, 0, 1, 1],
            "rss_mb": [100.0, 150.0, 90.0, 80.0],
            "gpu_mem_used_mb": [1000.0, 900.0, None, 1200.0],
        }
    )
    peaks = worker_memory_peaks(samples).set_index(["memory", "rank"])["mb"]
    assert peaks.to_dict() == {
        ("host RSS", 0): 150.0,
        ("host RSS", 1): 90.0,
        ("GPU used", 0): 1000.0,
        ("GPU used", 1): 1200.0,
    }
    cpu_only = worker_memory_peaks(samples.drop(columns="gpu_mem_used_mb"))
    assert set(cpu_only["memory"]) == {"host RSS"}
    assert worker_memory_peaks(pd.DataFrame()).empty
