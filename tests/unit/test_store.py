import json
import math
import os

from scaleprof.records import FinalRun, RunKind, RunOutcome, RunRecord, RunStatus
from scaleprof.telemetry.store import StudyStore, append_jsonl, atomic_write_text, read_jsonl


def test_jsonl_round_trip_skips_torn_last_line_and_stores_nan_as_null(tmp_path):
    path = tmp_path / "e.jsonl"
    append_jsonl(path, [{"a": 1, "x": float("nan")}, {"a": 2}])
    with open(path, "a") as f:
        f.write('{"a": 3, "tor')  # a crash mid-write
    assert read_jsonl(path) == [{"a": 1, "x": None}, {"a": 2}]


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["m.json"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_final_run_records_merge_transitions_in_order(tmp_path):
    store = StudyStore(tmp_path / "s")
    store.create()
    store.append_run_record({"run_id": "a", "status": "planned", "model": "m", "workers": 1})
    store.append_run_record({"run_id": "b", "status": "skipped", "model": "m", "workers": 2, "reason": "no GPU"})
    store.append_run_record({"run_id": "a", "status": "ok"})
    store.append_run_record({"status": "ok"})  # damaged: no run_id
    store.append_run_record({"run_id": "c", "status": "ok"})  # its planned record was lost
    final = store.final_run_records()
    assert list(final) == ["a", "b"]
    assert final["a"].raw == {"run_id": "a", "status": "ok", "model": "m", "workers": 1}
    assert final["a"].outcome.status == RunStatus.OK and final["b"].outcome.reason == "no GPU"
    assert store.damage.lines() == [
        "run_records.jsonl: 1 record(s) without a run_id skipped",
        "run_records.jsonl: 1 run(s) whose planned record is missing or damaged left out",
    ]


# A run's lines as the first scaleprof wrote them (53d7b05): no kind, model_name, strategy, sweep settings,
# wait_s or ray_node_types; the final line carries the whole record again with its outcome.
OLD_STUDY_LINES = [
    '{"run_id": "001-mlp-cpu-2-r0", "index": 1, "model": "mlp", "placement": "cpu-2", "device": "cpu", "workers": 2, '
    '"cpus_per_worker": 2, "gpus_per_worker": 0, "per_worker_batch": 32, "global_batch": 64, "repeat": 0, '
    '"status": "planned"}',
    '{"run_id": "001-mlp-cpu-2-r0", "status": "placed"}',
    '{"run_id": "001-mlp-cpu-2-r0", "status": "running", "started_at": 100.0}',
    '{"run_id": "001-mlp-cpu-2-r0", "index": 1, "model": "mlp", "placement": "cpu-2", "device": "cpu", "workers": 2, '
    '"cpus_per_worker": 2, "gpus_per_worker": 0, "per_worker_batch": 32, "global_batch": 64, "repeat": 0, '
    '"status": "ok", "reason": "", "started_at": 100.0, "ended_at": 130.0, "wall_s": 30.0}',
]


def test_an_old_studys_run_records_read_typed_with_their_defaults(tmp_path):
    store = StudyStore(tmp_path / "s")
    store.create()
    store.run_records_path.write_text("\n".join(OLD_STUDY_LINES) + "\n")
    final = store.final_run_records()["001-mlp-cpu-2-r0"]
    assert final.record == RunRecord(
        run_id="001-mlp-cpu-2-r0",
        index=1,
        model="mlp",
        model_name="mlp",
        kind=RunKind.FIXED_SPLIT,
        fold=None,
        placement="cpu-2",
        device="cpu",
        workers=2,
        cpus_per_worker=2,
        gpus_per_worker=0,
        per_worker_batch=32,
        global_batch=64,
        repeat=0,
        strategy="PACK",
        nodes_requested=None,
        node_type=None,
        model_label="mlp",
        batch_series="mlp",
    )
    outcome = final.outcome
    assert (outcome.status, outcome.reason, outcome.started_at, outcome.ended_at) == (RunStatus.OK, "", 100.0, 130.0)
    assert (outcome.wall_s, outcome.wait_s, outcome.attempts, outcome.ray_node_types) == (30.0, 0.0, None, {})
    assert final.raw == json.loads(OLD_STUDY_LINES[-1])  # the lines as stored
    assert store.damage.lines() == []


def test_a_run_record_reads_back_what_the_runner_wrote_and_ignores_fields_it_does_not_know():
    record = RunRecord(
        run_id="r",
        index=2,
        model="lm-w2",
        model_name="tiny",
        kind=RunKind.CV,
        fold=1,
        placement="gpu-4",
        device="gpu",
        workers=4,
        cpus_per_worker=4,
        gpus_per_worker=1,
        per_worker_batch=8,
        global_batch=32,
        repeat=1,
        strategy="SPREAD",
        nodes_requested=2,
        node_type="g5",
        model_label="lm",
        batch_series="lm/8",
        settings={"model.kwargs.width": 2},
        task="language",
        train_precision="bf16",
        parallelism="fsdp",
        compile="default",
        grad_accumulation=2,
        optimizer="adamw",
        tokens_per_sample=128,
    )
    line = {
        **record.to_dict(),
        "status": "failed",
        "reason": "boom",
        "detail": "Traceback",
        "started_at": 1.0,
        "ended_at": 4.0,
        "wall_s": 3.0,
        "attempts": 2,
        "wait_s": 0.5,
        "ray_node_types": {"g5": 2},
        "from_a_newer_scaleprof": True,
    }
    final = FinalRun.from_stored(json.loads(json.dumps(line)))  # through JSON: enums come back as strings
    assert final.record == record and isinstance(final.record.kind, RunKind)
    assert final.outcome == RunOutcome(
        status=RunStatus.FAILED,
        reason="boom",
        detail="Traceback",
        started_at=1.0,
        ended_at=4.0,
        wall_s=3.0,
        attempts=2,
        wait_s=0.5,
        ray_node_types={"g5": 2},
    )
    assert final.raw["from_a_newer_scaleprof"] is True
    assert (final.outcome.started_at, final.outcome.ended_at) == (1.0, 4.0)
    assert math.isnan(
        FinalRun.from_stored({"model": "m", "run_id": "x", "workers": 1, "status": "planned"}).outcome.wall_s
    )


def test_a_run_with_an_unknown_status_is_left_out_as_damaged(tmp_path):
    store = StudyStore(tmp_path / "s")
    store.create()
    store.append_run_record({"run_id": "a", "status": "exploded", "model": "m", "workers": 1})
    assert store.final_run_records() == {}
    assert store.damage.lines() == ["run_records.jsonl: 1 run(s) whose planned record is missing or damaged left out"]


def test_repair_torn_tail_cuts_only_the_incomplete_line(tmp_path):
    from scaleprof.telemetry.store import repair_torn_tail

    path = tmp_path / "e.jsonl"
    rows = [{"i": i, "pad": "x" * 100} for i in range(2000)]  # > 64 KiB: the backwards scan crosses chunks
    append_jsonl(path, rows)
    assert repair_torn_tail(path) == 0
    with open(path, "a") as f:
        f.write('{"i": 2000, "pad": "' + "y" * 70_000)  # a torn line longer than one scan chunk
    assert repair_torn_tail(path) == 70_000 + len('{"i": 2000, "pad": "')
    append_jsonl(path, [{"i": 2001}])
    assert [r["i"] for r in read_jsonl(path)] == list(range(2000)) + [2001]
    only = tmp_path / "only.jsonl"
    only.write_text('{"torn')
    assert repair_torn_tail(only) == 6 and only.read_bytes() == b""


def test_a_trace_lands_under_traces_with_a_safe_name(tmp_path):
    from scaleprof.telemetry.store import StudyStore

    store = StudyStore(tmp_path / "study")
    store.create()
    where = store.write_trace("001-run", "../rank0.json.gz", b"\x1f\x8b")
    assert where == "traces/001-run/.._rank0.json.gz" and (store.root / where).read_bytes() == b"\x1f\x8b"


def test_the_fabric_sweep_round_trips_and_a_damaged_one_is_counted_not_fatal(tmp_path):
    import pandas as pd

    from scaleprof.records import FABRIC_COLUMNS, FabricRow

    store = StudyStore(tmp_path / "study")
    store.create()
    assert store.fabric() is None
    rows = [
        FabricRow("all_reduce", "gloo", "inter-node", 2, 4096 * 4**k, r, 1e-4 * (k + 1))
        for k in range(3)
        for r in range(2)
    ]
    sweep = pd.DataFrame([row.to_dict() for row in rows]).assign(extra=1)[["extra", *reversed(FABRIC_COLUMNS)]]
    store.write_fabric(sweep)
    assert [p.name for p in store.root.iterdir() if "fabric" in p.name] == ["fabric.parquet"]  # no temp file left
    pd.testing.assert_frame_equal(store.fabric(), sweep[list(FABRIC_COLUMNS)])
    (store.root / "fabric.parquet").write_bytes(b"PAR1 cut short")
    assert store.fabric() is None and store.damage.lines() == [
        "fabric.parquet: 1 unreadable file (the fabric sweep left out)"
    ]
