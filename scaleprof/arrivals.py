"""When each rank arrives at the gradient exchange, on clocks that can be compared across ranks and nodes.

A rank that is late for the all-reduce makes every other rank wait inside it, so per-rank phase times
cannot name it (its backward looks as long as everyone's); the time each rank's gradients became ready
can (DeepSpeed's straggler effect, HTA's straggler analysis). Worker side, two pieces:

- `watch_arrival(model, record)`: calls `record()` when backward has accumulated the gradient of the
  model's first parameter, the last one it computes: this rank's backward compute is done and it waits
  only for the others (DDP launches the last bucket's all-reduce then).
- `measure_clock_offset()`: at start-up, every rank reads its wall clock right after each of a few
  barriers; this rank's offset against rank 0 is the median difference, the error half their spread
  (the barrier's own exit skew is in it). analysis/stragglers.py subtracts the offset.

The session (scaleprof/session.py) registers the hook in `prepare_model` and stores the times on each
step's event; a loop with its own collective calls `session.arrive()` where it is about to enter it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from scaleprof.records import ClockSync

CLOCK_ROUNDS = 9


def measure_clock_offset(rounds: int = CLOCK_ROUNDS, clock: Callable[[], float] = time.time) -> ClockSync:
    """This rank's wall clock against rank 0's (every rank of the default process group calls it); `clock`:
    the one the rank's step times are read on (the session's), so a clock step in between cannot split them."""
    import torch.distributed as dist

    differences = []
    for _ in range(rounds):
        dist.barrier()
        now = clock()
        seen: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(seen, now)  # works on gloo and NCCL alike (NCCL: the rank's current device)
        differences.append(now - float(seen[0]))
    return ClockSync(
        offset_s=statistics.median(differences), error_s=(max(differences) - min(differences)) / 2, rounds=rounds
    )


def watch_arrival(model: torch.nn.Module, record: Callable[[], None]) -> Any:
    """Call `record()` each time the backward pass accumulates the gradient of the model's first parameter
    (in forward order): the last gradient backward computes, so this rank is ready for the exchange and
    from here on only waits for the others. One Python call per backward; DDP's own C++ all-reduce path is
    left as it is (a DDP comm hook in Python replaces it: a first try read a median +2.7% on a 2 ms step,
    rounds from -5% to +13%, benchmarks/arrivals.py, against the 1% this may cost). Returns the hook's
    handle (None for a model without trainable parameters)."""
    first = next((p for p in model.parameters() if p.requires_grad), None)
    if first is None:
        return None
    return first.register_post_accumulate_grad_hook(lambda _: record())
