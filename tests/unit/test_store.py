import os

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
    assert final["a"] == {"run_id": "a", "status": "ok", "model": "m", "workers": 1}
    assert store.damage.lines() == [
        "run_records.jsonl: 1 record(s) without a run_id skipped",
        "run_records.jsonl: 1 run(s) whose planned record is missing or damaged left out",
    ]


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
    rows = [FabricRow("all_reduce", "gloo", "inter-node", 2, 4096 * 4**k, r, 1e-4 * (k + 1)) for k in range(3)
            for r in range(2)]  # fmt: skip
    sweep = pd.DataFrame([row.to_dict() for row in rows]).assign(extra=1)[["extra", *reversed(FABRIC_COLUMNS)]]
    store.write_fabric(sweep)
    assert [p.name for p in store.root.iterdir() if "fabric" in p.name] == ["fabric.parquet"]  # no temp file left
    pd.testing.assert_frame_equal(store.fabric(), sweep[list(FABRIC_COLUMNS)])
    (store.root / "fabric.parquet").write_bytes(b"PAR1 cut short")
    assert store.fabric() is None and store.damage.lines() == [
        "fabric.parquet: 1 unreadable file (the fabric sweep left out)"
    ]
