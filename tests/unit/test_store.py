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
    store.append_run_record({"run_id": "a", "status": "planned", "workers": 1})
    store.append_run_record({"run_id": "b", "status": "skipped", "reason": "no GPU"})
    store.append_run_record({"run_id": "a", "status": "ok"})
    final = store.final_run_records()
    assert list(final) == ["a", "b"]
    assert final["a"] == {"run_id": "a", "status": "ok", "workers": 1}
