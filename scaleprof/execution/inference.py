"""Inference benchmark: one Ray actor per (model, device kind) loads the seeded model, warms up, then
times iterations under `torch.inference_mode()`, synchronising the device before every clock read.

Per batch size: latency p50/p95/p99, throughput (samples/s) and peak memory. The options in force
(channels-last, bf16 autocast on GPU, torch.compile) are recorded with every row.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import numpy as np

from scaleprof.capacity import Outlook, verdict
from scaleprof.config import PlacementSpec
from scaleprof.execution.assignment import InferenceInputs
from scaleprof.execution.cluster import cluster_view
from scaleprof.records import RunStatus


class InferenceProbe:
    """The actor's body (a plain class, wrapped with ray.remote by `run_inference`)."""

    def __init__(self, experiment: dict[str, Any], model_label: str, device_kind: str, data: InferenceInputs):
        """`data`: what the driver prepared (StudyInputs.for_inference)."""
        import torch
        from torch.utils.data import DataLoader

        from scaleprof.config import Experiment
        from scaleprof.workloads.data import open_source, subset
        from scaleprof.workloads.models import build_model

        self.experiment = Experiment.model_validate(experiment)
        spec = self.experiment.evaluation.inference
        assert spec is not None
        self.spec = spec
        torch.set_num_threads(max(1, int(spec.cpus)))
        self.device = torch.device("cuda", torch.cuda.current_device()) if device_kind == "gpu" else torch.device("cpu")
        assert self.experiment.data is not None  # the config requires data for the inference benchmark
        source = open_source(self.experiment.data, self.experiment.seed, data.shipped)
        held = subset(source.dataset, data.test[: max(spec.batch_sizes)])  # real held-out inputs, tiled
        self.pool = np.concatenate([np.asarray(xb) for xb, _ in DataLoader(held, batch_size=256)])
        shape, classes = data.data_info.input_shape, data.data_info.num_classes
        model_spec = next(m for m in self.experiment.model_list if m.label == model_label)
        self.model = build_model(model_spec, shape, classes, self.experiment.seed).eval()
        self.model.to(self.device)
        self.options = {"channels_last": False, "amp": False, "compile": False}
        if spec.channels_last and len(shape) == 3:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.options["channels_last"] = True
        self.options["amp"] = bool(spec.amp and self.device.type == "cuda")
        self.compile_error = None
        if spec.compile:
            try:
                self.model = torch.compile(self.model)  # type: ignore[assignment]
                self.options["compile"] = True
            except Exception as exc:  # report that it was off, and why
                self.compile_error = f"{type(exc).__name__}: {exc}"[:300]

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _batch(self, size: int) -> Any:
        import torch

        reps = -(-size // len(self.pool))
        x = torch.from_numpy(np.concatenate([self.pool] * reps)[:size]).to(self.device)
        if self.options["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def run(self) -> list[dict[str, Any]]:
        import psutil
        import torch

        proc = psutil.Process(os.getpid())
        rows = []
        for size in self.spec.batch_sizes:
            x = self._batch(size)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.options["amp"] else contextlib.nullcontext()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            rss_before = proc.memory_info().rss
            try:
                with torch.inference_mode(), autocast:
                    for _ in range(self.spec.warmup):
                        self.model(x)
                    self._sync()
                    latencies = []
                    for _ in range(self.spec.iterations):
                        start = time.perf_counter()
                        self.model(x)
                        self._sync()  # the work is done before the clock is read
                        latencies.append(time.perf_counter() - start)
            except RuntimeError as exc:  # e.g. out of memory at a large batch: record it, go on
                rows.append({"batch_size": size, "status": RunStatus.FAILED, "reason": str(exc).splitlines()[0][:300]})
                continue
            lat = np.asarray(latencies)
            row = {
                "batch_size": size,
                "status": RunStatus.OK,
                "reason": "",
                "latency_p50_s": float(np.percentile(lat, 50)),
                "latency_p95_s": float(np.percentile(lat, 95)),
                "latency_p99_s": float(np.percentile(lat, 99)),
                "latency_mean_s": float(lat.mean()),
                "throughput": float(size / lat.mean()),
                "iterations": len(lat),
            }
            if self.device.type == "cuda":
                row["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
                row["memory_kind"] = "GPU allocated"
            else:
                row["peak_mem_mb"] = max(proc.memory_info().rss, rss_before) / 2**20
                row["memory_kind"] = "process RSS"
            rows.append(row)
        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        for row in rows:
            row.update(self.options, device_name=device_name, threads=torch.get_num_threads())
            if self.compile_error:
                row["compile_error"] = self.compile_error
        return rows


def run_inference(experiment: Any, wait_timeout_s: float, data: InferenceInputs) -> list[dict[str, Any]]:
    """Every model on every requested device kind. A device kind no node has, or (on an autoscaling
    cluster) no node type could add, gives a skipped row at once; one the autoscaler can add is waited
    for up to `wait_timeout_s`."""
    import ray

    spec = experiment.evaluation.inference
    rows: list[dict[str, Any]] = []
    view = cluster_view()
    for model in experiment.model_list:
        for kind in spec.devices:
            base = {"model": model.label, "device": kind}
            gpus = 1 if kind == "gpu" else 0
            probe = PlacementSpec(name="inference", workers=1, cpus_per_worker=spec.cpus, gpus_per_worker=gpus)
            found = verdict(probe, view.node_resources(), view.autoscaling, view.node_types)
            if found.outlook == Outlook.NEVER:
                rows.append({**base, "status": RunStatus.SKIPPED, "reason": found.reason})
                continue
            actor_cls: Any = ray.remote(InferenceProbe).options(num_cpus=spec.cpus, num_gpus=gpus)
            actor = actor_cls.remote(experiment.resolved(), model.label, kind, data)
            try:
                ready, _ = ray.wait([actor.__ray_ready__.remote()], timeout=wait_timeout_s)
                if not ready:
                    rows.append(
                        {
                            **base,
                            "status": RunStatus.SKIPPED,
                            "reason": f"{spec.cpus:g} CPU(s)"
                            + (" and 1 GPU" if gpus else "")
                            + f" did not become available within {wait_timeout_s:g}s",
                        }
                    )
                    continue
                results = ray.get(actor.run.remote(), timeout=600)
                rows += [{**base, **r} for r in results]
            except Exception as exc:
                rows.append(
                    {
                        **base,
                        "status": RunStatus.FAILED,
                        "reason": f"{type(exc).__name__}: {str(exc).splitlines()[-1][:300]}",
                    }
                )
            finally:
                ray.kill(actor)  # also withdraws a still-pending actor's request for resources
    return rows
