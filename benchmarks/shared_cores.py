"""Why the physics model misses on the tests' two-node cluster: what DDP over gloo costs when two ranks share a
machine's cores, taken apart without Ray. The prediction benchmark's communication-bound MLP (1.1 M parameters,
batch 64 of 8x8 inputs, one torch thread per rank, as a 1-CPU Ray worker has) timed, forward + backward, as

    plain        the bare model (no DDP wrapper)
    ddp_nosync   DDP's wrapper with gradient sync off (its hooks, no communication)
    ddp_sync     DDP as trained: buckets, the gloo all-reduce overlapped with backward
    allreduce    one gloo all-reduce of the whole gradient (what the fabric sweep fits), nothing else running

with 1 rank and with 2 ranks at once (each rank's medians; arms alternated over rounds). The model's premise
is that compute at 2 ranks is compute at 1 and the sync is the sweep's all-reduce; the ratios say how far
that holds on this machine: `sharing` = plain at 2 ranks / plain alone; `sync_over_allreduce` = (ddp_sync −
ddp_nosync) at 2 ranks / allreduce.

    .venv/bin/python benchmarks/shared_cores.py [--rounds 3] [--iterations 200]     # or: bench.py shared-cores

Results: benchmarks/results/shared_cores.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ARMS = ("plain", "ddp_nosync", "ddp_sync", "allreduce")


def _median_ms(work, iterations: int) -> float:
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds)


def _rank(rank: int, world: int, port: int, rounds: int, iterations: int, results: Any) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    )
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    gradient = torch.zeros(sum(p.numel() for p in model.parameters()))

    def nosync() -> None:
        with ddp.no_sync():
            torch.nn.functional.cross_entropy(ddp(x), y).backward()

    work = {
        "plain": lambda: torch.nn.functional.cross_entropy(model(x), y).backward(),
        "ddp_nosync": nosync,
        "ddp_sync": lambda: torch.nn.functional.cross_entropy(ddp(x), y).backward(),
        "allreduce": lambda: dist.all_reduce(gradient),
    }
    timings: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_ in range(rounds):
        order = ARMS[round_ % len(ARMS) :] + ARMS[: round_ % len(ARMS)]
        for arm in order:
            dist.barrier()
            _median_ms(work[arm], 20)  # warm-up
            dist.barrier()
            timings[arm].append(_median_ms(work[arm], iterations))
    results[(world, rank)] = {arm: statistics.median(values) for arm, values in timings.items()} | {
        "gradient_bytes": 4 * gradient.numel()
    }
    dist.destroy_process_group()


def bench_shared_cores(rounds: int, iterations: int) -> dict[str, Any]:
    """DDP over gloo on this machine's cores, 1 rank and 2 ranks at once (see the module's docstring)."""
    manager = mp.Manager()
    results = manager.dict()
    for world, port in ((1, 29701), (2, 29702)):
        mp.spawn(_rank, args=(world, port, rounds, iterations, results), nprocs=world)
    one = results[(1, 0)]
    two = {arm: statistics.mean(results[(2, rank)][arm] for rank in (0, 1)) for arm in ARMS}
    sync_two = two["ddp_sync"] - two["ddp_nosync"]
    return {
        "what": bench_shared_cores.__doc__,
        "cpus": os.cpu_count(),
        "gradient_bytes": one["gradient_bytes"],
        "one_rank_ms": {arm: one[arm] for arm in ARMS},
        "two_ranks_ms": two,
        "sharing": two["plain"] / one["plain"],
        "ddp_hooks_ms_two_ranks": two["ddp_nosync"] - two["plain"],
        "ddp_sync_ms_one_rank": one["ddp_sync"] - one["ddp_nosync"],
        "ddp_sync_ms_two_ranks": sync_two,
        "allreduce_ms_two_ranks": two["allreduce"],
        "sync_over_allreduce": sync_two / two["allreduce"],
        "step_two_over_model": two["ddp_sync"] / (one["plain"] + two["allreduce"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench import _write

    _write("shared_cores", bench_shared_cores(args.rounds, args.iterations))


if __name__ == "__main__":
    main()
