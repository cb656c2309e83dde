"""Speedup, scaling efficiency and predicted efficiency against known answers."""

import math

import pandas as pd
import pytest

from scaleprof.analysis.scaling import add_scaling_columns, predictions, scaling_fits


def test_efficiency_against_same_device_one_worker_median():
    runs = pd.DataFrame(
        {
            "model": ["m"] * 5,
            "device": ["cpu", "cpu", "cpu", "gpu", "gpu"],
            "workers": [1, 1, 4, 2, 1],
            "status": ["ok", "ok", "ok", "ok", "skipped"],
            "throughput": [90.0, 110.0, 300.0, 1000.0, float("nan")],
            "kind": ["fixed-split"] * 5,
        }
    )
    out = add_scaling_columns(runs)
    assert out.loc[2, "speedup"] == pytest.approx(3.0)
    assert out.loc[2, "scaling_efficiency"] == pytest.approx(0.75)
    # the GPU group has no ok 1-worker run: no baseline, no made-up efficiency
    assert math.isnan(out.loc[3, "scaling_efficiency"])


def test_predicted_efficiency_is_against_the_measured_one_worker_baseline():
    """`predict`'s efficiency means what the runs table's means: X(N) / (N x measured X(1)), not the
    law's own fitted X(1). Amdahl-shaped points: X(1) = 100 measured, so E(4) = X_pred(4) / 400."""
    runs = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "device": ["cpu"] * 4,
            "workers": [1, 2, 3, 4],
            "status": ["ok"] * 4,
            "kind": ["fixed-split"] * 4,
            "throughput": [100.0, 180.0, 240.0, 280.0],
        }
    )
    table = predictions(runs, [4, 8])
    at4 = table[table["workers"] == 4].iloc[0]
    assert at4["efficiency"] == pytest.approx(at4["throughput"] / 400)
    no_baseline = predictions(runs[runs["workers"] > 1], [8])
    assert math.isnan(no_baseline["efficiency"].iloc[0])  # nothing measured at 1 worker: no made-up figure


def _two_counts(throughput_2: float, flags: dict[str, list[bool]] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["m"] * 2,
            "device": ["cpu"] * 2,
            "placement": ["cpu-1", "cpu-2"],
            "workers": [1, 2],
            "status": ["ok"] * 2,
            "kind": ["fixed-split"] * 2,
            "throughput": [200.0, throughput_2],
            **(flags or {}),
        }
    )


def test_a_law_outside_its_meaning_is_kept_marked_and_predicts_nothing():
    """2 workers at 80 samples/s against one at 200: Amdahl's α = 2 x 200 / 80 - 1 = 4, outside 0-1."""
    runs = _two_counts(80.0)
    (fit,) = scaling_fits(runs).to_dict("records")
    assert fit["alpha"] == pytest.approx(4.0) and not fit["valid"] and "α = 4.00" in fit["invalid_reason"]
    table = predictions(runs, [4, 64])
    assert len(table) == 2 and not table["valid"].any()
    assert table[["throughput", "low", "high", "efficiency"]].isna().all().all()  # no number from it
    assert table["caveats"].str.startswith("no prediction: ").all()


def test_predictions_say_in_their_own_row_which_points_they_rest_on():
    flags = {"contended": [False, True], "low_confidence": [False, True]}
    row = predictions(_two_counts(300.0, flags), [64]).iloc[0]
    assert row["valid"] and row["extrapolated"] and row["throughput"] > 0
    assert (row["worker_counts"], row["points"], row["exact_fit"]) == (2, 2, True)
    assert (row["contended_placements"], row["low_confidence_placements"]) == ("cpu-2", "cpu-2")
    assert "from 2 worker counts" in row["caveats"] and "exact fit" in row["caveats"]
    assert "cpu-2 contended, low confidence" in row["caveats"]
    # repeats at 3 counts, nothing flagged: a band, and only the basis is said
    runs = pd.DataFrame(
        {
            "model": ["m"] * 6,
            "device": ["cpu"] * 6,
            "placement": ["p1", "p1", "p2", "p2", "p4", "p4"],
            "workers": [1, 1, 2, 2, 4, 4],
            "status": ["ok"] * 6,
            "kind": ["fixed-split"] * 6,
            "throughput": [100.0, 102.0, 180.0, 183.0, 280.0, 290.0],
        }
    )
    row = predictions(runs, [8]).iloc[0]
    assert (row["worker_counts"], row["points"], row["exact_fit"]) == (3, 6, False)
    assert row["contended_placements"] == "" and "contended" not in row["caveats"]
