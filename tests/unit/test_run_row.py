"""The runs table's columns are the ones declared in analysis/run_row.py, in their order, and every list that
names runs-table columns elsewhere (MLflow's, the report's) names declared ones."""

import pandas as pd
import pytest

from scaleprof.analysis.run_row import ACROSS_RUNS, DECLARED, RUN_COLUMNS, RUN_ROW, Mlflow, declared, logged_as
from scaleprof.analysis.summarize import summarize, summarize_run, write_tables
from scaleprof.export import mlflow
from scaleprof.report import tables as report_tables
from scaleprof.telemetry.store import RUNS_TABLE
from tests.unit.study_data import make_study

SWEEP = {"train.lr": 0.1, "model.kwargs": {"width": 2}, "train.precision": "bf16"}  # the last has its own column


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = make_study(tmp_path_factory.mktemp("run_row") / "study")
    for final in store.final_run_records().values():  # a sweep point: axes without a column of their own
        store.append_run_record({**final.raw, "settings": SWEEP})
    return store


def test_the_runs_table_has_the_declared_columns_in_their_order_with_the_sweep_axes_between(study):
    tables = summarize(study)
    row = [c.name for c in RUN_ROW]
    assert list(tables.runs.columns) == [*row, "train.lr", "model.kwargs", *(c.name for c in ACROSS_RUNS)]
    write_tables(study, tables)
    assert list(pd.read_parquet(study.root / RUNS_TABLE).columns) == ["study_id", *tables.runs.columns]


def test_every_column_a_runs_row_is_given_is_declared(study):
    """summarize keeps only declared columns (and sweep axes): one a run's row gains without a declaration
    would be dropped without a word."""
    events = study.events()
    for run_id, final in study.final_run_records().items():
        row = summarize_run(final, events[events["run_id"] == run_id])
        assert sorted(set(row) - set(RUN_COLUMNS)) == ["model.kwargs", "train.lr"], run_id


def test_names_are_declared_once_and_the_lists_built_from_them_name_declared_columns():
    names = [c.name for c in (*RUN_ROW, *ACROSS_RUNS)]
    assert len(names) == len(set(names)) == len(DECLARED)
    assert [c.name for c in RUN_ROW] == RUN_COLUMNS
    assert (logged_as(Mlflow.PARAM), logged_as(Mlflow.METRIC)) == (mlflow.PARAMS, mlflow.METRICS)
    assert not set(mlflow.PARAMS) & set(mlflow.METRICS)
    assert {"throughput", "scaling_efficiency", "accuracy", "cost_per_sample_usd"} <= set(mlflow.METRICS)
    assert {"workers", "placement", "reason"} <= set(mlflow.PARAMS)
    shown = {*report_tables.HEADLINE, *report_tables.TERMINAL, *(c for t in report_tables.TOPICS.values() for c in t)}
    assert shown - set(DECLARED) == {report_tables.CAVEATS}  # the one column the report makes itself


def test_a_list_naming_an_undeclared_column_fails_where_it_is_made():
    assert declared("throughput", "wall_s") == ("throughput", "wall_s")
    with pytest.raises(ValueError, match="not columns of the runs table .*: throughput_p99"):
        declared("throughput", "throughput_p99")
