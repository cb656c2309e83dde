"""What each worker measures and how it leaves the worker.

`EventSink` stamps events with ids and a gap-free per-worker sequence number and ships them to the
aggregator in batches from a background thread, so the training step only appends to a deque.
`SystemSampler` and `GpuSampler` are trackers with a start/sample/stop life cycle; `Monitor` runs
them on a thread at the configured interval.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from typing import Any, Callable

import psutil

SendBatch = Callable[[list[dict[str, Any]]], Any]  # returns a Ray ObjectRef (or None when sent synchronously)


class EventSink:
    """Buffers one worker's events and sends them in batches; never blocks the caller."""

    def __init__(self, ids: dict[str, Any], send: SendBatch, flush_interval_s: float = 0.5, max_in_flight: int = 8):
        self._ids = dict(ids)
        self._send = send
        self._seq = itertools.count()  # next() is atomic under the GIL: no lock on the hot path
        self._buffer: deque[dict[str, Any]] = deque()
        self._in_flight: deque[Any] = deque()
        self._max_in_flight = max_in_flight
        self._interval = flush_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scaleprof-sink", daemon=True)
        self.sent = 0

    def start(self) -> EventSink:
        self._thread.start()
        return self

    def emit(self, kind: str, **fields: Any) -> None:
        self._buffer.append({**self._ids, "seq": next(self._seq), "time": time.time(), "kind": kind, **fields})

    def _drain(self) -> list[dict[str, Any]]:
        batch = []
        while self._buffer:
            batch.append(self._buffer.popleft())
        return batch

    def flush(self) -> None:
        batch = self._drain()
        if batch:
            ref = self._send(batch)
            self.sent += len(batch)
            if ref is not None:
                self._in_flight.append(ref)
        # Bound the calls in flight so a slow aggregator applies back-pressure, not unbounded memory.
        while len(self._in_flight) > self._max_in_flight:
            _wait(self._in_flight.popleft())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the thread, send what is left and wait until the aggregator has it all."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()
        deadline = time.monotonic() + timeout_s
        while self._in_flight:
            _wait(self._in_flight.popleft(), max(0.1, deadline - time.monotonic()))


def _wait(ref: Any, timeout_s: float | None = None) -> None:
    import ray

    ray.get(ref, timeout=timeout_s)


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
            try:
                out["gpu_power_w"] = pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            except pynvml.NVMLError:
                pass  # power readings are not supported on every board
            return out
        except pynvml.NVMLError as exc:
            self.unavailable_reason = f"NVML read failed: {exc}"
            return {}

    def stop(self) -> None:
        if self._handle is not None:
            import pynvml

            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


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
        self._thread.start()
        return self

    def sample_once(self) -> None:
        fields: dict[str, float] = {}
        for s in self._samplers:
            fields.update(s.sample())
        self._sink.emit("system", **fields)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample_once()  # a last reading so short runs still have one
        for s in self._samplers:
            s.stop()
