"""The command line's answers to bad input, called in this process (`cli.main`): the exit code, the
message naming the field or file at fault, nothing written. Ray never starts for any of them. That a fresh
`scaleprof` process shows no traceback is tested once, in tests/integration/test_cli.py."""

import sys
import textwrap
from pathlib import Path

import pytest

from scaleprof import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scaleprof(capsys, tmp_path):
    """`scaleprof ARGS` -> (exit code, stdout, stderr). The user's modules it imported from tmp_path and the
    directories it put on sys.path are taken back afterwards, as a fresh process would start without them."""
    path = list(sys.path)

    def call(*args: str) -> tuple[int, str, str]:
        code = cli.main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    yield call
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_plan_lists_the_runs(scaleprof):
    code, out, err = scaleprof("plan", REPO / "experiments" / "smoke.yaml")
    assert code == 0, err
    for name in ("cpu-1", "cpu-2", "gpu-1"):
        assert name in out
    assert "3 run(s)" in out


def test_an_unknown_key_is_named_with_the_file(scaleprof, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: mlp}\ndata: {name: digits}\nplacements:\n  - {name: a, workerz: 1}\n")
    code, _, err = scaleprof("plan", bad)
    assert code == 2 and str(bad) in err and "placements.0.workerz: unknown key" in err


def test_missing_file_and_non_study_directory(scaleprof, tmp_path):
    code, _, err = scaleprof("run", tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in err
    code, _, err = scaleprof("report", tmp_path)
    assert code == 2 and "not a scaleprof study directory" in err


def test_unwritable_output_is_refused_before_ray_starts(scaleprof, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = scaleprof("run", REPO / "experiments" / "smoke.yaml", "--out", blocker / "sub")
    assert code == 2 and "cannot write study results there" in err


@pytest.mark.parametrize(
    "extra, said",
    [
        ("models: [{name: mlp}, {name: small-cnn, kwargs: {depth: 3}}]", "models.1.kwargs: small-cnn does not accept"),
        ("model: {name: mlp}\ncost: {node_type: aws-nope}", "cost.node_type: no node type 'aws-nope'"),
    ],
)
def test_a_model_that_cannot_be_built_or_an_unknown_node_type_is_named_with_the_file(scaleprof, tmp_path, extra, said):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: x\n{extra}\ndata: {{name: digits}}\nplacements:\n  - {{name: a, workers: 1}}\n")
    code, _, err = scaleprof("plan", bad)
    assert code == 2 and str(bad) in err and said in err, err


BAD_MODELS = """
from torch import nn

def build(features, width, classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.ReLU(), nn.Linear(width, classes))


def loop(config):
    pass
"""

BAD = [
    ("model: {factory: 'nothere:build'}\ndata: {name: digits}", "model.factory: cannot import 'nothere'"),
    ("model: {factory: 'my_models:build'}\ndata: {name: digits}", "model.factory: calling it with kwargs [] failed"),
    ("models: [{name: mlp}, {factory: 'my_models:build', kwargs: {features: 64, width: 8, classes: 4}}]\n"
     "data: {name: digits}", "models.1.factory: my_models:build's output on a batch of 2 has shape [2, 4]"),
    ("model: {name: mlp}\ndata: {name: image-folder, path: missing}", "data.path: "),
    ("train: {loop: 'my_models:build'}", "train.loop: my_models:build takes 3 arguments"),
    ("model: {factory: 'mymodle:build'}\ntrain: {loop: 'my_models:loop'}", "model.factory: cannot import 'mymodle'"),
    ("model: {name: mlp}\ntrain: {loop: 'my_models:loop'}", "model.name: a built-in model is shaped by the"),
]  # fmt: skip


@pytest.mark.parametrize("body, message", BAD)
def test_bad_user_code_exits_2_naming_the_field_before_ray_starts(scaleprof, tmp_path, body, message):
    code_dir = tmp_path / "project"
    code_dir.mkdir()
    (code_dir / "my_models.py").write_text(textwrap.dedent(BAD_MODELS))
    experiment = code_dir / "bad.yaml"
    experiment.write_text(f"name: bad\n{body}\nplacements:\n  - {{name: a, workers: 1}}\n")
    out = tmp_path / "out"
    code, _, err = scaleprof("run", experiment, "--out", out)
    assert code == 2 and message in err and str(experiment) in err, err
    assert not out.exists()  # nothing written, Ray never started
