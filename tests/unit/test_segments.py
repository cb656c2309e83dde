"""The columnar event store: segments written, merged, repaired and read back; the actor's group commit;
several aggregators writing one study. Real files and real Parquet (pyarrow), no Ray."""

import asyncio
import errno
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaleprof.records import StepEvent, SystemEvent, batch_rows, event_batch, stamped
from scaleprof.telemetry.actors import AggregatorActor
from scaleprof.telemetry.aggregator import Aggregator, batch_table, progress_of
from scaleprof.telemetry.segments import SegmentWriter, list_segments, read_segments
from scaleprof.telemetry.store import StudyStore

IDS = {"study_id": "s", "run_id": "r", "attempt": 0, "rank": 0, "node_id": "n"}


def _batch(seqs, rank=0, **fields):
    rows = [
        stamped(s, 100.0 + s, StepEvent(epoch=0, step=s, samples=8, data_s=0.001, compute_s=0.01, step_s=0.011))
        | fields
        for s in seqs
    ]
    return event_batch({**IDS, "rank": rank}, rows)


def _study(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    return store


def test_a_batch_round_trips_through_a_segment_with_every_value_kept(tmp_path):
    rows = [
        stamped(0, 1.5, StepEvent(epoch=0, step=0, samples=8, data_s=0.25, compute_s=0.5, step_s=0.75, profiled=True)),
        stamped(1, 2.5, SystemEvent(cpu_pct=97.5, rss_mb=512.0)),
        {"seq": 2, "time": 3.5, "kind": "lifecycle", "event": "worker_start", "versions": '{"torch": "2.14"}'},
    ]
    batch = event_batch(IDS, rows)
    assert batch_rows(batch) == [{**IDS, **{k: v for k, v in r.items() if v is not None}} for r in rows]
    writer = SegmentWriter(tmp_path / "events" / "0")
    writer.repair()
    writer.write(batch_table(batch))
    back = read_segments(tmp_path).table.to_pylist()
    assert [{k: v for k, v in r.items() if v is not None} for r in back] == batch_rows(batch)


def test_segments_merge_into_one_file_over_their_range_and_a_half_done_merge_reads_once(tmp_path):
    directory = tmp_path / "events" / "0"
    writer = SegmentWriter(directory, compact_every=4)
    writer.repair()
    for i in range(6):
        writer.write(batch_table(_batch([i])))
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["00000000-00000003.parquet", "00000004-00000004.parquet", "00000005-00000005.parquet"]
    assert read_segments(tmp_path).table["seq"].to_pylist() == list(range(6))
    # A crash after the merged file was renamed into place, before the small ones were deleted: both on disk.
    small = directory / "00000001-00000001.parquet"
    pq.write_table(batch_table(_batch([1])), small)
    assert small not in [s.path for s in list_segments(directory)]
    assert read_segments(tmp_path).table["seq"].to_pylist() == list(range(6))  # nothing read twice
    writer.compact()  # at the study's end
    assert [p.name for p in sorted(directory.glob("*.parquet"))][-1] == "00000004-00000005.parquet"


def test_a_torn_segment_is_set_aside_on_repair_and_skipped_by_name_when_read(tmp_path):
    directory = tmp_path / "events" / "0"
    writer = SegmentWriter(directory)
    writer.repair()
    writer.write(batch_table(_batch([0, 1])))
    last = writer.write(batch_table(_batch([2, 3])))
    (directory / ".00000002-00000002.parquet.tmp").write_bytes(b"PAR1 half")  # a write killed before its rename
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = read_segments(tmp_path)
    assert result.table["seq"].to_pylist() == [0, 1] and result.unreadable == ["events/0/00000001-00000001.parquet"]
    again = SegmentWriter(directory)
    assert again.repair() == ["00000001-00000001.parquet"]
    assert not list(directory.glob(".*.tmp")) and (directory / "00000001-00000001.parquet.torn").exists()
    assert again.write(batch_table(_batch([2, 3]))).name == "00000001-00000001.parquet"  # its name is free again


def test_segments_with_different_fields_read_as_one_table(tmp_path):
    directory = tmp_path / "events" / "0"
    writer = SegmentWriter(directory)
    writer.repair()
    writer.write(batch_table(_batch([0, 1])))  # an older scaleprof: no `forward_s`, samples an int
    writer.write(batch_table(_batch([2], forward_s=0.004, samples=8.5, note="new kind of field")))
    table = read_segments(tmp_path).table
    assert table["forward_s"].to_pylist() == [None, None, 0.004]
    assert table["samples"].type == pa.float64() and table["samples"].to_pylist() == [8.0, 8.0, 8.5]
    assert table["note"].to_pylist() == [None, None, "new kind of field"]
    only = read_segments(tmp_path, columns=["seq", "note"]).table  # a column some segments lack reads as null
    assert only.column_names == ["seq", "note"] and only["note"].null_count == 2


def test_a_field_with_mixed_types_is_kept_as_text():
    table = batch_table(
        event_batch(
            IDS, [{"seq": 0, "time": 1.0, "kind": "x", "odd": 1}, {"seq": 1, "time": 2.0, "kind": "x", "odd": "one"}]
        )
    )
    assert table["odd"].to_pylist() == ["1", "one"]


def test_the_actor_commits_concurrent_calls_together_and_answers_once_on_disk(tmp_path):
    store = _study(tmp_path)

    async def main():
        actor = AggregatorActor(str(store.root), linger_s=0.05)
        answers = await asyncio.gather(*(actor.ingest(_batch(range(10), rank=r)) for r in range(50)))
        return answers, await actor.close()

    answers, stats = asyncio.run(main())
    assert answers == [10] * 50 and stats["events_written"] == 500 and stats["gaps"] == 0
    segments = list_segments(store.events_dir / "0")
    assert len(segments) == 1  # 50 calls, one segment (merged at close in any case)
    assert len(store.events()) == 500 and not store.damage.lines()


def test_a_failed_group_write_fails_every_waiting_call_and_their_resends_are_taken(tmp_path, monkeypatch):
    import scaleprof.telemetry.segments as segments

    store = _study(tmp_path)
    real_write = segments.pq.write_table

    def full(table, where, **options):
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main():
        actor = AggregatorActor(str(store.root), linger_s=0.05)
        monkeypatch.setattr(segments.pq, "write_table", full)
        failed = await asyncio.gather(
            *(actor.ingest(_batch(range(5), rank=r)) for r in range(4)), return_exceptions=True
        )
        monkeypatch.setattr(segments.pq, "write_table", real_write)
        resent = await asyncio.gather(*(actor.ingest(_batch(range(5), rank=r)) for r in range(4)))
        return failed, resent, await actor.close()

    failed, resent, stats = asyncio.run(main())
    assert all(isinstance(f, OSError) for f in failed)  # none acknowledged: each sender keeps its batch
    assert resent == [5, 5, 5, 5] and stats["events_written"] == 20 and stats["duplicates"] == 0


def test_two_aggregators_write_one_study_and_the_reader_and_restarts_see_both(tmp_path):
    store = _study(tmp_path)
    first, second = Aggregator(str(store.root), "0"), Aggregator(str(store.root), "1")
    assert first.register_worker("r", 0) == 0 and first.register_worker("r", 1) == 0
    first.ingest(_batch(range(4), rank=0))
    second.ingest(_batch(range(4), rank=1))
    events = store.events()
    assert sorted(zip(events["rank"], events["seq"], strict=True)) == [(r, s) for r in (0, 1) for s in range(4)]
    # The live view of a run split over two aggregators is the same as one aggregator's.
    single = Aggregator(str(_study(tmp_path / "single").root))
    single.ingest(_batch(range(4), rank=0))
    single.ingest(_batch(range(4), rank=1))
    assert progress_of([first.live("r"), second.live("r")]) == single.progress("r")
    # Restarted, the first aggregator (which numbers attempts) knows rank 1's attempt from the other's segments.
    assert Aggregator(str(store.root), "0").register_worker("r", 1) == 1


def test_a_study_written_as_json_lines_reads_and_resumes_on_segments(tmp_path):
    from scaleprof.telemetry.store import append_jsonl

    store = _study(tmp_path)
    append_jsonl(store.events_path, batch_rows(_batch(range(3))))  # as an older scaleprof stored them
    agg = Aggregator(str(store.root))
    assert agg.register_worker("r", 0) == 1 and agg.ingest(_batch([2, 3])) == 1  # 2 known from the old log
    assert sorted(store.events()["seq"]) == [0, 1, 2, 3]  # both stores read as one
    shutil.rmtree(store.events_dir)
    assert sorted(store.events()["seq"]) == [0, 1, 2]


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.9])
def test_a_damaged_segment_in_a_study_is_said_in_the_report_and_never_fatal(tmp_path, cut):
    from scaleprof.analysis.summarize import summarize
    from tests.unit.study_data import make_study

    store = make_study(tmp_path / "study")
    segment = sorted((store.events_dir / "0").glob("*.parquet"))[0]  # run 001's events
    segment.write_bytes(segment.read_bytes()[: int(segment.stat().st_size * cut)])
    tables = summarize(StudyStore(store.root))
    assert any("unreadable segment(s) skipped: events/0/" in line for line in tables.damage)
    assert any("have no events at all" in line for line in tables.damage)


def test_export_writes_every_event_once_as_json_lines_csv_or_parquet(tmp_path, capsys):
    import json

    import pandas as pd

    from scaleprof import cli
    from tests.unit.study_data import make_study

    store = make_study(tmp_path / "study")
    stored = store.events()
    for name in ("events.jsonl", "events.csv", "events.parquet"):
        assert cli.main(["export", str(store.root), "--events", str(tmp_path / name)]) == 0
        assert f"Events: {len(stored):,} written to" in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert lines == store.event_records() and all("seq" in row and None not in row.values() for row in lines)
    assert len(pd.read_csv(tmp_path / "events.csv")) == len(stored)
    assert (
        pd.read_parquet(tmp_path / "events.parquet")[["run_id", "rank", "seq"]]
        .astype(str)
        .equals(stored[["run_id", "rank", "seq"]].astype(str))
    )
    for args, message in (
        (["--events", str(tmp_path / "e.txt")], "name a file ending in .jsonl, .csv, .parquet"),
        ([], "say where to: --mlflow TRACKING_URI and/or --events FILE"),
    ):
        assert cli.main(["export", str(store.root), *args]) == 2
        assert message in capsys.readouterr().err


def test_a_node_relay_forwards_its_workers_batches_as_one_call_and_answers_each_once_on_disk(tmp_path):
    from scaleprof.telemetry.actors import NodeRelay

    store = _study(tmp_path)

    async def main():
        aggregator = AggregatorActor(str(store.root), linger_s=0.01)
        relay = NodeRelay(aggregator, forward_s=0.05)
        answers = await asyncio.gather(*(relay.ingest(_batch(range(10), rank=r)) for r in range(8)))
        again = await relay.ingest(_batch(range(10), rank=0))  # a resend: on disk already, none new
        return answers, again, relay.forwarded_calls, await aggregator.close()

    answers, again, calls, stats = asyncio.run(main())
    assert answers == [10] * 8 and again == 0 and calls == 2  # 8 workers' batches in one call, then the resend
    assert stats["events_written"] == 80 and stats["duplicates"] == 10 and len(store.events()) == 80


def test_when_the_aggregator_fails_every_batch_a_relay_holds_fails_and_is_resent(tmp_path, monkeypatch):
    import scaleprof.telemetry.segments as segments
    from scaleprof.telemetry.actors import NodeRelay

    store = _study(tmp_path)
    real_write = segments.pq.write_table

    def full(table, where, **options):
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main():
        aggregator = AggregatorActor(str(store.root), linger_s=0.01)
        relay = NodeRelay(aggregator, forward_s=0.05)
        monkeypatch.setattr(segments.pq, "write_table", full)
        failed = await asyncio.gather(
            *(relay.ingest(_batch(range(5), rank=r)) for r in range(3)), return_exceptions=True
        )
        monkeypatch.setattr(segments.pq, "write_table", real_write)
        resent = await asyncio.gather(*(relay.ingest(_batch(range(5), rank=r)) for r in range(3)))
        return failed, resent, await aggregator.close()

    failed, resent, stats = asyncio.run(main())
    assert all(isinstance(f, OSError) for f in failed) and resent == [5, 5, 5] and stats["events_written"] == 15


def test_an_event_export_as_csv_keeps_integer_fields_integers(tmp_path):
    """An int field missing from some event kinds (epoch, step, pid) is written `3`, not `3.0` as a float
    column with gaps would be; float fields stay floats."""
    import csv

    from scaleprof import cli
    from tests.unit.study_data import make_study

    store = make_study(tmp_path / "study")
    assert cli.main(["export", str(store.root), "--events", str(tmp_path / "events.csv")]) == 0
    with open(tmp_path / "events.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [row for row in rows if row["kind"] == "step"]
    assert steps and all(row[name].isdigit() for row in steps for name in ("epoch", "step", "samples", "seq", "rank"))
    assert any("." in row["step_s"] for row in steps)
    assert all(row["step"] == "" for row in rows if row["kind"] == "system")  # absent, not 0 or NaN
