"""A study in a real MLflow (a local sqlite store, no server): a parent run with the report, a child run per
scaleprof run with the figures the report shows, the per-epoch series as history; exported once."""

import pytest

from scaleprof import cli
from scaleprof.analysis.summarize import summarize, write_tables
from scaleprof.report.render import render_report
from tests.unit.study_data import make_study

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (installed by make install)")


def test_a_study_lands_in_mlflow_once_with_the_reports_figures(tmp_path, capsys):
    from mlflow import MlflowClient

    store = make_study(tmp_path / "study")
    tables = summarize(store)
    write_tables(store, tables)
    render_report(store.root, tables)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["export", str(store.root), "--mlflow", uri]) == 0
    assert "MLflow: study logged 3 run(s) to experiment" in capsys.readouterr().out

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("scaleprof/handmade")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"handmade", "001-mlp-cpu-1-r0", "002-mlp-cpu-2-r0", "003-mlp-gpu-1-r0"}
    parent = runs["handmade"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"report.html", "summary.md", "runs.parquet"}
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in whatever directory the command ran from
    cpu2 = runs["002-mlp-cpu-2-r0"]
    assert cpu2.data.tags["mlflow.parentRunId"] == parent.info.run_id and cpu2.info.status == "FINISHED"
    assert cpu2.data.params["workers"] == "2" and cpu2.data.params["placement"] == "cpu-2"
    expected = tables.runs.set_index("run_id").loc["002-mlp-cpu-2-r0"]
    for metric in ("throughput", "scaling_efficiency", "epoch_time_s", "accuracy", "cost_per_sample_usd"):
        assert cpu2.data.metrics[metric] == pytest.approx(expected[metric])
    history = client.get_metric_history(cpu2.info.run_id, "epoch/val_accuracy")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.5), (2, 0.6), (3, 0.7)]  # epochs 1..3
    gpu = runs["003-mlp-gpu-1-r0"]
    assert gpu.info.status == "KILLED" and gpu.data.params["reason"].startswith("needs 1 GPU")

    assert cli.main(["export", str(store.root), "--mlflow", uri]) == 0  # again: no duplicate
    assert "was already in" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 4


def test_an_unreachable_tracking_uri_is_one_message_and_the_study_stays(tmp_path, capsys):
    store = make_study(tmp_path / "study")
    code = cli.main(["export", str(store.root), "--mlflow", "bogus-scheme://nowhere"])
    text = capsys.readouterr().err
    assert code == 1 and "--mlflow bogus-scheme://nowhere: export failed" in text and "Traceback" not in text
    assert (store.root / "manifest.json").exists()
