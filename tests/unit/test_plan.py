from scaleprof.config import Experiment
from scaleprof.plan import describe, expand, missing_resources


def experiment(**overrides) -> Experiment:
    raw = {
        "name": "t",
        "model": {"name": "mlp"},
        "data": {"name": "digits"},
        "repeats": 2,
        "placements": [{"name": "cpu-1", "workers": 1}, {"name": "gpu-2", "workers": 2, "gpus_per_worker": 1}],
    }
    raw.update(overrides)
    return Experiment.model_validate(raw)


def test_expand_makes_placement_times_repeat_runs_with_unique_ids():
    runs = expand(experiment())
    assert [(r.placement.name, r.repeat) for r in runs] == [("cpu-1", 0), ("cpu-1", 1), ("gpu-2", 0), ("gpu-2", 1)]
    assert [r.index for r in runs] == [1, 2, 3, 4]
    assert len({r.run_id for r in runs}) == 4
    assert runs[0].run_id == "001-mlp-cpu-1-r0"


def test_weak_scaling_keeps_per_worker_batch_strong_keeps_global_batch():
    weak = expand(experiment(train={"batch_size": 32}))
    assert [(r.per_worker_batch, r.global_batch) for r in weak[::2]] == [(32, 32), (32, 64)]
    strong = expand(experiment(train={"batch_size": 32, "scaling": "strong"}))
    assert [(r.per_worker_batch, r.global_batch) for r in strong[::2]] == [(32, 32), (16, 32)]


def test_missing_resources_names_what_is_missing():
    gpu2 = experiment().placements[1]
    assert missing_resources(gpu2, {"CPU": 8.0, "GPU": 2.0}) is None
    reason = missing_resources(gpu2, {"CPU": 8.0})
    assert reason == "needs 2 GPU(s), the cluster has 0"
    both = missing_resources(gpu2, {"CPU": 1.0, "GPU": 1.0})
    assert "needs 2 GPU(s), the cluster has 1" in both and "needs 2 CPU(s), the cluster has 1" in both


def test_describe_rows_match_runs():
    exp = experiment()
    rows = describe(exp, expand(exp))
    assert rows[2]["device"] == "gpu" and rows[2]["global batch"] == 128 and rows[2]["epochs"] == 2


def test_failure_reason_takes_the_root_cause_of_a_remote_traceback():
    from scaleprof.execution.runner import failure_reason

    remote = RuntimeError("The actor died ...\n  File x, line 3\n\npyarrow.lib.ArrowInvalid: URI has empty scheme\n")
    assert failure_reason(remote) == "RuntimeError: pyarrow.lib.ArrowInvalid: URI has empty scheme"
    assert failure_reason(ValueError("")) == "ValueError: "
