"""What recording each rank's arrival at the gradient exchange costs (scaleprof/arrivals.py; #30 asks at most 1%
of step time). Two gloo ranks (spawned processes, 1 torch thread each, no Ray) train two copies of the same
model under DDP, one plain and one watched for arrival (scaleprof.worker.arrivals.watch_arrival, whose `record` does
what session.arrive does on a CPU: append a perf_counter mark), in alternated rounds of the same batches; a
round's cost is its hooked step
time over its plain one. Models: the built-in MLP on digits (a ~1 ms step, the worst case for a per-step cost)
and the small CNN (one bucket more). Also timed: the start-up clock-offset measurement, once per run.

    .venv/bin/python benchmarks/arrivals.py [--rounds 8] [--steps 200]

Results: benchmarks/results/arrivals.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = {"mlp": (64,), "small-cnn": (1, 8, 8)}


def _rank(rank: int, world: int, name: str, rounds: int, steps: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from scaleprof.config import ModelSpec
    from scaleprof.worker.arrivals import measure_clock_offset, watch_arrival
    from scaleprof.workloads.models import build_model

    shape = MODELS[name]
    marks: list[tuple[str, float]] = []
    plain = torch.nn.parallel.DistributedDataParallel(build_model(ModelSpec(name=name), shape, 10, 0))
    hooked = torch.nn.parallel.DistributedDataParallel(build_model(ModelSpec(name=name), shape, 10, 0))
    watch_arrival(hooked.module, lambda: marks.append(("arrive", time.perf_counter())))
    g = torch.Generator().manual_seed(rank)
    batches = [(torch.randn(32, *shape, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(16)]
    optimizers = {id(m): torch.optim.SGD(m.parameters(), lr=0.01) for m in (plain, hooked)}

    def timed(model: Any) -> float:
        optimizer = optimizers[id(model)]
        start = time.perf_counter()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            marks.clear()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / steps

    timed(plain), timed(hooked)  # warm-up: first allocations, DDP's bucket rebuild
    rows = []
    for r in range(rounds):
        order = (plain, hooked) if r % 2 == 0 else (hooked, plain)  # alternated: drift hits both arms
        times = {id(m): timed(m) for m in order}
        rows.append({"round": r, "plain_ms": 1e3 * times[id(plain)], "hooked_ms": 1e3 * times[id(hooked)]})
    start = time.perf_counter()
    clock = measure_clock_offset()
    return {
        "rank": rank,
        "rows": rows,
        "clock_sync_ms": 1e3 * (time.perf_counter() - start),
        "clock_error_ms": 1e3 * clock.error_s,
    }


def hook_call_us(rounds: int = 15, calls: int = 3000) -> dict[str, Any]:
    """The hook's own price, where nothing else moves: one process, a 64x10 linear layer's backward with and
    without watch_arrival, alternated rounds; the difference of the medians per backward, in microseconds."""
    import torch

    from scaleprof.worker.arrivals import watch_arrival

    torch.set_num_threads(1)
    marks: list[tuple[str, float]] = []
    plain, watched = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10)
    watch_arrival(watched, lambda: marks.append(("arrive", time.perf_counter())))
    x = torch.randn(8, 64)

    def timed(model: Any) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            marks.clear()
            model(x).sum().backward()
        return 1e6 * (time.perf_counter() - start) / calls

    timed(plain), timed(watched)
    times: dict[str, list[float]] = {"plain": [], "watched": []}
    for r in range(rounds):
        for name, model in (("plain", plain), ("watched", watched))[:: 1 if r % 2 == 0 else -1]:
            times[name].append(timed(model))
    plain_us, watched_us = statistics.median(times["plain"]), statistics.median(times["watched"])
    return {"plain_backward_us": plain_us, "watched_backward_us": watched_us, "hook_us": watched_us - plain_us}


def bench_arrivals(rounds: int, steps: int) -> dict[str, Any]:
    from bench import _gloo_ranks

    out = []
    for name in MODELS:
        ranks = _gloo_ranks(_rank, name, rounds, steps)
        # A step lasts as long as the slower rank's: each round's figure is the slower rank's.
        per_round = [
            {
                "plain_ms": max(r["rows"][i]["plain_ms"] for r in ranks),
                "hooked_ms": max(r["rows"][i]["hooked_ms"] for r in ranks),
            }
            for i in range(rounds)
        ]
        costs = [row["hooked_ms"] / row["plain_ms"] - 1 for row in per_round]
        out.append(
            {
                "model": name,
                "rounds": per_round,
                "median_cost": statistics.median(costs),
                "cost_range": [min(costs), max(costs)],
                "plain_step_ms": statistics.median(r["plain_ms"] for r in per_round),
                "clock_sync_ms": max(r["clock_sync_ms"] for r in ranks),
                "clock_error_ms": max(r["clock_error_ms"] for r in ranks),
            }
        )
    call = hook_call_us()
    for row in out:
        row["hook_share_of_step"] = call["hook_us"] / (1e3 * row["plain_step_ms"])
    return {
        "hook_call": call,
        "what": f"2 gloo ranks, 1 thread each, DDP, batch 32; {rounds} alternated rounds of {steps} steps, plain vs "
        "with the arrival hook; cost = hooked / plain step time - 1 (the slower rank's per round), median over "
        "rounds; clock_sync_ms: the start-up offset measurement (9 barrier round trips), once per run; "
        "hook_call: the hook's own price per backward in one process (hook_call_us), and hook_share_of_step: that "
        "price over each model's plain DDP step",
        "rows": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    from bench import _write

    _write("arrivals", bench_arrivals(args.rounds, args.steps))


if __name__ == "__main__":
    main()
