"""A small hand-made study directory (test data, not a fake of any part) for analysis/report tests.

Its events are built from the typed records the training loop emits (scaleprof.records), so a field
renamed there breaks these tests instead of leaving them green."""

from pathlib import Path

import numpy as np

from scaleprof.config import Experiment
from scaleprof.records import (
    EpochEvent,
    EvalEvent,
    ModelInfo,
    ProbeEvent,
    RunKind,
    RunStatus,
    StepEvent,
    SystemEvent,
    WorkerStart,
    stored,
)
from scaleprof.telemetry.aggregator import Aggregator
from scaleprof.telemetry.store import StudyStore, append_jsonl

EXPERIMENT = {
    "name": "handmade",
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "train": {"epochs": 3},
    "cost": {"node_type": "test-node", "target_accuracy": 0.6},
    "placements": [
        {"name": "cpu-1", "workers": 1},
        {"name": "cpu-2", "workers": 2},
        {"name": "gpu-1", "workers": 1, "gpus_per_worker": 1},
    ],
}


def _worker_events(run_id, rank, epoch_time, samples_per_step=50, steps=4, epochs=3, loss=True):
    ids = {"study_id": "handmade", "run_id": run_id, "attempt": 0, "rank": rank, "node_id": "node-a"}
    seq = iter(range(10_000))
    t = 1000.0
    out = [stored(ids, next(seq), t, WorkerStart())]
    if rank == 0:
        out.append(stored(ids, next(seq), t, ModelInfo(parameters=1000, flops_per_sample=1e6, cpu_peak_flops=1e9)))
    for epoch in range(epochs):
        step_s = epoch_time / steps
        for step in range(steps):
            t += step_s
            event = StepEvent(
                epoch=epoch,
                step=step,
                samples=samples_per_step,
                data_s=0.1 * step_s,
                compute_s=0.9 * step_s,
                step_s=step_s,
                forward_s=0.3 * step_s,
                backward_s=0.4 * step_s,
                optimizer_s=0.1 * step_s,
            )
            out.append(stored(ids, next(seq), t, event))
            out.append(stored(ids, next(seq), t, SystemEvent(cpu_pct=90.0 + rank, rss_mb=500.0 + 10 * rank)))
        epoch_event = EpochEvent(
            epoch=epoch,
            epoch_time_s=epoch_time,
            epoch_start=t - epoch_time,
            samples=samples_per_step * steps,
            steps=steps,
            train_loss=1.0 / (epoch + 1) if loss else None,
        )
        if rank == 0:
            epoch_event.val_loss, epoch_event.val_accuracy = 1.0, 0.5 + 0.1 * epoch
        out.append(stored(ids, next(seq), t, epoch_event))
    if run_id.startswith("002"):  # the 2-worker run measured its gradient sync
        probe = ProbeEvent(backward_sync_s=0.2, backward_nosync_s=0.15, allreduce_s=0.05)
        out.append(stored(ids, next(seq), t, probe))
    if rank == 0:
        out.append(stored(ids, next(seq), t, EvalEvent(split="test", samples=20, test_accuracy=0.75)))
    return out


def make_study(
    root: Path,
    reason: str = "needs 1 GPU(s), the cluster has 0",
    loss: bool = True,
    jsonl: bool = False,
    two_worker_epoch_s: float = 4 / 3,
) -> StudyStore:
    """cpu-1 at 200 samples/s, cpu-2 at 300 samples/s (efficiency 75%), gpu-1 skipped. Without `loss`,
    as from a user loop that never calls session.report_loss. The events go through the aggregator into
    segments, or with `jsonl` into events.jsonl, as a scaleprof before segments wrote them.
    `two_worker_epoch_s` sets cpu-2's epoch time: its throughput is 2 x 200 samples / that."""
    exp = Experiment.model_validate(EXPERIMENT)
    store = StudyStore(root)
    store.create()
    store.write_manifest(
        {
            "study_id": "handmade",
            "experiment": exp.resolved(),
            "seed": 0,
            "data": {"name": "digits", "split_sizes": {"train": 1257}, "split_sha256": {"train": "abc"}},
            "packages": {"scaleprof": "test"},
            "driver_host": {"cpu_model": "test cpu"},
            "ray": {"cluster_resources": {"CPU": 2.0}, "nodes": [{}]},
            "telemetry": {"events_written": 0, "workers": 3, "gaps": 0, "duplicates": 0},
            "pricing": {
                "test-node": {
                    "node_type": "test-node",
                    "provider": "test",
                    "region": "here",
                    "instance": "t",
                    "price_per_hour_usd": 3.6,
                    "vcpus": 2,
                    "memory_gib": 8,
                    "gpus": 0,
                    "gpu_model": "",
                    "source": "made up for the test",
                    "retrieved": "2026-11-29",
                }
            },
        }
    )
    base = {
        "model": "mlp",
        "kind": RunKind.FIXED_SPLIT,
        "node_type": "test-node",
        "cpus_per_worker": 1,
        "gpus_per_worker": 0,
        "per_worker_batch": 50,
        "repeat": 0,
    }
    store.append_run_record(
        {
            **base,
            "run_id": "001-mlp-cpu-1-r0",
            "index": 1,
            "placement": "cpu-1",
            "device": "cpu",
            "workers": 1,
            "global_batch": 50,
            "status": RunStatus.OK,
            "reason": "",
            "wall_s": 30.0,
        }
    )
    store.append_run_record(
        {
            **base,
            "run_id": "002-mlp-cpu-2-r0",
            "index": 2,
            "placement": "cpu-2",
            "device": "cpu",
            "workers": 2,
            "global_batch": 100,
            "status": RunStatus.OK,
            "reason": "",
            "wall_s": 30.0,
        }
    )
    store.append_run_record(
        {
            **base,
            "run_id": "003-mlp-gpu-1-r0",
            "index": 3,
            "placement": "gpu-1",
            "device": "gpu",
            "workers": 1,
            "gpus_per_worker": 1,
            "global_batch": 50,
            "status": RunStatus.SKIPPED,
            "reason": reason,
        }
    )
    events = Aggregator(str(store.root)).ingest if not jsonl else lambda rows: append_jsonl(store.events_path, rows)
    events(_worker_events("001-mlp-cpu-1-r0", 0, epoch_time=1.0, loss=loss))
    y_true = np.arange(20) % 4
    proba = np.eye(4)[(y_true + (np.arange(20) % 5 == 0)) % 4] * 0.7 + 0.075  # every 5th sample wrong
    for run_id in ("001-mlp-cpu-1-r0", "002-mlp-cpu-2-r0"):
        store.write_predictions(
            run_id, {"split": "test", "sample_index": np.arange(20), "y_true": y_true, "proba": proba}
        )
    for rank in (0, 1):
        events(_worker_events("002-mlp-cpu-2-r0", rank, epoch_time=two_worker_epoch_s, loss=loss))
    return store
