"""A run's life cycle and the one failure policy (no Ray: the store is real files)."""

import errno
import traceback

import pytest

from scaleprof.errors import NO_SPACE, NOT_WRITABLE, write_error
from scaleprof.execution.failures import decide
from scaleprof.execution.lifecycle import RunLifecycle
from scaleprof.records import RunKind, RunRecord, RunStatus
from scaleprof.telemetry.store import StudyStore


def record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        index=1,
        model="m",
        model_name="mlp",
        kind=RunKind.FIXED_SPLIT,
        fold=None,
        placement="p",
        device="cpu",
        workers=2,
        cpus_per_worker=1,
        gpus_per_worker=0,
        per_worker_batch=8,
        global_batch=16,
        repeat=0,
        strategy="PACK",
        nodes_requested=None,
        node_type=None,
    )


def test_transitions_are_checked_and_each_is_recorded(tmp_path):
    store = StudyStore(tmp_path / "s")
    store.create()
    life = RunLifecycle(store, record("r1"))
    life.to(RunStatus.PLANNED)
    life.to(RunStatus.PLACED)
    with pytest.raises(RuntimeError, match="placed -> ok is not a run transition"):
        life.to(RunStatus.OK)
    life.to(RunStatus.RUNNING, started_at=1.0)
    final = life.to(RunStatus.OK, wall_s=3.0)
    assert final == {**record("r1").to_dict(), "status": "ok", "wall_s": 3.0}
    assert [set(r) for r in store.run_records()][1:3] == [{"run_id", "status"}, {"run_id", "status", "started_at"}]
    with pytest.raises(RuntimeError, match="ok -> failed"):
        life.to(RunStatus.FAILED)
    assert store.final_run_records()["r1"].outcome.status == RunStatus.OK
    skipped = RunLifecycle(store, record("r2"))
    skipped.to(RunStatus.PLANNED)
    assert skipped.to(RunStatus.SKIPPED, reason="no GPU")["reason"] == "no GPU"


def test_failure_policy_stops_the_study_only_for_interrupts_and_full_disks():
    assert decide(KeyboardInterrupt()).reason == "interrupted" and decide(KeyboardInterrupt()).stop_study
    assert decide(SystemExit(15)).reason == "terminated" and decide(SystemExit(15)).stop_study
    full = decide(OSError(errno.ENOSPC, "No space left on device"), lost="")
    assert full.stop_study and full.write_failure == NO_SPACE
    # A read-only study is not a full one (the user is not told to free space), whether raised here or in a worker.
    read_only = decide(RuntimeError("RayTaskError(OSError): [Errno 30] Read-only file system: '/s/events'"))
    assert read_only.stop_study and read_only.write_failure == NOT_WRITABLE
    assert write_error(read_only.write_failure, "/s").errno == errno.EROFS
    assert decide(OSError(errno.EDQUOT, "quota")).write_failure == NO_SPACE
    # "Permission denied" in a worker's message can be a read (the user's data): not a reason to stop the study.
    assert not decide(RuntimeError("PermissionError: [Errno 13] Permission denied: '/data/x.csv'")).stop_study
    remote = RuntimeError("Traceback ...\n  File x\nValueError: bad batch Some common causes include: ...")
    ordinary = decide(remote, lost="node(s) abc lost during the run; then ")
    assert (
        not ordinary.stop_study
        and ordinary.reason == "node(s) abc lost during the run; then RuntimeError: ValueError: bad batch"
    )


def _worker_group_error(*failures: BaseException):
    """Ray Train's own exception for failed workers, pickled as it reaches the driver (by Ray's cloudpickle)."""
    from ray import cloudpickle as pickle
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
    from ray.train.v2.api.exceptions import WorkerGroupError

    text = lambda e: "".join(traceback.format_exception(e))
    wrapped: dict[int, Exception] = {rank: UserExceptionWithTraceback(e, text(e)) for rank, e in enumerate(failures)}
    return pickle.loads(pickle.dumps(WorkerGroupError("rank failures", wrapped)))


def test_worker_failures_are_read_by_type_not_by_their_text():
    """A worker's UnsupportedSettings skips the run with its reason; a worker's OSError is classified by its
    errno (a read-only study is not told to free space), whatever the exception's text says."""
    from scaleprof.errors import UnsupportedSettings

    skipped = decide(_worker_group_error(RuntimeError("other rank"), UnsupportedSettings("fp16 training needs a GPU")))
    assert skipped.skip and not skipped.stop_study and skipped.reason == "fp16 training needs a GPU"
    read_only = decide(_worker_group_error(OSError(errno.EROFS, "cannot", "/s/events")))
    assert read_only.stop_study and read_only.write_failure == NOT_WRITABLE
    full = decide(_worker_group_error(OSError(errno.ENOSPC, "disk")))
    assert full.write_failure == NO_SPACE
    plain = decide(_worker_group_error(ValueError("bad batch")))
    assert not plain.stop_study and not plain.skip
    # A worker's EACCES can be a read of the user's data: that run fails, the study goes on.
    unreadable = decide(_worker_group_error(PermissionError(errno.EACCES, "Permission denied", "/data/x.csv")))
    assert not unreadable.stop_study and unreadable.write_failure is None
    # A user loop that wraps the worker's UnsupportedSettings still skips the run.
    try:
        try:
            raise UnsupportedSettings("bf16 needs compute capability 8.0")
        except UnsupportedSettings as inner:
            raise RuntimeError("my loop failed") from inner
    except RuntimeError as wrapped:
        wrapped_decision = decide(_worker_group_error(wrapped))
    assert wrapped_decision.skip and wrapped_decision.reason == "bf16 needs compute capability 8.0"


def test_an_oserror_ray_hands_over_is_read_by_its_errno_not_its_text():
    """An actor's or a task's OSError reaches the caller as Ray's RayTaskError, the OSError itself (errno kept)
    as its `cause`: classified by that errno even where the text says nothing of it (a custom message)."""
    from ray.exceptions import RayTaskError

    from scaleprof.errors import write_failure

    def from_ray(error: OSError) -> BaseException:
        return RayTaskError("ingest", "Traceback: (the aggregator's)", error).as_instanceof_cause()

    full = from_ray(OSError(errno.ENOSPC, "segment write cut short"))
    assert write_failure(full, remote=True) == NO_SPACE and write_failure(full) == NO_SPACE
    assert write_failure(from_ray(OSError(errno.EROFS, "no"))) == NOT_WRITABLE
    assert write_failure(from_ray(OSError(errno.EACCES, "no"))) is None  # raised elsewhere: maybe a read
    # in a worker: the RayTaskError it raised, by type through its cause
    assert decide(_worker_group_error(full)).write_failure == NO_SPACE
    # reaching the driver itself (a task's, an actor's): a full disk stops the study; a denied read does not
    assert decide(full).stop_study and decide(full).write_failure == NO_SPACE
    denied = decide(from_ray(PermissionError(errno.EACCES, "Permission denied", "/data/x.csv")))
    assert not denied.stop_study and denied.write_failure is None
    # the driver's own EACCES (its study directory) is a write it cannot do
    assert decide(PermissionError(errno.EACCES, "Permission denied", "/s/events")).write_failure == NOT_WRITABLE
