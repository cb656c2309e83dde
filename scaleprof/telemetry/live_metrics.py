"""Live figures of the running study as Ray metrics, so they show where a cluster's team already looks:
the Ray dashboard's metrics view and Grafana, or any Prometheus scraping the nodes' metrics endpoint
(`ray_scaleprof_*`). Set by the driver from the aggregator's live view (the same numbers the progress
line shows), tagged with the study, run, placement and model.
"""

from __future__ import annotations

from typing import Any

TAGS = ("study_id", "run_id", "placement", "model")
GAUGES = {
    # Not the report's steady-state throughput (analysis/throughput.py): the latest whole epoch, warm-up included.
    "epoch_throughput": (
        "scaleprof_epoch_throughput_samples_per_s",
        "global training samples/s over the running run's latest epoch (all ranks' samples over the slowest rank's "
        "time; warm-up included, so not the report's steady-state throughput)",
    ),
    "step_s": ("scaleprof_step_time_s", "latest step time of the run's slowest rank (s)"),
    "cpu_pct": ("scaleprof_process_cpu_pct", "mean process CPU of the run's workers (100 = one busy core)"),
    "gpu_util_pct": ("scaleprof_gpu_util_pct", "mean GPU utilisation of the run's workers (%)"),
    "epoch": ("scaleprof_epoch", "the epoch the run is in (from 1)"),
}


# The process's gauges: Ray stops exporting a gauge once its object is gone, so they live as long as the driver
# (a run's last values stay visible to a scraper after the run, until the next run of the study replaces them).
_GAUGES: dict[str, Any] = {}


class LiveMetrics:
    """One gauge per figure; created on first use (Ray must be connected)."""

    def __init__(self, study_id: str):
        self.study_id = study_id

    def _gauge(self, key: str) -> Any:
        if key not in _GAUGES:
            from ray.util.metrics import Gauge

            name, description = GAUGES[key]
            _GAUGES[key] = Gauge(name, description=description, tag_keys=TAGS)
        return _GAUGES[key]

    def update(self, run_id: str, placement: str, model: str, progress: dict[str, Any]) -> None:
        tags = {"study_id": self.study_id, "run_id": run_id, "placement": placement, "model": model}
        values = {**progress, "epoch": progress["epoch"] + 1 if progress.get("epoch") is not None else None}
        for key in GAUGES:
            value = values.get(key)
            if value is not None:
                self._gauge(key).set(float(value), tags=tags)
