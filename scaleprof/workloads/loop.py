"""The skeleton both built-in loops share: set up from the experiment, train epochs, probe, evaluate.

Written on the public `scaleprof.session` API exactly as a user's own loop would be, so there is one
instrumented path. Each step marks forward (under `session.autocast()`), backward (which includes
DDP's all-reduce or FSDP's reduce-scatter, overlapped with the backward pass) and optimizer;
validation runs after each epoch's last step, outside the epoch's time (on rank 0, or on every rank
for a sharded model); after training a sync probe measures the gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from scaleprof import session
from scaleprof.config import DataSpec, TrainSpec
from scaleprof.worker.training import loader_kwargs, lr_factor, lr_schedule, make_optimizer

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@dataclass
class Setup:
    train: TrainSpec
    model: torch.nn.Module  # prepared: on the device, DDP or FSDP, compiled when asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: Any
    val_set: Any
    held_set: Any
    load: dict[str, Any]  # DataLoader settings, for evaluation loaders too


def set_up(config: dict[str, Any], drop_last: bool = False) -> Setup:
    """The run's model, optimizer and training loader as the experiment names them. A compiled model
    trains on equal batches (the last short one dropped), so it is not recompiled inside steady state."""
    train = session.train_settings()
    drop_last = drop_last or train.compile is not None
    data = DataSpec.model_validate(config["experiment"]["data"])
    model = session.prepare_model(session.build_model())  # FLOPs were counted once on the driver
    optimizer = make_optimizer(model.parameters(), train)
    train_set, val_set, held_set = session.datasets()
    load = loader_kwargs(data, session.device())
    sampler: DistributedSampler = DistributedSampler(
        train_set,
        num_replicas=session.world_size(),
        rank=session.world_rank(),
        shuffle=True,
        seed=config["seed"],
        drop_last=drop_last,
    )
    loader = session.prepare_data_loader(
        DataLoader(train_set, batch_size=config["batch_size"], sampler=sampler, drop_last=drop_last, **load),
        add_dist_sampler=False,
    )
    optimizer_steps = -(-(session.steps_in_epoch(loader, train) or 1) // train.grad_accumulation)  # last may be short
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_schedule(lr_factor(train, config["global_batch_size"]), round(train.lr_warmup_epochs * optimizer_steps)),
    )
    return Setup(train, model, optimizer, scheduler, loader, val_set, held_set, load)


def train_epochs(run: Setup, loss_of: LossFn, validate: Callable[[], dict[str, float]]) -> None:
    """The experiment's epochs of steps; `validate()` gives the epoch's val_loss and val_accuracy."""
    for _ in session.epochs():
        for batch in session.steps(run.loader):
            with session.autocast():
                loss = loss_of(run.model, batch)
            session.mark("forward")
            session.backward(loss)
            session.mark("backward")
            if session.optimizer_step(run.optimizer):
                run.scheduler.step()
            session.mark("optimizer")
            session.report_loss(loss)
        metrics = {"lr": run.optimizer.param_groups[0]["lr"]}
        if session.evaluates_here():  # after the epoch's last step: outside its time
            metrics.update(validate())
        session.report_epoch(**metrics)
    session.barrier()

    def probe_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        with session.autocast():
            return loss_of(model, batch)

    session.measure_allreduce(run.model, run.loader, probe_loss)
