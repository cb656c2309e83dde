"""What every Ray Train worker executes: scaleprof's measurement around a training loop.

`train_loop_per_worker` starts the worker's event sink and monitor, opens a `scaleprof.session` for
the run, calls the loop (the built-in classifier loop, or the user's `train.loop`) with a plain config,
and closes everything so no event is lost, also when the loop fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from typing import Any

import torch

from scaleprof.config import Experiment, ModelSpec
from scaleprof.execution.assignment import ASSIGNMENT, WorkerAssignment
from scaleprof.records import Event, FabricEvent, WorkerEnd
from scaleprof.telemetry.monitor import EventSink, GpuSampler, Monitor, NodeSampler, SystemSampler
from scaleprof.worker.session import WorkerSession, activate, worker_start_event
from scaleprof.workloads.data import index_hash, listed_labels, open_source, size, subset
from scaleprof.workloads.imports import WorkloadError, import_object
from scaleprof.workloads.models import build_model


class RunInputs:
    """The run's data and model as the experiment names them, opened on first use in this worker."""

    def __init__(self, experiment: Experiment, assignment: WorkerAssignment):
        self.experiment, self.assignment = experiment, assignment

    @cached_property
    def _source(self) -> Any:
        spec = self.experiment.data
        assert spec is not None
        source = open_source(spec, self.experiment.seed, self.assignment.shipped)
        info, here = self.assignment.data_info, size(source.dataset)
        assert info is not None  # the driver sends it with the data set
        field = spec.field
        if here != info.samples:
            raise WorkloadError(
                field,
                f"the data set has {here} items in this worker and had {info.samples} on the driver: "
                "it must be the same everywhere (same files, same seed) for the split to mean anything",
            )
        # Labels the data set lists are compared (cheap); one that only yields them item by item would cost a
        # full read per worker per run, so only its size was checked above.
        listed = None if spec.in_memory else listed_labels(source.dataset)
        if listed is not None and index_hash(listed) != info.labels_sha256:
            raise WorkloadError(
                field,
                "the data set's labels differ in this worker from the driver's, so the split would not mean the "
                "same examples here (a factory drawing from an unseeded generator, or files that differ by node)",
            )
        return source.dataset

    def datasets(self) -> tuple[Any, Any, Any]:
        split = self.assignment.split
        assert split is not None  # the driver sends it with the data set
        return subset(self._source, split.train), subset(self._source, split.val), subset(self._source, split.held)

    def build_model(self) -> torch.nn.Module:
        """The run's model: a factory needs nothing of the data; a built-in model its shape and classes."""
        info = self.assignment.data_info
        return build_model(
            run_model(self.experiment, self.assignment),
            info.input_shape if info else (),
            info.num_classes if info else 0,
            self.experiment.seed,
        )


def loop_config(experiment: Experiment, assignment: WorkerAssignment, world_size: int) -> dict[str, Any]:
    """What the loop receives: the documented keys, then the whole resolved experiment."""
    spec = run_model(experiment, assignment)
    return {
        "seed": experiment.seed,
        "epochs": experiment.train.epochs,
        "batch_size": assignment.per_worker_batch,  # per worker, after the scaling rule
        "global_batch_size": assignment.per_worker_batch * world_size * experiment.train.grad_accumulation,
        "loop_config": dict(experiment.train.loop_config),
        "run_id": assignment.run_id,
        "model": spec.model_dump(mode="json", by_alias=True),
        "experiment": experiment.resolved(),
    }


def _the_loop(experiment: Experiment) -> Callable[[dict[str, Any]], Any]:
    if experiment.train.loop is None and experiment.task == "language-modeling":
        from scaleprof.workloads.language_model import train_language_model

        return train_language_model
    if experiment.train.loop is None:
        from scaleprof.workloads.classification import train_classifier

        return train_classifier
    # The user's modules arrive through the run's runtime environment (py_modules), as on a cluster.
    return import_object(experiment.train.loop, "train.loop")


def train_loop_per_worker(config: dict[str, WorkerAssignment]) -> None:
    """`config` is Ray Train's `train_loop_config`: the run's assignment under its one key."""
    import ray
    import ray.train
    import ray.train.torch

    assignment = config[ASSIGNMENT]
    experiment = Experiment.model_validate(assignment.experiment)
    if experiment.train.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    aggregator = assignment.aggregator
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    node_id = ray.get_runtime_context().get_node_id()
    attempt = ray.get(aggregator.first.register_worker.remote(assignment.run_id, rank))
    events_to = aggregator.for_node(node_id)  # a node's workers share one of the study's aggregators

    ids = {
        "study_id": assignment.study_id,
        "run_id": assignment.run_id,
        "attempt": attempt,
        "rank": rank,
        "node_id": node_id,
    }
    sink = EventSink(ids, lambda batch: events_to.ingest.remote(batch)).start()

    threads = max(1, int(assignment.cpus_per_worker))
    torch.set_num_threads(threads)  # one Ray CPU = one torch thread: workers must not oversubscribe cores
    device = ray.train.torch.get_device()
    gpu_index = device.index if device.type == "cuda" else None
    if gpu_index is None and device.type == "cuda":
        gpu_index = torch.cuda.current_device()
    gpu = GpuSampler(gpu_index)
    samplers = [SystemSampler(), gpu] + ([NodeSampler()] if ctx.get_local_rank() == 0 else [])  # one per node
    monitor = Monitor(sink, samplers, experiment.monitor.interval_s) if experiment.monitor.enabled else None
    if monitor:
        monitor.start()
    else:
        gpu.start()  # still record which GPU this worker had
    sink.emit(worker_start_event(device, threads, world, gpu, node_facts=ctx.get_local_rank() == 0))

    inputs = RunInputs(experiment, assignment)
    session = WorkerSession(
        sink.emit,
        lambda predictions: ray.get(aggregator.first.store_predictions.remote(assignment.run_id, predictions)),
        rank=rank,
        world_size=world,
        device=device,
        threads=threads,
        epochs=experiment.train.epochs,
        held_name=assignment.split.held_name if assignment.split else "test",
        held_index=assignment.split.held if assignment.split else None,
        flops_per_sample=assignment.flops_per_sample,
        datasets=inputs.datasets if experiment.data is not None else None,
        build_model=None if run_model(experiment, assignment).built_by_loop else inputs.build_model,
        train=experiment.train,
        profile=experiment.profile,
        store_trace=lambda name, data: ray.get(aggregator.first.store_trace.remote(assignment.run_id, name, data)),
    )
    activate(session)
    finished = False
    try:
        _the_loop(experiment)(loop_config(experiment, assignment, world))
        session.finish()
        if world > 1 and experiment.profile.fabric_probe:
            _sweep_fabric(sink.emit, session, device, rank)
        finished = True
    except BaseException:
        session.abort()
        raise
    finally:  # a failing loop still ships the events it produced
        activate(None)
        if monitor:
            monitor.stop()
        else:
            gpu.stop()
        if finished:
            sink.emit(WorkerEnd())
        sink.close()


def _sweep_fabric(emit: Callable[[Event], None], session: WorkerSession, device: Any, rank: int) -> None:
    """After training, time the run's collective over its own process group (rank 0 records the rows). A
    sweep that fails costs the run nothing but its fabric rows (a warning says why)."""
    import torch.distributed as dist

    from scaleprof.execution.fabric_probe import run_sweep

    if not dist.is_initialized():
        return
    collectives = ("reduce_scatter", "all_gather") if session.train.parallelism == "fsdp" else ("all_reduce",)
    try:
        rows = run_sweep(device, session.gradient_bytes, collectives)
    except Exception as exc:  # the collective library's own errors
        logging.getLogger(__name__).warning("scaleprof: the fabric sweep failed (%s); this run has no fabric rows", exc)
        return
    if rank == 0:
        for row in rows:
            emit(FabricEvent(**row))


def run_model(experiment: Experiment, assignment: WorkerAssignment) -> ModelSpec:
    """The model spec this run trains."""
    return next(m for m in experiment.model_list if m.label == assignment.model_label)
