"""scaleprof's built-in training loop: supervised classification with SGD and cross-entropy.

It is written on the public `scaleprof.session` API exactly as a user's own loop would be, so there is
one instrumented path. Each step marks forward, backward (which includes DDP's all-reduce, overlapped
with the backward pass) and optimizer; validation runs on rank 0 after each epoch's last step, outside
the epoch's time; after training a sync probe measures the gradient all-reduce, and rank 0 stores its
predictions on the held-out split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from scaleprof import session
from scaleprof.config import DataSpec, TrainSpec

EVAL_BATCH = 512


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DDP keeps the model as .module
    return inner if isinstance(inner, torch.nn.Module) else model


@torch.no_grad()
def predict(
    model: torch.nn.Module, dataset: Any, device: torch.device, loader_kwargs: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, class probabilities) for every item of the data set, in order."""
    model.eval()
    labels, out = [], []
    for xb, yb in DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, **loader_kwargs):
        logits = model(xb.to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        labels.append(np.asarray(yb))
    model.train()
    return np.concatenate(labels), np.concatenate(out)


def lr_factor(train: TrainSpec, global_batch: int) -> float:
    """The linear scaling rule: lr grows with the global batch relative to train.batch_size."""
    if train.lr_scaling == "linear":
        return global_batch / train.batch_size
    return 1.0


def lr_schedule(target_factor: float, warmup_steps: int):
    """Multiplier of train.lr at each step: a linear ramp from 1 to target_factor, then flat."""

    def multiplier(step: int) -> float:
        if warmup_steps <= 0 or step >= warmup_steps:
            return target_factor
        return 1.0 + (target_factor - 1.0) * step / warmup_steps

    return multiplier


def loader_kwargs(data: DataSpec, device: torch.device) -> dict[str, Any]:
    """The DataLoader settings of `data.loader` (pin_memory on by default for GPU runs)."""
    spec = data.loader
    kwargs: dict[str, Any] = {
        "num_workers": spec.num_workers,
        "pin_memory": device.type == "cuda" if spec.pin_memory is None else spec.pin_memory,
    }
    if spec.num_workers:
        kwargs["persistent_workers"] = spec.persistent_workers
        if spec.prefetch_factor is not None:
            kwargs["prefetch_factor"] = spec.prefetch_factor
    return kwargs


def _batch_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def train_classifier(config: dict[str, Any]) -> None:
    train = TrainSpec.model_validate(config["experiment"]["train"])
    data = DataSpec.model_validate(config["experiment"]["data"])
    rank, world, device = session.world_rank(), session.world_size(), session.device()
    model = session.prepare_model(session.build_model())  # FLOPs were counted once on the driver
    optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum)

    train_set, val_set, held_set = session.datasets()
    load = loader_kwargs(data, device)
    sampler: DistributedSampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=config["seed"]
    )
    loader = session.prepare_data_loader(
        DataLoader(train_set, batch_size=config["batch_size"], sampler=sampler, **load), add_dist_sampler=False
    )
    warmup = round(train.lr_warmup_epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_schedule(lr_factor(train, config["global_batch_size"]), warmup)
    )

    for _ in session.epochs():
        for xb, yb in session.steps(loader):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            session.mark("forward")
            loss.backward()
            session.mark("backward")
            optimizer.step()
            scheduler.step()
            session.mark("optimizer")
            session.report_loss(loss)
        metrics = {"lr": optimizer.param_groups[0]["lr"]}
        if rank == 0:  # after the epoch's last step: outside its time
            y_val, proba = predict(_unwrap(model), val_set, device, load)
            val = session.loss_and_accuracy(proba, y_val)
            metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        session.report_epoch(**metrics)

    session.barrier()
    session.measure_allreduce(model, loader, _batch_loss)
    if rank == 0:
        # Rank 0 holds the same weights as every rank (DDP): its predictions on the held-out split are
        # stored whole, and every quality metric is computed from them later with sklearn.
        y_held, proba = predict(_unwrap(model), held_set, device, load)
        session.report_predictions(y_held, proba)
    session.barrier()
