"""A study's aggregator actors as Ray runs them: started on the driver's node (`start_aggregators`), named
(`ray list actors` shows which study they serve), asked for progress and the nodes a run used, closed.
`Aggregators` is what the driver and the workers hold (picklable)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaleprof.telemetry.actors import AggregatorActor, NodeRelay
from scaleprof.telemetry.aggregator import progress_of, stats_of

MAX_RESTARTS = 5


def relay_name(study_id: str, node_id: str) -> str:
    return f"scaleprof-relay-{study_id}-{node_id[:16]}"


def aggregator_name(study_id: str, shard: str = "0") -> str:
    """The actor's name: `ray list actors` shows which study it serves; tests find it by name."""
    return f"scaleprof-aggregator-{study_id}" + ("" if shard == "0" else f"-{shard}")


@dataclass(frozen=True)
class Aggregators:
    """A study's aggregators: the first one also numbers attempts and stores predictions and traces;
    every one takes events, each worker sending to one chosen by its node (`for_node`), so a node's
    workers share an aggregator and ingest grows with the aggregators. Picklable: workers get it."""

    actors: tuple[Any, ...]
    relays: tuple[tuple[str, Any], ...] = ()  # (node id, its relay), with `monitor.node_relays`

    @property
    def first(self) -> Any:
        return self.actors[0]

    def aggregator_for(self, node_id: str) -> Any:
        """The aggregator a node's events go to (through its relay, if it has one)."""
        return self.actors[zlib.crc32(str(node_id).encode()) % len(self.actors)]

    def for_node(self, node_id: str) -> Any:
        """Where a worker on this node sends its events: the node's relay, or its aggregator."""
        return dict(self.relays).get(node_id) or self.aggregator_for(node_id)

    def with_relays(self, study_dir: str, node_ids: list[str], place: bool = True) -> Aggregators:
        """These aggregators plus a relay on each of `node_ids` that has none yet (placed on that node;
        `place=False` for a simulation whose nodes are names only)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        have = dict(self.relays)
        relay_cls = ray.remote(NodeRelay)
        for node_id in node_ids:
            if node_id in have:
                continue
            options: dict[str, Any] = {
                "name": relay_name(Path(study_dir).name, node_id),
                "num_cpus": 0,
                "max_restarts": MAX_RESTARTS,
                "max_task_retries": -1,
            }
            if place:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
            have[node_id] = relay_cls.options(**options).remote(self.aggregator_for(node_id))
        return Aggregators(self.actors, tuple(have.items()))

    def progress(self, run_id: str, timeout_s: float) -> dict[str, Any]:
        import ray

        if len(self.actors) == 1:
            return ray.get(self.first.progress.remote(run_id), timeout=timeout_s)
        return progress_of(ray.get([a.live.remote(run_id) for a in self.actors], timeout=timeout_s))

    def nodes(self, run_id: str, timeout_s: float) -> list[str]:
        import ray

        return sorted(set().union(*ray.get([a.nodes.remote(run_id) for a in self.actors], timeout=timeout_s)))

    def close(self) -> dict[str, Any]:
        """Flush and merge every aggregator's segments; the study's telemetry stats."""
        import ray

        finals = ray.get([a.close.remote() for a in self.actors])
        relayed = ray.get([relay.stats.remote() for _, relay in self.relays])
        relays = {"relays": len(relayed), "relay_calls": sum(r["forwarded_calls"] for r in relayed)} if relayed else {}
        if len(self.actors) == 1:
            return finals[0] | relays
        lags = ray.get([a.stats.remote(lags=True) for a in self.actors])
        return stats_of(finals, [np.asarray(s["lags"]) for s in lags]) | {"aggregators": len(self.actors)} | relays

    def kill(self) -> None:
        import ray

        for actor in (*self.actors, *(relay for _, relay in self.relays)):
            ray.kill(actor)


def start_aggregators(study_dir: str, count: int = 1) -> Aggregators:
    """Start the study's aggregator actors on this (the driver's) node, so the store is on the driver's
    disk (several: each writes its own segment directory; past one node's disk they need a shared
    file system, see README Performance).

    Killed, Ray restarts one (up to MAX_RESTARTS times) and retries the calls it had not answered;
    every call is safe to repeat (ingest drops duplicates, the rest read or overwrite)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_cls = ray.remote(AggregatorActor)
    node_id = ray.get_runtime_context().get_node_id()
    return Aggregators(
        tuple(
            actor_cls.options(
                name=aggregator_name(Path(study_dir).name, str(shard)),
                num_cpus=0,  # it must never take a CPU that a placement asked for
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                max_restarts=MAX_RESTARTS,
                max_task_retries=-1,  # retried until the actor is back (or out of restarts)
            ).remote(study_dir, str(shard))
            for shard in range(count)
        )
    )
