"""What each worker measures and how it leaves the worker.

`EventSink` stamps events with ids and a gap-free per-worker sequence number and ships them to the
aggregator in batches from a background thread, so the training step only appends to a deque.
`SystemSampler` and `GpuSampler` are trackers with a start/sample/stop life cycle; `Monitor` runs
them on a thread at the configured interval.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psutil

from scaleprof.errors import write_failure
from scaleprof.records import Event, GpuUnavailable, SystemEvent, event_batch, stamped

Batch = dict[str, Any]  # records.event_batch: one worker's ids and its events as columns
SendBatch = Callable[[Batch], Any]  # returns a Ray ObjectRef (or None when sent synchronously)
log = logging.getLogger(__name__)


# How long a closing sink keeps resending to an aggregator whose disk is full or read-only.
DISK_GRACE_S = 3.0


class EventSink:
    """Buffers one worker's events and sends them in batches (as columns, `records.event_batch`);
    never blocks the caller.

    A batch stays in the outbox until the aggregator has acknowledged it: a failed call (the
    aggregator died and is restarting) is resent, and while calls are failing the outbox is capped
    at `max_buffered` events, the oldest dropped first (they then show as gaps, never silently).
    """

    def __init__(
        self,
        ids: dict[str, Any],
        send: SendBatch,
        flush_interval_s: float = 1.0,
        max_in_flight: int = 8,
        max_buffered: int = 200_000,
    ):
        self._ids = dict(ids)
        self._send = send
        self._seq = itertools.count()  # next() is atomic under the GIL: no lock on the hot path
        self._buffer: deque[dict[str, Any]] = deque()
        self._outbox: deque[Batch] = deque()  # batches not yet acknowledged or in flight
        self._in_flight: deque[tuple[Any, Batch]] = deque()
        self._max_in_flight = max_in_flight
        self._max_buffered = max_buffered
        self._interval = flush_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scaleprof-sink", daemon=True)
        self.sent = 0  # events the aggregator acknowledged
        self.resent = 0  # events sent again after a failed call
        self.dropped = 0  # events given up on (outbox over its cap, or still unsent at close)
        self._failing = False
        self._cannot_write: str | None = None  # the outage is the study's disk (errors.write_failure), not a restart

    def start(self) -> EventSink:
        self._thread.start()
        return self

    def emit(self, event: Event) -> None:
        self._buffer.append(stamped(next(self._seq), time.time(), event))

    def _drain(self) -> Batch | None:
        rows = []
        while self._buffer:
            rows.append(self._buffer.popleft())
        return event_batch(self._ids, rows) if rows else None

    def flush(self, wait_s: float | None = None) -> None:
        """Queue what was emitted, settle finished calls, send while under the in-flight limit."""
        batch = self._drain()
        if batch is not None:
            self._outbox.append(batch)
        self._settle(wait_s if wait_s is not None else self._interval)
        while self._outbox and len(self._in_flight) < self._max_in_flight:
            batch = self._outbox.popleft()
            try:
                ref = self._send(batch)
            except Exception as exc:  # the call could not even be made: keep the batch for later
                self._failed(batch, exc)
                break
            if ref is None:
                self._delivered(batch)
            else:
                self._in_flight.append((ref, batch))
        self._cap()

    def _settle(self, wait_s: float) -> None:
        """Acknowledge finished calls; requeue failed ones. When at the in-flight limit, wait up to
        wait_s for the oldest (back-pressure on this thread, never on the training step). One Ray
        call checks them all: each call to Ray costs the worker CPU."""
        if not self._in_flight:
            return
        refs = [ref for ref, _ in self._in_flight]
        done = _finished(refs, wait_s if len(refs) >= self._max_in_flight else 0.0)
        if not done:
            return
        pending: deque[tuple[Any, Batch]] = deque()
        failed: list[tuple[Batch, Exception]] = []
        for ref, batch in self._in_flight:
            if ref not in done:
                pending.append((ref, batch))
                continue
            try:
                _result(ref)
                self._delivered(batch)
            except Exception as exc:
                failed.append((batch, exc))
        self._in_flight = pending
        for batch, error in reversed(failed):  # the oldest ends up first in the outbox
            self._failed(batch, error)

    def _failed(self, batch: Batch, exc: Exception) -> None:
        self._outbox.appendleft(batch)  # oldest first: resent before newer batches
        self.resent += _size(batch)
        self._cannot_write = write_failure(exc)
        if not self._failing:  # once per outage, not once per batch
            log.warning("scaleprof: sending events to the aggregator failed (%s); resending", exc)
        self._failing = True

    def _delivered(self, batch: Batch) -> None:
        self.sent += _size(batch)
        if self._failing:
            log.warning("scaleprof: the aggregator answers again; %d event(s) were resent", self.resent)
        self._failing = False
        self._cannot_write = None

    def _cap(self) -> None:
        buffered = sum(_size(b) for b in self._outbox)
        while self._outbox and buffered > self._max_buffered:
            oldest = self._outbox.popleft()
            buffered -= _size(oldest)
            self.dropped += _size(oldest)

    def _loop(self) -> None:
        name_os_thread("scaleprof-sink")
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self, timeout_s: float = 60.0, disk_s: float = DISK_GRACE_S) -> None:
        """Stop the thread, send what is left and wait until the aggregator has it all (or give up
        after timeout_s, counting what was not delivered as dropped). An aggregator that restarts comes
        back within seconds; a study's disk that is full or read-only does not: then give up after disk_s
        (the run ends without those events and the study stops, telling the user to free space)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            self.flush(wait_s=min(1.0, max(0.0, deadline - time.monotonic())))
            now = time.monotonic()
            if not (self._buffer or self._outbox or self._in_flight) or now >= deadline:
                break
            if self._cannot_write and now >= start + disk_s:
                break
            if self._in_flight:  # wait for the oldest call (the loop re-checks the deadline)
                _finished([self._in_flight[0][0]], min(1.0, max(0.01, deadline - time.monotonic())))
            else:
                time.sleep(0.2)  # only failed batches are left: give the aggregator time to come back
        undelivered = sum(_size(b) for b in self._outbox) + sum(_size(b) for _, b in self._in_flight)
        if undelivered:
            self.dropped += undelivered
            log.warning("scaleprof: %d event(s) could not be delivered to the aggregator", undelivered)


def name_os_thread(name: str) -> None:
    """Give the calling thread its name in the OS too (Linux keeps 15 bytes), so `top -H`, py-spy and the
    footprint benchmark can tell scaleprof's threads from the training's."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass  # not Linux: the name stays Python's only


def _size(batch: Batch) -> int:
    return len(batch["columns"]["seq"])


def _finished(refs: list[Any], wait_s: float) -> set[Any]:
    """The calls among `refs` that have finished (after waiting up to wait_s for the first, when > 0)."""
    import ray

    if wait_s > 0:
        ray.wait(refs[:1], timeout=wait_s)
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    return set(ready)


def _result(ref: Any) -> Any:
    import ray

    return ray.get(ref)


class _CpuOf:
    """The summed CPU% of a changing set of processes between calls; a process seen for the first time
    is primed (psutil's first reading is 0) and counts from the next call."""

    def __init__(self) -> None:
        self._known: dict[int, psutil.Process] = {}

    def percent(self, processes: list[psutil.Process]) -> float:
        total, alive = 0.0, {p.pid: p for p in processes}
        for pid, proc in alive.items():
            known = self._known.get(pid)
            try:
                if known is None:
                    proc.cpu_percent(None)
                    self._known[pid] = proc
                else:
                    total += known.cpu_percent(None)
            except psutil.Error:
                pass  # it ended between listing and reading
        for pid in set(self._known) - set(alive):
            del self._known[pid]
        return total


class SystemSampler:
    """Process CPU% (100 = one core busy) and resident memory of this worker process."""

    def __init__(self) -> None:
        self._proc = psutil.Process(os.getpid())

    def start(self) -> None:
        # psutil's first cpu_percent() has no previous reading and returns 0.0: prime it.
        self._proc.cpu_percent(None)

    def sample(self) -> dict[str, float]:
        with self._proc.oneshot():
            cpu = self._proc.cpu_percent(None)
            rss = self._proc.memory_info().rss
        return {"cpu_pct": cpu, "rss_mb": rss / 2**20}

    def stop(self) -> None:
        pass


class NodeSampler:
    """The node's busy CPU and the part of it Ray's own processes used (100 = one core), sampled by one
    worker per node, so the analysis can tell what outside Ray competed for the node.

    Ray's processes: the raylet (this worker's parent) with every process under it (all Ray workers on
    the node: this run's, its aggregator, idle ones, the agents; also other Ray jobs' workers), the
    raylet's parent (a local study's driver), and the daemons whose command line names the raylet's
    session directory (GCS, dashboard, monitors; other raylets of the cluster on the same machine, with
    their workers: a test cluster of several nodes on one machine). Refreshed every `refresh_s`."""

    def __init__(self, refresh_s: float = 10.0) -> None:
        self._cpus = psutil.cpu_count() or 1
        self._refresh_s = refresh_s
        self._listed_at = -math.inf
        self._ray: list[psutil.Process] = []
        self._cpu = _CpuOf()
        self._read_at = -math.inf

    def start(self) -> None:
        psutil.cpu_percent(None)
        self._ray_processes()
        self._cpu.percent(self._ray)  # primes each process's reading
        self._read_at = time.monotonic()

    def _ray_processes(self) -> list[psutil.Process]:
        if time.monotonic() - self._listed_at < self._refresh_s:
            return self._ray
        self._listed_at = time.monotonic()
        try:
            raylet = psutil.Process(os.getpid()).parent()
            if raylet is None:
                return []
            found = {raylet.pid: raylet, **{p.pid: p for p in raylet.children(recursive=True)}}
            parent = raylet.parent()
            if parent is not None and parent.pid != 1:
                found[parent.pid] = parent
            session = next((a.split("/sockets/")[0] for a in raylet.cmdline() if "/sockets/" in a), None)
            if session:
                for proc in psutil.process_iter(["cmdline", "name"]):
                    if session in " ".join(proc.info["cmdline"] or ()):
                        found.setdefault(proc.pid, proc)
                        if proc.info["name"] == "raylet" and proc.pid != raylet.pid:  # nodes sharing a machine
                            found.update((p.pid, p) for p in proc.children(recursive=True))
        except psutil.Error:
            return self._ray
        self._ray = list(found.values())
        return self._ray

    def sample(self) -> dict[str, float]:
        if time.monotonic() - self._read_at < 0.04:  # too soon after the last reading (the stop's last sample):
            return {}  # psutil's node figure over a few milliseconds is 0 or noise
        self._read_at = time.monotonic()
        return {
            "node_cpu_pct": psutil.cpu_percent(None) * self._cpus,
            "ray_cpu_pct": self._cpu.percent(self._ray_processes()),
        }

    def stop(self) -> None:
        pass


class GpuSampler:
    """NVML utilisation, memory and power of the GPU this worker's torch device runs on.

    NVML numbers devices by its own index and ignores CUDA_VISIBLE_DEVICES, so the device is found
    by UUID (from torch's view of the device), never by index.
    """

    def __init__(self, torch_device_index: int | None):
        self._index = torch_device_index
        self._handle: Any = None
        self.uuid: str | None = None
        self.name: str | None = None
        self.unavailable_reason: str | None = None
        self._gpm: list[Any] | None = None

    def start(self) -> None:
        if self._index is None:
            self.unavailable_reason = "no GPU assigned to this worker"
            return
        try:
            import pynvml
            import torch

            props = torch.cuda.get_device_properties(self._index)
            self.uuid = f"GPU-{props.uuid}"
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByUUID(self.uuid.encode())
            self.name = pynvml.nvmlDeviceGetName(self._handle)
            if isinstance(self.name, bytes):
                self.name = self.name.decode()
            self._gpm = _gpm_samples(pynvml, self._handle)
        except Exception as exc:  # NVML missing or broken: record why, never crash the run
            self._handle = None
            self.unavailable_reason = f"NVML unavailable: {type(exc).__name__}: {exc}"

    def sample(self) -> dict[str, float]:
        if self._handle is None:
            return {}
        import pynvml

        try:
            util = pynvml.nvmlDeviceGetUtilizationRates(self._handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
            out = {"gpu_util_pct": float(util.gpu), "gpu_mem_used_mb": mem.used / 2**20}
            out.update(self._sm_activity(pynvml))
            try:  # every compute process on the device (the run's own are subtracted in the analysis)
                out["gpu_processes"] = float(len(pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle)))
            except pynvml.NVMLError:
                pass
            try:
                out["gpu_power_w"] = pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            except pynvml.NVMLError:
                pass  # power readings are not supported on every board
            try:  # the board's cumulative energy (mJ since the driver loaded; Volta and newer): exact between reads
                out["gpu_energy_mj"] = float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            except pynvml.NVMLError:
                pass
            return out
        except pynvml.NVMLError as exc:
            self.unavailable_reason = f"NVML read failed: {exc}"
            return {}

    def _sm_activity(self, pynvml: Any) -> dict[str, float]:
        """SM activity over the last interval from NVML's GPU performance monitoring (Hopper and newer):
        the share of SM cycles busy, which a rank waiting in NCCL does not fill, unlike `utilization.gpu`
        ("a kernel was running"). Nothing where GPM is not supported."""
        if not self._gpm:
            return {}
        try:
            pynvml.nvmlGpmSampleGet(self._handle, self._gpm[1])
            query = pynvml.c_nvmlGpmMetricsGet_t()
            query.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            query.numMetrics = 1
            query.sample1, query.sample2 = self._gpm[0], self._gpm[1]
            query.metrics[0].metricId = pynvml.NVML_GPM_METRIC_SM_UTIL
            pynvml.nvmlGpmMetricsGet(query)
            self._gpm.reverse()  # this interval's end starts the next one
            if query.metrics[0].nvmlReturn != pynvml.NVML_SUCCESS:
                return {}
            return {"gpu_sm_active_pct": float(query.metrics[0].value)}
        except (pynvml.NVMLError, AttributeError, TypeError):
            self._gpm = None  # an older driver or binding: stop asking
            return {}

    def stop(self) -> None:
        if self._handle is not None:
            import pynvml

            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


def _gpm_samples(pynvml: Any, handle: Any) -> list[Any] | None:
    """Two GPM sample buffers, the first taken now, where the GPU supports GPM; else None."""
    try:
        if not pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
            return None
        samples = [pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()]
        pynvml.nvmlGpmSampleGet(handle, samples[0])
        return samples
    except (pynvml.NVMLError, AttributeError, TypeError):
        return None


class Monitor:
    """Runs the samplers on a daemon thread every `interval_s` and emits `system` events."""

    def __init__(self, sink: EventSink, samplers: list[Any], interval_s: float):
        self._sink = sink
        self._samplers = samplers
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scaleprof-monitor", daemon=True)

    def start(self) -> Monitor:
        for s in self._samplers:
            s.start()
        # A reason known at start goes out with worker_start; one that appears later gets its own event.
        self._reasons = [getattr(s, "unavailable_reason", None) for s in self._samplers]
        self._thread.start()
        return self

    def sample_once(self) -> None:
        fields: dict[str, float] = {}
        for i, s in enumerate(self._samplers):
            fields.update(s.sample())
            reason = getattr(s, "unavailable_reason", None)
            if reason != self._reasons[i]:
                self._reasons[i] = reason
                self._sink.emit(GpuUnavailable(reason=reason))
        self._sink.emit(SystemEvent(**fields))

    def _loop(self) -> None:
        name_os_thread("scaleprof-monitor")
        while not self._stop.wait(self._interval):
            self.sample_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample_once()  # a last reading so short runs still have one
        for s in self._samplers:
            s.stop()
