"""Errors that cross layers and reach the command line as one message (no heavy imports here, so the
command line can name them without loading torch or pandas)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Why a write failed, where writing again will not help: the one place that says which errno means what.
NO_SPACE = "no space"  # ENOSPC, EDQUOT: freeing space helps, then the study resumes
NOT_WRITABLE = "not writable"  # EROFS, EACCES, EPERM: the location cannot be written at all; no resume hint
WRITE_FAILURES = {
    NO_SPACE: (errno.ENOSPC, errno.EDQUOT),
    NOT_WRITABLE: (errno.EROFS, errno.EACCES, errno.EPERM),
}


# A worker's or an actor's error arrives as text inside Ray's exception: these messages only ever mean a
# write ("Permission denied" can be a read too: matched by errno only).
_WRITE_ONLY_TEXT = {NO_SPACE: (errno.ENOSPC, errno.EDQUOT), NOT_WRITABLE: (errno.EROFS,)}


def write_failure(exc: BaseException, remote: bool = False) -> str | None:
    """NO_SPACE, NOT_WRITABLE or None for any other failure: an OSError by its errno, also where Ray hands it
    over as the `cause` of its RayTaskError (an actor's or a task's OSError, unpickled with its errno). Only
    where no typed OSError survived (a remote exception wrapped in another: pickling drops `__cause__`) is
    it found by its message (strerror) in the text. `remote`: the OSError was raised in a worker, where
    EACCES and EPERM can be a read of the user's data, so only the write-only codes count."""
    code = getattr(exc, "errno", None)
    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError keeps the remote exception itself
    if code is None and isinstance(cause, OSError):
        code, remote = cause.errno, True  # raised in another process: its EACCES may be a read
    for kind, codes in (_WRITE_ONLY_TEXT if remote else WRITE_FAILURES).items():
        if code in codes:
            return kind
    if code is None:
        text = str(exc)
        for kind, codes in _WRITE_ONLY_TEXT.items():
            if any(os.strerror(c) in text for c in codes):
                return kind
    return None


def write_error(kind: str, where: Path | str) -> OSError:
    """The OSError a study stops with for a write failure of this kind (its first errno) at `where`."""
    code = WRITE_FAILURES[kind][0]
    return OSError(code, os.strerror(code), str(where))


class UnsupportedSettings(RuntimeError):
    """The run's settings cannot be measured on this worker's device (e.g. bf16 on a pre-Ampere GPU): raised in
    the worker, found by type in Ray Train's WorkerGroupError (execution/failures.py), and the run is skipped."""

    def __init__(self, reason: str):
        super().__init__(f"unsupported on this device: {reason}")
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str]]:  # it crosses from the worker to the driver pickled
        return (type(self), (self.reason,))


class StoreError(Exception):
    """A study file that cannot be used at all: which file, and what is wrong with it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


class StudyBusy(Exception):
    """Another process holds the study directory's lock."""


class DestinationError(Exception):
    """A storage URI (`--out s3://...`) that cannot be written."""


class RayLost(Exception):
    """The Ray the study ran on stopped answering (its GCS went away): nothing more can run on it."""
