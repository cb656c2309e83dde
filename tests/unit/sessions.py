"""A worker session on the CPU whose events and stored predictions land in lists, for tests (no Ray)."""

from typing import Any

import torch

from scaleprof.records import Event
from scaleprof.worker.session import WorkerSession


def recording_session(
    rank: int = 0, world_size: int = 1, epochs: int = 1, **kwargs: Any
) -> tuple[WorkerSession, list[Event], list[dict[str, Any]]]:
    """(the session, the events it emitted, the predictions it stored), one torch thread on the CPU."""
    events: list[Event] = []
    stored: list[dict[str, Any]] = []
    session = WorkerSession(
        events.append,
        stored.append,
        rank=rank,
        world_size=world_size,
        device=torch.device("cpu"),
        threads=1,
        epochs=epochs,
        **kwargs,
    )
    return session, events, stored
