"""GPU energy per sample: steady-state power over throughput."""

import pandas as pd
import pytest


def test_energy_per_sample_is_steady_power_over_throughput():
    from scaleprof.analysis.energy import energy

    system = pd.DataFrame(
        {
            "rank": [0, 0, 1, 1, 0],
            "time": [12.0, 18.0, 12.0, 18.0, 5.0],
            "gpu_power_w": [100.0, 100.0, 150.0, 150.0, 999.0],
        }
    )  # the 999 W reading falls before the steady window (10 s to 20 s) and is not counted
    out = energy({"throughput": 500.0}, system, (10.0, 20.0))
    assert out["gpu_power_w"] == 250.0 and out["energy_per_sample_j"] == pytest.approx(0.5)
