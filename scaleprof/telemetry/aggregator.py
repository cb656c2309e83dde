"""The aggregator's core: what stores every worker's events as columnar segments, as a plain class (no Ray,
no event loop) so its logic is testable alone.

It checks per-worker sequence numbers as batches arrive: a resent event is dropped as a duplicate,
a late one (resent after a restart, out of order) still fills its hole, and only a hole that is never
filled counts as a gap. It keeps a small live view of each run for the progress display. `ingest`
writes one segment per call; `accept` + `write` + `committed` are the same in steps, for the actor's
group commit (telemetry/actors.py). Killed, the actor comes back and this core rebuilds its state from
the store. A study may run several aggregators (shards), each writing its own segment directory; the
store's reader merges them. Ray's side: telemetry/handle.py.

    telemetry/aggregator.py   this core, and the pure merges of several aggregators' stats and live views
    telemetry/gathering.py    the batching the actor and the node relay share
    telemetry/actors.py       AggregatorActor (group commit) and NodeRelay (one call per node per interval)
    telemetry/handle.py       the study's actors as Ray starts, names, asks and closes them
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
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
COMPACT_EVERY = 64  # small segments merged into one file
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
        "epoch_throughput": throughput,  # the latest whole epoch, warm-up included: not the steady-state figure
        "step_s": max(steps) if steps else None,  # the slowest rank's latest step: the one the others wait for
        "cpu_pct": float(np.mean(cpu)) if cpu else None,  # mean over ranks of their latest sample
        "gpu_util_pct": float(np.mean(gpu)) if gpu else None,
    }
