"""What a re-render would lose against the tables in place (analysis/loss.py)."""

import math

import pandas as pd

from scaleprof.analysis.loss import measurement_loss


def runs(*rows):
    return pd.DataFrame([{"run_id": r[0], "status": r[1], "events": r[2], "throughput": r[3]} for r in rows])


def test_nothing_lost_when_the_same_or_more_was_read():
    before = runs(("a", "ok", 100, 5.0), ("b", "skipped", 0, math.nan))
    assert measurement_loss(before, before) == []
    assert measurement_loss(before, runs(("a", "ok", 120, 5.5), ("b", "skipped", 0, math.nan))) == []


def test_fewer_events_a_run_left_out_and_a_figure_gone_are_each_named():
    before = runs(("a", "ok", 100, 5.0), ("b", "ok", 80, 4.0), ("c", "ok", 10, 1.0))
    after = runs(("a", "ok", 60, 5.1), ("b", "unmeasured", 80, math.nan))
    assert measurement_loss(before, after) == [
        "a: 60 events readable, 100 when its tables were made",
        "b: throughput no longer computable",
        "c: left out (its run record cannot be read)",
    ]


def test_a_failed_runs_partial_figure_withheld_now_is_not_a_loss():
    before = runs(("a", "failed", 50, 5.0))  # written by a scaleprof that still showed it
    assert measurement_loss(before, runs(("a", "failed", 50, math.nan))) == []


def test_tables_from_before_the_events_column_compare_on_figures_only():
    before = pd.DataFrame([{"run_id": "a", "status": "ok", "throughput": 5.0}])
    assert measurement_loss(before, runs(("a", "ok", 1, 5.0))) == []
    assert measurement_loss(pd.DataFrame(), runs(("a", "ok", 1, 5.0))) == []
