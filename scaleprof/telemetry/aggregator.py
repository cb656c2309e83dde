"""The aggregator: one Ray actor per study that appends every worker's events to the store.

It checks per-worker sequence numbers as batches arrive: a resent event is dropped as a duplicate,
a late one (resent after a restart, out of order) still fills its hole, and only a hole that is never
filled counts as a gap. It keeps a small live view of each run for the progress display.
`Aggregator` is a plain class so its logic is testable without Ray; `start_aggregator` wraps it in a
restartable actor: killed, it comes back, rebuilds its state from the store, and Ray retries the
calls that were in flight (at-least-once; the sequence check makes it exactly-once on disk).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from scaleprof.records import EventKind, Lifecycle
from scaleprof.telemetry.store import DISK_FULL_ERRNOS, StudyStore, append_jsonl, read_jsonl, repair_torn_tail

WorkerKey = tuple[str, int, int]  # run_id, attempt, rank
MAX_AHEAD = 10_000  # events held past a hole per worker before the hole is declared lost
MAX_RESTARTS = 5


class Aggregator:
    def __init__(self, study_dir: str):
        self._store = StudyStore(Path(study_dir))
        self._mark: dict[WorkerKey, int] = {}  # every seq <= mark has arrived
        self._ahead: dict[WorkerKey, set[int]] = defaultdict(set)  # arrived past a hole
        self._lost: dict[WorkerKey, int] = defaultdict(int)
        self._duplicates: dict[WorkerKey, int] = defaultdict(int)
        self._attempts: dict[tuple[str, int], int] = defaultdict(int)
        self._live: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
        self._nodes: dict[str, set[str]] = defaultdict(set)  # run_id -> node ids its workers ran on
        self._live_attempt: dict[str, int] = {}  # run_id -> the attempt the live view follows
        self._epochs: dict[str, dict[int, dict[int, tuple[float, float]]]] = defaultdict(dict)  # finished epochs
        self._lags: deque[float] = deque(maxlen=100_000)  # sample time -> on disk, seconds (bounded)
        self.events_written = 0
        self._disk_full: OSError | None = None
        self._rebuild()

    def _rebuild(self) -> None:
        """Recover sequence numbers and attempt counts from the store (a resumed study, or a restart
        after a kill), so resent events are recognised and a re-run worker gets a new attempt number."""
        repair_torn_tail(self._store.events_path)  # a kill mid-append leaves half a line: cut it
        for state in (self._mark, self._ahead, self._lost, self._live, self._nodes, self._live_attempt, self._epochs):
            state.clear()
        self.events_written = 0
        for event in read_jsonl(self._store.events_path):
            if not all(isinstance(event.get(k), int) for k in ("attempt", "rank", "seq")) or "run_id" not in event:
                continue  # a damaged line: the report's reader counts it
            self._accept((event["run_id"], event["attempt"], event["rank"]), event["seq"])
            self._observe(event)  # live view and nodes too: the runner asks about them after a failure
            attempts = self._attempts[(event["run_id"], event["rank"])]
            self._attempts[(event["run_id"], event["rank"])] = max(attempts, event["attempt"] + 1)
            self.events_written += 1
        self._duplicates.clear()

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

    def ingest(self, events: list[dict[str, Any]]) -> int:
        if self._disk_full is not None and self._would_leave_hole(events):
            # After the disk filled, a small later batch could fit where a larger earlier one did not and
            # leave a hole on disk: refused (the sender resends it) until the earlier events are written.
            raise self._disk_full
        accepted = []
        for event in events:
            if self._accept((event["run_id"], event["attempt"], event["rank"]), event["seq"]):
                accepted.append(event)
                self._observe(event)
        try:
            self.events_written += append_jsonl(self._store.events_path, accepted)
        except OSError as exc:
            # The disk is full (or gone): maybe half the batch is on disk. The disk is the truth, so
            # cut the torn line and re-read; the sender resends and nothing is marked received unwritten.
            self._rebuild()
            if exc.errno in DISK_FULL_ERRNOS:
                self._disk_full = exc
            raise
        self._disk_full = None  # the disk took a write again, with no hole left behind
        written = time.time()
        self._lags.extend(written - e["time"] for e in accepted)
        return len(accepted)

    def _would_leave_hole(self, events: list[dict[str, Any]]) -> bool:
        """Whether writing these events would put one past a sequence number not yet on disk."""
        expected: dict[WorkerKey, int] = {}
        for event in sorted(events, key=lambda e: e["seq"]):
            key = (event["run_id"], event["attempt"], event["rank"])
            following = expected.get(key, self._mark.get(key, -1) + 1)
            if event["seq"] > following:
                return True
            expected[key] = max(following, event["seq"] + 1)
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

    def _observe(self, event: dict[str, Any]) -> None:
        kind, run_id = event["kind"], event["run_id"]
        if kind == EventKind.LIFECYCLE and event.get("event") == Lifecycle.WORKER_START:
            self._nodes[run_id].add(event["node_id"])
        if kind == EventKind.SYSTEM:  # the latest utilisation of each rank, for the live view
            sample = self._live.get(run_id, {}).get(event["rank"])
            if sample is not None and event["attempt"] == self._live_attempt.get(run_id):
                for key in ("cpu_pct", "gpu_util_pct"):
                    if event.get(key) is not None:
                        sample[key] = float(event[key])
            return
        if kind not in (EventKind.STEP, EventKind.EPOCH):
            return
        attempt = self._live_attempt.get(run_id, -1)
        if event["attempt"] < attempt:
            return  # a late event from an attempt that was restarted: not live any more
        if event["attempt"] > attempt:  # a restart: the live view starts over
            self._live_attempt[run_id] = event["attempt"]
            self._live.pop(run_id, None)
            self._epochs.pop(run_id, None)
        live = self._live[run_id].setdefault(event["rank"], {"epoch": 0, "samples": 0.0})
        if kind == EventKind.STEP:
            if event["epoch"] != live["epoch"] or "epoch_start" not in live:
                live.update(epoch=event["epoch"], samples=0.0, epoch_start=event["time"] - event["step_s"])
            live["samples"] += event["samples"]
            live["last_time"] = event["time"]
            live["step_s"] = float(event["step_s"])
        else:
            live["epochs_done"] = event["epoch"] + 1
            finished = self._epochs[run_id]
            finished.setdefault(event["epoch"], {})[event["rank"]] = (event["samples"], event["epoch_time_s"])
            for old in [e for e in finished if e < event["epoch"] - 4]:  # keep a few recent epochs only
                del finished[old]

    def progress(self, run_id: str) -> dict[str, Any]:
        """Current epoch and live global throughput of one run: over the latest epoch every rank has
        finished (all ranks' samples over the slowest rank's time, as the report defines it), or over
        the first epoch so far while none has finished."""
        ranks = self._live.get(run_id, {})
        if not ranks:
            return {"ranks": 0}
        epoch = max(int(r["epoch"]) for r in ranks.values())
        throughput = None
        complete = [e for e, by_rank in self._epochs.get(run_id, {}).items() if len(by_rank) == len(ranks)]
        if complete:
            by_rank = self._epochs[run_id][max(complete)].values()
            throughput = sum(n for n, _ in by_rank) / max(max(t for _, t in by_rank), 1e-9)
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

    def stats(self) -> dict[str, Any]:
        lags = np.asarray(self._lags) if self._lags else np.asarray([np.nan])
        return {
            "events_written": self.events_written,
            "workers": len(self._mark),
            "gaps": self._gaps(),
            "duplicates": sum(self._duplicates.values()),
            "lag_p50_s": float(np.percentile(lags, 50)),
            "lag_p99_s": float(np.percentile(lags, 99)),
        }


def aggregator_name(study_id: str) -> str:
    """The actor's name: `ray list actors` shows which study it serves; tests find it by name."""
    return f"scaleprof-aggregator-{study_id}"


def start_aggregator(study_dir: str) -> Any:
    """Start the aggregator actor on this (the driver's) node, so the store is on the driver's disk.

    Killed, Ray restarts it (up to MAX_RESTARTS times) and retries the calls it had not answered;
    every call is safe to repeat (ingest drops duplicates, the rest read or overwrite)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_cls = ray.remote(Aggregator)
    node_id = ray.get_runtime_context().get_node_id()
    return actor_cls.options(
        name=aggregator_name(Path(study_dir).name),
        num_cpus=0,  # it must never take a CPU that a placement asked for
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        max_restarts=MAX_RESTARTS,
        max_task_retries=-1,  # retried until the actor is back (or out of restarts)
    ).remote(study_dir)
