"""The fabric probe: time collectives between workers placed as a study places them, over the links they use.

`sweep` runs inside workers whose torch.distributed process group is up (gloo on CPU, nccl on GPU) and
times each collective at each message size; `probe_fabric` starts Ray Train workers in a placement, runs
the sweep there and hands the rows (`FabricRow`: the columns of `fabric.parquet`) back to the driver.
What the rows mean, and the latency/bandwidth fit, are analysis/fabric.py's; this module only measures.
It imports neither the analysis nor SciPy: `sweep` runs on training workers, which install scaleprof
without the driver's packages.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from scaleprof.execution.assignment import ASSIGNMENT, ProbeAssignment
from scaleprof.records import FABRIC_COLUMNS, FabricRow, LinkClass

if TYPE_CHECKING:
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

# 4 KiB ... 64 MiB in powers of 4. On the 2-core development machine two gloo ranks sweep all-reduce over all of
# it, with the default warm-up and repeats, in 1.4-1.5 s in plain processes and 2.4-2.6 s in Ray Train workers
# (2026-12-06; README, "The fabric"), so no cap below 64 MiB was needed.
DEFAULT_SIZES_BYTES = tuple(4**k for k in range(6, 14))
DEFAULT_REPEATS = 10
DEFAULT_WARMUP = 3
ELEMENT_BYTES = 4  # float32
# The sweep a study's multi-worker runs make after training (profile.fabric_probe): fewer repeats, and sizes
# up to the first power of 4 at or above 4x the gradient (16 MiB when it is not known; 1 to 64 MiB).
STUDY_REPEATS, STUDY_WARMUP = 5, 2
PROBE_COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather")  # analysis/fabric.py's COLLECTIVES


class ProbeRefused(Exception):
    """The probe cannot run as asked (its settings, or a cluster that cannot hold its placement): the
    message names the setting or the missing resource."""


def link_class_of(node_ids: Sequence[str]) -> str:
    """The link class of ranks on these nodes: intra-node when all share one node, else inter-node."""
    if not node_ids:
        raise ValueError("link_class_of needs the node id of every rank; got none")
    return LinkClass.INTRA_NODE if len(set(node_ids)) == 1 else LinkClass.INTER_NODE


def sweep(
    backend: str,
    link_class: str,
    sizes: Sequence[int] = DEFAULT_SIZES_BYTES,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    collectives: Sequence[str] = ("all_reduce",),
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    """Time each collective at each message size (bytes) over the initialised default process group.

    Per (collective, size): `warmup` untimed calls, then `repeats` timed calls, taken in rounds over all
    of them; each call starts after a barrier and is timed on the host clock (the device synchronised
    before and after on CUDA); the slowest rank's time of each call is found with an all-reduce (MAX),
    so every rank returns the same rows, ordered by collective, size and repeat. Tensors are float32 on
    `device` (default: this rank's CUDA device under nccl, else the CPU), every case's buffers held at
    once (85 MiB for the default sizes' all-reduce). A size is rounded down to whole elements (and, for
    all-gather and reduce-scatter, to world x whole chunks); the row says the size used.
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sweep runs inside workers whose torch.distributed process group is initialised")
    unknown = [c for c in collectives if c not in PROBE_COLLECTIVES]
    if unknown:
        raise ValueError(f"unknown collective(s) {', '.join(unknown)}: expected {', '.join(PROBE_COLLECTIVES)}")
    if repeats < 1 or warmup < 0 or not sizes or min(sizes) < ELEMENT_BYTES:
        raise ValueError(
            f"a sweep needs repeats >= 1, warmup >= 0 and sizes of {ELEMENT_BYTES} bytes or more; got repeats "
            f"{repeats}, warmup {warmup}, sizes {list(sizes)}"
        )
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    world = dist.get_world_size()
    cases = [(collective, size) for collective in collectives for size in sizes]
    calls = [_prepared(collective, size, world, device) for collective, size in cases]
    for call, _ in calls:
        for _ in range(warmup):
            call()
    own = torch.empty((repeats, len(calls)), dtype=torch.float64)
    # Round after round through every case, not a case's repeats in a row: a burst of other work on the
    # node (on a small machine, Ray's own actors still starting beside the workers) then slows one call of
    # several sizes, not every call of one size, which would bend the fit.
    for repeat in range(repeats):
        for case, (call, _) in enumerate(calls):
            _barrier(device)
            start = time.perf_counter()
            call()
            _synchronize(device)
            own[repeat, case] = time.perf_counter() - start
    slowest = own.to(device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    times = slowest.tolist()
    rows = [
        FabricRow(collective, backend, str(link_class), world, message_bytes, repeat, times[repeat][case]).to_dict()
        for case, ((collective, _), (_, message_bytes)) in enumerate(zip(cases, calls))
        for repeat in range(repeats)
    ]
    return rows


def _prepared(collective: str, size_bytes: int, world: int, device: torch.device) -> tuple[Callable[[], Any], int]:
    """One call of the collective on zeroed buffers (a sum of zeros stays finite however often it runs)
    and the message size it moves, as nccl-tests counts it."""
    import torch
    import torch.distributed as dist

    if collective == "all_reduce":
        buffer = torch.zeros(size_bytes // ELEMENT_BYTES, dtype=torch.float32, device=device)
        return (lambda: dist.all_reduce(buffer)), buffer.numel() * ELEMENT_BYTES
    chunk = max(1, size_bytes // (ELEMENT_BYTES * world))
    full = torch.zeros(chunk * world, dtype=torch.float32, device=device)
    part = torch.zeros(chunk, dtype=torch.float32, device=device)
    # torch 2.14 renamed them (the old names warn); the old names are all torch 2.6 has.
    if collective == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return (lambda: gather(full, part)), full.numel() * ELEMENT_BYTES
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return (lambda: scatter(part, full)), full.numel() * ELEMENT_BYTES


def _synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _barrier(device: torch.device) -> None:
    import torch.distributed as dist

    _synchronize(device)  # the previous call done on the device, not only queued
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()
    _synchronize(device)


def study_sizes(gradient_bytes: float | None) -> tuple[int, ...]:
    """4 KiB up to the first power of 4 at or above 4 x `gradient_bytes`, within 1 MiB ... 64 MiB."""
    top = 16 * 2**20 if not gradient_bytes else min(max(4 * gradient_bytes, 2**20), 64 * 2**20)
    sizes = [4**6]
    while sizes[-1] < top:
        sizes.append(sizes[-1] * 4)
    return tuple(sizes)


def run_sweep(device: torch.device, gradient_bytes: float | None, collectives: Sequence[str]) -> list[dict[str, Any]]:
    """The study's sweep, in a run's workers after training, over the run's own process group (every
    rank calls it; each returns the same rows)."""
    import ray
    import torch.distributed as dist

    node_ids: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(node_ids, ray.get_runtime_context().get_node_id())
    return sweep(
        str(dist.get_backend()),
        link_class_of(node_ids),
        study_sizes(gradient_bytes),
        STUDY_REPEATS,
        STUDY_WARMUP,
        collectives,
        device,
    )


def probe_worker(config: dict[str, ProbeAssignment]) -> dict[str, Any]:
    """What each Ray Train worker runs: agree with the others on the link class, then sweep the probe's
    assignment (`config` is Ray Train's `train_loop_config`, the assignment under its one key). Returns the
    rows (rank 0's reach the driver as Ray Train's `Result.return_value`), the ranks' node ids and the
    sweep's seconds."""
    import ray
    import torch
    import torch.distributed as dist

    probe = config[ASSIGNMENT]
    device = torch.device("cpu")
    if probe.backend == "nccl":
        from ray.train.torch import get_device

        device = get_device()
        torch.cuda.set_device(device)
    node_ids: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(node_ids, ray.get_runtime_context().get_node_id())
    started = time.perf_counter()
    rows = sweep(
        probe.backend, link_class_of(node_ids), probe.sizes, probe.repeats, probe.warmup, probe.collectives, device
    )
    return {"rows": rows, "node_ids": node_ids, "sweep_s": time.perf_counter() - started}


def probe_fabric(
    workers: int,
    nodes: int | None = None,
    strategy: str = "PACK",
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    sizes: Sequence[int] = DEFAULT_SIZES_BYTES,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    collectives: Sequence[str] = ("all_reduce",),
    placement_timeout_s: float = 60.0,
) -> pd.DataFrame:
    """The sweep in `workers` Ray Train workers placed with `strategy` (STRICT_SPREAD: one per node, so
    the links are inter-node), over nccl with GPUs, else gloo. Call with Ray connected.

    Before any worker starts, a placement the cluster can never hold (too few CPUs, GPUs or nodes) is a
    ProbeRefused naming what is missing, and one whose resources are not free within
    `placement_timeout_s` too (Ray Train would wait for it forever). The frame's `attrs` hold the
    ranks' `node_ids` and the sweep's seconds (`sweep_s`, without the workers' start-up)."""
    import pandas as pd
    from pydantic import ValidationError

    from scaleprof.config import PlacementSpec

    if workers < 2:
        raise ProbeRefused(f"workers: {workers}: a collective needs 2 or more workers to cross a link")
    if 0 < gpus_per_worker < 1:
        raise ProbeRefused(f"gpus_per_worker: {gpus_per_worker:g}: nccl cannot run two ranks on one GPU")
    try:
        placement = PlacementSpec(
            name="fabric",
            workers=workers,
            nodes=nodes,
            strategy=strategy,  # type: ignore[arg-type]
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'placement'}: {e['msg']}" for e in exc.errors())
        raise ProbeRefused(problems) from None
    _reserve(placement, placement_timeout_s)
    probe = ProbeAssignment(
        backend="nccl" if gpus_per_worker > 0 else "gloo",
        sizes=tuple(int(s) for s in sizes),
        repeats=repeats,
        warmup=warmup,
        collectives=tuple(collectives),
    )
    out = _fit(placement, probe)
    frame = pd.DataFrame(out["rows"], columns=list(FABRIC_COLUMNS))
    frame.attrs.update(node_ids=list(out["node_ids"]), sweep_s=float(out["sweep_s"]))
    realised = len(set(out["node_ids"]))
    if nodes is not None and realised != nodes:
        log.warning("fabric probe: %d node(s) were asked for, the workers landed on %d", nodes, realised)
    return frame


def _reserve(placement: Any, timeout_s: float) -> None:
    """The placement fits the cluster and its bundles are free within `timeout_s` (the group is removed
    again, for Ray Train to place its own); ProbeRefused otherwise."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from scaleprof.capacity import Outlook, verdict
    from scaleprof.execution.cluster import cluster_view
    from scaleprof.plan import bundle

    view = cluster_view()
    found = verdict(placement, view.node_resources(), view.autoscaling, view.node_types)
    if found.outlook == Outlook.NEVER:
        raise ProbeRefused(f"{placement.strategy} placement of {placement.workers} worker(s): {found.reason}")
    need = bundle(placement)
    group = placement_group([dict(need) for _ in range(placement.workers)], strategy=placement.strategy)
    started = time.monotonic()
    try:
        while not group.wait(timeout_seconds=1):  # polled each second, so Ctrl-C ends the wait at once
            if time.monotonic() - started >= timeout_s:
                raise ProbeRefused(
                    f"{placement.strategy} placement of {placement.workers} worker(s) x {need} did not become "
                    f"available within {timeout_s:g} s (the cluster could hold it, but the resources were not free)"
                )
    finally:
        remove_placement_group(group)


def _fit(placement: Any, probe: ProbeAssignment) -> dict[str, Any]:
    """Rank 0's return value of one TorchTrainer run of `probe_worker`."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from scaleprof.plan import bundle

    storage = tempfile.mkdtemp(prefix="scaleprof-fabric-")  # Ray Train's run directory: nothing of it is kept
    trainer = TorchTrainer(
        probe_worker,  # type: ignore[arg-type]  # its hint says None; Train V2 hands rank 0's value back
        train_loop_config={ASSIGNMENT: probe},
        torch_config=TorchConfig(backend=probe.backend),
        scaling_config=ScalingConfig(
            num_workers=placement.workers,
            use_gpu=placement.gpus_per_worker > 0,
            resources_per_worker=bundle(placement),
            placement_strategy=placement.strategy,
        ),
        run_config=RunConfig(
            name=f"fabric-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage,
            # A failing controller would be retried forever by default (-1).
            failure_config=FailureConfig(max_failures=0, controller_failure_limit=0),  # type: ignore[call-arg]
        ),
    )
    # On a helper thread, as the runner does: in the main thread Ray Train installs a SIGINT handler
    # of its own, and Ctrl-C would not reach the command.
    results: list[Any] = []
    errors: list[BaseException] = []

    def fit() -> None:
        try:
            results.append(trainer.fit())
        except BaseException as exc:  # handed to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=fit, name="scaleprof-fabric-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if errors:
        raise errors[0]
    value = getattr(results[0], "return_value", None)
    if not isinstance(value, dict):
        raise RuntimeError(
            "Ray Train handed back no return value from the fabric probe's rank 0: this Ray's Result has no "
            "`return_value` (added to Ray Train V2 in 2026, ray-project/ray#62021); upgrade Ray"
        )
    return value
