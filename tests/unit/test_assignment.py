"""What the driver hands each worker survives the trip Ray gives it (cloudpickle), without Ray started."""

from dataclasses import replace

import numpy as np
from ray import cloudpickle

from scaleprof.config import Experiment
from scaleprof.execution.assignment import ProbeAssignment
from scaleprof.execution.prepare import prepare
from scaleprof.execution.worker import run_model
from scaleprof.plan import expand
from scaleprof.telemetry.handle import Aggregators

EXPERIMENT = {
    "name": "assign",
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "placements": [{"name": "cpu-2", "workers": 2, "cpus_per_worker": 2}],
    "train": {"batch_size": 16},
}


def test_a_worker_assignment_pickles_and_round_trips_equal():
    experiment = Experiment.model_validate(EXPERIMENT)
    run = expand(experiment)[0]
    sent = prepare(experiment, measure=False).assignment(run, "study-1", Aggregators(actors=("stand-in",)))
    got = cloudpickle.loads(cloudpickle.dumps(sent))

    assert sent.split is not None and sent.shipped is not None  # digits: the driver sends indices and arrays
    assert got.split is not None and got.shipped is not None
    assert got.split.held_name == sent.split.held_name == "test"
    for name in ("train", "val", "held"):
        assert np.array_equal(getattr(got.split, name), getattr(sent.split, name))
    assert got.data_info == sent.data_info and got.data_info is not None and got.data_info.input_shape == (1, 8, 8)
    assert all(np.array_equal(a, b) for a, b in zip(got.shipped, sent.shipped))
    assert replace(got, split=None, shipped=None) == replace(sent, split=None, shipped=None)  # every other field
    assert (got.run_id, got.study_id, got.per_worker_batch, got.cpus_per_worker) == (run.run_id, "study-1", 16, 2)
    assert run_model(Experiment.model_validate(got.experiment), got) == run.model


def test_a_probe_assignment_pickles_and_round_trips_equal():
    sent = ProbeAssignment(backend="gloo", sizes=(4096, 16384), repeats=3, warmup=1, collectives=("all_reduce",))
    assert cloudpickle.loads(cloudpickle.dumps(sent)) == sent
