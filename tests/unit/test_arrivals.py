"""Arrival at the gradient exchange on a real two-rank gloo group (spawned processes, no Ray): the worker
session records when each rank's gradients were ready and the clocks' offsets, and the analysis names the
rank whose forward was slowed, from the events the session emitted."""

import traceback

import pandas as pd
import pytest

from .gloo_ranks import run_ranks

SLOW_S = 0.05  # rank 1's extra forward time each step


def _rank(rank: int, world: int, port: int, queue) -> None:
    import time

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from scaleprof import session as session_module
    from scaleprof.arrivals import measure_clock_offset, watch_arrival

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        try:
            torch.manual_seed(0)
            model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 2)))
            events: list = []
            s = session_module.WorkerSession(
                events.append, [].append, rank=rank, world_size=world, device=torch.device("cpu"), threads=1,
                epochs=1,
            )  # fmt: skip
            watch_arrival(model.module, s.arrive)
            clock = measure_clock_offset()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            batches = [(torch.randn(8, 16), torch.arange(8) % 2) for _ in range(12)]
            session_module.activate(s)
            for _ in s.epochs():
                for x, y in s.steps(batches):
                    out = model(x)
                    if rank == 1:
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


def test_the_session_records_arrivals_and_the_analysis_names_the_slow_forward():
    from scaleprof.analysis.stragglers import aligned, rank_table, stragglers

    ranks = run_ranks(_rank, world=2)
    steps = pd.DataFrame([row for r in ranks for row in r["steps"]])
    clocks = pd.DataFrame([r["clock"] for r in ranks])
    assert len(steps) == 24 and steps[["start_t", "arrive_t", "sync_wait_s"]].notna().all().all()
    assert clocks.loc[0, "offset_s"] == 0 and abs(clocks.loc[1, "offset_s"]) < 0.05 and (clocks["rounds"] == 9).all()
    # each rank arrives after its forward and before its backward returns; rank 0 waits out rank 1's sleep
    inside = (steps["arrive_t"] - steps["start_t"]).between(steps["data_s"] + steps["forward_s"], steps["step_s"])
    assert inside.all()
    later = steps[steps["step"] >= 2]  # past the first steps (DDP's bucket rebuild)
    waits = later.groupby("rank")["sync_wait_s"].median()
    assert waits[0] > SLOW_S / 2 and waits[0] > waits[1] + SLOW_S / 4, waits  # (loose: a busy machine stretches both)
    table = rank_table(aligned(later, clocks), clocks)
    (late,) = stragglers(table, 2, "r", "cpu-2", pd.DataFrame())
    assert late.rank == 1 and late.cause == "forward" and late.cause_s == pytest.approx(SLOW_S, rel=0.4)
