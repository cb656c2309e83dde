"""The aggregator: a Ray actor that stores every worker's events as columnar segments.

It checks per-worker sequence numbers as batches arrive: a resent event is dropped as a duplicate,
a late one (resent after a restart, out of order) still fills its hole, and only a hole that is never
filled counts as a gap. It keeps a small live view of each run for the progress display.
`Aggregator` is a plain class so its logic is testable without Ray: `ingest` writes one segment per
call. `AggregatorActor` wraps it for Ray with group commit: the calls that arrive while a segment is
being written are written together as the next one, and each call returns only once its events
are on disk, so an acknowledged event is never lost. Killed, the actor comes back (Ray restarts it),
rebuilds its state from the store, and Ray retries the calls that were in flight (at-least-once; the
sequence check makes it exactly-once on disk). A study may run several aggregators (shards), each
writing its own segment directory; the store's reader merges them.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scaleprof.errors import write_failure
from scaleprof.records import ID_FIELDS, EventKind, Lifecycle, batches_of
from scaleprof.telemetry.segments import SegmentWriter, concat, read_segments
from scaleprof.telemetry.store import StudyStore, read_jsonl

WorkerKey = tuple[str, int, int]  # run_id, attempt, rank
Batch = dict[str, Any]  # records.event_batch: one worker's ids and its events as columns
MAX_AHEAD = 10_000  # events held past a hole per worker before the hole is declared lost
MAX_RESTARTS = 5
FORWARD_S = 0.25  # a node relay forwards what arrived this often (it adds at most this to the lag)
COMPACT_EVERY = 64  # small segments merged into one file
LINGER_S = 0.05  # the actor waits this long after a call for others to join its segment
KEY = ["run_id", "attempt", "rank"]
# What a restarted aggregator reads back: the ids, and the fields the live view follows.
REBUILD_COLUMNS = [*KEY, "node_id", "seq", "time", "kind", "event", "epoch", "samples", "step_s", "epoch_time_s",
                   "cpu_pct", "gpu_util_pct"]  # fmt: skip
LIVE_FIELDS = ("event", "epoch", "samples", "step_s", "epoch_time_s", "cpu_pct", "gpu_util_pct")


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):  # mixed types: kept, as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def batch_table(batch: Batch, keep: list[bool] | None = None) -> pa.Table:
    """A batch as a table: the worker's ids repeated as columns, then its events' fields."""
    columns = batch["columns"]
    n = len(columns["seq"])
    ids = batch["ids"]
    data = {k: pa.array([ids.get(k)] * n, pa.int64() if k in ("attempt", "rank") else pa.string()) for k in ID_FIELDS}
    data.update({k: _column(v) for k, v in columns.items() if k not in data})
    table = pa.table(data)
    return table.filter(pa.array(keep)) if keep is not None else table


class Aggregator:
    def __init__(self, study_dir: str, shard: str = "0", compact_every: int = COMPACT_EVERY):
        self._store = StudyStore(Path(study_dir))
        self._shard = shard
        self._writer = SegmentWriter(self._store.events_dir / shard, compact_every)
        self._mark: dict[WorkerKey, int] = {}  # every seq <= mark has arrived
        self._ahead: dict[WorkerKey, set[int]] = defaultdict(set)  # arrived past a hole
        self._lost: dict[WorkerKey, int] = defaultdict(int)
        self._duplicates: dict[WorkerKey, int] = defaultdict(int)
        self._attempts: dict[tuple[str, int], int] = defaultdict(int)
        self._live: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
        self._nodes: dict[str, set[str]] = defaultdict(set)  # run_id -> node ids its workers ran on
        self._live_attempt: dict[str, int] = {}  # run_id -> the attempt the live view follows
        self._epochs: dict[str, dict[int, dict[int, tuple[float, float]]]] = defaultdict(dict)  # finished epochs
        self._seen: dict[WorkerKey, int] = {}  # the highest seq the live view has taken in: each event once
        self._lags: deque[float] = deque(maxlen=100_000)  # sample time -> on disk, seconds (bounded)
        self.events_written = 0
        self.segments_set_aside: list[str] = []
        self._disk_full: OSError | None = None
        self._rebuild()

    def _rebuild(self, live: bool = True) -> None:
        """Recover sequence numbers, attempt counts, nodes and the live view from the store (a resumed
        study, or a restart after a kill), so resent events are recognised and a re-run worker gets a
        new attempt number. A segment that cannot be read is set aside: its events count as not
        received, and the senders' resends fill them in. `live=False` (after a failed write) keeps the
        live view: what the run has done does not go back because the disk did not take it."""
        self.segments_set_aside += self._writer.repair()
        views = (self._live, self._nodes, self._live_attempt, self._epochs, self._seen) if live else ()
        for state in (self._mark, self._ahead, self._lost, *views):
            state.clear()
        own = read_segments(self._store.root, REBUILD_COLUMNS, [self._writer.directory]).table
        frames = [own.to_pandas().reindex(columns=REBUILD_COLUMNS)]
        if self._shard == "0":  # a study begun by a scaleprof that stored JSON lines (the first shard reads it)
            frames.append(pd.DataFrame(read_jsonl(self._store.events_path)).reindex(columns=REBUILD_COLUMNS))
        events = pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)
        ids = events[KEY + ["seq"]].apply(pd.to_numeric, errors="coerce") if not events.empty else events
        events = events[events["run_id"].notna() & ids[["attempt", "rank", "seq"]].notna().all(axis=1)]
        self.events_written = len(events)
        for (run_id, attempt, rank), seqs in events.groupby(KEY)["seq"]:
            key = (str(run_id), int(attempt), int(rank))
            arrived = np.unique(seqs.to_numpy(dtype=np.int64))
            first_hole = np.flatnonzero(arrived != np.arange(len(arrived)))
            in_order = int(first_hole[0]) if first_hole.size else len(arrived)
            self._mark[key] = in_order - 1
            if in_order < len(arrived):
                self._ahead[key] = set(arrived[in_order:].tolist())
        self._attempts.clear()
        attempts = read_segments(self._store.root, KEY).table.to_pandas().reindex(columns=KEY)  # every shard's
        for frame in (attempts, events[KEY]):
            for (run_id, rank), attempt in frame.dropna().groupby(["run_id", "rank"])["attempt"].max().items():
                previous = self._attempts[(str(run_id), int(rank))]
                self._attempts[(str(run_id), int(rank))] = max(previous, int(attempt) + 1)
        self._duplicates.clear()
        if not live:
            return
        # The live view and nodes too: the runner asks about them after a failure.
        for row in events.astype(object).where(events.notna(), None).to_dict("records"):
            key = (str(row["run_id"]), int(row["attempt"]), int(row["rank"]))
            self._observe(*key, row["node_id"], row["kind"], row)
            self._seen[key] = max(self._seen.get(key, -1), int(row["seq"]))

    def _accept(self, key: WorkerKey, seq: int) -> bool:
        """True the first time a sequence number arrives, in any order; False for a duplicate."""
        mark = self._mark.get(key, -1)
        if seq == mark + 1 and not self._ahead.get(key):  # in order, the usual case: no set work
            self._mark[key] = seq
            return True
        ahead = self._ahead[key]
        if seq <= mark or seq in ahead:
            self._duplicates[key] += 1
            return False
        ahead.add(seq)
        if len(ahead) > MAX_AHEAD:  # the missing ones are not coming: count them lost, move on
            low = min(ahead)
            self._lost[key] += low - mark - 1
            mark = low - 1
        while mark + 1 in ahead:
            ahead.remove(mark + 1)
            mark += 1
        self._mark[key] = mark
        return True

    def _gaps(self) -> int:
        """Sequence numbers never received: declared lost, plus holes below the highest received."""
        holes = sum(max(a) - self._mark.get(k, -1) - len(a) for k, a in self._ahead.items() if a)
        return sum(self._lost.values()) + holes

    def register_worker(self, run_id: str, rank: int) -> int:
        """The attempt number of a worker that is (re)starting: 0 the first time."""
        attempt = self._attempts[(run_id, rank)]
        self._attempts[(run_id, rank)] += 1
        return attempt

    def attempts(self, run_id: str) -> int:
        """How many times the run's workers have started: 1 + restarts (0 when none has)."""
        return max((n for (run, _), n in self._attempts.items() if run == run_id), default=0)

    def ingest(self, events: Batch | list[dict[str, Any]]) -> int:
        """Store a batch (or stored event dicts of any workers) as one segment; the number of events
        new to the store. An OSError leaves the store as it was before the call: the sender resends."""
        return self.commit(self.accept(events))

    def accept(self, events: Batch | list[dict[str, Any]]) -> list[pa.Table]:
        """Check sequence numbers and update the live view; the new events as tables, to be committed.
        After the disk filled, a batch that would put an event past one not yet on disk is refused
        (raises the disk's error): a small later batch could fit where a larger earlier one did not."""
        batches = [events] if isinstance(events, dict) else batches_of(events)
        if self._disk_full is not None and any(self._would_leave_hole(b) for b in batches):
            raise self._disk_full
        tables = []
        for batch in batches:
            ids, seqs = batch["ids"], batch["columns"]["seq"]
            key = (ids["run_id"], int(ids["attempt"]), int(ids["rank"]))
            mark = self._mark.get(key, -1)
            keep: list[bool] | None = None
            if seqs and not self._ahead.get(key) and seqs == list(range(mark + 1, mark + 1 + len(seqs))):
                self._mark[key] = mark + len(seqs)  # in order, the usual case: no per-event work
            else:
                keep = [self._accept(key, seq) for seq in seqs]
                if not any(keep):
                    continue
            self._observe_batch(batch, keep)
            tables.append(batch_table(batch, keep))
        return tables

    def commit(self, tables: list[pa.Table]) -> int:
        """Write accepted tables as one segment. On failure the disk is the truth: the state is rebuilt
        from it (what was accepted but not written is forgotten, so its resend is taken) and the error raised."""
        try:
            table = self.write(tables)
        except OSError as exc:
            self.recover(exc)
            raise
        return self.committed(table)

    def write(self, tables: list[pa.Table]) -> pa.Table | None:
        """The file work of a commit, and nothing else (the actor runs it off its event loop)."""
        if not tables:
            return None
        table = concat(tables)
        self._writer.write(table)
        return table

    def committed(self, table: pa.Table | None) -> int:
        self._disk_full = None  # the disk took a write again, with no hole left behind
        if table is None:
            return 0
        self.events_written += table.num_rows
        self._lags.extend((time.time() - table["time"].to_numpy(zero_copy_only=False)).tolist())
        return int(table.num_rows)

    def recover(self, exc: OSError) -> None:
        self._rebuild(live=False)
        if write_failure(exc) is not None:  # full or read-only: until a write lands again
            self._disk_full = exc

    def compact(self) -> None:
        """Merge the small segments now (the study is ending)."""
        self._writer.compact()

    def _would_leave_hole(self, batch: Batch) -> bool:
        """Whether writing this batch would put an event past a sequence number not yet on disk."""
        ids = batch["ids"]
        following = self._mark.get((ids["run_id"], int(ids["attempt"]), int(ids["rank"])), -1) + 1
        for seq in sorted(batch["columns"]["seq"]):
            if seq > following:
                return True
            following = max(following, seq + 1)
        return False

    def store_predictions(self, run_id: str, predictions: dict[str, Any]) -> int:
        """Write one run's held-out predictions (a later attempt replaces an earlier one)."""
        return self._store.write_predictions(run_id, predictions)

    def store_trace(self, run_id: str, name: str, data: bytes) -> str:
        """Write one rank's torch.profiler trace into the study (see StudyStore.write_trace)."""
        return self._store.write_trace(run_id, name, data)

    def nodes(self, run_id: str) -> list[str]:
        """The Ray node ids the run's workers reported from (any attempt)."""
        return sorted(self._nodes.get(run_id, ()))

    def _observe_batch(self, batch: Batch, keep: list[bool] | None) -> None:
        ids, columns = batch["ids"], batch["columns"]
        kinds, times, seqs = columns["kind"], columns["time"], columns["seq"]
        fields = {k: columns[k] for k in LIVE_FIELDS if k in columns}
        epochs, samples, step_s = columns.get("epoch"), columns.get("samples"), columns.get("step_s")
        run_id, attempt, rank = ids["run_id"], int(ids["attempt"]), int(ids["rank"])
        key = (run_id, attempt, rank)
        seen = self._seen.get(key, -1)  # a resend after a failed write was taken in the first time
        if seqs:
            self._seen[key] = max(seen, max(seqs))
        new = None  # every event is new: the usual case, no per-event check
        if keep is not None or (seqs and min(seqs) <= seen):
            new = [(keep is None or keep[i]) and seqs[i] > seen for i in range(len(seqs))]
        i, n = 0, len(kinds)
        while i < n:
            if new is not None and not new[i]:
                i += 1
                continue
            row = {k: v[i] for k, v in fields.items()}
            row["time"] = times[i]
            self._observe(run_id, attempt, rank, ids.get("node_id"), kinds[i], row)
            if kinds[i] != EventKind.STEP or epochs is None or samples is None or step_s is None:
                i += 1
                continue
            # The steps that follow in the same epoch only add up: taken together (most of a batch).
            j = i + 1
            while j < n and kinds[j] == EventKind.STEP and epochs[j] == epochs[i] and (new is None or new[j]):
                j += 1
            live = self._live.get(run_id, {}).get(rank)
            if j > i + 1 and live is not None and self._live_attempt.get(run_id) == attempt:
                live["samples"] += sum(samples[i + 1 : j])
                live["last_time"] = times[j - 1]
                live["step_s"] = float(step_s[j - 1])
            i = j

    def _observe(self, run_id: str, attempt: int, rank: int, node_id: Any, kind: str, event: dict[str, Any]) -> None:
        if kind == EventKind.LIFECYCLE and event.get("event") == Lifecycle.WORKER_START:
            self._nodes[run_id].add(node_id)
        if kind == EventKind.SYSTEM:  # the latest utilisation of each rank, for the live view
            sample = self._live.get(run_id, {}).get(rank)
            if sample is not None and attempt == self._live_attempt.get(run_id):
                for key in ("cpu_pct", "gpu_util_pct"):
                    if event.get(key) is not None:
                        sample[key] = float(event[key])
            return
        if kind not in (EventKind.STEP, EventKind.EPOCH):
            return
        live_attempt = self._live_attempt.get(run_id, -1)
        if attempt < live_attempt:
            return  # a late event from an attempt that was restarted: not live any more
        if attempt > live_attempt:  # a restart: the live view starts over
            self._live_attempt[run_id] = attempt
            self._live.pop(run_id, None)
            self._epochs.pop(run_id, None)
        live = self._live[run_id].setdefault(rank, {"epoch": 0, "samples": 0.0})
        if kind == EventKind.STEP:
            if event["epoch"] != live["epoch"] or "epoch_start" not in live:
                live.update(epoch=event["epoch"], samples=0.0, epoch_start=event["time"] - event["step_s"])
            live["samples"] += event["samples"]
            live["last_time"] = event["time"]
            live["step_s"] = float(event["step_s"])
        else:
            live["epochs_done"] = event["epoch"] + 1
            finished = self._epochs[run_id]
            finished.setdefault(event["epoch"], {})[rank] = (event["samples"], event["epoch_time_s"])
            for old in [e for e in finished if e < event["epoch"] - 4]:  # keep a few recent epochs only
                del finished[old]

    def live(self, run_id: str) -> tuple[int, dict[int, dict[str, float]], dict[int, dict[int, tuple[float, float]]]]:
        """The run's live view as this aggregator holds it: the attempt it follows, each rank's latest
        step and samples, and the recent finished epochs by rank (shards' views merge: `progress_of`)."""
        return self._live_attempt.get(run_id, -1), dict(self._live.get(run_id, {})), dict(self._epochs.get(run_id, {}))

    def progress(self, run_id: str) -> dict[str, Any]:
        return progress_of([self.live(run_id)])

    def stats(self, lags: bool = False) -> dict[str, Any]:
        """Counts and sample->disk lag percentiles; `lags=True` adds the lags themselves (to merge shards)."""
        return stats_of([self._stats()], [np.asarray(self._lags)]) | ({"lags": list(self._lags)} if lags else {})

    def _stats(self) -> dict[str, Any]:
        return {
            "events_written": self.events_written,
            "workers": len(self._mark),
            "gaps": self._gaps(),
            "duplicates": sum(self._duplicates.values()),
        }


def stats_of(counts: list[dict[str, Any]], lags: list[np.ndarray]) -> dict[str, Any]:
    """Several aggregators' counts summed and their lags pooled."""
    pooled = np.concatenate([np.asarray(x, dtype=float) for x in lags]) if lags else np.asarray([])
    pooled = pooled if pooled.size else np.asarray([np.nan])
    merged = {k: sum(int(c[k]) for c in counts) for k in ("events_written", "workers", "gaps", "duplicates")}
    return merged | {"lag_p50_s": float(np.percentile(pooled, 50)), "lag_p99_s": float(np.percentile(pooled, 99))}


def progress_of(
    views: list[tuple[int, dict[int, dict[str, float]], dict[int, dict[int, tuple[float, float]]]]],
) -> dict[str, Any]:
    """Current epoch and live global throughput of one run from its aggregators' live views (only the
    latest attempt's): over the latest epoch every rank has finished (all ranks' samples over the
    slowest rank's time, as the report defines it), or over the first epoch so far while none has finished."""
    attempt = max((a for a, _, _ in views), default=-1)
    ranks: dict[int, dict[str, float]] = {}
    epochs: dict[int, dict[int, tuple[float, float]]] = {}
    for live_attempt, live, finished in views:
        if live_attempt == attempt:
            ranks.update(live)
            for epoch, by_rank in finished.items():
                epochs.setdefault(epoch, {}).update(by_rank)
    if not ranks:
        return {"ranks": 0}
    epoch = max(int(r["epoch"]) for r in ranks.values())
    throughput = None
    complete = [e for e, by_rank in epochs.items() if len(by_rank) == len(ranks)]
    if complete:
        done = epochs[max(complete)].values()
        throughput = sum(n for n, _ in done) / max(max(t for _, t in done), 1e-9)
    else:
        current = [r for r in ranks.values() if r["epoch"] == epoch and "last_time" in r]
        elapsed = max(r["last_time"] for r in current) - min(r["epoch_start"] for r in current) if current else 0
        if elapsed > 0:
            throughput = sum(r["samples"] for r in current) / elapsed
    latest = lambda key: [r[key] for r in ranks.values() if key in r]
    steps, cpu, gpu = latest("step_s"), latest("cpu_pct"), latest("gpu_util_pct")
    return {
        "ranks": len(ranks),
        "epoch": epoch,
        "epochs_done": min(int(r.get("epochs_done", 0)) for r in ranks.values()),
        "throughput": throughput,
        "step_s": max(steps) if steps else None,  # the slowest rank's latest step: the one the others wait for
        "cpu_pct": float(np.mean(cpu)) if cpu else None,  # mean over ranks of their latest sample
        "gpu_util_pct": float(np.mean(gpu)) if gpu else None,
    }


class AggregatorActor:
    """The aggregator as a Ray actor (asyncio): calls are accepted as they arrive and committed together.

    While one segment is being written (in a thread, off the event loop), the calls that arrive wait
    and become the next segment: at 50,000 events/s from hundreds of senders the disk sees a few
    writes a second, not hundreds. A call returns when its events are on disk; if the write fails,
    every call waiting on it fails and its sender resends."""

    def __init__(self, study_dir: str, shard: str = "0", linger_s: float = LINGER_S):
        self.core = Aggregator(study_dir, shard)
        self._linger_s = linger_s
        self._group: list[tuple[list[pa.Table], asyncio.Future[int]]] = []
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._writing: asyncio.Lock | None = None  # one write at a time: segments are numbered in order

    async def ingest(self, batch: Batch | list[dict[str, Any]]) -> int:
        tables = self.core.accept(batch)
        if not tables:
            return 0
        if self._flusher is None or self._flusher.done():  # made here: they need the actor's running loop
            self._wake, self._writing = asyncio.Event(), asyncio.Lock()
            self._flusher = asyncio.create_task(self._flush_forever())
        assert self._wake is not None
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._group.append((tables, done))
        self._wake.set()
        return await done

    async def ingest_many(self, batches: list[Batch]) -> list[int]:
        """Several workers' batches in one call (from a node relay): each committed as if sent alone."""
        return list(await asyncio.gather(*(self.ingest(batch) for batch in batches)))

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._linger_s)
            await self._flush()

    async def _flush(self) -> None:
        assert self._writing is not None
        async with self._writing:
            await self._write_group()

    async def _write_group(self) -> None:
        group, self._group = self._group, []
        if not group:
            return
        try:
            table = await asyncio.to_thread(self.core.write, [t for tables, _ in group for t in tables])
        except OSError as exc:
            self.core.recover(exc)  # the disk is the truth: what waits unwritten is forgotten and resent
            stranded, self._group = self._group, []
            for _, done in group + stranded:
                done.set_exception(exc)
            return
        self.core.committed(table)
        for tables, done in group:
            done.set_result(sum(t.num_rows for t in tables))

    async def close(self) -> dict[str, Any]:
        """Write what waits, merge the small segments; the final stats."""
        while self._group:
            await self._flush()
        if self._writing is None:
            await asyncio.to_thread(self.core.compact)
        else:
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
        self._forward_s = forward_s
        self._pending: list[tuple[Batch, asyncio.Future[int]]] = []
        self._wake: asyncio.Event | None = None
        self._forwarder: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()  # forwards in flight (the loop keeps only weak references)
        self.forwarded_calls = 0

    async def ingest(self, batch: Batch) -> int:
        if self._forwarder is None or self._forwarder.done():
            self._wake = asyncio.Event()
            self._forwarder = asyncio.create_task(self._forward_forever())
        assert self._wake is not None
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, done))
        self._wake.set()
        return await done

    async def _forward_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._forward_s)
            group, self._pending = self._pending, []
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
            options: dict[str, Any] = {"name": relay_name(Path(study_dir).name, node_id), "num_cpus": 0,
                                       "max_restarts": MAX_RESTARTS, "max_task_retries": -1}  # fmt: skip
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
