"""The study's manifest (`manifest.json`) as one type: what a study ran, on what, and how to reproduce it.

Written once per study by the driver (execution/manifest.collect_manifest; the runner adds `finished_at`
and `telemetry` at the end, `resumed_at` on a resume) and read by analysis, report and export through
`StudyStore.manifest()`. A field a newer scaleprof added has a default here, so an older study still reads;
a field this one does not know is kept (`extra="allow"`); `raw` is the manifest exactly as stored. The
experiment is parsed with today's defaults for settings added since it was written. No Ray, torch or pandas
here: the driver and analysis both import it.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, PrivateAttr, model_validator

from scaleprof.config import Experiment
from scaleprof.pricing import NodePrice


class _Part(BaseModel):
    """A part of the manifest: what an older scaleprof did not write is a default, what a newer one wrote
    beyond these fields is kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class DataRecord(_Part):
    """The data set as the driver opened it (only `name` when the training loop brings its own)."""

    name: str | None = None
    samples: int | None = None
    input_shape: list[int] = Field(default_factory=list)
    num_classes: int | None = None
    split: str | None = None  # how the split was made (since the language-modeling task)
    split_sizes: dict[str, int] = Field(default_factory=dict)  # samples per split: train, val, test
    split_sha256: dict[str, str] = Field(default_factory=dict)  # per split, the hash of its sample indices
    loader: dict[str, Any] | None = None  # the DataLoader settings (data.loader), as resolved
    loss_floor_nats: float | None = None  # synthetic-tokens: the loss of a model that knew the chain exactly


class DriverHost(_Part):
    hostname: str | None = None
    cpu_model: str | None = None
    platform: str | None = None


class RayNode(_Part):
    node_id: str | None = None
    address: str | None = None
    hostname: str | None = None
    resources: dict[str, float] = Field(default_factory=dict)  # Ray's resources, `node:<ip>` left out


class RayFacts(_Part):
    """The Ray cluster as the study found it."""

    cluster_resources: dict[str, float] = Field(default_factory=dict)  # CPU, GPU, memory, ... (Ray's names)
    nodes: list[RayNode] = Field(default_factory=list)  # the nodes alive at the start
    autoscaler: dict[str, Any] | None = None  # the node types it has and can add (execution/cluster.describe)
    job: dict[str, Any] | None = None  # the Ray job: submission_id, job_id (versions.ray_job)


class Gpu(_Part):
    name: str = ""
    uuid: str | None = None
    memory_mb: float | None = None


class GpuFacts(_Part):
    """NVML's view of one GPU node's GPUs; only `unavailable` when asking failed."""

    driver: str | None = None
    cuda_torch: str | None = None
    gpus: list[Gpu] = Field(default_factory=list)
    unavailable: str | None = None


class Telemetry(_Part):
    """What the aggregators wrote (telemetry/aggregator.stats_of), added when the study finished."""

    events_written: int
    workers: int
    gaps: int
    duplicates: int
    lag_p50_s: float | None = None  # sample to disk
    lag_p99_s: float | None = None
    aggregators: int = 1  # written only when there were several
    relays: int = 0
    relay_calls: int = 0


class Manifest(_Part):
    """`manifest.json`. Every field but the experiment has a default: a study an older scaleprof wrote lacks
    some (the oldest: pricing, models, code, toolchain, ray.autoscaler and ray.job, data.split and loader)."""

    study_id: str | None = None
    created_at: float | None = None  # Unix time
    finished_at: float | None = None  # Unix time; None: the study never finished
    resumed_at: list[float] = Field(default_factory=list)  # Unix times of each --resume
    experiment: Experiment  # as resolved when the study started, with today's defaults for settings added since
    experiment_sha256: str | None = None  # Experiment.digest() when the study started
    seed: int | None = None
    data: DataRecord = Field(default_factory=DataRecord)
    code: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per code_dirs entry: its git_revision
    # Each model as built: its spec, FLOPs per training sample, parameters (before the sweeps: a dict by label).
    models: list[dict[str, Any]] | dict[str, Any] = Field(default_factory=list)
    packages: dict[str, str | None] = Field(default_factory=dict)  # distribution name -> version (None: absent)
    python_executable: str | None = None
    git_revision: str | None = None  # of the directory the study ran from ("-dirty" when it had changes)
    driver_host: DriverHost = Field(default_factory=DriverHost)
    ray: RayFacts = Field(default_factory=RayFacts)
    toolchain: dict[str, Any] | None = None  # the driver's torch, CUDA, cuDNN, NCCL, Ray (versions.toolchain)
    gpu: GpuFacts | None = None  # None: the cluster had no GPU
    pricing: dict[str, NodePrice] = Field(default_factory=dict)  # the pricing rows the placements name
    telemetry: Telemetry | None = None  # None: the study did not finish (or predates it)

    _stored: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_stored(cls, data: Any, handler: ModelWrapValidatorHandler[Manifest]) -> Manifest:
        manifest = handler(data)
        if isinstance(data, dict):
            manifest._stored = copy.deepcopy(data)
        return manifest

    @property
    def raw(self) -> dict[str, Any]:
        """The manifest exactly as stored (a copy: change it and write it back with StudyStore.write_manifest)."""
        if self._stored is not None:
            return copy.deepcopy(self._stored)
        return self.model_dump(mode="json", by_alias=True)
