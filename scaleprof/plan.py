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

    @property
    def global_batch(self) -> int:
        return self.per_worker_batch * self.placement.workers


def expand(experiment: Experiment) -> list[PlannedRun]:
    """Runs in study order: placement by placement, repeats adjacent."""
    runs: list[PlannedRun] = []
    for placement in experiment.placements:
        for repeat in range(experiment.repeats):
            index = len(runs) + 1
            run_id = f"{index:03d}-{experiment.model.label}-{placement.name}-r{repeat}"
            runs.append(
                PlannedRun(
                    index=index,
                    run_id=run_id,
                    model=experiment.model,
                    placement=placement,
                    repeat=repeat,
                    per_worker_batch=experiment.per_worker_batch(placement),
                )
            )
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
            "model": r.model.name,
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
