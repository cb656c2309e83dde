"""The aggregator's actors, as Ray runs them (telemetry/handle.py starts them): `AggregatorActor` commits the
calls that arrive together as one segment (group commit) and answers each once its events are on disk;
`NodeRelay` gathers a node's workers' batches and forwards them in one call per interval. Both gather
their calls the same way (telemetry/gathering.py). Neither imports Ray: tests run them on an event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa

from scaleprof.telemetry.aggregator import Aggregator, Batch
from scaleprof.telemetry.gathering import Gathering

FORWARD_S = 0.25  # a node relay forwards what arrived this often (it adds at most this to the lag)
LINGER_S = 0.05  # the actor waits this long after a call for others to join its segment


class AggregatorActor:
    """The aggregator as a Ray actor (asyncio): calls are accepted as they arrive and committed together.

    While one segment is being written (in a thread, off the event loop), the calls that arrive wait
    and become the next segment: at 50,000 events/s from hundreds of senders the disk sees a few
    writes a second, not hundreds. A call returns when its events are on disk; if the write fails,
    every call waiting on it fails and its sender resends."""

    def __init__(self, study_dir: str, shard: str = "0", linger_s: float = LINGER_S):
        self.core = Aggregator(study_dir, shard)
        self._calls: Gathering[list[pa.Table]] = Gathering(linger_s, self._flush)
        self._writing = asyncio.Lock()  # one write at a time: segments are numbered in order

    async def ingest(self, batch: Batch | list[dict[str, Any]]) -> int:
        tables = self.core.accept(batch)
        if not tables:
            return 0
        return await self._calls.submit(tables)

    async def ingest_many(self, batches: list[Batch]) -> list[int]:
        """Several workers' batches in one call (from a node relay): each committed as if sent alone."""
        return list(await asyncio.gather(*(self.ingest(batch) for batch in batches)))

    async def _flush(self) -> None:
        async with self._writing:
            await self._write_group()

    async def _write_group(self) -> None:
        group = self._calls.take()
        if not group:
            return
        try:
            table = await asyncio.to_thread(self.core.write, [t for tables, _ in group for t in tables])
        except OSError as exc:
            self.core.recover(exc)  # the disk is the truth: what waits unwritten is forgotten and resent
            for _, done in group + self._calls.take():
                done.set_exception(exc)
            return
        self.core.committed(table)
        for tables, done in group:
            done.set_result(sum(t.num_rows for t in tables))

    async def close(self) -> dict[str, Any]:
        """Write what waits, merge the small segments; the final stats."""
        while self._calls.waiting:
            await self._flush()
        async with self._writing:
            await asyncio.to_thread(self.core.compact)
        return self.core.stats()

    # The rest answers from the aggregator's state.
    def register_worker(self, run_id: str, rank: int) -> int:
        return self.core.register_worker(run_id, rank)

    def attempts(self, run_id: str) -> int:
        return self.core.attempts(run_id)

    def nodes(self, run_id: str) -> list[str]:
        return self.core.nodes(run_id)

    def live(self, run_id: str) -> Any:
        return self.core.live(run_id)

    def progress(self, run_id: str) -> dict[str, Any]:
        return self.core.progress(run_id)

    def stats(self, lags: bool = False) -> dict[str, Any]:
        return self.core.stats(lags)

    def store_predictions(self, run_id: str, predictions: dict[str, Any]) -> int:
        return self.core.store_predictions(run_id, predictions)

    def store_trace(self, run_id: str, name: str, data: bytes) -> str:
        return self.core.store_trace(run_id, name, data)


class NodeRelay:
    """One per node, when asked (`monitor.node_relays`): the node's workers send their batches here, and
    every `forward_s` it forwards all that arrived to the study's aggregator in one call, answering each
    worker once that call returns (so once its events are on disk). An aggregator's cost is mostly per
    call (README Performance): a node's workers then cost it one call per interval, not one each. It
    holds nothing that matters: killed, its callers' calls fail or are retried and their sinks resend.
    `target` is the aggregator actor (or, in tests, an AggregatorActor itself)."""

    def __init__(self, target: Any, forward_s: float = FORWARD_S):
        self._target = target
        self._batches: Gathering[Batch] = Gathering(forward_s, self._forward_next)
        self._calls: set[asyncio.Task[None]] = set()  # forwards in flight (the loop keeps only weak references)
        self.forwarded_calls = 0

    async def ingest(self, batch: Batch) -> int:
        return await self._batches.submit(batch)

    async def _forward_next(self) -> None:
        group = self._batches.take()
        if group:  # the next interval's batches do not wait for this call
            call = asyncio.create_task(self._forward(group))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _forward(self, group: list[tuple[Batch, asyncio.Future[int]]]) -> None:
        remote = getattr(self._target.ingest_many, "remote", None)
        batches = [batch for batch, _ in group]
        try:
            counts = await (remote(batches) if remote is not None else self._target.ingest_many(batches))
        except Exception as exc:  # the aggregator failed or is restarting: every sender resends
            for _, done in group:
                done.set_exception(exc)
            return
        self.forwarded_calls += 1
        for (_, done), count in zip(group, counts, strict=True):
            done.set_result(count)

    def stats(self) -> dict[str, int]:
        return {"forwarded_calls": self.forwarded_calls}
