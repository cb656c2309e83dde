"""Whether a placement fits the cluster now, once its autoscaler adds nodes, or never.

Pure logic: no Ray here. `scaleprof.execution.cluster` reads the nodes, whether an autoscaler runs
and the node types it can launch; this module decides. On a fixed cluster a placement that does not
fit now never will; on an autoscaling one it waits for the nodes the autoscaler can add, and only a
placement that no combination of the node types could hold is skipped at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from scaleprof.config import PlacementSpec
from scaleprof.plan import bundle, missing_resources

MEMORY_RESOURCES = ("memory", "object_store_memory")  # bytes: no placement here asks for them


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler can launch (from the cluster file's `available_node_types`)."""

    name: str
    resources: dict[str, float] | None  # None: the file leaves them to the cloud provider to fill in
    can_add: int | None  # how many more of it the autoscaler may launch now; None: no limit stated

    def describe(self) -> str:
        shown = {k: v for k, v in (self.resources or {}).items() if k not in MEMORY_RESOURCES}
        have = ", ".join(f"{v:g} {k}" for k, v in sorted(shown.items())) if self.resources else "resources not stated"
        more = {None: "no limit", 0: "no more can be added"}.get(self.can_add, f"up to {self.can_add} more")
        return f"{self.name} ({have}; {more})"


class Outlook(StrEnum):
    FITS = "fits"  # the cluster as it is could hold it (whether the resources are free is the wait's to find out)
    SCALE = "scale"  # it fits once the autoscaler adds nodes: request it and wait
    NEVER = "never"  # no node the cluster has or could add holds it: skip at once


@dataclass(frozen=True)
class Verdict:
    outlook: Outlook
    reason: str = ""  # NEVER: why it is skipped; SCALE: what is not known, if anything
    nodes_to_add: tuple[tuple[str, int], ...] = ()  # SCALE: a smallest set of nodes that would do, by type


def totals(nodes: list[dict[str, float]]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for node in nodes:
        out.update(node)
    return dict(out)


def _addable(node_types: list[NodeType], cap: int) -> list[NodeType]:
    """The types with stated resources that may add at least one node, each limited to `cap` nodes
    (no placement needs more new nodes than it has workers)."""
    return [
        NodeType(t.name, t.resources, cap if t.can_add is None else min(t.can_add, cap))
        for t in node_types
        if t.resources is not None and (t.can_add is None or t.can_add > 0)
    ]


def nodes_to_add(
    placement: PlacementSpec, nodes: list[dict[str, float]], node_types: list[NodeType]
) -> dict[str, int] | None:
    """A small set of new nodes, by type, with which the placement fits; None when none would do.

    Greedy: add, one at a time, the smallest node type (fewest resources of the kinds a worker asks
    for) that holds as many of the still-missing workers as any type can. An estimate shown while
    waiting; the autoscaler decides what it really launches."""
    need = bundle(placement)
    have = [dict(n) for n in nodes]
    types = _addable(node_types, placement.workers)
    left = {t.name: t.can_add or 0 for t in types}
    added: Counter[str] = Counter()
    for _ in range(placement.workers + 1):
        if missing_resources(placement, totals(have), have) is None:
            return dict(added)
        usable = [t for t in types if left[t.name] > 0 and _holds(t.resources or {}, need) > 0]
        if not usable:
            return None
        best = max(_holds(t.resources or {}, need) for t in usable)
        per_worker = min(best, placement.workers) if placement.strategy != "STRICT_SPREAD" else 1
        chosen = min(
            (t for t in usable if _holds(t.resources or {}, need) >= per_worker),
            key=lambda t: tuple((t.resources or {}).get(k, 0.0) for k in sorted(need)),
        )
        have.append(dict(chosen.resources or {}))
        left[chosen.name] -= 1
        added[chosen.name] += 1
    return None


def _holds(node: dict[str, float], need: dict[str, float]) -> int:
    """How many workers of this shape fit on one such node."""
    return int(min(node.get(k, 0.0) / v for k, v in need.items() if v > 0))


def verdict(
    placement: PlacementSpec,
    nodes: list[dict[str, float]],
    autoscaling: bool,
    node_types: list[NodeType] | None,
) -> Verdict:
    """Fits now, fits once the autoscaler adds nodes, or never fits.

    `nodes` are the alive nodes' total resources; `node_types` what the autoscaler can launch (None
    when an autoscaler runs but its cluster file cannot be read from here: then every placement that
    does not fit now is worth waiting for)."""
    reason = missing_resources(placement, totals(nodes), nodes)
    if reason is None:
        return Verdict(Outlook.FITS)
    if not autoscaling:
        return Verdict(Outlook.NEVER, reason)
    if node_types is None:
        return Verdict(Outlook.SCALE, "the autoscaler's node types cannot be read from this machine")
    added = nodes_to_add(placement, nodes, node_types)
    if added is not None:
        return Verdict(Outlook.SCALE, nodes_to_add=tuple(sorted(added.items())))
    unstated = [t.name for t in node_types if t.resources is None and t.can_add != 0]
    if unstated:
        return Verdict(Outlook.SCALE, f"node type(s) {', '.join(unstated)} do not state their resources")
    largest = nodes + [
        dict(t.resources or {}) for t in _addable(node_types, placement.workers) for _ in range(t.can_add or 0)
    ]
    at_most = missing_resources(placement, totals(largest), largest) or reason
    kinds = "; ".join(t.describe() for t in node_types) or "none"
    return Verdict(
        Outlook.NEVER,
        f"{at_most.replace('the cluster has', 'the cluster can grow to')} even with every node its autoscaler can "
        f"add (node types: {kinds})",
    )
