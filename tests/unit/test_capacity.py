"""Fits now, once the autoscaler adds nodes, or never: the decision, on the shapes real clusters have."""

from typing import Any

from scaleprof.capacity import NodeType, Outlook, nodes_to_add, verdict
from scaleprof.config import PlacementSpec
from scaleprof.execution.runner import waiting_text

HEAD = {"CPU": 1.0, "memory": 1e9}
CPU2 = NodeType("cpu2", {"CPU": 2.0, "object_store_memory": 1e8}, can_add=1)
GPU4 = NodeType("g5.12xlarge", {"CPU": 48.0, "GPU": 4.0}, can_add=None)


def place(workers: int, strategy: str = "PACK", gpus: float = 0, cpus: float = 1) -> PlacementSpec:
    return PlacementSpec(name="p", workers=workers, strategy=strategy, gpus_per_worker=gpus, cpus_per_worker=cpus)  # type: ignore[arg-type]


def test_a_placement_that_fits_now_needs_no_autoscaler():
    assert verdict(place(1), [HEAD], autoscaling=False, node_types=None).outlook == Outlook.FITS
    assert verdict(place(1), [HEAD], autoscaling=True, node_types=[CPU2]).outlook == Outlook.FITS


def test_on_a_fixed_cluster_what_does_not_fit_now_never_will():
    found = verdict(place(1, gpus=1), [HEAD], autoscaling=False, node_types=None)
    assert found.outlook == Outlook.NEVER
    assert found.reason == "needs 1 GPU(s), the cluster has 0"


def test_the_issue_cluster_strict_pack_waits_for_one_cpu2_node_and_a_gpu_is_never():
    pack = verdict(place(2, "STRICT_PACK"), [HEAD], autoscaling=True, node_types=[CPU2])
    assert pack.outlook == Outlook.SCALE and pack.nodes_to_add == (("cpu2", 1),)
    gpu = verdict(place(1, gpus=1), [HEAD], autoscaling=True, node_types=[CPU2])
    assert gpu.outlook == Outlook.NEVER
    assert gpu.reason.startswith("needs 1 GPU(s), the cluster can grow to 0 even with every node its autoscaler")
    assert "cpu2 (2 CPU; up to 1 more)" in gpu.reason  # memory resources are not shown


def test_limits_on_the_node_types_are_respected():
    spread3 = place(3, "STRICT_SPREAD")
    found = verdict(spread3, [HEAD], autoscaling=True, node_types=[CPU2])  # head + at most one cpu2: 2 nodes
    assert found.outlook == Outlook.NEVER and "even with every node" in found.reason
    many = NodeType("cpu2", {"CPU": 2.0}, can_add=None)
    assert verdict(spread3, [HEAD], True, [many]).nodes_to_add == (("cpu2", 2),)
    full = NodeType("cpu2", {"CPU": 2.0}, can_add=0)
    assert verdict(place(2, "STRICT_PACK"), [HEAD], True, [full]).outlook == Outlook.NEVER
    assert "no more can be added" in verdict(place(2, "STRICT_PACK"), [HEAD], True, [full]).reason


def test_the_smallest_node_type_that_does_is_chosen():
    small_gpu = NodeType("g5.xlarge", {"CPU": 4.0, "GPU": 1.0}, can_add=8)
    types = [GPU4, small_gpu, CPU2]
    assert nodes_to_add(place(1, gpus=1), [HEAD], types) == {"g5.xlarge": 1}
    assert nodes_to_add(place(4, "STRICT_PACK", gpus=1), [HEAD], types) == {"g5.12xlarge": 1}
    assert nodes_to_add(place(2, "STRICT_SPREAD", gpus=1), [HEAD], types) == {"g5.xlarge": 2}
    assert nodes_to_add(place(2, "STRICT_PACK", gpus=8), [HEAD], types) is None


def test_unknown_node_types_mean_wait_rather_than_skip():
    unread = verdict(place(1, gpus=1), [HEAD], autoscaling=True, node_types=None)
    assert unread.outlook == Outlook.SCALE and "cannot be read" in unread.reason
    cloud_filled = NodeType("gpu", None, can_add=2)  # AWS fills in resources from the instance type
    found = verdict(place(1, gpus=1), [HEAD], autoscaling=True, node_types=[CPU2, cloud_filled])
    assert found.outlook == Outlook.SCALE and "gpu" in found.reason


def test_the_waiting_line_prefers_what_the_autoscaler_reports():
    found = verdict(place(2, "STRICT_PACK"), [HEAD], autoscaling=True, node_types=[CPU2])
    assert waiting_text(found, {}, 3.2, 600) == (
        "waiting for the autoscaler: needs 1 node(s) of type cpu2; 3 s of at most 600 s"
    )
    assert waiting_text(found, {"cpu2": 1}, 12, 600).startswith(
        "waiting for the autoscaler: 1 node(s) of type cpu2 launching"
    )


def test_the_shipped_cluster_files_read_as_node_types():
    """What the runner reads from the autoscaler's cluster file: AWS leaves resources to the cloud
    (so a GPU placement waits), GCP states them (so what no type holds is skipped at once)."""
    from pathlib import Path

    from scaleprof.execution.cluster import _config_from_file, _node_types

    clusters = Path(__file__).resolve().parents[2] / "clusters"
    types, head, limit = _config_from_file(str(clusters / "gcp-gpu.yaml"))  # type: ignore[misc]
    gcp = _node_types(types, head, limit, have={"head": 1, "gpu-worker": 1})
    assert {t.name: t.can_add for t in gcp} == {"head": 0, "gpu-worker": 1}
    assert verdict(place(1, gpus=1), [HEAD], True, gcp).nodes_to_add == (("gpu-worker", 1),)
    assert verdict(place(1, gpus=2), [HEAD], True, gcp).outlook == Outlook.NEVER
    types, head, limit = _config_from_file(str(clusters / "aws-gpu.yaml"))  # type: ignore[misc]
    aws = _node_types(types, head, limit, have={"head": 1})
    assert [(t.name, t.resources, t.can_add) for t in aws] == [("head", None, 0), ("gpu-worker", None, 8)]
    assert verdict(place(1, gpus=1), [HEAD], True, aws).outlook == Outlook.SCALE


def test_the_cluster_wide_worker_limit_caps_every_type():
    from scaleprof.execution.cluster import _node_types

    types: dict[str, dict[str, Any]] = {
        "head": {"resources": {"CPU": 1}},
        "a": {"resources": {"CPU": 2}, "max_workers": 5},
        "b": {},
    }
    out = _node_types(types, "head", max_workers=3, have={"head": 1, "a": 2})
    assert [(t.name, t.can_add) for t in out] == [("head", 0), ("a", 1), ("b", 1)]
