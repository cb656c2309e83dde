"""Experiment files: good ones load with defaults; bad ones fail with the file and field named."""

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
