"""Quality metrics on small cases whose answers are known by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from scaleprof.analysis.quality import quality_metrics
from scaleprof.analysis.repeats import add_loss_divergence, cv_table, describe_values, spread_table


def onehot(pred, n, confident=0.9):
    proba = np.full((len(pred), n), (1 - confident) / (n - 1))
    proba[np.arange(len(pred)), pred] = confident
    return proba


def test_binary_metrics_match_hand_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    # TP=2 FN=1 FP=1 TN=4
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    run, per_class = quality_metrics(y, onehot(pred, 2))
    assert run["accuracy"] == pytest.approx(6 / 8)
    positive = per_class.set_index("class").loc[1]
    assert positive["precision"] == pytest.approx(2 / 3)
    assert positive["recall"] == pytest.approx(2 / 3)
    assert positive["specificity"] == pytest.approx(4 / 5)  # TN / (TN + FP)
    assert per_class.set_index("class").loc[0, "specificity"] == pytest.approx(2 / 3)
    assert run["specificity"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert list(per_class.set_index("class").loc[1, "confusion_row"]) == [1, 2]


def test_perfect_multiclass_and_auc():
    y = np.array([0, 1, 2, 0, 1, 2])
    run, _ = quality_metrics(y, onehot(y, 3))
    assert run["accuracy"] == run["f1"] == run["roc_auc"] == run["specificity"] == 1.0


def test_class_missing_from_held_out_split_gives_nan_auc_not_a_crash():
    y = np.array([0, 0, 1, 1])  # class 2 of 3 never appears
    run, per_class = quality_metrics(y, onehot(np.array([0, 1, 1, 2]), 3))
    assert math.isnan(run["roc_auc"])
    assert math.isnan(per_class.loc[2, "roc_auc"])
    assert run["accuracy"] == 0.5


def test_weighted_f1_differs_from_macro_when_unbalanced():
    y = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0, 1])
    run, _ = quality_metrics(y, onehot(pred, 2))
    assert run["f1_weighted"] > run["f1"]


def test_describe_values_interval_and_cv():
    d = describe_values(pd.Series([10.0, 12.0, 14.0]))
    assert d["median"] == 12.0 and d["min"] == 10.0 and d["max"] == 14.0
    assert d["cv"] == pytest.approx(2.0 / 12.0)
    # t(0.975, 2) = 4.303: 12 +- 4.303 * 2 / sqrt(3)
    assert d["ci95_low"] == pytest.approx(12 - 4.3027 * 2 / 3**0.5, rel=1e-3)
    single = describe_values(pd.Series([5.0]))
    assert single["median"] == 5.0 and math.isnan(single["cv"])


def runs_frame():
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d", "e"],
            "index": [1, 2, 3, 4, 5],
            "model": ["m"] * 5,
            "placement": ["cpu-1", "cpu-1", "cpu-2", "cpu-1", "cpu-1"],
            "device": ["cpu"] * 5,
            "workers": [1, 1, 2, 1, 1],
            "kind": ["fixed-split", "fixed-split", "fixed-split", "cv", "cv"],
            "status": ["ok"] * 5,
            "reason": [""] * 5,
            "throughput": [100.0, 130.0, 150.0, 100.0, 100.0],
            "epoch_time_s": [1.0, 1.0, 1.0, 1.0, 1.0],
            "accuracy": [0.9, 0.9, 0.8, 0.85, 0.95],
            "f1": [0.9, 0.9, 0.8, 0.85, 0.95],
            "roc_auc": [0.99] * 5,
        }
    )


def test_spread_flags_noisy_throughput_only():
    spread = spread_table(runs_frame(), noisy_cv=0.05).set_index("placement")
    assert spread.loc["cpu-1", "runs_ok"] == 2  # the cv folds are not repeats
    assert spread.loc["cpu-1", "noisy_metrics"] == "throughput"
    assert not spread.loc["cpu-2", "noisy"]


def test_cv_table_sits_beside_the_fixed_split():
    cv = cv_table(runs_frame()).iloc[0]
    assert cv["folds"] == 2 and cv["placement"] == "cpu-1"
    assert cv["accuracy_mean"] == pytest.approx(0.9)
    assert cv["accuracy_std"] == pytest.approx(np.std([0.85, 0.95], ddof=1))
    assert cv["accuracy_fixed_split"] == pytest.approx(0.9)


def test_loss_divergence_against_the_one_worker_curve():
    epochs = pd.DataFrame({"run_id": ["a", "a", "c", "c"], "epoch": [1, 2, 1, 2], "train_loss": [1.0, 0.5, 1.2, 0.8]})
    runs, epochs = add_loss_divergence(runs_frame(), epochs)
    assert list(epochs["train_loss_delta_vs_1w"]) == pytest.approx([0, 0, 0.2, 0.3])
    assert runs.set_index("run_id").loc["c", "loss_divergence"] == pytest.approx(0.25)
