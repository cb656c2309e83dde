"""What the driver hands each Ray Train worker: one frozen object per run (or fabric probe), read by attribute.

Ray ships it to the workers with cloudpickle, so every field is picklable (this module's classes are pickled
by reference: the workers import scaleprof too). Ray Train takes `train_loop_config` only as a dict (its run
state validates it as one; any other object is turned into a string and refused), so the object travels as
the one entry `{ASSIGNMENT: ...}` of that dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from scaleprof.telemetry.handle import Aggregators
    from scaleprof.workloads.data import DataFacts, RunSplit

ASSIGNMENT = "assignment"  # the one key of the `train_loop_config` dict


@dataclass(frozen=True)
class WorkerAssignment:
    """One run, as each of its workers receives it (built by `StudyInputs.assignment`)."""

    experiment: dict[str, Any]  # the run's experiment at its sweep point, resolved (`Experiment.resolved()`)
    study_id: str
    run_id: str
    model_label: str  # which of the experiment's models the run trains (`ModelSpec.label`)
    per_worker_batch: int  # the micro-batch of each worker, after the scaling rule
    cpus_per_worker: float  # the placement's Ray CPUs per worker: the worker's torch threads
    aggregator: Aggregators  # the study's aggregators: where the worker's events, predictions and traces go
    # The driver's data set, None when the user's loop brings its own data:
    split: RunSplit | None  # the run's train / val / held indices into the data set
    shipped: tuple[np.ndarray, np.ndarray] | None  # the data set's (x, y) when the driver sends them, else None
    data_info: DataFacts | None  # what the worker checks its copy of the data set against
    flops_per_sample: float | None  # the model's, as the driver counted them (None: not counted)


@dataclass(frozen=True)
class InferenceInputs:
    """What the inference probe's actor receives: the held-out indices and, for the small real data set, its
    arrays (synthetic images are regenerated from the seed)."""

    test: np.ndarray
    shipped: tuple[np.ndarray, np.ndarray] | None
    data_info: DataFacts


@dataclass(frozen=True)
class ProbeAssignment:
    """What each worker of the fabric probe sweeps (execution/fabric_probe.py's `probe_worker`)."""

    backend: str  # torch.distributed's: nccl with GPUs, else gloo
    sizes: tuple[int, ...]  # message sizes, bytes
    repeats: int  # timed calls per collective and size
    warmup: int  # untimed calls before them
    collectives: tuple[str, ...]
