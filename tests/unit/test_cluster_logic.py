"""Placement strategies, node checks, realised-placement warnings and the pricing table (no Ray)."""

from pathlib import Path

import pandas as pd
import pytest

from scaleprof.analysis.summarize import placement_warning
from scaleprof.config import ConfigError, Experiment, PlacementSpec
from scaleprof.plan import missing_resources
from scaleprof.pricing import load_pricing, prices_for

REPO = Path(__file__).resolve().parents[2]
NODE = {"CPU": 1.0, "memory": 1e9}


def test_strategy_and_nodes_must_agree():
    with pytest.raises(ValueError, match="STRICT_SPREAD puts each of the 2 workers on its own node"):
        PlacementSpec(name="a", workers=2, strategy="STRICT_SPREAD", nodes=1)
    with pytest.raises(ValueError, match="STRICT_PACK puts every worker on one node"):
        PlacementSpec(name="a", workers=2, strategy="STRICT_PACK", nodes=2)
    assert PlacementSpec(name="a", workers=3, strategy="STRICT_SPREAD").expected_nodes == 3
    assert PlacementSpec(name="a", workers=3, nodes=2).expected_nodes == 2
    assert PlacementSpec(name="a", workers=3).expected_nodes is None


def test_missing_nodes_are_named():
    spread3 = PlacementSpec(name="a", workers=3, strategy="STRICT_SPREAD")
    two_nodes = [NODE, NODE]
    reason = missing_resources(spread3, {"CPU": 2.0}, two_nodes)  # totals would not even do
    assert reason == "needs 3 CPU(s), the cluster has 2"
    reason = missing_resources(spread3, {"CPU": 4.0}, [NODE, {"CPU": 3.0}])
    assert reason.startswith("needs 3 node(s) that can each hold a worker")
    pack2 = PlacementSpec(name="a", workers=2, strategy="STRICT_PACK")
    assert "STRICT_PACK needs one node with 2 x" in missing_resources(pack2, {"CPU": 2.0}, two_nodes)
    assert (
        missing_resources(PlacementSpec(name="a", workers=2, strategy="STRICT_SPREAD"), {"CPU": 2.0}, two_nodes) is None
    )


def test_placement_warning_when_realised_differs():
    starts = pd.DataFrame({"node_id": ["n1", "n1"], "gpu_uuid": [None, None]})
    assert placement_warning({"nodes_requested": 2}, starts) == "asked for 2 node(s), the workers ran on 1"
    assert placement_warning({"nodes_requested": None}, starts) == ""
    shared = pd.DataFrame({"node_id": ["n1", "n1"], "gpu_uuid": ["GPU-a", "GPU-a"]})
    assert "share a GPU" in placement_warning({"gpus_per_worker": 1}, shared)


def test_shipped_pricing_table_is_complete_and_sourced():
    table = load_pricing(REPO / "clusters" / "pricing.csv")
    assert "aws-t3.large" in table and "aws-g5.xlarge" in table
    for price in table.values():
        assert price.source.startswith("http") and price.retrieved.startswith("20")
        assert price.price_per_hour_usd > 0
    assert table["aws-g5.xlarge"].gpus == 1


def test_pricing_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text(
        "node_type,provider,region,instance,price_per_hour_usd,vcpus,memory_gib,gpus,gpu_model,source,retrieved\n"
        "x,aws,r,i,cheap,2,8,0,,s,2026\n"
    )
    with pytest.raises(ConfigError, match=r"p.csv: line 2, column price_per_hour_usd"):
        load_pricing(bad)
    exp = Experiment.model_validate(
        {
            "name": "t", "model": {"name": "mlp"}, "data": {"name": "digits"},
            "cost": {"pricing": str(REPO / "clusters" / "pricing.csv")},
            "placements": [{"name": "a", "workers": 1, "node_type": "aws-nope"}],
        }
    )  # fmt: skip
    with pytest.raises(ConfigError, match="placements.0.node_type: no node type 'aws-nope'"):
        prices_for(exp)


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
