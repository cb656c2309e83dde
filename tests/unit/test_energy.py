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


def test_the_energy_counter_is_used_where_the_gpu_has_one():
    from scaleprof.analysis.energy import COUNTER, energy

    # two ranks; rank 0's counter rises 3,000 J over its 10 s of steady window (300 W), rank 1's 2,000 J (200 W);
    # their sampled power readings (a board average) say otherwise and are not used
    rows = []
    for rank, watts in ((0, 300.0), (1, 200.0)):
        for t in range(0, 21):
            rows.append({"rank": rank, "time": float(t), "gpu_power_w": 999.0, "gpu_energy_mj": 1e6 + watts * 1000 * t})
    out = energy({"throughput": 1000.0}, pd.DataFrame(rows), (5.0, 15.0))
    assert out["energy_basis"] == COUNTER and out["gpu_power_w"] == pytest.approx(500.0)
    assert out["energy_per_sample_j"] == pytest.approx(0.5)
    assert out["energy_run_j"] == pytest.approx((300 + 200) * 20)  # the whole run, both ranks


def test_without_a_counter_the_sampled_power_is_used_and_said_so():
    from scaleprof.analysis.energy import SAMPLED, energy

    system = pd.DataFrame({"rank": [0, 0], "time": [1.0, 2.0], "gpu_power_w": [100.0, 120.0]})
    out = energy({"throughput": 110.0}, system, None)
    assert out["energy_basis"] == SAMPLED and out["gpu_power_w"] == 110.0 and "energy_run_j" not in out
