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
from scaleprof.errors import RayLost
from scaleprof.workloads.imports import code_modules


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
            address="local",
            logging_level=logging.WARNING,
            log_to_driver=log_to_driver,
            include_dashboard=False,
            runtime_env=runtime_env,
        )
    if threading.current_thread() is threading.main_thread():
        # Ray's core worker installs a native SIGTERM handler over Python's, which can abort the process
        # on exit; Python's handler back on top makes SIGTERM (`ray job stop`) a SystemExit the study handles.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return True


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(signum)


def ray_gives_up_after_s() -> float:
    """How long Ray's client waits for a GCS that went away before it ends the process (Ray's setting,
    read from the environment as Ray reads it; 60 s by default)."""
    try:
        return float(os.environ.get("RAY_gcs_rpc_server_reconnect_timeout_s", "60"))  # noqa: SIM112 (Ray's own name)
    except ValueError:
        return 60.0


class GcsWatch:
    """Watches the GCS of the Ray a study runs on, from a thread, with one TCP connection a second.

    When the GCS goes away (a killed or crashed local Ray, a head node lost), Ray's own client in the
    driver logs errors and, after `gcs_rpc_server_reconnect_timeout_s` (60 s), ends the process from
    native code, with no chance to record what happened. Declaring the loss once the GCS has refused
    connections for `lost_after_s` (a quarter of Ray's own wait: 15 s by default, long enough for a GCS
    restart to finish)
    lets the study record the run it was in and stop with a message and a resume command."""

    def __init__(self, gcs_address: str, lost_after_s: float | None = None, interval_s: float = 1.0):
        host, _, port = gcs_address.rpartition(":")
        self.address, self._target = gcs_address, (host.strip("[]"), int(port))
        self.lost_after_s = ray_gives_up_after_s() / 4 if lost_after_s is None else lost_after_s
        self.interval_s = interval_s
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._refused_since: float | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="scaleprof-gcs-watch")

    def __enter__(self) -> GcsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def answers(self) -> bool:
        try:
            socket.create_connection(self._target, timeout=self.interval_s).close()
            return True
        except OSError:
            return False

    def _loop(self) -> None:
        import time

        from scaleprof.telemetry.monitor import name_os_thread

        name_os_thread("scaleprof-gcs-watch")
        while not self._stop.wait(self.interval_s):
            if self.answers():
                self._refused_since = None
                continue
            now = time.monotonic()
            self._refused_since = self._refused_since or now
            if now - self._refused_since >= self.lost_after_s:
                self._lost.set()
                return

    def check(self) -> None:
        """RayLost once the GCS is declared gone."""
        if self.lost:
            raise RayLost(
                f"Ray stopped answering: its GCS at {self.address} has refused connections for "
                f"{self.lost_after_s:g} s (the local Ray was stopped or crashed, or the head node is gone)"
            )

    def settle(self) -> None:
        """After a run failed: if the GCS is not answering, wait for the verdict (RayLost when it is gone),
        so that a failure Ray's loss caused is said as that, not as the run's own."""
        while not self.lost and not self._stop.is_set() and (self._refused_since is not None or not self.answers()):
            if not self._thread.is_alive():
                break
            self._lost.wait(self.interval_s)
        self.check()
