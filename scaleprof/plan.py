"""Expand an experiment into runs, and check each run against the resources a cluster has.

Pure logic: no Ray here. The runner passes in `ray.cluster_resources()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaleprof.config import Experiment, ModelSpec, PlacementSpec


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
    def kind(self) -> str:
        return "cv" if self.fold is not None else "fixed-split"


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


def missing_resources(placement: PlacementSpec, cluster_resources: dict[str, float]) -> str | None:
    """Why the cluster can never hold this placement, or None when its totals suffice.

    Totals are necessary, not sufficient (one worker's bundle must fit on one node); the runner
    follows this with a bounded placement-group wait for the rest.
    """
    problems = []
    have_gpus = cluster_resources.get("GPU", 0.0)
    have_cpus = cluster_resources.get("CPU", 0.0)
    if placement.total_gpus > have_gpus:
        problems.append(f"needs {placement.total_gpus:g} GPU(s), the cluster has {have_gpus:g}")
    if placement.total_cpus > have_cpus:
        problems.append(f"needs {placement.total_cpus:g} CPU(s), the cluster has {have_cpus:g}")
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
            "batch/worker": r.per_worker_batch,
            "global batch": r.global_batch,
            "epochs": experiment.train.epochs,
        }
        for r in runs
    ]
