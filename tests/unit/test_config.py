"""Experiment files: good ones load with defaults; bad ones fail with the file and field named."""

import re
from pathlib import Path

import pytest

from scaleprof.config import ConfigError, PlacementSpec, load_experiment

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name: t
model: {name: mlp}
data: {name: digits}
placements:
  - {name: cpu-1, workers: 1}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_smoke_experiment_loads_with_defaults():
    exp = load_experiment(REPO / "experiments" / "smoke.yaml")
    assert exp.name == "smoke"
    assert [p.name for p in exp.placements] == ["cpu-1", "cpu-2", "gpu-1"]
    assert exp.placements[2].device == "gpu"
    assert exp.train.scaling == "weak"
    assert exp.resolved()["monitor"]["interval_s"] == 1.0


def test_shipped_digits_experiment_compares_two_models_with_cv():
    exp = load_experiment(REPO / "experiments" / "digits.yaml")
    assert [m.label for m in exp.model_list] == ["mlp", "small-cnn"]
    assert exp.evaluation.cv_folds == 3 and exp.cv_reference.name == "cpu-1"
    assert exp.train.lr_scaling == "linear"


def test_same_model_twice_with_labels_round_trips(tmp_path):
    text = GOOD.replace(
        "model: {name: mlp}", "models: [{name: mlp}, {name: mlp, label: wide, kwargs: {hidden_sizes: [512]}}]"
    )
    exp = load_experiment(write(tmp_path, text))
    assert [m.label for m in exp.model_list] == ["mlp", "wide"]
    assert exp.resolved()["models"][1]["label"] == "wide"
    from scaleprof.config import Experiment

    assert Experiment.model_validate(exp.resolved()) == exp  # what workers receive


def test_digest_is_stable_and_changes_with_content(tmp_path):
    a = load_experiment(write(tmp_path, GOOD))
    b = load_experiment(write(tmp_path, GOOD, "b.yaml"))
    c = load_experiment(write(tmp_path, GOOD.replace("mlp", "small-cnn"), "c.yaml"))
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize(
    "text, field, words",
    [
        (GOOD.replace("name: t", "name: ../etc"), "name", "pattern"),
        (GOOD.replace("model: {name: mlp}", "model: {name: resnet}"), "model.name", "unknown model"),
        (GOOD.replace("data: {name: digits}", "data: {name: mnist}"), "data.name", "digits"),
        (GOOD + "epochz: 3\n", "epochz", "unknown key"),
        (GOOD + "train: {epochs: zero}\n", "train.epochs", "integer"),
        (GOOD + "train: {epochs: 0}\n", "train.epochs", "greater than or equal to 1"),
        (GOOD + "  - {name: cpu-1, workers: 2}\n", "placements.1.name", "duplicate"),
        (
            GOOD.replace("workers: 1", "workers: 3") + "train: {scaling: strong, batch_size: 64}\n",
            "placements.0.workers",
            "divide",
        ),
        (GOOD.replace("workers: 1}", "workers: 1, gpus: 1}"), "placements.0.gpus", "unknown key"),
        (GOOD.replace("placements:\n  - {name: cpu-1, workers: 1}", "placements: []"), "placements", "at least 1"),
        (
            GOOD.replace("{name: digits}", "{name: synthetic-images, size: 9000000, shape: [3, 224, 224]}"),
            "data.size",
            "GiB",
        ),
        (GOOD + "models: [{name: mlp}]\n", "model", "not both"),
        (GOOD.replace("model: {name: mlp}", "models: [{name: mlp}, {name: mlp}]"), "models.1.label", "distinct labels"),
        (
            GOOD + "evaluation: {cv_folds: 3, cv_placement: gpu}\n",
            "evaluation.cv_placement",
            "no placement named 'gpu'",
        ),
        (GOOD + "evaluation: {cv_folds: 1}\n", "evaluation.cv_folds", "at least 2 folds"),
        (GOOD + "train: {lr_scaling: sqrt}\n", "train.lr_scaling", "'none' or 'linear'"),
        (GOOD + "goal: {samples: 1000000}\n", "goal", "both samples and deadline_hours"),
        (GOOD + "goal: {deadline_hours: 0}\n", "goal.deadline_hours", "greater than 0"),
    ],
)
def test_invalid_fields_are_named(tmp_path, text, field, words):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, text))
    message = str(err.value)
    assert str(tmp_path / "exp.yaml") in message
    assert f"  {field}: " in message
    assert words in message


@pytest.mark.parametrize(
    "content, words",
    [
        (b"name: [unclosed\n", "not valid YAML at line"),
        (b"- just\n- a list\n", "must be a YAML mapping"),
        (b"\xff\xfe\x00binary", "not a text file"),
        (b"!!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
        (b"", "must be a YAML mapping"),
    ],
)
def test_unparseable_files_get_one_clear_message(tmp_path, content, words):
    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert words in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_experiment(tmp_path)


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 2_000_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_experiment(path)


def test_strategy_and_nodes_must_agree():
    with pytest.raises(ValueError, match="STRICT_SPREAD puts each of the 2 workers on its own node"):
        PlacementSpec(name="a", workers=2, strategy="STRICT_SPREAD", nodes=1)
    with pytest.raises(ValueError, match="STRICT_PACK puts every worker on one node"):
        PlacementSpec(name="a", workers=2, strategy="STRICT_PACK", nodes=2)
    assert PlacementSpec(name="a", workers=3, strategy="STRICT_SPREAD").expected_nodes == 3
    assert PlacementSpec(name="a", workers=3, nodes=2).expected_nodes == 2
    assert PlacementSpec(name="a", workers=3).expected_nodes is None


LM = """
name: lm
task: language-modeling
model: {name: transformer, kwargs: {width: 64}}
data: {name: synthetic-tokens, vocab_size: 64, seq_len: 16}
placements:
  - {name: cpu-1, workers: 1}
"""


def test_shipped_language_model_experiments_load_and_sweep():
    for name in ("lm-cpu.yaml", "lm-gpu.yaml"):
        exp = load_experiment(REPO / "experiments" / name)
        assert exp.data is not None
        assert exp.task == "language-modeling" and exp.data.is_tokens
        assert set(exp.sweep) >= {"train.parallelism", "train.precision", "train.batch_size"}
        assert len(exp.points()) == 8


@pytest.mark.parametrize(
    "change, field, message",
    [
        ("data: {name: digits}", "data.name", "language-modeling task needs synthetic-tokens or text-file"),
        ("model: {name: mlp}", "model.name", "mlp is a classifier"),
        ("train: {precision: fp8}", "train.precision", "'fp32', 'bf16' or 'fp16'"),
        ("train: {parallelism: zero3}", "train.parallelism", "'ddp' or 'fsdp'"),
        ("train: {optimizer: lion}", "train.optimizer.name", "'sgd' or 'adamw'"),
        ("train: {compile: {mode: fastest}}", "train.compile.mode", "max-autotune"),
        ("train: {grad_accumulation: 0}", "train.grad_accumulation", "greater than or equal to 1"),
        ("sweep: {train.epochs: [1, 2]}", "sweep.train.epochs", "not a sweep axis"),
        ("sweep: {train.batch_size: [8, 8]}", "sweep.train.batch_size", "a value is given twice"),
        ("sweep: {train.batch_size: [8, 0]}", "sweep.train.batch_size", "0 is not valid (train.batch_size"),
        ("sweep: {train.precision: [bf16, fp4]}", "sweep.train.precision", "'fp4' is not valid"),
        ("sweep: {model.config.n_layer: [1, 2]}", "sweep.model.config.n_layer", "only hf:<model type> models"),
        ("evaluation: {cv_folds: 3}", "evaluation.cv_folds", "cross-validation is for classification"),
    ],
)
def test_language_model_and_sweep_mistakes_name_their_field(tmp_path, change, field, message):
    key = change.split(":")[0]
    text = "\n".join(line for line in LM.splitlines() if not line.startswith(key + ":")) + "\n" + change + "\n"
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, text))
    assert f"{field}: " in str(err.value) and message in str(err.value), str(err.value)


def test_a_classifier_cannot_be_a_language_model(tmp_path):
    text = GOOD.replace("model: {name: mlp}", "model: {name: transformer}")
    with pytest.raises(ConfigError, match="model.name: transformer is a language model"):
        load_experiment(write(tmp_path, text))


def test_sweep_points_are_the_cross_product_each_a_valid_experiment(tmp_path):
    sweep = "sweep:\n  train.batch_size: [8, 32]\n  model.kwargs.width: [32, 64]\n"
    text = LM + sweep + "  train.compile: [false, {backend: aot_eager}]\n"
    exp = load_experiment(write(tmp_path, text))
    points = exp.points()
    assert len(points) == 8 and points[0] == {"train.batch_size": 8, "model.kwargs.width": 32, "train.compile": False}
    at = exp.at(points[-1])
    assert at.model is not None and at.train.compile is not None
    assert at.train.batch_size == 32 and at.model.kwargs == {"width": 64}
    assert at.train.compile.backend == "aot_eager" and at.train.compile_label == "aot_eager" and not at.sweep
    assert exp.at({}) is exp
    assert load_experiment(write(tmp_path, LM + "train: {optimizer: adamw}\n")).train.optimizer.name == "adamw"


def test_strong_scaling_splits_the_global_batch_over_workers_and_micro_batches(tmp_path):
    text = GOOD.replace("placements:", "train: {scaling: strong, batch_size: 64, grad_accumulation: 4}\nplacements:")
    exp = load_experiment(write(tmp_path, text.replace("workers: 1}", "workers: 2}")))
    assert exp.per_worker_batch(exp.placements[0]) == 8  # 64 / (2 workers x 4 micro-batches)
    with pytest.raises(ConfigError, match="12 does not divide it"):
        load_experiment(write(tmp_path, text.replace("workers: 1}", "workers: 3}")))


def test_command_line_overrides_are_validated_like_the_file(tmp_path):
    from scaleprof.config import ConfigError, load_experiment

    path = tmp_path / "e.yaml"
    path.write_text("name: e\nmodel: {name: mlp}\ndata: {name: digits}\nplacements: [{name: a, workers: 1}]\n")
    exp = load_experiment(path, ["train.epochs=7", "placements.0.workers=3", "train.precision=bf16", "seed=4"])
    assert (exp.train.epochs, exp.placements[0].workers, exp.train.precision, exp.seed) == (7, 3, "bf16", 4)
    for bad, message in [
        ("train.epochz=7", "train.epochz: unknown key"),
        ("train.epochs=-1", "train.epochs: Input should be greater than or equal to 1"),
        ("placements.4.workers=2", "placements.4: no such list item (there are 1)"),
        ("name.x=1", "name is a value, not a section"),
        ("epochs", "an override is key=value"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_experiment(path, [bad])


def test_step_counts_are_whole_numbers_not_booleans():
    import pytest

    from scaleprof.config import Experiment

    base = {
        "name": "s",
        "model": {"name": "mlp"},
        "data": {"name": "digits"},
        "placements": [{"name": "a", "workers": 1}],
    }
    for bad in (
        {"train": {"steps_per_epoch": True}},
        {"evaluation": {"min_steady_steps": True}},
        {"train": {"steps_per_epoch": 0}},
    ):
        with pytest.raises(ValueError):
            Experiment.model_validate({**base, **bad})
    assert Experiment.model_validate({**base, "train": {"steps_per_epoch": 40}}).train.steps_per_epoch == 40


@pytest.mark.parametrize("value", ["true", "1.0", '"2"'])
def test_grad_accumulation_is_a_whole_number_not_a_boolean_float_or_string(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, GOOD + f"train: {{grad_accumulation: {value}}}\n"))
    assert "  train.grad_accumulation: " in str(err.value)
    with pytest.raises(ConfigError, match="train.grad_accumulation"):
        load_experiment(write(tmp_path, GOOD, "o.yaml"), [f"train.grad_accumulation={value}"])
    assert load_experiment(write(tmp_path, GOOD + "train: {grad_accumulation: 2}\n")).train.grad_accumulation == 2


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("placements:\n  - {name: a, workers: yes}\n", "placements.0.workers"),
        ("placements:\n  - {name: a, workers: 1, cpus_per_worker: true}\n", "placements.0.cpus_per_worker"),
        ("train: {epochs: on}\n", "train.epochs"),
        ("train: {lr: false}\n", "train.lr"),
        ("evaluation: {inference: {batch_sizes: [1, true]}}\n", "evaluation.inference.batch_sizes"),
    ],
)
def test_a_boolean_where_a_number_is_meant_is_refused_not_read_as_one(tmp_path, text, field):
    """YAML reads yes/no/on/off/true/false as booleans, and Python's bool is an int: `workers: yes` would be 1."""
    experiment = "name: b\nmodel: {name: mlp}\ndata: {name: digits}\n" + text
    if "placements" not in text:
        experiment += "placements:\n  - {name: a, workers: 1}\n"
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, experiment))
    assert f"  {field}: expected a number, got a boolean" in str(err.value), str(err.value)


def test_setting_differences_name_each_changed_field_with_both_values(tmp_path):
    from scaleprof.config import setting_differences

    a = load_experiment(write(tmp_path, GOOD)).resolved()
    changed = GOOD.replace("name: t", "name: u") + "train: {epochs: 40, precision: bf16, compile: true}\n"
    b = load_experiment(write(tmp_path, changed, "b.yaml")).resolved()
    assert setting_differences(a, a) == []
    differences = setting_differences(a, b)  # the study's name changes nothing measured
    assert differences[:2] == ["train.epochs: 2 vs 40", "train.precision: fp32 vs bf16"]
    assert differences[2].startswith("train.compile: null vs {") and len(differences) == 3
    assert setting_differences(a, b, ignore=())[0] == "name: t vs u"
    more = load_experiment(write(tmp_path, GOOD + "  - {name: cpu-2, workers: 2}\n", "c.yaml")).resolved()
    assert setting_differences(a, more) == ["placements: 1 item vs 2 items"]
    moved = load_experiment(write(tmp_path, GOOD.replace("workers: 1", "workers: 3"), "d.yaml")).resolved()
    assert setting_differences(a, moved) == ["placements.0.workers: 1 vs 3"]
    assert setting_differences({"x": {"y": 1}}, {"x": {}}) == ["x.y: 1 vs (absent)"]
    assert setting_differences({"x": True}, {"x": 1}) == ["x: true vs 1"]
