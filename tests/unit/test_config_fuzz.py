"""Property-based fuzz of bad experiment files through the real CLI (`scaleprof plan`, in-process).

Whatever the file holds, the answer is exit 0 (a valid experiment) or exit 2 with one `error:` line
naming the file — never a traceback, never another exit code. Mutations follow the real schema: every
field path of `Experiment` gets values of every wrong type, plus misspelt keys and raw bytes.
"""

import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from scaleprof.cli import main
from scaleprof.config import Experiment

GOOD = {
    "name": "fuzz",
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "train": {"epochs": 1},
    "placements": [{"name": "cpu-1", "workers": 1}],
}


def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation like `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def field_paths(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    """Every field path of the schema; a list of models is entered at index 0."""
    paths = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = prefix + (key,)
        paths.append(path)
        for inner in _models_in(info.annotation):
            is_list = typing.get_origin(info.annotation) is list or any(
                typing.get_origin(a) is list for a in typing.get_args(info.annotation)
            )
            paths.extend(field_paths(inner, path + ((0,) if is_list else ())))
    return paths


PATHS = field_paths(Experiment)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["mlp", "digits", "gpu", "STRICT_SPREAD", "torchvision:resnet18", "../x", "weak", "1e9"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def set_path(doc: typing.Any, path: tuple, value: typing.Any) -> None:
    for key in path[:-1]:
        if isinstance(key, int):
            if not isinstance(doc, list):
                return
            while len(doc) <= key:
                doc.append({})
            doc = doc[key]
        else:
            if not isinstance(doc, dict):
                return
            if not isinstance(doc.get(key), (dict, list)):
                doc[key] = {}
            doc = doc[key]
    if isinstance(doc, dict) and not isinstance(path[-1], int):
        doc[path[-1]] = value


mutation = st.tuples(st.sampled_from(PATHS), values) | st.tuples(
    st.sampled_from(PATHS).map(lambda p: p[:-1] + (str(p[-1])[:-1] + "z",)),
    values,  # a misspelt key
)


def plan(tmp: Path, content: bytes, capsys) -> tuple[int, str]:
    path = tmp / "exp.yaml"
    path.write_bytes(content)
    rc = main(["plan", str(path)])
    err = capsys.readouterr().err
    return rc, err


def check(rc: int, err: str, path: Path) -> None:
    assert rc in (0, 2), err
    assert "Traceback" not in err
    if rc == 2:
        assert err.startswith("error: ") and str(path) in err, err


def test_the_schema_walk_reaches_nested_fields():
    assert ("placements", 0, "gpus_per_worker") in PATHS
    assert ("evaluation", "inference", "batch_sizes") in PATHS
    assert ("models", 0, "label") in PATHS


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_schema_guided_mutations_never_crash(tmp_path, capsys, mutations):
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    for path, value in mutations:
        set_path(doc, path, value)
    rc, err = plan(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode(), capsys)
    check(rc, err, tmp_path / "exp.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_crash(tmp_path, capsys, content):
    rc, err = plan(tmp_path, content, capsys)
    check(rc, err, tmp_path / "exp.yaml")


@pytest.mark.parametrize(
    "content, words",
    [
        # "billion laughs": 9 levels of 9 aliases, 387 million values from a few hundred bytes
        (
            "name: t\nmodel: {name: mlp, kwargs: {a0: &a0 [x, x, x, x, x, x, x, x, x], "
            + ", ".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9))
            + "}}\ndata: {name: digits}\nplacements: [{name: cpu-1}]\n",
            "counting each alias expanded",
        ),
        ("a: &a [*a]\n", "refers to itself"),
        ("name: " + "[" * 3000 + "]" * 3000 + "\n", "nesting depth"),  # libyaml refuses it with line and column
        ("!!python/object/new:os.system [echo hi]\n", "not valid YAML"),
        ("name: !!python/name:os.system\n", "not valid YAML"),
        ("%YAML 9.9\n---\nname: t\n", "not valid YAML"),
        ("name: t\n---\nname: u\n", "not valid YAML"),
        ("name: t\nname: u\n", "duplicate key 'name'"),  # PyYAML would keep the last one silently
    ],
)
def test_hostile_yaml_is_refused_quickly(tmp_path, capsys, content, words):
    rc, err = plan(tmp_path, content.encode(), capsys)
    check(rc, err, tmp_path / "exp.yaml")
    assert rc == 2 and words in err, err
