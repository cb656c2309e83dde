"""What every Ray Train worker executes: seeded data and model, a timed training loop, events out.

Each step is timed in two parts: waiting for the batch (data) and forward/backward/optimiser
(compute, closed by `loss.item()`, which synchronises the device). Each epoch's time excludes the
validation pass, and all ranks start an epoch together (a barrier), so epoch times are comparable.
"""

from __future__ import annotations

import contextlib
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
from scaleprof.workloads.data import worker_arrays
from scaleprof.workloads.models import build_model


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, device: torch.device, batch: int = 512) -> np.ndarray:
    """Class probabilities for every row of x, in order."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        logits = model(torch.from_numpy(x[i : i + batch]).to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    model.train()
    return np.concatenate(out)


def loss_and_accuracy(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p_true = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)
    return {"loss": float(-np.log(p_true).mean()), "accuracy": float((proba.argmax(1) == y).mean())}


def lr_factor(experiment: Experiment, global_batch: int) -> float:
    """The linear scaling rule: lr grows with the global batch relative to train.batch_size."""
    if experiment.train.lr_scaling == "linear":
        return global_batch / experiment.train.batch_size
    return 1.0


def lr_schedule(target_factor: float, warmup_steps: int):
    """Multiplier of train.lr at each step: a linear ramp from 1 to target_factor, then flat."""

    def multiplier(step: int) -> float:
        if warmup_steps <= 0 or step >= warmup_steps:
            return target_factor
        return 1.0 + (target_factor - 1.0) * step / warmup_steps

    return multiplier


class StepClock:
    """Marks inside a step: host clock on CPU; CUDA events on a GPU, so timing never adds a sync
    (the step's own `loss.item()` synchronises before the marks are read)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start


def sync_probe(model: torch.nn.Module, loader: DataLoader, device: torch.device, steps: int = 8) -> dict[str, float]:
    """Gradient all-reduce cost per step, measured as backward with sync minus backward without
    (DDP's `no_sync()`), on the same batches, after training and without an optimiser step, so the
    trained weights are untouched. Every rank runs it (the sync steps are collectives)."""
    clock = StepClock(device)
    timings: dict[bool, list[float]] = {True: [], False: []}
    batches = []
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        batches.append(batch)
    for sync in (False, True, False, True):  # interleaved, so drift hits both alike
        for xb, yb in batches:
            xb, yb = xb.to(device), yb.to(device)
            model.zero_grad(set_to_none=True)
            context = contextlib.nullcontext() if sync else model.no_sync()
            with context:
                loss = F.cross_entropy(model(xb), yb)
                start = clock.mark()
                loss.backward()
                end = clock.mark()
            if clock.cuda:
                torch.cuda.synchronize(device)
            timings[sync].append(clock.seconds(start, end))
    model.zero_grad(set_to_none=True)
    with_sync, without = float(np.median(timings[True])), float(np.median(timings[False]))
    return {"backward_sync_s": with_sync, "backward_nosync_s": without, "allreduce_s": max(0.0, with_sync - without)}


def measured_cpu_peak_flops(threads: int, size: int = 512, seconds: float = 0.3) -> float:
    """This worker's FP32 matmul FLOP/s on its own threads: the denominator of CPU MFU."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - start)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch

    experiment = Experiment.model_validate(config["experiment"])
    run = config["run"]
    if experiment.train.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
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

    # The driver computed the split (and counted the model's FLOPs) once for the study; see execution/prepare.py.
    x, y = worker_arrays(experiment.data, experiment.seed, run["shipped"])
    split = run["split"]
    held_name, train_idx, val_idx, held_idx = split["held_name"], split["train"], split["val"], split["held"]
    model_spec = next(m for m in experiment.model_list if m.label == run["model_label"])
    model = build_model(model_spec, experiment.data.input_shape, experiment.data.classes, experiment.seed)
    model = ray.train.torch.prepare_model(model)  # moves to the device; DDP when world > 1
    if rank == 0:  # every rank runs the same model on the same kind of device: once is enough
        info = dict(run["model_info"])
        if device.type == "cpu":
            info["cpu_peak_flops"] = measured_cpu_peak_flops(threads)
        sink.emit("lifecycle", event="model_info", **info)
    optimizer = torch.optim.SGD(model.parameters(), lr=experiment.train.lr, momentum=experiment.train.momentum)

    train_set = TensorDataset(torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]))
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=experiment.seed)
    loader = DataLoader(train_set, batch_size=run["per_worker_batch"], sampler=sampler, pin_memory=device.type == "cuda")
    warmup = round(experiment.train.lr_warmup_epochs * len(loader))
    factor = lr_factor(experiment, run["per_worker_batch"] * world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(factor, warmup))
    x_val, y_val = x[val_idx], y[val_idx]
    clock = StepClock(device)

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
            m0 = clock.mark()
            loss = F.cross_entropy(model(xb), yb)
            m1 = clock.mark()
            loss.backward()  # includes DDP's gradient all-reduce, overlapped with the backward pass
            m2 = clock.mark()
            optimizer.step()
            scheduler.step()
            m3 = clock.mark()
            loss_value = loss.item()  # synchronises the device: the marks are complete after this
            t_end = time.perf_counter()
            n = len(yb)
            sink.emit(
                "step",
                epoch=epoch,
                step=step,
                samples=n,
                data_s=t_data - t_prev,
                compute_s=t_end - t_data,
                forward_s=clock.seconds(m0, m1),
                backward_s=clock.seconds(m1, m2),
                optimizer_s=clock.seconds(m2, m3),
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
            "lr": optimizer.param_groups[0]["lr"],
        }
        if device.type == "cuda":
            fields["gpu_mem_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if rank == 0:
            val = loss_and_accuracy(predict(_unwrap(model), x_val, device), y_val)
            fields.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        sink.emit("epoch", **fields)

    _barrier()
    if world > 1 and hasattr(model, "no_sync"):
        sink.emit("probe", **sync_probe(model, loader, device))
    if rank == 0:
        # Rank 0 holds the same weights as every rank (DDP): its predictions on the held-out split are
        # stored whole, and every quality metric is computed from them later with sklearn.
        proba = predict(_unwrap(model), x[held_idx], device)
        held = loss_and_accuracy(proba, y[held_idx])
        predictions = {"split": held_name, "sample_index": held_idx, "y_true": y[held_idx], "proba": proba}
        ray.get(aggregator.store_predictions.remote(run["run_id"], predictions))
        sink.emit("eval", split=held_name, test_loss=held["loss"], test_accuracy=held["accuracy"], samples=len(held_idx))
    _barrier()
    if monitor:
        monitor.stop()
    else:
        gpu.stop()
    sink.emit("lifecycle", event="worker_end")
    sink.close()
