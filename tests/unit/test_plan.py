from typing import cast

from scaleprof.config import Experiment, PlacementSpec
from scaleprof.plan import DataSize, describe, expand, missing_resources


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
    assert both is not None
    assert "needs 2 GPU(s), the cluster has 1" in both and "needs 2 CPU(s), the cluster has 1" in both


def test_describe_rows_match_runs():
    exp = experiment()
    rows = describe(exp, expand(exp))
    assert rows[2]["device"] == "gpu" and rows[2]["global batch"] == 128 and rows[2]["epochs"] == 2


def test_failure_reason_takes_the_root_cause_of_a_remote_traceback():
    from scaleprof.execution.failures import failure_reason

    remote = RuntimeError("The actor died ...\n  File x, line 3\n\npyarrow.lib.ArrowInvalid: URI has empty scheme\n")
    assert failure_reason(remote) == "RuntimeError: pyarrow.lib.ArrowInvalid: URI has empty scheme"
    assert failure_reason(ValueError("")) == "ValueError: "


def test_models_placements_repeats_and_cv_folds_expand_in_study_order():
    exp = experiment(
        models=[{"name": "mlp"}, {"name": "small-cnn"}],
        model=None,
        repeats=1,
        placements=[{"name": "cpu-1", "workers": 1, "repeats": 2}, {"name": "cpu-2", "workers": 2}],
        evaluation={"cv_folds": 3},
    )
    runs = expand(exp)
    fixed = [(r.model.label, r.placement.name, r.repeat) for r in runs if r.fold is None]
    assert fixed == [
        ("mlp", "cpu-1", 0),
        ("mlp", "cpu-1", 1),
        ("small-cnn", "cpu-1", 0),
        ("small-cnn", "cpu-1", 1),
        ("mlp", "cpu-2", 0),
        ("small-cnn", "cpu-2", 0),
    ]
    cv = [r for r in runs if r.fold is not None]
    assert [(r.model.label, r.fold, r.placement.name) for r in cv] == [
        ("mlp", 0, "cpu-1"),
        ("mlp", 1, "cpu-1"),
        ("mlp", 2, "cpu-1"),
        ("small-cnn", 0, "cpu-1"),
        ("small-cnn", 1, "cpu-1"),
        ("small-cnn", 2, "cpu-1"),
    ]
    assert cv[0].run_id == "007-mlp-cpu-1-cv1of3" and cv[0].kind == "cv"


def test_linear_lr_rule_and_warmup_ramp():
    from scaleprof.worker.training import lr_factor, lr_schedule

    weak = experiment(train={"batch_size": 32, "lr_scaling": "linear"})
    assert lr_factor(weak.train, 64) == 2.0
    assert lr_factor(experiment(train={"batch_size": 32}).train, 64) == 1.0
    ramp = lr_schedule(4.0, warmup_steps=3)
    assert [ramp(s) for s in range(5)] == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert lr_schedule(2.0, 0)(0) == 2.0


NODE = {"CPU": 1.0, "memory": 1e9}


def test_missing_nodes_are_named():
    spread3 = PlacementSpec(name="a", workers=3, strategy="STRICT_SPREAD")
    two_nodes = [NODE, NODE]
    reason = missing_resources(spread3, {"CPU": 2.0}, two_nodes)  # totals would not even do
    assert reason == "needs 3 CPU(s), the cluster has 2"
    reason = missing_resources(spread3, {"CPU": 4.0}, [NODE, {"CPU": 3.0}])
    assert reason is not None
    assert reason.startswith("needs 3 node(s) that can each hold a worker")
    pack2 = PlacementSpec(name="a", workers=2, strategy="STRICT_PACK")
    pack_reason = missing_resources(pack2, {"CPU": 2.0}, two_nodes)
    assert pack_reason is not None
    assert "STRICT_PACK needs one node with 2 x" in pack_reason
    assert (
        missing_resources(PlacementSpec(name="a", workers=2, strategy="STRICT_SPREAD"), {"CPU": 2.0}, two_nodes) is None
    )


def test_sweep_points_expand_per_placement_with_the_series_in_the_run_id():
    from scaleprof.plan import unsupported

    exp = experiment(
        repeats=1,
        sweep={"train.precision": ["bf16", "fp16"], "train.batch_size": [8, 16]},
        train={"grad_accumulation": 2},
        placements=[{"name": "cpu-2", "workers": 2}, {"name": "gpu-1", "workers": 1, "gpus_per_worker": 1}],
    )
    runs = expand(exp)
    assert len(runs) == 8
    assert [r.run_id for r in runs[:4]] == [
        "001-mlp-bf16-b8-cpu-2-r0",
        "002-mlp-bf16-b16-cpu-2-r0",
        "003-mlp-fp16-b8-cpu-2-r0",
        "004-mlp-fp16-b16-cpu-2-r0",
    ]
    first = runs[0]
    assert first.series == "mlp-bf16-b8" and first.batch_series == "mlp-bf16"
    assert first.per_worker_batch == 8 and first.global_batch == 8 * 2 * 2  # micro-batch x workers x accumulation
    assert first.experiment.train.precision == "bf16" and runs[2].experiment.train.precision == "fp16"
    # fp16 on CPU is refused before it starts; on a GPU only the worker can tell
    fp16_on_cpu = unsupported(runs[2])
    assert fp16_on_cpu is not None
    assert "fp16 training needs a GPU" in fp16_on_cpu and unsupported(runs[0]) is None
    assert unsupported(runs[6]) is None and runs[6].placement.name == "gpu-1"
    rows = describe(exp, runs)
    skipped = rows[2]["skipped"]
    assert isinstance(skipped, str)
    assert rows[2]["precision"] == "fp16" and "fp16 training needs a GPU" in skipped


def test_a_language_model_study_is_not_charged_for_class_probabilities_it_never_stores():
    from pathlib import Path

    from scaleprof.config import load_experiment
    from scaleprof.plan import study_bytes_estimate

    exp = load_experiment(Path(__file__).resolve().parents[2] / "experiments" / "lm-gpu.yaml")

    class Tokens:  # 16,384 sequences of a 32,768-token vocabulary
        samples, num_classes = 16_384, 32_768

    # 32 runs: events and reports only (class probabilities over the vocabulary would be ~1 GB a run)
    tokens = cast(DataSize, Tokens())  # only the two sizes the estimate reads
    assert study_bytes_estimate(exp, expand(exp), tokens) < 200 * 2**20


def test_sweep_points_that_would_share_a_label_are_refused_and_long_labels_stay_apart():
    import pytest

    from scaleprof.config import point_label

    with pytest.raises(ValueError, match="would share the label"):
        experiment(sweep={"train.optimizer": [{"name": "adamw"}, "adamw"]})
    assert point_label({"train.compile": {"backend": "aot_eager"}}) != point_label({"train.compile": True})
    long_a = {f"model.kwargs.k{i}": 1000 + i for i in range(8)} | {"train.batch_size": 8}
    long_b = long_a | {"train.batch_size": 16}
    assert len(point_label(long_a)) <= 40 and point_label(long_a) != point_label(long_b)


def test_steady_steps_per_worker_for_weak_and_strong_scaling():
    from scaleprof.config import Experiment
    from scaleprof.plan import planned_steady_steps, steps_per_worker

    def exp(**train):
        return Experiment.model_validate(
            {
                "name": "s",
                "model": {"name": "mlp"},
                "data": {"name": "digits"},
                "train": {"epochs": 3, **train},
                "placements": [{"name": f"w{n}", "workers": n} for n in (1, 2, 4)],
            }
        )

    weak = expand(exp(batch_size=64, scaling="weak"))
    # 1,257 training samples: a shard of ceil(1257 / n), ceil(shard / 64) steps an epoch, 2 steady epochs
    assert [steps_per_worker(r, 1257) for r in weak] == [20, 10, 5]
    assert [planned_steady_steps(r, 1257) for r in weak] == [40, 20, 10]
    strong = expand(exp(batch_size=64, scaling="strong"))  # the global batch of 64 split: 64, 32, 16 per worker
    assert [steps_per_worker(r, 1257) for r in strong] == [20, 20, 20]
    fixed = expand(exp(batch_size=64, steps_per_epoch=25, grad_accumulation=2))
    assert [steps_per_worker(r, 1257) for r in fixed] == [50, 50, 50]  # micro-batches: 25 steps x 2
    one_epoch = expand(exp(batch_size=64, epochs=1, warmup_steps=5))
    assert [planned_steady_steps(r, 1257) for r in one_epoch] == [15, 5, 0]
    assert planned_steady_steps(weak[0], None) is None  # a loop that brings its own data


def test_plan_warns_about_runs_below_the_floor_of_steady_steps():
    from scaleprof.config import Experiment
    from scaleprof.plan import few_steady_steps

    class Digits:
        samples, num_classes, train_samples, val_samples = 1797, 10, 1257, 270

    def exp(**train):
        return Experiment.model_validate(
            {
                "name": "s",
                "model": {"name": "mlp"},
                "data": {"name": "digits"},
                "train": {"epochs": 3, "batch_size": 64, **train},
                "placements": [{"name": f"w{n}", "workers": n} for n in (1, 2, 4)],
            }
        )

    [warning] = few_steady_steps(exp(), expand(exp()), Digits())
    assert "2 run(s)" in warning and "002-mlp-w2-r0 (20)" in warning and "train.steps_per_epoch" in warning
    assert few_steady_steps(exp(steps_per_epoch=15), expand(exp(steps_per_epoch=15)), Digits()) == []


def test_every_shipped_experiment_measures_enough_steady_steps():
    import math
    from pathlib import Path

    from scaleprof.config import load_experiment
    from scaleprof.plan import planned_steady_steps, train_samples_of
    from scaleprof.workloads.data import load_dataset

    class Generated:  # sklearn's train_test_split sizes: the held-out part rounded up
        def __init__(self, spec):
            held = math.ceil((spec.val_fraction + spec.test_fraction) * spec.size)
            self.train_samples, self.val_samples = spec.size - held, held // 2

    for path in sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml")):
        exp = load_experiment(path)
        assert exp.data is not None and exp.data.name is not None
        generated = exp.data.name.startswith("synthetic")
        # Generated has only the two split sizes train_samples_of reads
        data = cast(DataSize, Generated(exp.data)) if generated else load_dataset(exp.data, exp.seed)
        floor = exp.evaluation.min_steady_steps
        for run in expand(exp):
            steps = planned_steady_steps(run, train_samples_of(run, data))
            assert steps is not None and steps >= floor, f"{path.name}: {run.run_id} measures {steps} steady steps"


def test_plan_headers_are_whole_on_a_narrow_terminal():
    """On 80 columns a header wraps between its words or the runs are listed one per line: never `placeme…`."""
    from rich.console import Console

    from scaleprof.report.terminal import print_plan

    rows = [
        {
            "run": i,
            "run_id": f"00{i}-conv1d-{w}-cpu-{n}-r0",
            "model": f"conv1d-{w}",
            "kind": "fixed-split",
            "placement": f"cpu-{n}",
            "device": "cpu",
            "workers": n,
            "cpus/worker": 1,
            "gpus/worker": 0,
            "strategy": "PACK",
            "nodes": "any",
            "batch/worker": 64,
            "global batch": 64 * n,
            "precision": "fp32",
            "parallelism": "ddp",
            "epochs": 4,
            "steps/epoch": 45 // n,
            "steady steps": 135 // n,
        }
        for i, (w, n) in enumerate([(32, 1), (64, 1), (32, 2), (64, 2)], start=1)
    ]
    for width, shown in ((80, rows), (80, [{**r, "precision": f"p{r['run']}"} for r in rows]), (40, rows)):
        console = Console(width=width, record=True)
        print_plan(shown, "custom-model: 4 run(s)", console)
        text = console.export_text()
        assert "…" not in text, text
        words = {w for line in text.splitlines() for w in line.replace("┃", " ").replace("│", " ").split()}
        assert {"placement", "cpus/worker", "global", "batch", "steady", "precision"} <= words | {
            w.rstrip(",:") for w in words
        }, text


def test_plan_checks_every_model_but_counts_no_flops(monkeypatch, capsys):
    """`plan` builds and runs each model on a batch as `run` does, but shows no FLOPs: it does not count
    them (seconds for a large model: lm-gpu.yaml's plan took 28 s, 11 s without)."""
    from scaleprof import cli
    from scaleprof.workloads import models

    checked = []

    def counted(*args, **kwargs):
        raise AssertionError("plan counted FLOPs")

    def check(*args, **kwargs):
        checked.append(args[0])
        return None

    monkeypatch.setattr(models, "model_info", counted)
    monkeypatch.setattr(models, "check_model", check)
    assert cli.main(["plan", "experiments/smoke.yaml"]) == 0, capsys.readouterr().err
    assert checked
