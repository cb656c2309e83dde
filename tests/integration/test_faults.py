"""Faults injected for real on the session's two-node local Ray: training workers and the aggregator
are SIGKILLed mid-epoch, a node is removed mid-run. Each test checks what the study store kept."""

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scaleprof.analysis.summarize import summarize
from scaleprof.config import Experiment
from scaleprof.plan import expand
from scaleprof.telemetry.store import StudyStore, read_jsonl

pytestmark = pytest.mark.slow

BASE = {
    "seed": 0,
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "monitor": {"enabled": True, "interval_s": 0.2},
    "ray": {"placement_timeout_s": 10},
}


class StudyThread:
    """run_study on a thread, so the test can inject faults while it runs."""

    def __init__(self, experiment: Experiment, out: Path):
        from scaleprof.execution.runner import run_study

        self.result: Any = None
        self.error: BaseException | None = None
        self.study_dir = out / "study"

        def target() -> None:
            try:
                self.result = run_study(experiment, out, study_dir=self.study_dir)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return StudyStore(self.study_dir).event_records()

    def wait_for(self, what: str, predicate: Callable[[list[dict[str, Any]]], Any], timeout_s: float = 180) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = predicate(self.events())
            if found:
                return found
            assert self.thread.is_alive(), f"the study ended before {what}: {self.error!r}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def join(self, timeout_s: float = 300):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the study hung"
        if self.error:
            raise self.error
        return self.result


def training(run_id: str, attempt: int, epoch: int = 1) -> Callable[[list[dict[str, Any]]], int | None]:
    """A predicate: rank 0's pid once that attempt has stepped into `epoch` (so the kill lands mid-training)."""

    def pid(events: list[dict[str, Any]]) -> int | None:
        mine = [e for e in events if e["run_id"] == run_id and e["attempt"] == attempt and e["rank"] == 0]
        if any(e["kind"] == "step" and e["epoch"] >= epoch for e in mine):
            return next(e["pid"] for e in mine if e["kind"] == "lifecycle" and e["event"] == "worker_start")
        return None

    return pid


def final_records(study_dir: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(study_dir / "run_records.jsonl"):
        records.setdefault(row["run_id"], {}).update(row)
    return records


def assert_no_gaps_or_duplicates(events: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(events)
    for key, seq in frame.groupby(["run_id", "attempt", "rank"])["seq"]:
        assert seq.is_unique, f"duplicate events for {key}"
        assert sorted(seq) == list(range(len(seq))), f"a gap in the stored events of {key}"


EPOCHS = 60


def test_killed_workers_restart_or_fail_and_the_study_goes_on(ray_session, tmp_path):
    """max_failures: 1. Run 0: killed in both attempts -> failed with the reason, its events kept.
    Run 1 then runs: rank 0 killed once -> restarted, finishes ok with 2 attempts, its figures from the
    finished attempt only."""
    experiment = Experiment.model_validate(
        {
            **BASE,
            "name": "killed",
            # 60 epochs of ~1 ms steps (~5 s): long enough that a kill sent once the store shows epoch 1 lands
            # mid-training; with 25 a fast machine finished the run before its events were visible (seen once)
            "train": {"epochs": EPOCHS, "batch_size": 16, "max_failures": 1},
            "placements": [{"name": "cpu-1", "workers": 1, "repeats": 2}],
        }
    )
    failed, restarted = (r.run_id for r in expand(experiment))
    study = StudyThread(experiment, tmp_path)

    os.kill(study.wait_for("run 0 training", training(failed, 0)), signal.SIGKILL)
    os.kill(study.wait_for("run 0 retraining", training(failed, 1)), signal.SIGKILL)
    os.kill(study.wait_for("run 1 training", training(restarted, 0)), signal.SIGKILL)
    study.join()

    records = final_records(study.study_dir)
    assert records[failed]["status"] == "failed" and records[failed]["attempts"] == 2
    assert "worker process has died" in records[failed]["reason"], records[failed]
    assert records[restarted]["status"] == "ok" and records[restarted]["attempts"] == 2

    events = study.events()
    assert_no_gaps_or_duplicates(events)
    killed = [e for e in events if e["run_id"] == failed and e["kind"] == "step"]
    assert {e["attempt"] for e in killed} == {0, 1}  # what each attempt stored before its kill is kept
    assert not any(e["kind"] == "eval" for e in events if e["run_id"] == failed)

    by_id = summarize(StudyStore(study.study_dir)).runs.set_index("run_id")
    train = json.loads((study.study_dir / "manifest.json").read_text())["data"]["split_sizes"]["train"]
    assert by_id.loc[restarted, "attempts"] == 2 and by_id.loc[restarted, "seq_gaps"] == 0
    assert by_id.loc[restarted, "samples_total"] == EPOCHS * train  # the finished attempt only
    assert by_id.loc[restarted, "throughput"] > 0


EPOCHS_AFTER_LOSS = 30


def test_a_lost_node_fails_the_run_cleanly_and_the_study_goes_on(ray_cluster, ray_session, tmp_path):
    """A third node joins; a 3-worker STRICT_SPREAD run lands one worker on it; the node is removed
    (its raylet and workers SIGKILLed) mid-epoch. The restart (max_failures: 1) cannot be placed on two
    nodes, so the run fails after placement_timeout_s instead of hanging; the next run is ok.
    That next run's two workers (one per node) stream events while the aggregator is SIGKILLed twice: it
    restarts, rebuilds from the store, the sinks' unanswered calls are retried, and every worker's stored
    seq is 0..n-1."""
    from scaleprof.telemetry.handle import aggregator_name

    experiment = Experiment.model_validate(
        {
            **BASE,
            "name": "nodeloss",
            "train": {"epochs": EPOCHS_AFTER_LOSS, "batch_size": 16, "max_failures": 1},
            "placements": [
                {"name": "spread-3", "workers": 3, "cpus_per_worker": 0.5, "strategy": "STRICT_SPREAD"},
                {"name": "cpu-2", "workers": 2, "cpus_per_worker": 0.5, "strategy": "STRICT_SPREAD"},
            ],
            "ray": {"placement_timeout_s": 5},
        }
    )
    doomed = ray_cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    ray_cluster.wait_for_nodes()
    lost, after = (r.run_id for r in expand(experiment))
    try:
        study = StudyThread(experiment, tmp_path)

        def on_doomed(events):
            starts = [
                e for e in events if e["run_id"] == lost and e["kind"] == "lifecycle" and e["event"] == "worker_start"
            ]
            stepping = any(e["run_id"] == lost and e["kind"] == "step" and e["epoch"] >= 1 for e in events)
            return stepping and any(e["node_id"] == doomed.node_id for e in starts)

        study.wait_for("a worker of the lost run training on the extra node", on_doomed)
        ray_cluster.remove_node(doomed, allow_graceful=False)
        pids = []
        for epoch in (1, 5):
            study.wait_for(f"epoch {epoch} of the run after", training(after, 0, epoch=epoch))
            actor = ray_session.get_actor(aggregator_name(study.study_dir.name))
            pids.append(ray_session.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60))
            os.kill(pids[-1], signal.SIGKILL)
        result = study.join(timeout_s=240)
    finally:
        if doomed in ray_cluster.worker_nodes:
            ray_cluster.remove_node(doomed, allow_graceful=False)

    records = final_records(study.study_dir)
    assert records[lost]["status"] == "failed", records[lost]
    reason = records[lost]["reason"]
    assert reason.startswith(f"node(s) {doomed.node_id[:12]} lost during the run; then ") and "timed out" in reason
    assert records[after]["status"] == "ok", records[after]
    events = study.events()
    assert_no_gaps_or_duplicates(events)
    assert {e["node_id"] for e in events if e["run_id"] == lost} >= {doomed.node_id}  # its events were kept
    runs = summarize(StudyStore(study.study_dir)).runs.set_index("run_id")
    assert runs.loc[after, "nodes_realized"] == 2

    assert len(set(pids)) == 2  # the second kill hit the restarted aggregator, a new process
    assert records[after]["attempts"] == 1, records[after]  # the workers never noticed
    epochs = {(e["rank"], e["epoch"]) for e in events if e["run_id"] == after and e["kind"] == "epoch"}
    assert epochs == {(rank, epoch) for rank in (0, 1) for epoch in range(EPOCHS_AFTER_LOSS)}
    assert result.aggregator_stats["gaps"] == 0
    assert runs.loc[after, "seq_gaps"] == 0 and runs.loc[after, "eval_samples"] > 0
