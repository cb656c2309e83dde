"""The shipped cluster files and experiments."""

from pathlib import Path

import pytest

from scaleprof.pricing import prices_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["aws-gpu", "gcp-gpu", "local"])
def test_cluster_files_pass_rays_own_schema_and_keep_auth_on(name):
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (REPO / "clusters" / f"{name}.yaml").read_text()
    validate_config(prepare_config(yaml.safe_load(text)))  # raises on a schema error
    assert text.count("RAY_AUTH_MODE=token ray start") == 2  # head and workers
    assert "--dashboard-host=127.0.0.1" in text and "0.0.0.0" not in text


@pytest.mark.parametrize("name", ["smoke", "digits", "multinode-smoke", "resnet-gpu"])
def test_shipped_experiments_and_their_prices_load(name, monkeypatch):
    from scaleprof.config import load_experiment

    monkeypatch.chdir(REPO)
    exp = load_experiment(REPO / "experiments" / f"{name}.yaml")
    assert prices_for(exp)  # every shipped study is priced from clusters/pricing.csv


def test_the_laptop_autoscaling_cluster_passes_rays_schema_and_reads_as_node_types():
    import yaml
    from ray.autoscaler._private.util import validate_config

    from scaleprof.execution.cluster import _config_from_file, _node_types

    path = REPO / "clusters" / "laptop-autoscaling.yaml"
    validate_config(yaml.safe_load(path.read_text()))  # complete as it is: Ray's wheel lacks this provider's defaults
    types, head, limit = _config_from_file(str(path))  # type: ignore[misc]
    assert [(t.name, t.can_add) for t in _node_types(types, head, limit, {"ray.head.default": 1})] == [
        ("ray.head.default", 0),
        ("cpu2", 1),
    ]
