"""What the report points out, computed by analysis: checked on the hand-made study's known figures."""

import pytest


def test_best_cheapest_fastest_and_fixed_cost(study):
    _, tables, _ = study
    found = tables.findings
    assert found.best_run_id == "001-mlp-cpu-1-r0"  # both runs have the same F1: the first in study order
    assert found.cheapest["placement"] == "cpu-2" and found.fastest["placement"] == "cpu-2"
    assert found.cheapest["cost_per_sample_usd"] == pytest.approx(0.001 / 300)  # $3.6/h over 300 samples/s
    assert found.recommendation is None  # the experiment sets no goal
    assert found.restarted == []
    assert found.throughput_bases == ["steps after epoch 1 (warm-up)"]


def test_quality_medians_per_placement(study):
    _, tables, _ = study
    summary = tables.quality_summary.set_index("placement")
    assert summary.loc["cpu-1", "accuracy"] == pytest.approx(0.8)  # every 5th of 20 predictions wrong
    assert summary.loc["cpu-1", "runs_ok"] == 1 and "gpu-1" not in summary.index  # skipped runs have no quality


def test_law_curves_cover_four_times_the_largest_measured_count(study):
    _, tables, _ = study
    curves = tables.law_curves
    assert curves["workers"].min() == 1 and curves["workers"].max() == 16  # max(16, 4 x 2 workers)
    one = curves[curves["workers"] == 2].iloc[0]
    assert one["throughput"] == pytest.approx(300.0, rel=1e-6)  # two points: the law passes through both
