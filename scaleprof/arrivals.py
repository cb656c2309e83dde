"""When each rank arrives at the gradient exchange, on clocks that can be compared across ranks and nodes.

A rank that is late for the all-reduce makes every other rank wait inside it, so per-rank phase times
cannot name it (its backward looks as long as everyone's); the time each rank's gradients became ready
can (DeepSpeed's straggler effect, HTA's straggler analysis). Worker side, two pieces:

- `arrival_hook(record)`: a DDP communication hook that calls `record()` when the step's last gradient
  bucket is ready (this rank's backward compute is done and it waits only for the others), then
  all-reduces the bucket as DDP's default hook does (same result, same collective).
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

from scaleprof.records import ClockSync

CLOCK_ROUNDS = 9


def measure_clock_offset(rounds: int = CLOCK_ROUNDS) -> ClockSync:
    """This rank's wall clock against rank 0's (every rank of the default process group calls it)."""
    import torch.distributed as dist

    differences = []
    for _ in range(rounds):
        dist.barrier()
        now = time.time()
        seen: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(seen, now)  # works on gloo and NCCL alike (NCCL: the rank's current device)
        differences.append(now - float(seen[0]))
    return ClockSync(
        offset_s=statistics.median(differences), error_s=(max(differences) - min(differences)) / 2, rounds=rounds
    )


def arrival_hook(record: Callable[[], None]) -> Callable[[Any, Any], Any]:
    """A DDP comm hook (`ddp.register_comm_hook(None, hook)`): `record()` at the step's last bucket, then
    DDP's default all-reduce of every bucket."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    # No annotations: DDP refuses a hook whose annotations are not exactly dist.GradBucket and
    # Future[Tensor], and under `from __future__ import annotations` they would be strings.
    def hook(process_group, bucket):
        if bucket.is_last():
            record()
        return allreduce_hook(process_group, bucket)

    return hook
