"""The records that cross layers: event kinds and fields, run statuses and kinds, in one place.

A worker emits typed events (`StepEvent`, `EpochEvent`, ...); the sink stamps them with ids and a
sequence number; the aggregator stores them as columnar segments; analysis reads the same field names back.
The unit tests build their study data from these classes too, so renaming a field here breaks every
test that depends on it instead of leaving them green.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar


class EventKind(StrEnum):
    STEP = "step"
    EPOCH = "epoch"
    SYSTEM = "system"
    EVAL = "eval"
    LIFECYCLE = "lifecycle"
    PROBE = "probe"
    FABRIC = "fabric"


class Lifecycle(StrEnum):
    """The `event` field of lifecycle events."""

    WORKER_START = "worker_start"
    MODEL_INFO = "model_info"
    LOADER_INFO = "loader_info"
    GPU_UNAVAILABLE = "gpu_unavailable"
    WORKER_END = "worker_end"
    CLOCK_SYNC = "clock_sync"


class RunStatus(StrEnum):
    PLANNED = "planned"
    PLACED = "placed"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    # It trained to the end, but no step was recorded (a user loop that never iterates session.steps(),
    # or a store whose step events are lost): nothing to measure, so no figure and no "ok".
    UNMEASURED = "unmeasured"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.OK, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.UNMEASURED)


FINISHED = (RunStatus.OK, RunStatus.SKIPPED)  # what --resume keeps
NO_STEPS = (
    "the training loop recorded no steps, so there is nothing to measure: iterate the training data through "
    "`for batch in session.steps(loader)` (inside `for epoch in session.epochs()`) in your loop (README: "
    "'Profile your own model')"
)


class RunKind(StrEnum):
    FIXED_SPLIT = "fixed-split"
    CV = "cv"


@dataclass(frozen=True)
class RunRecord:
    """What a run is: written whole to run_records.jsonl with its first state and its final one, where the
    status, reason, times and attempts join it (see execution/lifecycle.py)."""

    run_id: str
    index: int
    model: str
    model_name: str
    kind: RunKind
    fold: int | None
    placement: str
    device: str
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    per_worker_batch: int
    global_batch: int
    repeat: int
    strategy: str
    nodes_requested: int | None
    node_type: str | None
    # The model and its training settings; `model` above is the series (model label + sweep point), the
    # unit that throughput is compared along. Defaults: studies written before sweeps existed.
    model_label: str = ""
    batch_series: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # the sweep point
    task: str = "classification"
    train_precision: str = "fp32"  # fp32 | bf16 | fp16 (not `precision`: that is a quality metric)
    parallelism: str = "ddp"
    compile: str = "off"
    grad_accumulation: int = 1
    optimizer: str = "sgd"
    tokens_per_sample: int | None = None  # language modeling: tokens per training sequence

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class RunOutcome:
    """What happened to a run: its latest state and what the states after `planned` added to its record
    (execution/runner.py run_one). A field a run never reached is None (times) or its default."""

    status: RunStatus
    reason: str = ""
    detail: str = ""  # the traceback's tail of a failed run
    started_at: float | None = None  # time.time() at running
    ended_at: float | None = None
    wall_s: float = float("nan")  # ended_at - started_at, for a run that ended
    attempts: int | None = None  # Ray Train's attempts (None where the aggregator could not say)
    wait_s: float = 0.0  # the wait for the run's placement group, before its wall time
    ray_node_types: dict[str, int] = field(default_factory=dict)  # Ray node type -> workers that landed there


@dataclass(frozen=True)
class FinalRun:
    """A run's final record as the store reads it back: what it is and what happened. `raw` is the record's
    lines merged as they are on disk (the runner's resume hands it on as it would a run it ran)."""

    record: RunRecord
    outcome: RunOutcome
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_stored(cls, line: dict[str, Any]) -> FinalRun:
        """A run's lines from run_records.jsonl merged, with the defaults of studies written before a field
        existed: the one place that knows them. A field this version does not know stays only in `raw`.
        The line needs run_id, model, workers and a RunStatus status (else KeyError or ValueError)."""
        stored = {k: v for k, v in line.items() if v is not None}  # JSON null: not known
        model = stored["model"]
        before = {
            # Every study wrote these; a damaged line may lack one (then: unknown, or nothing).
            "index": 0,
            "placement": "",
            "device": "",
            "per_worker_batch": 0,
            "global_batch": 0,
            "repeat": 0,
            "cpus_per_worker": 1,
            "gpus_per_worker": 0,
            # Before cross-validation: every run trained on the fixed split; before model sweeps, the model's
            # name was its label and its series; before placement strategies, Ray Train's default, PACK.
            "kind": RunKind.FIXED_SPLIT,
            "fold": None,
            "model_name": model,
            "strategy": "PACK",
            "nodes_requested": None,
            "node_type": None,
        }
        record = RunRecord(**{**before, **{k: stored[k] for k in RunRecord.__dataclass_fields__ if k in stored}})
        label = record.model_label or model
        record = replace(
            record, kind=RunKind(record.kind), model_label=label, batch_series=record.batch_series or label
        )
        outcome = RunOutcome(**{k: stored[k] for k in RunOutcome.__dataclass_fields__ if k in stored})
        return cls(record, replace(outcome, status=RunStatus(outcome.status)), dict(line))


# Fields every stored event carries (stamped by the sink), before its own fields.
ID_FIELDS = ("study_id", "run_id", "attempt", "rank", "node_id")
STAMP_FIELDS = ("seq", "time", "kind")


def stored(ids: dict[str, Any], seq: int, time: float, event: Event) -> dict[str, Any]:
    """One event as the store holds it: the worker's ids, its sequence number and time, kind, fields."""
    return {**ids, **stamped(seq, time, event)}


def stamped(seq: int, time: float, event: Event) -> dict[str, Any]:
    """One event as a worker's sink holds it: its sequence number, time, kind and fields (the ids are
    the sink's, sent once per batch)."""
    return {"seq": seq, "time": time, "kind": event.kind, **event.fields()}


def event_batch(ids: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One worker's events as they travel to the aggregator: its ids once, and each field as a list
    over the events (None where an event lacks it). Columns cost a fraction of per-event dicts to
    send and to store."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {"ids": dict(ids), "columns": {name: [row.get(name) for row in rows] for name in names}}


def batch_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch's events as stored dicts (ids included; a field an event lacked left out)."""
    columns = batch["columns"]
    n = len(columns.get("seq", ()))
    return [{**batch["ids"], **{k: v[i] for k, v in columns.items() if v[i] is not None}} for i in range(n)]


def batches_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored event dicts (any workers, in any order) as one batch per worker, order kept."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row.get(k) for k in ID_FIELDS[1:4]), []).append(row)
    return [
        event_batch(
            {k: group[0].get(k) for k in ID_FIELDS},
            [{k: v for k, v in row.items() if k not in ID_FIELDS} for row in group],
        )
        for group in grouped.values()
    ]


@dataclass
class Event:
    """Base of the typed events: `fields()` is what the sink stores beside the ids and stamps."""

    kind: ClassVar[EventKind]
    event: ClassVar[Lifecycle | None] = None  # lifecycle events: which one (stored as the `event` field)

    def fields(self) -> dict[str, Any]:
        if self.event is not None:  # lifecycle events store None ("not known"); the rest omit it (size)
            return {"event": self.event, **vars(self)}
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class StepEvent(Event):
    """One training step of one worker. `data_s` is the wait for the batch; `step_s` runs from the end
    of the previous step to the end of this one (so it includes `data_s`). The phase times are present
    when the loop marks them (the built-in loop does)."""

    kind: ClassVar[EventKind] = EventKind.STEP
    epoch: int
    step: int
    samples: int
    data_s: float
    compute_s: float
    step_s: float
    forward_s: float | None = None
    backward_s: float | None = None
    optimizer_s: float | None = None
    profiled: bool | None = None  # traced by torch.profiler: slowed by it, left out of throughput
    # Arrival at the gradient exchange (scaleprof/worker/arrivals.py), on this rank's own wall clock (time.time();
    # ClockSync says how it stands against rank 0's): when the step started (the previous step's end) and
    # when this rank's gradients were all ready for the collective; then how long it waited in the exchange.
    start_t: float | None = None
    enter_t: float | None = None  # when its forward entered an exchange (DDP's buffer broadcast, FSDP's all-gather)
    arrive_t: float | None = None
    sync_wait_s: float | None = None


@dataclass
class EpochEvent(Event):
    """One epoch of one worker: `epoch_time_s` runs from the start barrier to the end of its last
    step (validation excluded); `epoch_start` is wall-clock time (s since the epoch)."""

    kind: ClassVar[EventKind] = EventKind.EPOCH
    epoch: int
    epoch_time_s: float
    epoch_start: float
    samples: int
    steps: int
    train_loss: float | None = None
    lr: float | None = None
    gpu_mem_peak_mb: float | None = None
    host_mem_peak_mb: float | None = None  # the process's resident high-water mark so far
    state_mem_mb: float | None = None  # parameters + gradients + optimizer state held (session.optimizer_step)
    compile_s: float | None = None  # seconds torch.compile spent in this epoch's steps (inside epoch_time_s)
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass
class EvalEvent(Event):
    """The held-out evaluation of rank 0 (its predictions are stored beside the events)."""

    kind: ClassVar[EventKind] = EventKind.EVAL
    split: str
    samples: int
    test_loss: float | None = None
    test_accuracy: float | None = None


@dataclass
class FabricEvent(Event):
    """One timed call of the fabric sweep a multi-worker run's workers make after training (rank 0 sends
    them; the fields are FabricRow's)."""

    kind: ClassVar[EventKind] = EventKind.FABRIC
    collective: str
    backend: str
    link_class: str
    world: int
    bytes: int
    repeat: int
    time_s: float


@dataclass
class ProbeEvent(Event):
    """The gradient-sync probe: backward with and without DDP's all-reduce on the same batches; where
    ranks share a machine, the host-sharing probe too: this rank's forward + backward (no sync) alone on
    its machine and with the machine's other ranks computing at once (`host_ranks` ranks on it). With one
    worker, the wrapper probe instead: forward + backward through the bare model (`bare_s`) and through DDP
    over the run's one-rank group (`wrapped_s`), medians; `wrapper_low_s`..`wrapper_high_s` the range of
    the rounds' differences."""

    kind: ClassVar[EventKind] = EventKind.PROBE
    backward_sync_s: float | None = None
    backward_nosync_s: float | None = None
    allreduce_s: float | None = None
    compute_alone_s: float | None = None
    compute_together_s: float | None = None
    host_ranks: int | None = None
    bare_s: float | None = None
    wrapped_s: float | None = None
    wrapper_low_s: float | None = None
    wrapper_high_s: float | None = None


@dataclass
class SystemEvent(Event):
    """One monitor sample: process CPU% (100 = one core), RSS and, with a GPU, NVML readings."""

    kind: ClassVar[EventKind] = EventKind.SYSTEM
    cpu_pct: float | None = None
    rss_mb: float | None = None
    node_cpu_pct: float | None = None  # the whole node's busy CPU (100 = one core), one worker per node
    ray_cpu_pct: float | None = None  # the part of it Ray's processes used (telemetry.monitor.NodeSampler)
    gpu_util_pct: float | None = None
    gpu_mem_used_mb: float | None = None
    gpu_power_w: float | None = None
    gpu_energy_mj: float | None = None  # NVML's cumulative energy counter (millijoules)
    gpu_sm_active_pct: float | None = None  # GPM: share of SM cycles busy (Hopper and newer)
    gpu_processes: float | None = None  # compute processes on this worker's GPU, its own included


@dataclass
class WorkerStart(Event):
    kind: ClassVar[EventKind] = EventKind.LIFECYCLE
    event: ClassVar[Lifecycle | None] = Lifecycle.WORKER_START
    world_size: int = 1
    hostname: str = ""
    pid: int = 0
    device: str = "cpu"
    torch_threads: int = 1
    gpu_uuid: str | None = None
    gpu_name: str | None = None
    gpu_unavailable: str | None = None
    versions: str | None = None  # torch, CUDA, NCCL as this worker has them (the image may differ from the driver)
    node_cpus: int | None = None  # logical CPUs of the node (what node_cpu_pct is out of, x100)
    gpu_driver: str | None = None  # NVIDIA driver version (GPU workers)
    gpu_topology: str | None = None  # `nvidia-smi topo -m` of the node (one GPU worker per node)
    nccl_env: str | None = None  # the worker's NCCL_* variables, as JSON


@dataclass
class ModelInfo(Event):
    """The model as trained: parameters, FLOPs per training sample (forward + backward) when known,
    and on CPU the worker's measured matmul peak (the MFU denominator)."""

    kind: ClassVar[EventKind] = EventKind.LIFECYCLE
    event: ClassVar[Lifecycle | None] = Lifecycle.MODEL_INFO
    parameters: int = 0
    flops_per_sample: float | None = None
    cpu_peak_flops: float | None = None
    math_dtype: str | None = None  # the training precision's matmul dtype: float32, bfloat16, float16
    math_mode: str | None = None  # what the math ran on: fp32, tf32, bf16, fp16 (analysis/peaks.py)


@dataclass
class LoaderInfo(Event):
    """The training data loader's settings, as the loop built it."""

    kind: ClassVar[EventKind] = EventKind.LIFECYCLE
    event: ClassVar[Lifecycle | None] = Lifecycle.LOADER_INFO
    batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    batches: int | None = None


@dataclass
class GpuUnavailable(Event):
    kind: ClassVar[EventKind] = EventKind.LIFECYCLE
    event: ClassVar[Lifecycle | None] = Lifecycle.GPU_UNAVAILABLE
    reason: str | None = None


@dataclass
class ClockSync(Event):
    """How this rank's wall clock stands against rank 0's, measured at start-up (scaleprof/worker/arrivals.py):
    `offset_s` = this rank's time.time() - rank 0's at the same moment, the median over `rounds` barrier
    round trips; `error_s` = half their spread (what the offset cannot tell apart)."""

    kind: ClassVar[EventKind] = EventKind.LIFECYCLE
    event: ClassVar[Lifecycle | None] = Lifecycle.CLOCK_SYNC
    offset_s: float = 0.0
    error_s: float = 0.0
    rounds: int = 0


@dataclass
class WorkerEnd(Event):
    kind: ClassVar[EventKind] = EventKind.LIFECYCLE
    event: ClassVar[Lifecycle | None] = Lifecycle.WORKER_END


class LinkClass(StrEnum):
    """The link a collective crossed: all its ranks on one node, or on two or more."""

    INTRA_NODE = "intra-node"
    INTER_NODE = "inter-node"


@dataclass(frozen=True)
class FabricRow:
    """One timed call of a fabric sweep (`fabric.parquet`, fitted by analysis/fabric.py): the slowest rank's
    seconds for one call of `collective` over `world` ranks with a message of `bytes` (nccl-tests' size: the
    buffer each rank holds for all-reduce; world x each rank's chunk for all-gather and reduce-scatter)."""

    collective: str
    backend: str
    link_class: str
    world: int
    bytes: int
    repeat: int
    time_s: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


FABRIC_COLUMNS = tuple(FabricRow.__dataclass_fields__)
