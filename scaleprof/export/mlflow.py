"""A finished study in MLflow: one parent run per study (its report, summary, tables and manifest as
artifacts; the experiment's facts as params) and one child run per scaleprof run (what it was as params,
its final figures as metrics, its per-epoch series as metric history, its status as the run's).

Read from the study's tables (scaleprof.analysis.summarize), so what MLflow shows is what the report
shows. Exporting a study twice does not duplicate it: its parent run is found by the study id tag.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from scaleprof.analysis.run_row import Mlflow, logged_as
from scaleprof.analysis.summarize import StudyTables

STUDY_TAG = "scaleprof.study_id"
PARAMS = logged_as(Mlflow.PARAM)  # the runs table's columns logged for each run (analysis/run_row.py)
METRICS = logged_as(Mlflow.METRIC)
EPOCH_METRICS = ["epoch_time_s", "train_loss", "val_loss", "val_accuracy", "lr"]
ARTIFACTS = ["report.html", "summary.md", "runs.parquet", "epochs.parquet", "manifest.json"]
STATUS = {"ok": "FINISHED", "failed": "FAILED", "skipped": "KILLED"}


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _param(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return str(value)[:500]  # MLflow's limit for a param value


def _artifacts_beside(tracking_uri: str) -> str | None:
    """A local database keeps its artifacts in `mlartifacts/` beside it (MLflow's default would be ./mlruns in
    whatever directory the command runs from); a tracking server decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).expanduser()
    return (database.resolve().parent / "mlartifacts").as_uri()


def export_study(
    study_dir: Path, tables: StudyTables, tracking_uri: str, experiment_name: str | None = None
) -> dict[str, Any]:
    """Log the study; returns the experiment id, the parent run id, how many runs were logged, and
    whether it was there already."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    manifest = tables.manifest
    exp = manifest.experiment
    study_id = manifest.study_id or study_dir.name
    client = MlflowClient(tracking_uri=tracking_uri)
    name = experiment_name or f"scaleprof/{exp.name}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(name, artifact_location=_artifacts_beside(tracking_uri))
    )
    found = client.search_runs([experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study_id}'", max_results=1)
    if found:
        return {"experiment_id": experiment_id, "parent_run_id": found[0].info.run_id, "runs": 0, "existed": True}

    parent = client.create_run(experiment_id, run_name=study_id, tags={STUDY_TAG: study_id, "scaleprof.kind": "study"})
    facts = {
        "experiment": exp.name,
        "seed": manifest.seed,
        "data": manifest.data.name,
        "epochs": exp.train.epochs,
        "scaling": exp.train.scaling,
        "experiment_sha256": manifest.experiment_sha256,
        "git_revision": manifest.git_revision,
        "scaleprof": manifest.packages.get("scaleprof"),
    }
    client.log_batch(
        parent.info.run_id, params=[Param(k, v) for k, raw in facts.items() if (v := _param(raw)) is not None]
    )
    for artifact in ARTIFACTS:
        if (study_dir / artifact).exists():
            client.log_artifact(parent.info.run_id, str(study_dir / artifact))
    logged = 0
    epochs = tables.epochs
    for _, run in tables.runs.iterrows():
        now_ms = int(1000 * time.time())  # when it was logged; the epoch series is ordered by its step
        child = client.create_run(
            experiment_id,
            run_name=str(run["run_id"]),
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                STUDY_TAG: study_id,
                "scaleprof.run_id": run["run_id"],
                "scaleprof.status": str(run["status"]),
            },
        )
        params = [Param(k, p) for k in PARAMS if k in run and (p := _param(run[k])) is not None]
        metrics = [Metric(k, m, now_ms, 0) for k in METRICS if k in run and (m := _finite(run[k])) is not None]
        if not epochs.empty:
            mine = epochs[epochs["run_id"] == run["run_id"]] if "run_id" in epochs else pd.DataFrame()
            for _, epoch in mine.iterrows():
                step = int(epoch["epoch"])
                for key in EPOCH_METRICS:
                    value = _finite(epoch.get(key))
                    if value is not None:
                        metrics.append(Metric(f"epoch/{key}", value, now_ms, step))
        for start in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1,000 metrics a batch
            client.log_batch(
                child.info.run_id, metrics=metrics[start : start + 1000], params=params if start == 0 else []
            )
        client.set_terminated(child.info.run_id, status=STATUS.get(str(run["status"]), "FAILED"))
        logged += 1
    client.set_terminated(parent.info.run_id)
    return {"experiment_id": experiment_id, "parent_run_id": parent.info.run_id, "runs": logged, "existed": False}
