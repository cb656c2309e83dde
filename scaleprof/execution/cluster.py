"""What Ray says about the cluster's capacity: the alive nodes and their node types, whether an
autoscaler runs, the node types it can launch and what it is launching now.

Ray has no one public call for this, so it is read from where Ray keeps it, each best-effort:
- the autoscaler's status (the JSON that `ray status` prints, kept in the GCS key-value store by
  autoscaler v1: active nodes by type, pending launches, node -> type);
- autoscaler v2's cluster status (`ray.autoscaler.v2.sdk.get_cluster_status`) for pending launches;
- the node types: the cluster config in the GCS when something reported it (KubeRay, autoscaler v2),
  else the autoscaler's own cluster file, named on its monitor process's command line (readable where
  the driver runs on the head node, as under `ray job submit`);
- a node's type: its `ray.io/node-group` label, else the autoscaler's node -> type mapping.
The decision made from this view is in `scaleprof.capacity` (pure logic).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from scaleprof.capacity import NodeType

log = logging.getLogger(__name__)

NODE_GROUP_LABEL = "ray.io/node-group"
_CONFIG_FLAG = "--autoscaling-config"


@dataclass
class Node:
    node_id: str
    address: str
    resources: dict[str, float]
    node_type: str | None


@dataclass
class ClusterView:
    nodes: list[Node] = field(default_factory=list)
    autoscaling: bool = False
    node_types: list[NodeType] | None = None  # None: not known here
    head_type: str | None = None

    def node_resources(self) -> list[dict[str, float]]:
        return [n.resources for n in self.nodes]

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(n.node_type for n in self.nodes if n.node_type))

    def describe(self) -> dict[str, Any]:
        """For the manifest: the node types the cluster has and can add."""
        return {
            "autoscaling": self.autoscaling,
            "nodes_by_type": self.type_counts(),
            "node_types": None
            if self.node_types is None
            else [{"name": t.name, "resources": t.resources, "can_add": t.can_add} for t in self.node_types],
        }


def _autoscaler_status() -> dict[str, Any] | None:
    """Autoscaler v1's status as `ray status` reads it; None without one (or on autoscaler v2)."""
    try:
        import ray._private.ray_constants as ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        return json.loads(raw) if raw else None
    except Exception:
        return None


def _autoscaler_report(status: dict[str, Any] | None) -> dict[str, Any]:
    """The autoscaler's report, or {} when there is none or it is the read-only one that every Ray head
    without an autoscaling config runs (for `ray status`): it names each node's type `node_<id>`."""
    report = (status or {}).get("autoscaler_report") or {}
    mapping = report.get("node_type_mapping") or {}
    try:
        from ray.autoscaler._private.util import format_readonly_node_type
    except ImportError:  # a private helper: if it moves, recognise its naming
        format_readonly_node_type = "node_{}".format
    if mapping and all(kind == format_readonly_node_type(key) for key, kind in mapping.items()):
        return {}
    return report


def _v2_status() -> Any:
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5)
        return status if status.stats.autoscaler_version not in (None, "", "0") else None
    except Exception:
        return None


def _config_from_gcs() -> dict[str, dict[str, Any]] | None:
    """Node types the GCS holds (reported by KubeRay or autoscaler v2), as the cluster file spells them."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:
        return None
    if config is None or not config.node_group_configs:
        return None
    return {
        g.name: {
            "resources": dict(g.resources),
            "min_workers": g.min_count,
            "max_workers": None if g.max_count == -1 else g.max_count,
        }
        for g in config.node_group_configs
    }


def _monitor_config_path(status: dict[str, Any] | None) -> str | None:
    """The cluster file the autoscaler's monitor process was started with, when it runs on this machine."""
    import psutil
    import ray

    gcs = ray.get_runtime_context().gcs_address
    candidates: list[psutil.Process] = []
    if status and status.get("monitor_pid"):
        try:
            candidates.append(psutil.Process(int(status["monitor_pid"])))
        except (psutil.Error, ValueError):
            pass
    candidates += list(psutil.process_iter())
    for proc in candidates:
        try:
            args = proc.cmdline()
        except psutil.Error:
            continue
        if not any("monitor.py" in a for a in args) or not any(a.endswith(gcs) for a in args):
            continue  # not an autoscaler monitor, or another cluster's
        for i, arg in enumerate(args):
            value = arg.split("=", 1)[1] if arg.startswith(_CONFIG_FLAG + "=") else None
            if arg == _CONFIG_FLAG and i + 1 < len(args):
                value = args[i + 1]
            if value:  # relative to where `ray start` ran, not to this driver (a job's is a temporary copy)
                try:
                    return os.path.join(proc.cwd(), os.path.expanduser(value))
                except psutil.Error:
                    return os.path.expanduser(value)
    return None


def _config_from_file(path: str) -> tuple[dict[str, dict[str, Any]], str | None, int | None] | None:
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)  # JSON is YAML too
    except (OSError, yaml.YAMLError) as exc:
        log.info("scaleprof: cannot read the autoscaler's cluster file %s: %s", path, exc)
        return None
    types = config.get("available_node_types") if isinstance(config, dict) else None
    if not isinstance(types, dict):
        return None
    return types, config.get("head_node_type"), config.get("max_workers")


def _node_types(
    types: dict[str, dict[str, Any]], head_type: str | None, max_workers: int | None, have: dict[str, int]
) -> list[NodeType]:
    workers_now = sum(n for name, n in have.items() if name != head_type)
    room = None if max_workers is None else max(0, int(max_workers) - workers_now)
    out = []
    for name, spec in types.items():
        resources = spec.get("resources")
        stated = {k: float(v) for k, v in resources.items()} if isinstance(resources, dict) and resources else None
        limit = spec.get("max_workers")
        can_add = 0 if name == head_type else (None if limit is None else max(0, int(limit) - have.get(name, 0)))
        if room is not None and name != head_type:
            can_add = room if can_add is None else min(can_add, room)
        out.append(NodeType(name, stated, can_add))
    return out


def _alive_nodes(status: dict[str, Any] | None) -> list[Node]:
    import ray

    by_key: dict[str, str] = _autoscaler_report(status).get("node_type_mapping") or {}
    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        labels = n.get("Labels") or {}
        kind = labels.get(NODE_GROUP_LABEL) or by_key.get(n["NodeID"]) or by_key.get(n.get("NodeManagerAddress", ""))
        resources = {k: float(v) for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
        nodes.append(Node(n["NodeID"], n.get("NodeManagerAddress", ""), resources, kind))
    return nodes


def cluster_view() -> ClusterView:
    """The cluster as Ray sees it now (call with Ray connected)."""
    status = _autoscaler_status()
    nodes = _alive_nodes(status)
    view = ClusterView(nodes=nodes, autoscaling=bool(_autoscaler_report(status)))
    have = view.type_counts()
    types = _config_from_gcs()
    head_type, max_workers = None, None
    if types is None:
        path = _monitor_config_path(status)
        found = _config_from_file(path) if path else None
        if found is not None:
            types, head_type, max_workers = found
    if types is not None:
        view.head_type = head_type
        view.node_types = _node_types(types, head_type, max_workers, have)
        view.autoscaling = view.autoscaling or any(t.can_add != 0 for t in view.node_types)
    elif not view.autoscaling:
        view.autoscaling = _v2_status() is not None
    return view


def pending_nodes() -> dict[str, int]:
    """Nodes the autoscaler is launching or setting up now, by node type (empty when none or unknown)."""
    status = _autoscaler_status()
    out: Counter[str] = Counter()
    if status is not None:
        report = _autoscaler_report(status)
        out.update({k: int(v) for k, v in (report.get("pending_launches") or {}).items()})
        for pending in report.get("pending_nodes") or []:
            if len(pending) >= 2:
                out[str(pending[1])] += 1
        return dict(out)
    v2 = _v2_status()
    if v2 is not None:
        for launch in v2.pending_launches:
            out[launch.ray_node_type_name] += launch.count
        for node in v2.pending_nodes:
            out[node.ray_node_type_name] += 1
    return dict(out)


def node_types_of(node_ids: list[str]) -> dict[str, str]:
    """Node type of each of these nodes, where Ray knows it."""
    kinds = {n.node_id: n.node_type for n in _alive_nodes(_autoscaler_status()) if n.node_type}
    return {i: kinds[i] for i in node_ids if i in kinds}
