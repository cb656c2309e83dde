"""Fair comparison on real runs: sklearn metrics from stored predictions, exact CPU reproducibility,
repeats with spread, k-fold cross-validation."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from scaleprof.telemetry.store import StudyStore
from scaleprof.workloads.data import load_dataset


def fixed(tables, placement):
    runs = tables.runs
    return runs[(runs["placement"] == placement) & (runs["kind"] == "fixed-split")]


def test_metrics_equal_sklearn_on_the_stored_predictions(study):
    result, tables = study
    store = StudyStore(result.study_dir)
    for _, run in tables.runs[tables.runs["status"] == "ok"].iterrows():
        pred = store.predictions(run["run_id"])
        assert pred is not None
        y, proba = pred["y_true"].to_numpy(), np.stack(pred["proba"].to_numpy())
        assert run["accuracy"] == metrics.accuracy_score(y, proba.argmax(1))
        assert run["f1"] == pytest.approx(metrics.f1_score(y, proba.argmax(1), average="macro"))
        assert run["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, proba, multi_class="ovr"))
        assert run["eval_samples"] == len(y)


def test_fixed_split_runs_predict_on_the_manifest_test_split(study):
    result, tables = study
    store = StudyStore(result.study_dir)
    data = load_dataset(_data_spec(tables), tables.manifest.seed)
    assert data.split_hashes() == tables.manifest.data.split_sha256
    pred = store.predictions(fixed(tables, "cpu-2")["run_id"].iloc[0])
    assert pred is not None
    np.testing.assert_array_equal(pred["sample_index"], data.test_idx)
    np.testing.assert_array_equal(pred["y_true"], data.y[data.test_idx])
    assert (pred["split"] == "test").all()


def _data_spec(tables):
    return tables.manifest.experiment.data


def test_same_seed_same_placement_reproduces_exactly_on_cpu(study):
    result, tables = study
    store = StudyStore(result.study_dir)
    first, second = fixed(tables, "cpu-1").sort_values("repeat")["run_id"]
    a, b = store.predictions(first), store.predictions(second)
    assert a is not None and b is not None
    np.testing.assert_array_equal(np.stack(a["proba"]), np.stack(b["proba"]))  # bit for bit
    runs = tables.runs.set_index("run_id")
    for metric in ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc"):
        assert runs.at[first, metric] == runs.at[second, metric]
    epochs = tables.epochs.set_index(["run_id", "epoch"])["train_loss"]
    assert list(epochs[first]) == list(epochs[second])


def test_quality_table_has_every_class_of_every_ok_run(study):
    result, tables = study
    quality = pd.read_parquet(result.study_dir / "quality.parquet")
    ok = tables.runs[tables.runs["status"] == "ok"]
    assert len(quality) == 10 * len(ok)
    assert quality["specificity"].between(0, 1).all()
    assert (
        quality.groupby("run_id")["support"].sum().sort_index() == ok.set_index("run_id")["eval_samples"].sort_index()
    ).all()


def test_repeats_produce_spread_columns(study):
    result, tables = study
    placements = pd.read_parquet(result.study_dir / "placements.parquet").set_index("placement")
    cpu1 = placements.loc["cpu-1"]
    assert cpu1["runs_ok"] == 2 and cpu1["runs"] == 2
    assert cpu1["throughput_min"] <= cpu1["throughput_median"] <= cpu1["throughput_max"]
    assert np.isfinite(cpu1["throughput_cv"]) and np.isfinite(cpu1["throughput_ci95_low"])
    assert cpu1["accuracy_cv"] == 0.0  # identical repeats
    assert placements.loc["gpu-1", "runs_ok"] == 0 and "GPU" in placements.loc["gpu-1", "reason"]


def test_k_fold_produces_k_results_beside_the_fixed_split(study):
    result, tables = study
    cv_runs = tables.runs[tables.runs["kind"] == "cv"]
    assert sorted(cv_runs["eval_split"]) == ["fold 1 of 2", "fold 2 of 2"]
    train_val = sum(tables.manifest.data.split_sizes[s] for s in ("train", "val"))
    assert cv_runs["eval_samples"].sum() == train_val  # the held-out folds cover train+val exactly once
    cv = pd.read_parquet(result.study_dir / "cv.parquet").iloc[0]
    assert cv["folds"] == 2 and cv["placement"] == "cpu-1"
    assert cv["accuracy_mean"] == pytest.approx(cv_runs["accuracy"].mean())
    assert cv["accuracy_fixed_split"] == pytest.approx(fixed(tables, "cpu-1")["accuracy"].median())


def test_report_shows_quality_repeats_and_cv_tables(study):
    result, _ = study
    summary = (result.study_dir / "summary.md").read_text()
    for heading in ("Quality on the held-out test split", "Repeats: spread and noise", "k-fold cross-validation"):
        assert f"## {heading}" in summary
    assert "Learning rate: a fixed learning rate" in summary
