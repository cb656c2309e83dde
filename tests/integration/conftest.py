"""One real local Ray for the whole test session, and one real study run on it, shared."""

import os
import shutil

import pytest

from scaleprof.config import Experiment

STUDY = {
    "name": "itest",
    "seed": 0,
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "train": {"epochs": 2, "batch_size": 32},
    "monitor": {"enabled": True, "interval_s": 0.2},
    "placements": [
        {"name": "cpu-1", "workers": 1, "repeats": 2},  # the repeat proves CPU runs reproduce exactly
        {"name": "cpu-2", "workers": 2},
        {"name": "gpu-1", "workers": 1, "gpus_per_worker": 1},
    ],
    "evaluation": {"cv_folds": 2},
    "ray": {"placement_timeout_s": 5},
}


@pytest.fixture(scope="session")
def ray_session():
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def study(ray_session, tmp_path_factory):
    """The `itest` study run once through the real runner: (StudyResult, StudyTables)."""
    from scaleprof.analysis.summarize import summarize, write_tables
    from scaleprof.execution.runner import run_study
    from scaleprof.report.render import render_report
    from scaleprof.telemetry.store import StudyStore

    out = tmp_path_factory.mktemp("studies")
    result = run_study(Experiment.model_validate(STUDY), out)
    store = StudyStore(result.study_dir)
    tables = summarize(store)
    write_tables(store, tables)
    render_report(result.study_dir, tables)
    yield result, tables
    shutil.rmtree(out, ignore_errors=True)
