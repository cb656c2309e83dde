"""Ray for one study: connect (or start a local Ray) as a job that carries the user's code, and keep
SIGTERM a clean stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from scaleprof.config import ConfigError, Experiment
from scaleprof.workloads.imports import code_modules

# Ray Train reads these in its controller; they are propagated from the driver's environment.
_RAY_TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",  # faster teardown between runs (seconds, not 2 s polls)
}


def job_runtime_env(experiment: Experiment) -> dict[str, Any] | None:
    """The user's modules as Ray `py_modules`: uploaded once and importable in every worker on every
    node, as `ray job submit` ships a working directory. Ray uploads local paths only for a whole job
    (`ray.init`), never per task or actor, so they go on the driver's connection; under `ray job submit`
    Ray merges them with the job's own working_dir."""
    modules = code_modules(experiment.code_dirs) if experiment.uses_own_code else []
    return {"py_modules": modules} if modules else None


def check_ray_address(timeout_s: float = 10.0) -> None:
    """RAY_ADDRESS (host:port or ray://host:port) answers a TCP connection within `timeout_s`; a
    ConfigError naming it otherwise. Ray itself would retry a dead address for minutes."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address or address in ("auto", "local"):
        return
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if "://" in host_port or not host or not port.isdigit():
        return  # a form Ray resolves itself; let it say what it thinks
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc.strerror or exc}); check that it is up "
            f"(`ray status --address {host_port}`), or unset RAY_ADDRESS to start a local Ray"
        ) from None


def connect_ray(runtime_env: dict[str, Any] | None = None, log_to_driver: bool = False) -> bool:
    """Join RAY_ADDRESS's cluster when set (as under `ray job submit`), else start a local Ray; either
    way as a job with `runtime_env`. Workers' own logs stay off the terminal unless `log_to_driver`: they
    would drown the progress display, and their failures reach the run record anyway.

    Returns True when this call connected (and so the caller should shut Ray down). When Ray is
    already initialised (a program that embeds scaleprof), its job's runtime environment is used as is.
    """
    import ray

    for key, value in _RAY_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        check_ray_address()
        try:
            ray.init(logging_level=logging.WARNING, log_to_driver=log_to_driver, runtime_env=runtime_env)
        except ValueError as exc:
            if "Failed to merge" not in str(exc):
                raise
            raise ConfigError(
                "code_dirs: the Ray job already ships py_modules of its own, and scaleprof ships your modules the "
                "same way; Ray cannot merge the two: submit the job without --runtime-env py_modules (scaleprof "
                "ships what code_dirs names)"
            ) from None
    else:
        # address="local": always a new Ray of our own, never whatever cluster happens to run on this machine
        ray.init(
            address="local", logging_level=logging.WARNING, log_to_driver=log_to_driver, include_dashboard=False,
            runtime_env=runtime_env,
        )  # fmt: skip
    if threading.current_thread() is threading.main_thread():
        # Ray's core worker installs a native SIGTERM handler over Python's, which can abort the process
        # on exit; Python's handler back on top makes SIGTERM (`ray job stop`) a SystemExit the study handles.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return True


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(signum)
