"""What scaling did to the result: a multi-worker placement's held-out quality against one worker's."""

import dataclasses

import pandas as pd
import pytest

from scaleprof.analysis.quality_shift import quality_shifts
from scaleprof.config import GoalSpec


def runs(rows):
    """Runs of model m on cpu: (placement, workers, accuracy, perplexity, global batch, final lr) each."""
    frame = pd.DataFrame(rows, columns=["placement", "workers", "accuracy", "perplexity", "global_batch", "final_lr"])
    return frame.assign(model="m", device="cpu", status="ok", kind="fixed-split")


def test_a_two_worker_run_that_learned_far_less_is_named_with_both_batches_and_learning_rates():
    """As a user's study found: 0.996 at 1 worker, 0.418 at 2 (weak scaling doubled the global batch)."""
    (shift,) = quality_shifts(
        runs(
            [
                ("cpu-1", 1, 0.995, None, 64, 0.05),
                ("cpu-1", 1, 0.997, None, 64, 0.05),
                ("cpu-2", 2, 0.418, None, 128, 0.05),
                ("cpu-4", 4, 0.99, None, 256, 0.05),  # cpu-4 within 2%
            ]
        )
    )
    assert (shift.placement, shift.workers, shift.metric, shift.worse) == ("cpu-2", 2, "accuracy", True)
    assert (
        shift.value == 0.418 and shift.base == pytest.approx(0.996) and shift.change == pytest.approx(-0.58, abs=0.01)
    )
    assert (shift.global_batch, shift.base_global_batch, shift.lr, shift.base_lr) == (128, 64, 0.05, 0.05)


def test_differences_within_the_repeats_spread_or_the_tolerance_are_not_findings():
    spread = runs(
        [("cpu-1", 1, 0.90, None, 64, 0.05), ("cpu-1", 1, 0.99, None, 64, 0.05), ("cpu-2", 2, 0.91, None, 128, 0.05)]
    )
    assert quality_shifts(spread) == []  # 3.8% below, inside the 1-worker repeats' 9.5% range
    assert quality_shifts(spread, tolerance=0.0) == []  # the spread alone holds it
    smoke = runs([("cpu-1", 1, 0.9815, None, 64, 0.05), ("cpu-2", 2, 0.9852, None, 128, 0.05)])  # the smoke study
    assert quality_shifts(smoke) == [] and len(quality_shifts(smoke, tolerance=0.001)) == 1


def test_a_language_model_is_judged_by_perplexity_where_higher_is_worse():
    lm = runs(
        [("cpu-1", 1, None, 3.56, 16, 0.003), ("cpu-2", 2, None, 4.1, 32, 0.003), ("cpu-4", 4, None, 3.2, 64, 0.003)]
    )
    worse, better = quality_shifts(lm)
    assert (worse.placement, worse.metric, worse.worse) == ("cpu-2", "perplexity", True)
    assert (better.placement, better.worse) == ("cpu-4", False)


def test_no_goal_recommends_a_placement_whose_quality_fell():
    from scaleprof.analysis.recommend import recommend
    from scaleprof.report.goal_text import describe

    table = runs(
        [("cpu-1", 1, 0.996, None, 64, 0.05), ("cpu-2", 2, 0.418, None, 128, 0.05), ("cpu-4", 4, 0.99, None, 256, 0.05)]
    )
    table = table.assign(throughput=[100.0, 190.0, 350.0], cost_per_sample_usd=[1e-5, 1.05e-5, 1.14e-5])
    fell = {(s.model, s.placement) for s in quality_shifts(table) if s.worse}
    goal = GoalSpec(min_throughput=150)
    unfiltered = recommend(table, goal)
    assert unfiltered is not None
    assert fell == {("m", "cpu-2")} and unfiltered.placement == "cpu-2"  # the cheapest, by speed
    best = recommend(table, goal, fell=fell)
    assert best is not None
    assert best.placement == "cpu-4"  # cpu-2 is fast enough and cheaper, but learned less
    best_text = describe(best, goal)
    assert best_text is not None
    assert "met cheapest by m on cpu-4" in best_text
    # Beyond every measured placement: predicted from all three runs (cpu-2 still measured its speed), never at
    # a measured count, and saying where quality fell.
    more = GoalSpec(min_throughput=400)
    predicted = recommend(table, more, fell=fell)
    assert predicted is not None
    assert predicted.basis == "predicted" and predicted.workers > 4
    predicted_text = describe(predicted, more)
    assert predicted_text is not None
    assert "quality fell on cpu-2" in predicted_text


def test_the_report_says_what_scaling_did_to_the_result(tmp_path):
    from scaleprof.analysis.quality_shift import QualityShift
    from scaleprof.analysis.summarize import summarize
    from scaleprof.report.findings_text import findings_sentences
    from tests.unit.study_data import make_study

    tables = summarize(make_study(tmp_path / "study"))
    shift = QualityShift("mlp", "cpu", "cpu-2", 2, "accuracy", 0.418, 0.996, 128, 64, 0.05, 0.05, worse=True)
    tables = dataclasses.replace(tables, findings=dataclasses.replace(tables.findings, quality_shifts=[shift]))
    (said,) = [s for s in findings_sentences(tables) if s.startswith("Quality:")]
    assert "mlp on cpu-2 (2 workers) reached test accuracy 0.418 against 0.996 on one worker (-58%" in said
    assert "global batch of 128 against 64 and a learning rate of 0.05 against 0.05" in said
    assert "no goal recommends it" in said and "train.scaling: strong keeps the global batch" in said
