"""The pricing table: complete, sourced, and every error naming file, line and field."""

from pathlib import Path

import pytest

from scaleprof.config import ConfigError, Experiment
from scaleprof.pricing import load_pricing, prices_for

REPO = Path(__file__).resolve().parents[2]


def test_shipped_pricing_table_is_complete_and_sourced():
    table = load_pricing(REPO / "clusters" / "pricing.csv")
    assert "aws-t3.large" in table and "aws-g5.xlarge" in table
    for price in table.values():
        assert price.retrieved.startswith("20")
        if price.price_per_hour_usd is None:  # listed so that costs say why they are missing, never guessed
            assert price.source.startswith("no public list price")
        else:
            assert price.source.startswith("http") and price.price_per_hour_usd > 0
    assert table["aws-g5.xlarge"].gpus == 1
    assert table["aws-g5.12xlarge"].gpus == 4 and table["aws-p4d.24xlarge"].gpus == 8  # multi-GPU nodes
    assert "gcp-n1-standard-8" in table and table["gcp-n1-standard-8-t4"].price_per_hour_usd is None


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
            "name": "t",
            "model": {"name": "mlp"},
            "data": {"name": "digits"},
            "cost": {"pricing": str(REPO / "clusters" / "pricing.csv")},
            "placements": [{"name": "a", "workers": 1, "node_type": "aws-nope"}],
        }
    )
    with pytest.raises(ConfigError, match="placements.0.node_type: no node type 'aws-nope'"):
        prices_for(exp)
