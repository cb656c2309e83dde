"""The manifest: everything needed to say what a study ran on and to reproduce it."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from typing import Any

from scaleprof.config import Experiment
from scaleprof.execution.cluster import cluster_view
from scaleprof.versions import ray_job, toolchain
from scaleprof.workloads.data import Dataset, load_dataset

PACKAGES = ("scaleprof", "torch", "torchvision", "ray", "numpy", "pandas", "pyarrow", "scikit-learn", "altair")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision(directory: str | None = None) -> str | None:
    """The git revision of the user's code (the working directory, or `directory`), if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True, cwd=directory
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5, cwd=directory
        ).stdout
        return out + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu_info() -> dict[str, Any]:
    """Runs on a GPU node: NVML's view of the GPUs there (name, UUID, driver, CUDA)."""
    import pynvml
    import torch

    pynvml.nvmlInit()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            gpus.append(
                {
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
                    "memory_mb": pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20,
                }
            )
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "cuda_torch": torch.version.cuda,
            "gpus": gpus,
        }
    finally:
        pynvml.nvmlShutdown()


def gpu_models(cluster_resources: dict[str, float], timeout_s: float = 30) -> dict[str, Any] | None:
    """Ask one GPU worker for its GPUs, when the cluster has any (never claims a GPU otherwise)."""
    if cluster_resources.get("GPU", 0) <= 0:
        return None
    import ray

    probe = ray.remote(num_gpus=1, num_cpus=0)(_gpu_info)
    ref = probe.remote()
    try:
        return ray.get(ref, timeout=timeout_s)
    except Exception as exc:
        ray.cancel(ref, force=True)
        return {"unavailable": f"{type(exc).__name__}: {str(exc)[:200]}"}


def data_record(experiment: Experiment, data: Dataset | None) -> dict[str, Any]:
    if experiment.data is None or data is None:
        return {"name": f"brought by {experiment.train.loop}"}
    spec = experiment.data
    record = {
        "name": spec.label,
        "samples": int(data.samples),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "split": "given by the factory"
        if data.given_split
        else "random, seeded"
        if spec.is_tokens
        else "stratified, seeded",
        "split_sizes": {k: int(len(v)) for k, v in data.splits().items()},
        "split_sha256": data.split_hashes(),
        "loader": spec.loader.model_dump(mode="json"),
    }
    if spec.name == "synthetic-tokens":  # the loss a model that knew the chain exactly would have
        from scaleprof.workloads.tokens import chain_entropy

        record["loss_floor_nats"] = chain_entropy(spec.vocab_size, experiment.seed, spec.seq_len)
    return record


def collect_manifest(
    experiment: Experiment,
    study_id: str,
    pricing: dict[str, Any] | None = None,
    data: Dataset | None = None,
    models: dict[str, dict[str, float]] | None = None,  # by model spec (JSON): FLOPs per sample, parameters
) -> dict[str, Any]:
    import ray

    if data is None and experiment.data is not None:
        data = load_dataset(experiment.data, experiment.seed)
    resources = ray.cluster_resources()
    nodes = [
        {
            "node_id": n["NodeID"],
            "address": n.get("NodeManagerAddress"),
            "hostname": n.get("NodeManagerHostname"),
            "resources": {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")},
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return {
        "study_id": study_id,
        "created_at": time.time(),
        "experiment": experiment.resolved(),
        "experiment_sha256": experiment.digest(),
        "seed": experiment.seed,
        "data": data_record(experiment, data),
        "code": {d: {"git_revision": git_revision(d)} for d in experiment.code_dirs or []},
        # Each model as built (a swept kwarg is another model): its spec, FLOPs per training sample, parameters.
        "models": [{"model": json.loads(key), **info} for key, info in (models or {}).items()],
        "packages": package_versions(),
        "python_executable": sys.executable,
        "git_revision": git_revision(),
        "driver_host": {"hostname": platform.node(), "cpu_model": cpu_model(), "platform": platform.platform()},
        # The cluster as the study found it: nodes now, the node types an autoscaler can add, the Ray job.
        "ray": {
            "cluster_resources": resources,
            "nodes": nodes,
            "autoscaler": cluster_view().describe(),
            "job": ray_job(),
        },
        "toolchain": toolchain(),  # the driver's; each worker's is in its start event
        "gpu": gpu_models(resources),
        "pricing": pricing or {},
    }
