"""Expand an experiment into runs, and check each run against the resources a cluster has.

Pure logic: no Ray here. The runner passes in `ray.cluster_resources()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from scaleprof.config import Experiment, ModelSpec, PlacementSpec, point_label
from scaleprof.records import RunKind
from scaleprof.worker.precision import precision_problem


class DataSize(Protocol):
    """What the disk estimate and the steps arithmetic need of a data set (workloads.data.Dataset has it)."""

    @property
    def samples(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def train_samples(self) -> int: ...

    @property
    def val_samples(self) -> int: ...


@dataclass(frozen=True)
class PlannedRun:
    """One (model, sweep point, placement, repeat): trained for the configured epochs."""

    index: int  # 1-based position in the study
    run_id: str
    model: ModelSpec  # as this sweep point builds it
    placement: PlacementSpec
    repeat: int
    per_worker_batch: int
    experiment: Experiment  # what this run trains: the study's experiment at its sweep point
    point: dict[str, Any] = field(default_factory=dict)  # the sweep point ({} without a sweep)
    fold: int | None = None  # k-fold cross-validation: which held-out fold (0-based); None for fixed-split runs
    folds: int = 0

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all workers (micro-batch x workers x accumulation)."""
        return self.per_worker_batch * self.placement.workers * self.experiment.train.grad_accumulation

    @property
    def series(self) -> str:
        """The model at this sweep point: what throughput is compared along (scaling, the law fit)."""
        return "-".join(filter(None, (self.model.label, point_label(self.point))))

    @property
    def batch_series(self) -> str:
        """The series without its batch size: the line of a throughput-versus-batch-size chart."""
        rest = {k: v for k, v in self.point.items() if k != "train.batch_size"}
        return "-".join(filter(None, (self.model.label, point_label(rest))))

    @property
    def kind(self) -> RunKind:
        return RunKind.CV if self.fold is not None else RunKind.FIXED_SPLIT


def expand(experiment: Experiment) -> list[PlannedRun]:
    """Runs in study order: placement by placement, every model at every sweep point on each, repeats
    adjacent; then the k cross-validation folds of every model on the reference placement."""
    runs: list[PlannedRun] = []
    at = [(point, experiment.at(point)) for point in experiment.points()]

    def add(
        i: int,
        point: dict[str, Any],
        run_exp: Experiment,
        placement: PlacementSpec,
        repeat: int,
        suffix: str,
        **cv: int,
    ) -> None:
        model = run_exp.model_list[i]
        planned = PlannedRun(
            len(runs) + 1, "", model, placement, repeat, run_exp.per_worker_batch(placement), run_exp, point, **cv
        )
        run_id = f"{planned.index:03d}-{planned.series}-{placement.name}-{suffix}"
        runs.append(dataclasses.replace(planned, run_id=run_id))

    for placement in experiment.placements:
        for i in range(len(experiment.model_list)):
            for point, run_exp in at:
                for repeat in range(placement.repeats or experiment.repeats):
                    add(i, point, run_exp, placement, repeat, f"r{repeat}")
    k = experiment.evaluation.cv_folds
    for i in range(len(experiment.model_list)):
        for point, run_exp in at:
            for fold in range(k):
                add(i, point, run_exp, experiment.cv_reference, 0, f"cv{fold + 1}of{k}", fold=fold, folds=k)
    return runs


def unsupported(run: PlannedRun) -> str | None:
    """Why this run's settings cannot be measured on its device kind at all (skipped before it starts),
    or None. Whether a GPU can do bf16 is known only on the GPU: the worker checks that."""
    return precision_problem(run.experiment.train.precision, run.placement.device)


def bundle(placement: PlacementSpec) -> dict[str, float]:
    """The resources of one worker, as Ray bundles and Ray Train's resources_per_worker want them."""
    out = {"CPU": float(placement.cpus_per_worker)}
    if placement.gpus_per_worker:
        out["GPU"] = float(placement.gpus_per_worker)
    return out


def _fits(node: dict[str, float], need: dict[str, float], times: int = 1) -> bool:
    return all(node.get(k, 0.0) >= v * times for k, v in need.items())


def missing_resources(
    placement: PlacementSpec, cluster_resources: dict[str, float], nodes: list[dict[str, float]] | None = None
) -> str | None:
    """Why the cluster can never hold this placement, or None when it could.

    Checks totals, then (given each node's total resources) whether enough nodes can each hold a
    worker for the placement's strategy. Free-ness is not checked here: the runner follows with a
    bounded placement-group wait.
    """
    problems = []
    have_gpus = cluster_resources.get("GPU", 0.0)
    have_cpus = cluster_resources.get("CPU", 0.0)
    if placement.total_gpus > have_gpus:
        problems.append(f"needs {placement.total_gpus:g} GPU(s), the cluster has {have_gpus:g}")
    if placement.total_cpus > have_cpus:
        problems.append(f"needs {placement.total_cpus:g} CPU(s), the cluster has {have_cpus:g}")
    if problems or nodes is None:
        return "; ".join(problems) or None
    need = bundle(placement)
    capable = [n for n in nodes if _fits(n, need)]
    want_nodes = placement.expected_nodes or 1
    if len(capable) < want_nodes:
        problems.append(
            f"needs {want_nodes} node(s) that can each hold a worker ({need}), the cluster has {len(capable)} "
            f"of {len(nodes)}"
        )
    elif placement.strategy == "STRICT_PACK" and not any(_fits(n, need, placement.workers) for n in nodes):
        problems.append(f"STRICT_PACK needs one node with {placement.workers} x {need}, no node has that")
    return "; ".join(problems) or None


def describe(experiment: Experiment, runs: list[PlannedRun], data: DataSize | None = None) -> list[dict[str, object]]:
    """Rows for `scaleprof plan`: what each run would be, with the steps each worker trains per epoch and
    the steady steps it would measure ("?" when the loop brings data of a size not known here)."""
    return [
        {
            "run": r.index,
            "run_id": r.run_id,
            "model": r.model.label,
            **{key.removeprefix("train."): _shown(v) for key, v in r.point.items() if key not in SHOWN_KEYS},
            "kind": r.kind,
            "placement": r.placement.name,
            "device": r.placement.device,
            "workers": r.placement.workers,
            "cpus/worker": r.placement.cpus_per_worker,
            "gpus/worker": r.placement.gpus_per_worker,
            "strategy": r.placement.strategy,
            "nodes": r.placement.expected_nodes or "any",
            "batch/worker": r.per_worker_batch,
            "global batch": r.global_batch,
            "precision": r.experiment.train.precision,
            "parallelism": r.experiment.train.parallelism,
            "epochs": experiment.train.epochs,
            "steps/epoch": _known(steps_per_worker(r, train_samples_of(r, data))),
            "steady steps": _known(planned_steady_steps(r, train_samples_of(r, data))),
            **({"skipped": unsupported(r) or ""} if any(unsupported(q) for q in runs) else {}),
        }
        for r in runs
    ]


def train_samples_of(run: PlannedRun, data: DataSize | None) -> int | None:
    """Training samples of the run's split: the fixed train split, or for fold i of k the train+val pool
    less one fold. None when the loop brings its own data."""
    if data is None:
        return None
    if run.fold is None:
        return data.train_samples
    pool = data.train_samples + data.val_samples
    return pool - -(-pool // run.folds)


def steps_per_worker(run: PlannedRun, train_samples: int | None) -> int | None:
    """Step events (micro-batches) each worker records per epoch: `train.steps_per_epoch` x accumulation,
    or one pass over its DistributedSampler shard (padded to an equal share, or cut when the last short
    batch is dropped: compiled models and language models). None when the data's size is unknown."""
    train = run.experiment.train
    if train.steps_per_epoch:
        return train.steps_per_epoch * train.grad_accumulation
    if train_samples is None:
        return None
    workers, batch = run.placement.workers, run.per_worker_batch
    if drops_last_batch(run.experiment):
        return (train_samples // workers) // batch
    shard = -(-train_samples // workers)  # ceiling division
    return -(-shard // batch)


def drops_last_batch(experiment: Experiment) -> bool:
    """The built-in loops drop the last short batch for compiled and language models (equal shapes): what
    workloads/loop.set_up and the language-model loop do; a change there must change this too."""
    return experiment.train.compile is not None or experiment.task == "language-modeling"


def planned_steady_steps(run: PlannedRun, train_samples: int | None) -> int | None:
    """Steady steps per worker the run will measure at most: epochs 2..E, or with one epoch the steps
    after `train.warmup_steps` (analysis/steady.py; step times still settling may cut more)."""
    per_epoch = steps_per_worker(run, train_samples)
    if per_epoch is None:
        return None
    train = run.experiment.train
    steady = per_epoch * (train.epochs - 1) if train.epochs > 1 else max(0, per_epoch - train.warmup_steps)
    profile = run.experiment.profile
    return max(0, steady - profile.steps) if profile.torch_profiler else steady  # traced steps are left out


def few_steady_steps(experiment: Experiment, runs: list[PlannedRun], data: DataSize | None) -> list[str]:
    """A warning per group of runs that would measure fewer steady steps per worker than the floor."""
    floor = experiment.evaluation.min_steady_steps
    low = [(r, n) for r in runs if (n := planned_steady_steps(r, train_samples_of(r, data))) is not None and n < floor]
    if not low:
        return []
    listed = ", ".join(f"{r.run_id} ({n})" for r, n in low[:6]) + (f" and {len(low) - 6} more" if len(low) > 6 else "")
    return [
        f"{len(low)} run(s) would measure fewer than evaluation.min_steady_steps={floor} steady steps per worker: "
        f"{listed}. Their throughput would rest on too few steps (marked low-confidence in the report); set "
        f"train.steps_per_epoch (every placement then trains that many steps an epoch) or more train.epochs"
    ]


SHOWN_KEYS = ("train.batch_size", "train.precision", "train.parallelism")  # columns of their own in describe()


def _known(value: int | None) -> int | str:
    return "?" if value is None else value


def _shown(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


# Sizes measured on stored studies: a step event takes ~60 bytes once segments are merged, up to a few
# hundred in the small segments of a slow run before they are (and both while merging); a report ~1 MB
# plus charts.
EVENT_BYTES = 300
REPORT_BYTES = 4 * 2**20
RUN_REPORT_BYTES = 200 * 2**10


def study_bytes_estimate(experiment: Experiment, runs: list[PlannedRun], data: DataSize | None = None) -> int:
    """Roughly what a study writes: step and epoch events, held-out predictions, tables and report.

    An upper-end estimate for the disk check before runs start; system samples (one per worker per
    monitor interval) are left out, as their count depends on how long runs take. Without the data
    set's size (a loop that brings its own data) a run is counted as 100,000 samples of 10 classes."""
    n = data.samples if data is not None else 100_000
    classes = data.num_classes if data is not None else 10
    fractions = (experiment.data.val_fraction + experiment.data.test_fraction) if experiment.data else 0.3
    test_fraction = experiment.data.test_fraction if experiment.data else 0.15
    train = int(n * (1 - fractions))
    total = REPORT_BYTES
    for run in runs:
        steps_per_epoch = -(-train // run.per_worker_batch)  # over all workers together
        events = experiment.train.epochs * (steps_per_epoch + run.placement.workers) + 16 * run.placement.workers
        # a language model stores no class probabilities (its held-out loss is an event)
        lm = experiment.task == "language-modeling"
        predictions = 0 if lm else int(n * max(test_fraction, 0.5)) * (classes * 4 + 32)
        total += events * EVENT_BYTES + predictions + RUN_REPORT_BYTES
    return total
