import pandas as pd
import pytest

from scaleprof.analysis.compare import compare_runs


def runs(throughputs_by_placement, accuracy=0.9):
    rows = []
    for placement, values in throughputs_by_placement.items():
        for v in values:
            rows.append({"model": "m", "placement": placement, "kind": "fixed-split", "status": "ok",
                         "throughput": v, "scaling_efficiency": 1.0, "cost_per_sample_usd": 1e-6 * 100 / v,
                         "accuracy": accuracy})  # fmt: skip
    return pd.DataFrame(rows)


def test_change_beyond_measured_noise_is_flagged_and_within_is_not():
    a = runs({"cpu-1": [100, 102, 98], "cpu-2": [150, 150, 150]})
    b = runs({"cpu-1": [103, 101, 105], "cpu-2": [120, 121, 119]})
    table = compare_runs(a, b).set_index("placement")
    assert table.loc["cpu-1", "throughput_change"] == pytest.approx(0.03)
    assert table.loc["cpu-1", "throughput_noise_basis"] == "measured"
    assert "throughput" not in table.loc["cpu-1", "significant"]  # 3% within 2 x CV (4%)
    assert table.loc["cpu-2", "throughput_change"] == pytest.approx(-0.2)
    assert "throughput" in table.loc["cpu-2", "significant"] and "cost/sample" in table.loc["cpu-2", "significant"]


def test_single_runs_fall_back_to_the_floor_and_say_so():
    table = compare_runs(runs({"cpu-1": [100]}), runs({"cpu-1": [104]}), noise_floor=0.05).iloc[0]
    assert table["throughput_noise_basis"] == "floor" and table["throughput_noise"] == 0.05
    assert table["significant"] == ""


def test_only_shared_placements_are_compared():
    table = compare_runs(runs({"cpu-1": [100], "cpu-4": [300]}), runs({"cpu-1": [100], "gpu-1": [900]}))
    assert list(table["placement"]) == ["cpu-1"]


def scaling_runs():
    from scaleprof.analysis.usl import usl

    workers = [1, 2, 4]
    return pd.DataFrame(
        {"model": "m", "placement": [f"cpu-{w}" for w in workers], "device": "cpu", "kind": "fixed-split",
         "status": "ok", "workers": workers, "throughput": usl(workers, 0.1, 0.0, 100.0),
         "cost_per_hour_usd": [3.6 * w for w in workers]}
    ).assign(cost_per_sample_usd=lambda f: f["cost_per_hour_usd"] / 3600 / f["throughput"])  # fmt: skip


def test_recommend_measured_cheapest_then_predicted_then_none():
    from scaleprof.analysis.recommend import describe, recommend

    runs = scaling_runs()  # 100, 181.8, 307.7 samples/s
    measured = recommend(runs, {"min_throughput": 150})
    assert measured["basis"] == "measured" and measured["placement"] == "cpu-2"  # cheaper than cpu-4
    predicted = recommend(runs, {"min_throughput": 400})
    assert predicted["basis"] == "predicted" and predicted["workers"] == 6  # 100*6/(1+0.5) = 400
    assert "a prediction, not a measurement" in describe(predicted, {"min_throughput": 400})
    assert recommend(runs, {"min_throughput": 10_000}) == {"basis": "none"}
    assert recommend(runs, None) is None
