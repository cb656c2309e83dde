"""Real gloo process groups for unit tests: one spawned process per rank, no Ray."""

import multiprocessing
import socket
from collections.abc import Callable
from typing import Any


def run_ranks(target: Callable[..., None], world: int, timeout_s: float = 120) -> list[Any]:
    """Start `target(rank, world, port, queue)` in `world` fresh processes (they init a gloo group on
    127.0.0.1:port and put (rank, result) on the queue, or (rank, traceback text) on failure); each
    rank's result, by rank. A rank that failed fails the test with its traceback."""
    context = multiprocessing.get_context("spawn")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    queue = context.Queue()
    processes = [context.Process(target=target, args=(rank, world, port, queue)) for rank in range(world)]
    for process in processes:
        process.start()
    try:
        results = dict(queue.get(timeout=timeout_s) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    for rank, result in results.items():
        assert not isinstance(result, str), f"rank {rank} failed:\n{result}"
    return [results[rank] for rank in range(world)]
