"""What every Ray Train worker executes: seeded data and model, a timed training loop, events out.

Each step is timed in two parts: waiting for the batch (data) and forward/backward/optimiser
(compute, closed by `loss.item()`, which synchronises the device). Each epoch's time excludes the
validation pass, and all ranks start an epoch together (a barrier), so epoch times are comparable.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from scaleprof.config import Experiment
from scaleprof.telemetry.monitor import EventSink, GpuSampler, Monitor, SystemSampler
from scaleprof.workloads.data import load_dataset
from scaleprof.workloads.models import build_model


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device, batch: int = 512) -> dict:
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), batch):
        xb = torch.from_numpy(x[i : i + batch]).to(device)
        yb = torch.from_numpy(y[i : i + batch]).to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train()
    return {"loss": loss_sum / len(y), "accuracy": correct / len(y)}


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch

    experiment = Experiment.model_validate(config["experiment"])
    run = config["run"]
    aggregator = config["aggregator"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node_id = ray.get_runtime_context().get_node_id()
    attempt = ray.get(aggregator.register_worker.remote(run["run_id"], rank))

    ids = {"study_id": config["study_id"], "run_id": run["run_id"], "attempt": attempt, "rank": rank, "node_id": node_id}
    sink = EventSink(ids, lambda batch: aggregator.ingest.remote(batch)).start()

    threads = max(1, int(run["cpus_per_worker"]))
    torch.set_num_threads(threads)  # one Ray CPU = one torch thread: workers must not oversubscribe cores
    device = ray.train.torch.get_device()
    gpu_index = device.index if device.type == "cuda" else None
    if gpu_index is None and device.type == "cuda":
        gpu_index = torch.cuda.current_device()
    gpu = GpuSampler(gpu_index)
    samplers: list[Any] = [SystemSampler(), gpu]
    monitor = Monitor(sink, samplers, experiment.monitor.interval_s) if experiment.monitor.enabled else None
    if monitor:
        monitor.start()
    else:
        gpu.start()  # still record which GPU this worker had

    sink.emit(
        "lifecycle",
        event="worker_start",
        world_size=world,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        device=str(device),
        torch_threads=threads,
        gpu_uuid=gpu.uuid,
        gpu_name=gpu.name,
        gpu_unavailable=gpu.unavailable_reason,
    )

    data = load_dataset(experiment.data, experiment.seed)
    model = build_model(experiment.model, data.input_shape, data.num_classes, experiment.seed)
    model = ray.train.torch.prepare_model(model)  # moves to the device; DDP when world > 1
    optimizer = torch.optim.SGD(model.parameters(), lr=experiment.train.lr, momentum=experiment.train.momentum)

    train_set = TensorDataset(torch.from_numpy(data.x[data.train_idx]), torch.from_numpy(data.y[data.train_idx]))
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=experiment.seed)
    loader = DataLoader(train_set, batch_size=run["per_worker_batch"], sampler=sampler, pin_memory=device.type == "cuda")
    x_val, y_val = data.x[data.val_idx], data.y[data.val_idx]

    for epoch in range(experiment.train.epochs):
        sampler.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # peak per epoch, not since process start
        _barrier()
        epoch_start_wall = time.time()
        t_epoch = t_prev = time.perf_counter()
        samples = steps = 0
        loss_sum = 0.0
        for step, (xb, yb) in enumerate(loader):
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            t_data = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
            t_end = time.perf_counter()
            n = len(yb)
            sink.emit(
                "step",
                epoch=epoch,
                step=step,
                samples=n,
                data_s=t_data - t_prev,
                compute_s=t_end - t_data,
                step_s=t_end - t_prev,
                loss=loss_value,
            )
            samples += n
            steps += 1
            loss_sum += loss_value * n
            t_prev = t_end
        epoch_time = time.perf_counter() - t_epoch
        fields: dict[str, Any] = {
            "epoch": epoch,
            "epoch_time_s": epoch_time,
            "epoch_start": epoch_start_wall,
            "samples": samples,
            "steps": steps,
            "train_loss": loss_sum / max(samples, 1),
        }
        if device.type == "cuda":
            fields["gpu_mem_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if rank == 0:
            val = evaluate(_unwrap(model), x_val, y_val, device)
            fields.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        sink.emit("epoch", **fields)

    if rank == 0:
        test = evaluate(_unwrap(model), data.x[data.test_idx], data.y[data.test_idx], device)
        sink.emit("eval", split="test", test_loss=test["loss"], test_accuracy=test["accuracy"])
    _barrier()
    if monitor:
        monitor.stop()
    sink.emit("lifecycle", event="worker_end")
    sink.close()
