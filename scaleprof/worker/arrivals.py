"""When each rank arrives at the gradient exchange, on clocks that can be compared across ranks and nodes.

A rank that is late for the all-reduce makes every other rank wait inside it, so per-rank phase times
cannot name it (its backward looks as long as everyone's); the time each rank's gradients became ready
can (DeepSpeed's straggler effect, HTA's straggler analysis). Worker side, two pieces:

- `watch_arrival(model, record)`: calls `record()` when backward has accumulated the model's last gradient
  (which one is learned on the first backward): this rank's backward compute is done and it waits only for
  the others (DDP launches the last bucket's all-reduce then).
- `measure_clock_offset()`: at start-up, every rank reads its wall clock right after each of a few
  barriers; this rank's offset against rank 0 is the median difference, the error half their spread
  (the barrier's own exit skew is in it). analysis/stragglers.py subtracts the offset.

The session (scaleprof/worker/session.py) registers the hook in `prepare_model` and stores the times on each
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


class ArrivalWatch:
    """Calls `record()` when backward has accumulated the model's last gradient. Which parameter's gradient comes
    last is learned on the first backward (every trainable parameter hooked, each call recorded: the last one
    wins) and fixed at the next forward, when only that parameter's hook is kept: one Python call per backward
    from then on. Declaration order is no guide: a model may register its head before its body."""

    def __init__(self, model: torch.nn.Module, record: Callable[[], None]):
        self._record = record
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._order: list[int] = []
        self.watched: int | None = None  # the index (in model.parameters() order, trainable ones) kept
        self._handles = [p.register_post_accumulate_grad_hook(self._learning(i)) for i, p in enumerate(self._params)]
        self._settle = model.register_forward_pre_hook(lambda *_: self._fix()) if self._params else None

    def _learning(self, index: int) -> Callable[[Any], None]:
        def hook(_: Any) -> None:
            if self.watched is None:
                self._order.append(index)
            if self.watched is None or self.watched == index:
                self._record()

        return hook

    def _fix(self) -> None:
        """After the first backward: keep the hook of the parameter whose gradient came last."""
        if not self._order or self.watched is not None:
            return
        self.watched = self._order[-1]
        for index, handle in enumerate(self._handles):
            if index != self.watched:
                handle.remove()
        if self._settle is not None:
            self._settle.remove()


def watch_arrival(model: torch.nn.Module, record: Callable[[], None]) -> ArrivalWatch:
    """Call `record()` each time backward accumulates the model's last gradient (ArrivalWatch): this rank is
    then ready for the exchange and from here on only waits for the others. DDP's own C++ all-reduce path is
    left as it is (a DDP comm hook in Python replaces it: a first try read a median +2.7% on a 2 ms step,
    rounds from -5% to +13%, benchmarks/arrivals.py, against the 1% this may cost)."""
    return ArrivalWatch(model, record)
