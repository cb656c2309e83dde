"""A run's life cycle and the one failure policy (no Ray: the store is real files)."""

import errno

import pytest

from scaleprof.execution.failures import decide
from scaleprof.execution.lifecycle import RunLifecycle
from scaleprof.records import RunStatus
from scaleprof.telemetry.store import StudyStore


def test_transitions_are_checked_and_each_is_recorded(tmp_path):
    store = StudyStore(tmp_path / "s")
    store.create()
    life = RunLifecycle(store, {"run_id": "r1", "workers": 2})
    life.to(RunStatus.PLANNED)
    life.to(RunStatus.PLACED)
    with pytest.raises(RuntimeError, match="placed -> ok is not a run transition"):
        life.to(RunStatus.OK)
    life.to(RunStatus.RUNNING, started_at=1.0)
    final = life.to(RunStatus.OK, wall_s=3.0)
    assert final == {"run_id": "r1", "workers": 2, "status": "ok", "wall_s": 3.0}
    with pytest.raises(RuntimeError, match="ok -> failed"):
        life.to(RunStatus.FAILED)
    assert store.final_run_records()["r1"]["status"] == "ok"
    skipped = RunLifecycle(store, {"run_id": "r2"})
    skipped.to(RunStatus.PLANNED)
    assert skipped.to(RunStatus.SKIPPED, reason="no GPU")["reason"] == "no GPU"


def test_failure_policy_stops_the_study_only_for_interrupts_and_full_disks():
    assert decide(KeyboardInterrupt()).reason == "interrupted" and decide(KeyboardInterrupt()).stop_study
    assert decide(SystemExit(15)).reason == "terminated" and decide(SystemExit(15)).stop_study
    full = decide(OSError(errno.ENOSPC, "No space left on device"), lost="")
    assert full.stop_study and full.disk_full
    remote = RuntimeError("Traceback ...\n  File x\nValueError: bad batch Some common causes include: ...")
    ordinary = decide(remote, lost="node(s) abc lost during the run; then ")
    assert (
        not ordinary.stop_study
        and ordinary.reason == "node(s) abc lost during the run; then RuntimeError: ValueError: bad batch"
    )
