"""The goal: the cheapest placement that meets it, measured or predicted."""

import pandas as pd


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


def test_a_goal_met_only_by_the_point_figure_says_so():
    from scaleprof.analysis.recommend import describe, recommend

    runs = scaling_runs().assign(throughput_low=lambda f: f["throughput"] * 0.95)  # cpu-2: 181.8, down to 172.7
    goal = {"min_throughput": 175}
    text = describe(recommend(runs, goal), goal)
    assert "met cheapest by m on cpu-2" in text and "only just" in text and "down to 173 samples/s" in text
    firm = {"min_throughput": 150}
    assert "only just" not in describe(recommend(runs, firm), firm)


def test_a_predicted_recommendation_says_what_its_law_rests_on():
    from scaleprof.analysis.recommend import describe, recommend

    runs = scaling_runs().assign(contended=[False, False, True])
    goal = {"min_throughput": 400}
    text = describe(recommend(runs, goal), goal)
    assert "a prediction, not a measurement; from 3 worker counts (3 runs)" in text and "cpu-4 contended" in text
