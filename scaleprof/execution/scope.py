"""What a study changes in the process that runs it, for as long as it runs and no longer.

A program that embeds scaleprof (a notebook running two studies with different settings) must get each
study's settings and find its process as it was afterwards: Ray Train's restart timeout (an environment
variable its controller reads), the SIGTERM handler the driver puts back over Ray's (ray_session.connect_ray)
and the user's code directories on sys.path (workloads/imports.user_code) are set here and restored on
the way out, whatever way that is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from scaleprof.config import Experiment
from scaleprof.workloads.imports import user_code


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """These environment variables set for the block; each back to its value (or unset) after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def sigterm_handler_kept() -> Iterator[None]:
    """Whatever handles SIGTERM before the block handles it after (signals belong to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


@contextlib.contextmanager
def study_scope(experiment: Experiment) -> Iterator[None]:
    """The process-wide settings a study needs, for the study only."""
    # A restart after a worker or node loss waits this long for its resources, then the run fails (Ray
    # Train's default is 60 s); read by Ray Train's controller, which takes it from the driver's environment.
    timeout = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(experiment.ray.placement_timeout_s)}
    with environ(timeout), sigterm_handler_kept(), user_code(experiment.code_dirs):
        yield
