"""A model's training FLOPs per sample, counted by torch (the worker side's part of MFU: analysis/mfu.py)."""

from __future__ import annotations

import torch
from torch import nn


def train_flops_per_sample(model: nn.Module, example: tuple[int, ...] | torch.Tensor) -> float:
    """Forward plus backward FLOPs of one sample, counted by torch's FlopCounterMode on a batch of 2 of
    this input shape (or on an example batch): the count depends on the operators, not the device.
    Its first use costs over a second of imports, so the driver counts once per model, not every
    worker of every run."""
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(example, torch.Tensor):
        x = example[:2]
    else:  # a generator of its own: counting must not move the global one the seeded training draws from
        x = torch.randn(2, *example, generator=torch.Generator().manual_seed(0))
    parameter = next(model.parameters(), None)
    if parameter is not None:
        x = x.to(parameter.device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)
