"""Errors that cross layers and reach the command line as one message (no heavy imports here, so the
command line can name them without loading torch or pandas)."""

from __future__ import annotations

import errno
from pathlib import Path

# Where freeing space helps (a resume hint makes sense); read-only and forbidden locations cannot be written at all.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


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
