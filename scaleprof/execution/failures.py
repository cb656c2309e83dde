"""Why a run failed, in one line a user can act on: the root cause of a remote traceback, the nodes
that were lost under it, whether the study's disk is full."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from scaleprof.errors import UnsupportedSettings, write_failure


@dataclass(frozen=True)
class FailureDecision:
    """What a run's failure means: the reason recorded, and whether the study stops with it."""

    reason: str
    stop_study: bool
    write_failure: str | None = None  # errors.NO_SPACE or NOT_WRITABLE: the study's disk took no more writes
    skip: bool = False  # the device cannot run these settings: the run is skipped with the reason, not failed


def decide(exc: BaseException, lost: str = "") -> FailureDecision:
    """The one policy for a failed run. Ctrl-C and SIGTERM (`ray job stop`, kill; Ray's handler exits)
    stop the study; so does a full or unwritable disk (the next run could not write either); any other failure is
    recorded with its root cause (and the nodes lost under it, `lost`) and the study goes on."""
    if isinstance(exc, KeyboardInterrupt):
        return FailureDecision("interrupted", stop_study=True)
    if isinstance(exc, SystemExit):
        return FailureDecision("terminated", stop_study=True)
    workers = worker_errors(exc)
    unsupported = next((e.reason for e in [*workers, *causes(exc)] if isinstance(e, UnsupportedSettings)), None)
    unsupported = unsupported or _wrapped_unsupported(exc)
    if unsupported is not None:
        return FailureDecision(unsupported[:500], stop_study=False, skip=True)
    # A worker's OSError (or one another process raised, reached through a RayTaskError) by its write-only errno:
    # its EACCES may be a read of the user's data; the driver's own by any write errno.
    found = [write_failure(e, remote=True) for e in workers] + [write_failure(e, remote) for e, remote in chain(exc)]
    cannot_write = next((kind for kind in found if kind is not None), None)
    return FailureDecision(lost + failure_reason(exc), stop_study=cannot_write is not None, write_failure=cannot_write)


def worker_errors(exc: BaseException) -> list[BaseException]:
    """What the workers raised, by type: Ray Train's WorkerGroupError keeps each failed rank's exception
    (`worker_failures`, each wrapped with its traceback text), with the exceptions each was raised from."""
    out: list[BaseException] = []
    for failure in (getattr(exc, "worker_failures", None) or {}).values():
        out += causes(getattr(failure, "_base_exc", failure))  # ray.train's UserExceptionWithTraceback
    return out


def _wrapped_unsupported(exc: BaseException) -> str | None:
    """The reason of an UnsupportedSettings a user's loop wrapped in an exception of its own: pickling drops
    `__cause__` on the way from the worker, so only the worker's traceback text still names it."""
    mark = f"{UnsupportedSettings.__name__}: unsupported on this device: "
    for failure in (getattr(exc, "worker_failures", None) or {}).values():
        text = str(getattr(failure, "_traceback_str", ""))
        if mark in text:
            return text.split(mark, 1)[1].splitlines()[0].strip()
    return None


def causes(exc: BaseException, most: int = 16) -> list[BaseException]:
    """`exc` and what it was raised from (`__cause__`, else `__context__`, else the remote exception a Ray
    RayTaskError carries as `cause`), outermost first."""
    return [seen for seen, _ in chain(exc, most)]


def chain(exc: BaseException, most: int = 16) -> list[tuple[BaseException, bool]]:
    """`causes`, each with whether it was raised in another process (reached through a RayTaskError's `cause`,
    or that RayTaskError itself)."""
    out: list[tuple[BaseException, bool]] = []
    seen: BaseException | None = exc
    remote = False
    while seen is not None and len(out) < most:
        carried = getattr(seen, "cause", None)
        remote = remote or isinstance(carried, BaseException)
        out.append((seen, remote))
        following = seen.__cause__ or seen.__context__
        seen = following if following is not None else (carried if isinstance(carried, BaseException) else None)
    return out


def failure_reason(exc: BaseException) -> str:
    """One line naming the root cause: Ray puts the remote traceback in the message, cause last."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    root = lines[-1] if lines else ""
    root = root.split(" Some common causes include")[0]  # Ray's advice paragraph after a worker death
    return f"{type(exc).__name__}: {root}"[:500]


def lost_nodes(aggregator: Any, run_id: str) -> str:
    """'node(s) ... lost during the run; ' when a node the run's workers used is no longer alive
    (`aggregator`: the study's telemetry.handle.Aggregators)."""
    import ray

    try:
        used = aggregator.nodes(run_id, timeout_s=30)
        nodes = {n["NodeID"]: n for n in ray.nodes()}
    except Exception:
        return ""
    lost = [n[:12] for n in used if n not in nodes or not _node_alive(nodes[n])]
    return f"node(s) {', '.join(lost)} lost during the run; then " if lost else ""


def _node_alive(node: dict[str, Any], timeout_s: float = 2.0) -> bool:
    """Alive in the GCS and its raylet still takes a connection. The GCS needs several missed health
    checks (15 s or more) to mark a node dead; a lost node's raylet refuses or ignores at once."""
    if not node.get("Alive"):
        return False
    try:
        with socket.create_connection((node["NodeManagerAddress"], node["NodeManagerPort"]), timeout=timeout_s):
            return True
    except (OSError, KeyError):
        return False
