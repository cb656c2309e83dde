"""The versions a measurement depends on, read where the code runs (the driver for the manifest, each
worker for its start event: a cluster image can differ from the machine that submitted the study)."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any


def scaleprof_version() -> str:
    try:
        return importlib.metadata.version("scaleprof")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def toolchain() -> dict[str, Any]:
    """Ray, torch and the CUDA/cuDNN/NCCL builds torch carries (None where it has none)."""
    import torch

    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": None, "nccl": None}
    try:
        out["ray"] = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        out["ray"] = None
    try:
        out["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        pass
    try:
        nccl = torch.cuda.nccl.version()
        out["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception:
        pass  # a CPU-only build
    return out


def ray_job() -> dict[str, Any]:
    """The Ray job this driver runs in: its submission id under `ray job submit` (None otherwise)."""
    submission = None
    config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if config:
        import json

        try:
            submission = (json.loads(config).get("metadata") or {}).get("job_submission_id")
        except (ValueError, AttributeError):
            pass
    try:
        import ray

        job_id = ray.get_runtime_context().get_job_id() if ray.is_initialized() else None
    except Exception:
        job_id = None
    return {"submission_id": submission, "job_id": job_id}


def gpu_node_facts() -> dict[str, Any]:
    """What explains a multi-GPU result, read on a GPU node: the NVIDIA driver version, the GPU
    interconnect matrix (`nvidia-smi topo -m`: NVLink, PCIe switches, NUMA affinity) and the NCCL_*
    settings of this process. Empty where there is no nvidia-smi; never raises."""
    import os
    import shutil
    import subprocess

    out: dict[str, Any] = {}
    nccl = {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")}
    if nccl:
        out["nccl_env"] = nccl
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return out
    for key, args in (
        ("topology", [smi, "topo", "-m"]),
        ("driver", [smi, "--query-gpu=driver_version", "--format=csv,noheader"]),
    ):
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip():
            text = done.stdout.strip()
            out[key] = text.splitlines()[0].strip() if key == "driver" else text
    return out
