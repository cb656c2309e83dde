"""Arrival at the exchange on a real two-rank gloo group (spawned processes, no Ray): the worker session records
when each rank met the others and the clocks' offsets, and the analysis names the slow rank from the events the
session emitted. Three models: a plain MLP under DDP (ranks meet at the gradients), the same with BatchNorm (DDP
broadcasts its buffers as forward starts: they meet there first) and FSDP2 (it all-gathers as forward starts)."""

import traceback

import pandas as pd
import pytest

from .gloo_ranks import run_ranks
from .sessions import recording_session

SLOW_S = 0.05  # rank 1's extra time each step: in forward (plain), or waiting for its batch (the others)


def _slow_batches(batches, rank: int, where: str):
    import time

    for batch in batches:
        if rank == 1 and where == "data":
            time.sleep(SLOW_S)
        yield batch


def _rank(rank: int, world: int, port: int, queue, kind: str = "plain") -> None:
    import time

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from scaleprof import session as session_module
    from scaleprof.worker.arrivals import measure_clock_offset
    from scaleprof.worker.training import shard

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            torch.manual_seed(0)
            norm = [torch.nn.BatchNorm1d(32)] if kind == "batchnorm" else []
            layers = torch.nn.Sequential(torch.nn.Linear(16, 32), *norm, torch.nn.Linear(32, 2))
            s, events, _ = recording_session(rank, world)
            if kind == "fsdp":
                model, s._sharded = shard(layers), True
            else:
                model = DistributedDataParallel(layers)
            s.watch_exchanges(model)  # what session.prepare_model does after wrapping
            clock = measure_clock_offset()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            batches = [(torch.randn(8, 16), torch.arange(8) % 2) for _ in range(12)]
            session_module.activate(s)
            for _ in s.epochs():
                for x, y in s.steps(_slow_batches(batches, rank, "forward" if kind == "plain" else "data")):
                    out = model(x)
                    if rank == 1 and kind == "plain":
                        time.sleep(SLOW_S)
                    loss = torch.nn.functional.cross_entropy(out, y)
                    s.mark("forward")
                    loss.backward()
                    s.mark("backward")
                    optimizer.step()
                    optimizer.zero_grad()
                    s.mark("optimizer")
            s.finish()
            steps = [e.fields() | {"rank": rank} for e in events if type(e).__name__ == "StepEvent"]
            queue.put((rank, {"steps": steps, "clock": clock.fields() | {"rank": rank}}))
        finally:
            session_module.activate(None)
            dist.destroy_process_group()
    except Exception:
        queue.put((rank, traceback.format_exc()))


def _batchnorm(rank, world, port, queue):
    _rank(rank, world, port, queue, "batchnorm")


def _fsdp(rank, world, port, queue):
    _rank(rank, world, port, queue, "fsdp")


def _named(ranks):
    from scaleprof.analysis.stragglers import aligned, rank_table, stragglers

    steps = pd.DataFrame([row for r in ranks for row in r["steps"]])
    clocks = pd.DataFrame([r["clock"] for r in ranks])
    later = steps[steps["step"] >= 2]  # past the first steps (DDP's bucket rebuild)
    return steps, clocks, stragglers(rank_table(aligned(later, clocks), clocks), 2, "r", "cpu-2", pd.DataFrame())


def test_the_session_records_arrivals_and_the_analysis_names_the_slow_forward():
    ranks = run_ranks(_rank, world=2)
    steps, clocks, named = _named(ranks)
    assert len(steps) == 24 and steps[["start_t", "arrive_t", "sync_wait_s"]].notna().all().all()
    assert "enter_t" not in steps  # no buffers: DDP's forward exchanges nothing
    assert clocks.loc[0, "offset_s"] == 0 and abs(clocks.loc[1, "offset_s"]) < 0.05 and (clocks["rounds"] == 9).all()
    # each rank arrives after its forward and before its backward returns; rank 0 waits out rank 1's sleep
    inside = (steps["arrive_t"] - steps["start_t"]).between(steps["data_s"] + steps["forward_s"], steps["step_s"])
    assert inside.all()
    waits = steps[steps["step"] >= 2].groupby("rank")["sync_wait_s"].median()
    assert waits[0] > SLOW_S / 2 and waits[0] > waits[1] + SLOW_S / 4, waits  # (loose: a busy machine stretches both)
    (late,) = named
    assert late.rank == 1 and late.cause == "forward" and late.cause_s == pytest.approx(SLOW_S, rel=0.4)
    assert late.exchange == "the gradient exchange"


@pytest.mark.parametrize("target", [_batchnorm, _fsdp], ids=["ddp-batchnorm", "fsdp"])
def test_where_forward_starts_with_an_exchange_a_data_slow_rank_is_named_there(target):
    """Both resynchronise the ranks as forward starts, so rank 1's slow batches make the others wait there, and
    by the gradients it is level: the arrival at forward entry names it, with the data loading that made it late."""
    steps, _, named = _named(run_ranks(target, world=2))
    assert steps["enter_t"].notna().all()
    (late,) = named
    assert late.rank == 1 and late.cause == "loading data" and late.exchange == "the exchange at forward entry"
    assert late.late_s == pytest.approx(SLOW_S, rel=0.4)


def test_the_watched_gradient_is_the_last_backward_computes_whatever_the_declaration_order():
    """A model that declares its head before its body: the head's gradient comes first in backward, the body's
    first layer's last. After one backward and the next forward only that one is watched: one call a backward."""
    import torch

    from scaleprof.worker.arrivals import watch_arrival

    class HeadFirst(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(8, 2)  # declared first, used last
            self.body = torch.nn.Linear(4, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    model, calls = HeadFirst(), []
    watch = watch_arrival(model, lambda: calls.append(1))
    model(torch.randn(3, 4)).sum().backward()
    assert watch.watched is None and len(calls) == 4  # learning: every gradient recorded, the last one wins
    calls.clear()
    for _ in range(3):
        model(torch.randn(3, 4)).sum().backward()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert watch.watched is not None
    assert trainable[watch.watched].startswith("body.") and len(calls) == 3
