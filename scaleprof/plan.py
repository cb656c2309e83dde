"""Expand an experiment into runs, and check each run against the resources a cluster has.

Pure logic: no Ray here. The runner passes in `ray.cluster_resources()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from scaleprof.config import Experiment, ModelSpec, PlacementSpec
from scaleprof.records import RunKind


class DataSize(Protocol):
    """What the disk estimate needs of a data set (workloads.data.Dataset has it)."""

    @property
    def samples(self) -> int: ...

    @property
    def num_classes(self) -> int: ...


@dataclass(frozen=True)
class PlannedRun:
    """One (model, placement, repeat): trained for the configured epochs."""

    index: int  # 1-based position in the study
    run_id: str
    model: ModelSpec
    placement: PlacementSpec
    repeat: int
    per_worker_batch: int
    fold: int | None = None  # k-fold cross-validation: which held-out fold (0-based); None for fixed-split runs
    folds: int = 0

    @property
    def global_batch(self) -> int:
        return self.per_worker_batch * self.placement.workers

    @property
    def kind(self) -> RunKind:
        return RunKind.CV if self.fold is not None else RunKind.FIXED_SPLIT


def expand(experiment: Experiment) -> list[PlannedRun]:
    """Runs in study order: placement by placement, every model on each, repeats adjacent;
    then the k cross-validation folds of every model on the reference placement."""
    runs: list[PlannedRun] = []

    def add(model: ModelSpec, placement: PlacementSpec, repeat: int, suffix: str, **cv: int) -> None:
        index = len(runs) + 1
        batch = experiment.per_worker_batch(placement)
        run_id = f"{index:03d}-{model.label}-{placement.name}-{suffix}"
        runs.append(PlannedRun(index, run_id, model, placement, repeat, batch, **cv))

    for placement in experiment.placements:
        for model in experiment.model_list:
            for repeat in range(placement.repeats or experiment.repeats):
                add(model, placement, repeat, f"r{repeat}")
    k = experiment.evaluation.cv_folds
    for model in experiment.model_list:
        for fold in range(k):
            add(model, experiment.cv_reference, 0, f"cv{fold + 1}of{k}", fold=fold, folds=k)
    return runs


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


def describe(experiment: Experiment, runs: list[PlannedRun]) -> list[dict[str, object]]:
    """Rows for `scaleprof plan`: what each run would be."""
    return [
        {
            "run": r.index,
            "run_id": r.run_id,
            "model": r.model.label,
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
            "epochs": experiment.train.epochs,
        }
        for r in runs
    ]


# Sizes measured on stored studies: a step event is ~470 bytes of JSON; a report ~1 MB plus charts.
EVENT_BYTES = 500
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
        predictions = int(n * max(test_fraction, 0.5)) * (classes * 4 + 32)
        total += events * EVENT_BYTES + predictions + RUN_REPORT_BYTES
    return total
