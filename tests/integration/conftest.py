"""One real two-node local Ray (ray.cluster_utils.Cluster) for the whole test session, and one real
study run on it, shared by the tests."""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from scaleprof.config import Experiment

REPO = Path(__file__).resolve().parents[2]

STUDY = {
    "name": "itest",
    "seed": 0,
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "train": {"epochs": 2, "batch_size": 32},
    # Two aggregators and a relay per node: the shared study is where the path past one aggregator runs for real.
    # The contention flag at 20% of the node: this 2-core VM's own background (kernel, VM agent) measured 9-17%
    # of a core outside Ray in quiet runs, with this code and the code before it alike, and once 21.7% (10.9% of
    # the node, over the default 10%); a neighbour burning a core reads about 50% (test_live_figures... below).
    "monitor": {"enabled": True, "interval_s": 0.2, "aggregators": 2, "node_relays": True, "contention_share": 0.2},
    "placements": [
        {"name": "cpu-1", "workers": 1, "repeats": 2},  # the repeat proves CPU runs reproduce exactly
        {"name": "cpu-2", "workers": 2, "strategy": "STRICT_SPREAD"},  # one worker on each node
        {"name": "pack-2", "workers": 2, "strategy": "STRICT_PACK"},  # no node has 2 CPUs: skipped
        {"name": "gpu-1", "workers": 1, "gpus_per_worker": 1},  # no GPU: skipped
    ],
    "evaluation": {
        "cv_folds": 2,
        "inference": {"batch_sizes": [1, 8, 32], "warmup": 2, "iterations": 10, "devices": ["cpu", "gpu"]},
    },
    "cost": {"node_type": "aws-t3.large", "target_accuracy": 0.5},
    "ray": {"placement_timeout_s": 5},
}


# Ray Train's controller polls its workers this often (Ray's default is 2 s, which scaleprof leaves alone: on
# 2 cores the 0.2 s polls cost the controller 0.009 cores more, benchmarks/results/footprint.json); the suite's
# runs end within a fifth of a second of their last step instead of up to two (every CLI subprocess inherits it).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

NODE: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 100 * 2**20}  # two 1-CPU nodes on this 2-core machine


@pytest.fixture(scope="session")
def ray_cluster():
    """The Cluster object itself, for tests that add or remove nodes (they restore what they change)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    # Ray's own default is a level name ("info"), which its `int` hint leaves out
    ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")  # type: ignore[arg-type]
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    import ray

    return ray


@pytest.fixture(scope="session")
def study(ray_session, tmp_path_factory):
    """The `itest` study run once through the real runner: (StudyResult, StudyTables)."""
    from scaleprof.analysis.summarize import summarize, write_tables
    from scaleprof.execution.runner import run_study
    from scaleprof.pricing import prices_for
    from scaleprof.report.render import render_report
    from scaleprof.telemetry.store import StudyStore

    out = tmp_path_factory.mktemp("studies")
    experiment = Experiment.model_validate(STUDY)
    pricing = {k: v.model_dump() for k, v in prices_for(experiment, REPO).items()}
    result = run_study(experiment, out, pricing=pricing)
    store = StudyStore(result.study_dir)
    tables = summarize(store)
    write_tables(store, tables)
    render_report(result.study_dir, tables)
    yield result, tables
    shutil.rmtree(out, ignore_errors=True)
