"""Where a study's CPU goes: every process on the machine sampled while a scaleprof study trains, its CPU time
attributed to a role (training workers, their telemetry threads, the aggregator, node relays, Ray Train's
controller, the driver, Ray's daemons, the rest), over the run's steady window (epoch 2 to the last epoch's end).

Used by `bench.py footprint`; alone:

    .venv/bin/python benchmarks/footprint.py --model torchvision:resnet18 --workers 2 --epochs 3

FOOTPRINT_DETAIL=1 names each process counted under "other Ray actors" or "outside Ray".
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

# A process's role from its name (Ray renames its worker processes "ray::<Class>") or command line.
ROLES = (
    ("ray::RayTrainWorker", "training worker"),
    ("ray::AggregatorActor", "aggregator"),
    ("ray::NodeRelay", "node relay"),
    ("ray::TrainController", "Ray Train controller"),
    ("ray::IDLE", "idle Ray workers"),
    ("ray::DashboardAgent", "Ray agents"),
    ("ray::RuntimeEnvAgent", "Ray agents"),
    ("ray::", "other Ray actors"),
    ("raylet", "raylet"),
    ("gcs_server", "GCS"),
    ("dashboard.py", "dashboard"),
    ("log_monitor.py", "log monitor"),
    ("autoscaler/_private/monitor.py", "autoscaler monitor"),
)
# What is scaleprof's own (the rest is Ray's, the training's, or outside Ray).
OWN_ROLES = ("aggregator", "node relay", "event sink thread", "monitor thread")
# Threads of a training worker, by their OS names (scaleprof names its own: telemetry.monitor.name_os_thread).
THREAD_ROLES = (
    ("scaleprof-sink", "event sink thread"),
    ("scaleprof-monit", "monitor thread"),
)


def role_of(proc: psutil.Process, driver: int) -> str:
    if proc.pid == driver:
        return "driver"
    name = proc.name()
    if name.startswith("ray::") or name in ("raylet", "gcs_server"):
        return next((role for key, role in ROLES if name.startswith(key)), name)
    cmd = " ".join(proc.cmdline())
    return next((role for key, role in ROLES if key in cmd), "outside Ray")


# One reading: pid -> (its role now, its cumulative CPU-s less its named threads', those threads' by role)
Reading = dict[int, tuple[str, float, dict[str, float]]]


class CpuLedger:
    """Every `every_s`, the cumulative CPU time of every process (and of each training worker's named threads).
    A process's CPU in a window counts under its role at the window's end (a Ray worker is "IDLE" before it
    becomes an actor)."""

    def __init__(self, every_s: float = 0.5):
        self._every = every_s
        self._stop = threading.Event()
        self.samples: list[tuple[float, Reading]] = []
        self._driver = os.getpid()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="footprint-ledger")

    def _read(self) -> Reading:
        reading: Reading = {}
        for proc in psutil.process_iter():
            try:
                role = role_of(proc, self._driver)
                times = proc.cpu_times()
                cpu = times.user + times.system
                threads: dict[str, float] = {}
                if role == "training worker":
                    for thread in proc.threads():
                        try:
                            comm = Path(f"/proc/{proc.pid}/task/{thread.id}/comm").read_text().strip()
                        except OSError:
                            continue
                        name = next((r for key, r in THREAD_ROLES if comm.startswith(key)), None)
                        if name:
                            threads[name] = threads.get(name, 0.0) + thread.user_time + thread.system_time
                    cpu -= sum(threads.values())
                if role in ("other Ray actors", "outside Ray") and os.environ.get("FOOTPRINT_DETAIL"):
                    role = f"{role}: {proc.name()} {' '.join(proc.cmdline())[:60]}"
                reading[proc.pid] = (role, cpu, threads)
            except psutil.Error:
                continue
        return reading

    def _loop(self) -> None:
        while not self._stop.is_set():
            reading = self._read()
            # The ledger runs in the driver's process: its own CPU is taken out of the driver's.
            reading[-1] = ("ledger (this benchmark)", time.thread_time(), {})
            self.samples.append((time.time(), reading))
            self._stop.wait(self._every)

    def start(self) -> CpuLedger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> dict[str, float]:
        """Each role's CPU-s per wall second (1.0 = one core busy) between two wall times."""
        inside = [(t, s) for t, s in self.samples if start <= t <= end]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        totals: dict[str, float] = defaultdict(float)
        for pid, (role, cpu, threads) in last.items():
            _, cpu0, threads0 = first.get(pid, (role, 0.0, {}))  # started inside the window: counts from 0
            totals[role] += cpu - cpu0
            for name, value in threads.items():
                totals[name] += value - threads0.get(name, 0.0)
        if "driver" in totals:
            totals["driver"] -= totals.get("ledger (this benchmark)", 0.0)
        return {role: value / (t1 - t0) for role, value in sorted(totals.items())}


def steady_window(study_dir: Path) -> tuple[float, float]:
    """From the end of epoch 1 (warm-up) to the end of the last epoch, over every rank (wall clock)."""
    from scaleprof.telemetry.store import StudyStore

    events = StudyStore(study_dir).events()
    epochs = events[events["kind"] == "epoch"]
    first = epochs[epochs["epoch"] == epochs["epoch"].min()]["time"].max()
    return float(first), float(epochs["time"].max())


def measure(experiment: Any, out: Path) -> dict[str, Any]:
    """One study under the ledger: its throughput and each role's CPU share over its steady window."""
    from scaleprof.execution.runner import run_study

    ledger = CpuLedger().start()
    try:
        result = run_study(experiment, out)
    finally:
        ledger.stop()
    start, end = steady_window(result.study_dir)
    return {"study_dir": str(result.study_dir), "window_s": end - start, "cores": ledger.between(start, end)}


def experiment_for(model: dict[str, Any], data: dict[str, Any], workers: int, epochs: int, batch: int = 64) -> Any:
    """A one-placement study of `model` on `data` at `workers` workers, `batch` per worker, monitors on."""
    from scaleprof.config import Experiment

    return Experiment.model_validate(
        {
            "name": f"footprint-{str(model['name']).split(':')[-1]}-{workers}",
            "model": model,
            "data": data,
            "train": {"epochs": epochs, "batch_size": batch},
            "placements": [{"name": f"cpu-{workers}", "workers": workers}],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    import tempfile

    data = {"name": "synthetic-images", "shape": [3, 32, 32], "size": args.size}
    row = measure(experiment_for({"name": args.model}, data, args.workers, args.epochs), Path(tempfile.mkdtemp()))
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
