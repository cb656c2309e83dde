"""A run's life cycle as explicit states: planned -> placed -> running -> ok | failed | unmeasured, or planned ->
skipped. Every transition is checked and appended to run_records.jsonl as it happens, so a study cut at
any moment says how far each run got."""

from __future__ import annotations

from typing import Any

from scaleprof.records import RunRecord, RunStatus
from scaleprof.telemetry.store import StudyStore

TRANSITIONS: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({RunStatus.PLANNED}),
    RunStatus.PLANNED: frozenset({RunStatus.PLACED, RunStatus.SKIPPED}),
    RunStatus.PLACED: frozenset({RunStatus.RUNNING}),
    # skipped while running: a worker found its device cannot run the settings (e.g. bf16 on an old GPU)
    RunStatus.RUNNING: frozenset({RunStatus.OK, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.UNMEASURED}),
}


class RunLifecycle:
    """One run's state. `record` (what the run is: ids, placement, batch) is written whole with the
    first and the final state; the states between carry only the run id and their own fields."""

    def __init__(self, store: StudyStore, record: RunRecord):
        self._store = store
        self.record = record.to_dict()
        self.status: RunStatus | None = None

    def to(self, status: RunStatus, **fields: Any) -> dict[str, Any]:
        if status not in TRANSITIONS.get(self.status, frozenset()):
            raise RuntimeError(f"run {self.record['run_id']}: {self.status} -> {status} is not a run transition")
        self.status = status
        whole = status == RunStatus.PLANNED or status.is_final
        entry = {**(self.record if whole else {"run_id": self.record["run_id"]}), "status": status, **fields}
        self._store.append_run_record(entry)
        return entry
