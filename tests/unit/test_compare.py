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


def test_single_runs_with_intervals_use_them():
    a, b = runs({"cpu-1": [100]}), runs({"cpu-1": [104]})
    a["throughput_low"], a["throughput_high"] = 99.0, 101.0  # ±1%
    b["throughput_low"], b["throughput_high"] = 103.0, 105.0  # ±0.96%
    row = compare_runs(a, b, noise_floor=0.05).iloc[0]
    assert row["throughput_noise_basis"] == "interval"
    assert row["throughput_noise"] == pytest.approx((0.01**2 + (1 / 104) ** 2) ** 0.5)
    assert "throughput" in row["significant"]  # 4% against ±1.4%: beyond the noise the runs measured
    assert row["accuracy_noise_basis"] == "floor"  # no interval for quality: the floor stands in


def test_only_shared_placements_are_compared():
    table = compare_runs(runs({"cpu-1": [100], "cpu-4": [300]}), runs({"cpu-1": [100], "gpu-1": [900]}))
    assert list(table["placement"]) == ["cpu-1"]


def test_language_models_are_compared_on_perplexity():
    a, b = runs({"cpu-1": [100]}), runs({"cpu-1": [100]})
    a["perplexity"], b["perplexity"] = 4.0, 5.0
    row = compare_runs(a, b).iloc[0]
    assert row["perplexity_change"] == pytest.approx(0.25) and "perplexity" in row["significant"]


def test_a_contended_or_low_confidence_side_is_said_beside_the_change():
    a, b = runs({"cpu-1": [100]}), runs({"cpu-1": [60]})
    a["contended"], b["contended"] = False, True
    a["low_confidence"], b["low_confidence"] = True, False
    row = compare_runs(a, b).iloc[0]
    assert "throughput" in row["significant"] and row["caveats"] == "A low-confidence; B contended"
    assert compare_runs(runs({"cpu-1": [100]}), runs({"cpu-1": [60]})).iloc[0]["caveats"] == ""
