"""Monitors and the aggregator's logic, on real psutil and real files (no Ray needed)."""

import os
import threading
import time
from typing import Any

import pytest

from scaleprof.records import StepEvent, SystemEvent, WorkerStart, batch_rows, event_batch, stamped
from scaleprof.telemetry.aggregator import Aggregator
from scaleprof.telemetry.monitor import EventSink, GpuSampler, Monitor, NodeSampler, SystemSampler
from scaleprof.telemetry.store import StudyStore

IDS: dict[str, Any] = {"study_id": "s", "run_id": "r", "attempt": 0, "rank": 0, "node_id": "n"}


def _step(i: int) -> StepEvent:
    return StepEvent(epoch=0, step=i, samples=1, data_s=0.0, compute_s=0.001, step_s=0.001)


def test_system_sampler_reads_this_process():
    sampler = SystemSampler()
    sampler.start()
    end = time.process_time() + 0.2
    while time.process_time() < end:  # keep a core busy so CPU% is measurably above zero
        pass
    sample = sampler.sample()
    cpus = os.cpu_count()
    assert cpus is not None
    assert sample["rss_mb"] > 10
    assert 0 < sample["cpu_pct"] <= 100 * cpus + 5


def test_node_sampler_counts_the_tree_under_the_workers_parent_as_rays():
    # In a Ray worker the parent is the raylet; here it is whatever started pytest, and this busy
    # process is under it: its CPU shows in ray_cpu_pct, and both readings fit the node.
    sampler = NodeSampler(refresh_s=0.0)
    sampler.start()
    assert sampler.sample() == {}  # too soon after the last reading to say anything
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    sample = sampler.sample()
    count = os.cpu_count()
    assert count is not None
    cpus = 100 * count
    assert 0 < sample["node_cpu_pct"] <= cpus + 5 and 30 < sample["ray_cpu_pct"] <= cpus + 5
    sampler.stop()


def test_gpu_sampler_without_gpu_records_why_and_never_raises():
    none = GpuSampler(None)
    none.start()
    assert none.sample() == {} and none.unavailable_reason == "no GPU assigned to this worker"
    broken = GpuSampler(0)  # no CUDA device here: torch or NVML fails, the sampler says so
    broken.start()
    assert broken.sample() == {}
    assert broken.unavailable_reason is not None
    assert broken.unavailable_reason.startswith("NVML unavailable")
    broken.stop()


def test_sink_numbers_events_gap_free_across_threads_and_delivers_all():
    batches: list[dict[str, Any]] = []
    sink = EventSink(IDS, lambda batch: batches.append(batch), flush_interval_s=0.01).start()

    def emit_500() -> None:
        for i in range(500):
            sink.emit(_step(i))

    threads = [threading.Thread(target=emit_500) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while not batches and time.monotonic() < deadline:  # the background thread sends without close()
        time.sleep(0.01)
    assert batches
    sink.emit(_step(-1))
    sink.close()
    seqs = sorted(e["seq"] for b in batches for e in batch_rows(b))
    assert seqs == list(range(2001))
    assert len(batches) < 2001  # batched, not one call per event


def test_monitor_emits_system_samples_at_interval():
    batches: list[dict[str, Any]] = []
    sink = EventSink(IDS, batches.append, flush_interval_s=0.05).start()
    monitor = Monitor(sink, [SystemSampler(), NodeSampler()], interval_s=0.05).start()
    time.sleep(0.3)
    monitor.stop()
    sink.close()
    system = [e for b in batches for e in batch_rows(b) if e["kind"] == "system"]
    assert len(system) >= 3
    assert all(e["rss_mb"] > 0 for e in system)
    node = [e for e in system if "node_cpu_pct" in e]  # the stop's last sample comes too soon for a node reading
    assert len(node) >= len(system) - 1 and all(e["node_cpu_pct"] >= 0 and e["ray_cpu_pct"] >= 0 for e in node)


def _events(seqs, rank=0):
    return [{**IDS, "rank": rank, "seq": s, "time": float(s), "kind": "system"} for s in seqs]


def test_aggregator_drops_duplicates_counts_gaps_and_appends(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    assert agg.ingest(_events([0, 1, 2])) == 3
    assert agg.ingest(_events([2, 3])) == 1  # 2 resent
    assert agg.ingest(_events([6], rank=0) + _events([0], rank=1)) == 2  # 4, 5 lost
    stats = agg.stats()
    assert {k: stats[k] for k in ("events_written", "workers", "gaps", "duplicates")} == {
        "events_written": 6,
        "workers": 2,
        "gaps": 2,
        "duplicates": 1,
    }
    assert stats["lag_p99_s"] > 1e9  # these hand-made events carry times near 0: lag is sample -> disk
    assert [e["seq"] for e in store.events().to_dict("records") if e["rank"] == 0] == [0, 1, 2, 3, 6]


def test_aggregator_attempts_and_live_progress(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    assert agg.register_worker("r", 0) == 0 and agg.register_worker("r", 0) == 1
    steps = [
        {**IDS, "rank": rank, "seq": i, "time": 10.0 + i, "kind": "step", "epoch": 0, "samples": 50, "step_s": 1.0}
        for rank in (0, 1)
        for i in range(4)
    ]
    agg.ingest(steps)
    progress = agg.progress("r")
    # 2 ranks x 4 steps x 50 samples over 4 s (first step started at t=9)
    assert progress == {
        "ranks": 2,
        "epoch": 0,
        "epochs_done": 0,
        "epoch_throughput": 100.0,
        "step_s": 1.0,
        "cpu_pct": None,
        "gpu_util_pct": None,
    }
    system = [
        {**IDS, "rank": rank, "seq": 4, "time": 14.0, "kind": "system", "cpu_pct": 80.0 + 10 * rank} for rank in (0, 1)
    ]
    agg.ingest(system)
    assert agg.progress("r")["cpu_pct"] == 85.0  # the mean of each rank's latest sample


def test_a_restarted_aggregator_rebuilds_seq_and_attempts_from_the_store(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    first = Aggregator(str(store.root))
    assert first.register_worker("r", 0) == 0
    first.ingest(_events([0, 1, 2]))
    again = Aggregator(str(store.root))  # a new actor over the same store (restart or --resume)
    assert again.register_worker("r", 0) == 1  # the re-run worker is a new attempt
    assert again.ingest(_events([2])) == 0  # attempt 0's seq 2 is already stored: a duplicate
    assert again.stats()["events_written"] == 3 and again.stats()["duplicates"] == 1


def test_late_events_fill_their_hole_and_only_unfilled_holes_are_gaps(tmp_path, monkeypatch):
    import scaleprof.telemetry.aggregator as aggregator

    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    assert agg.ingest(_events([0, 1, 4])) == 3
    assert agg.stats()["gaps"] == 2  # 2 and 3 not here yet
    assert agg.ingest(_events([3, 2, 4])) == 2  # resent out of order after a restart: holes filled, 4 a duplicate
    assert {k: agg.stats()[k] for k in ("gaps", "duplicates")} == {"gaps": 0, "duplicates": 1}
    monkeypatch.setattr(aggregator, "MAX_AHEAD", 3)
    agg.ingest(_events([10, 11, 12, 13]))  # 5..9 never come: past MAX_AHEAD they are declared lost
    assert agg.stats()["gaps"] == 5
    assert agg.ingest(_events([7])) == 0  # too late: counted lost, and never stored twice either


def test_sink_resends_failed_batches_and_delivers_each_event_once(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    calls = {"n": 0}

    def flaky(batch):  # the aggregator is down for the first three calls
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ConnectionError("aggregator restarting")
        agg.ingest(batch)

    sink = EventSink(IDS, flaky, flush_interval_s=0.01).start()
    for i in range(300):
        sink.emit(SystemEvent(cpu_pct=float(i)))
        if i % 50 == 0:
            time.sleep(0.02)
    sink.close(timeout_s=10)
    assert sink.resent > 0 and sink.dropped == 0 and sink.sent == 300
    assert sorted(e["seq"] for e in store.events().to_dict("records")) == list(range(300))
    assert agg.stats()["gaps"] == 0


def test_sink_buffer_is_bounded_while_the_aggregator_is_gone():
    def down(batch):
        raise ConnectionError("aggregator gone")

    sink = EventSink(IDS, down, flush_interval_s=0.01, max_buffered=100).start()
    for i in range(1000):
        sink.emit(_step(i))
    time.sleep(0.1)
    start = time.monotonic()
    sink.close(timeout_s=0.5)
    assert time.monotonic() - start < 5  # gives up, never hangs the worker
    assert sink.sent == 0 and sink.dropped == 1000  # over the cap, then undelivered at close: all counted


def test_a_closing_sink_gives_up_soon_on_a_full_disk_but_waits_for_a_restarting_aggregator():
    """A full disk does not free itself while a run ends (the study stops and says so); an aggregator
    that restarts comes back: the sink waits the whole timeout for that one only."""
    full = "ray.exceptions.RayTaskError(OSError): ... OSError: [Errno 28] No space left on device"

    def closing(error):
        def send(batch):
            raise RuntimeError(error)

        sink = EventSink(IDS, send, flush_interval_s=0.01).start()
        sink.emit(_step(0))
        start = time.monotonic()
        sink.close(timeout_s=2.0, disk_s=0.2)
        return time.monotonic() - start, sink.dropped

    waited_full, dropped_full = closing(full)
    waited_restart, dropped_restart = closing("ActorUnavailableError: the aggregator is restarting")
    assert dropped_full == dropped_restart == 1  # given up on either way, and counted
    assert waited_full < 1.5 <= waited_restart  # the full disk gave up after disk_s, the restart got the timeout


def test_restarted_aggregator_sets_a_torn_segment_aside_and_takes_its_resend(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    agg.ingest(_events([0, 1]))
    agg.ingest(_events([2, 3]))
    last = sorted((store.events_dir / "0").glob("*.parquet"))[-1]
    last.write_bytes(last.read_bytes()[:-40])  # cut short by something outside scaleprof (it only renames whole files)
    again = Aggregator(str(store.root))
    assert again.segments_set_aside == [last.name] and last.with_name(last.name + ".torn").exists()
    assert again.ingest(_events([2, 3])) == 2  # 2 and 3 are not on disk any more: their resend is taken
    assert [e["seq"] for e in store.events().to_dict("records")] == [0, 1, 2, 3]


def test_a_failed_segment_write_leaves_nothing_and_the_resend_is_accepted(tmp_path, monkeypatch):
    import errno

    import scaleprof.telemetry.segments as segments

    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    agg.ingest(_events([0, 1]))
    real_write = segments.pq.write_table

    def disk_full_halfway(table, where, **options):  # what a full disk does to a write: part of it lands
        with open(where, "wb") as f:
            f.write(b"PAR1 half a segment")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments.pq, "write_table", disk_full_halfway)
    with pytest.raises(OSError, match="No space left") as failed:
        agg.ingest(_events([2, 3, 4]))
    assert failed.value.filename.endswith(".parquet")  # the message names the segment it was writing
    assert not list((store.events_dir / "0").glob(".*.tmp"))  # no half file left behind
    monkeypatch.setattr(segments.pq, "write_table", real_write)  # space is back
    assert agg.ingest(_events([2, 3, 4])) == 3
    assert [e["seq"] for e in store.events().to_dict("records")] == [0, 1, 2, 3, 4]
    assert agg.stats()["gaps"] == 0


def test_the_live_view_never_goes_back_when_the_disk_refuses_a_write(tmp_path, monkeypatch):
    """The progress line follows what the workers did, not what the disk took: a failed write (and the
    resends that follow) neither winds the epoch back to the last one on disk nor counts a step twice."""
    import errno

    import scaleprof.telemetry.segments as segments

    def steps(seqs, epoch):
        event = lambda s: StepEvent(epoch=epoch, step=s, samples=1, data_s=0.0, compute_s=0.001, step_s=0.001)
        return event_batch(IDS, [stamped(s, float(s), event(s)) for s in seqs])

    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    agg.ingest(steps([0, 1], epoch=0))
    agg.ingest(steps([2, 3], epoch=1))
    real_write = segments.pq.write_table

    def full(table, where, **options):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments.pq, "write_table", full)
    for _ in range(3):  # the sink resends while the disk stays full
        with pytest.raises(OSError):
            agg.ingest(steps([4, 5], epoch=2))
        assert agg.progress(IDS["run_id"])["epoch"] == 2  # not 1, the last epoch on disk
    monkeypatch.setattr(segments.pq, "write_table", real_write)
    assert agg.ingest(steps([4, 5], epoch=2)) == 2  # space is back: the resend is stored, once
    _, ranks, _ = agg.live(IDS["run_id"])
    assert ranks[0]["epoch"] == 2 and ranks[0]["samples"] == 2  # each step counted once
    assert [e["seq"] for e in store.events().to_dict("records")] == list(range(6))


def test_a_sampler_that_breaks_mid_run_is_recorded_once_and_the_table_keeps_the_reason():
    import pandas as pd

    from scaleprof.analysis.placement import workers_table

    class BreaksAfterTwo:  # stands in for NVML failing mid-run, which needs a GPU to happen for real
        unavailable_reason = None

        def __init__(self):
            self.calls = 0

        def start(self):
            pass

        def sample(self):
            self.calls += 1
            if self.calls > 2:
                self.unavailable_reason = "NVML read failed: GPU is lost"
                return {}
            return {"gpu_util_pct": 50.0}

        def stop(self):
            pass

    batches: list[dict[str, Any]] = []
    sink = EventSink(IDS, batches.append, flush_interval_s=0.01).start()
    sink.emit(WorkerStart())
    monitor = Monitor(sink, [BreaksAfterTwo()], interval_s=10).start()
    for _ in range(5):
        monitor.sample_once()
    monitor.stop()
    sink.close()
    events = pd.DataFrame([e for b in batches for e in batch_rows(b)])
    assert (events["event"] == "gpu_unavailable").sum() == 1
    assert events[events["kind"] == "system"]["gpu_util_pct"].notna().sum() == 2
    assert workers_table(events)["gpu_unavailable"].tolist() == ["NVML read failed: GPU is lost"]


def test_live_throughput_uses_the_latest_epoch_all_ranks_finished_and_follows_restarts(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))

    def epoch(rank, seq, n, seconds, attempt=0):
        return {
            **IDS,
            "attempt": attempt,
            "rank": rank,
            "seq": seq,
            "time": 100.0 + seq,
            "kind": "epoch",
            "epoch": n,
            "samples": 600,
            "epoch_time_s": seconds,
        }

    agg.ingest([epoch(0, 0, 0, 1.0), epoch(1, 0, 0, 2.0), epoch(0, 1, 1, 0.5)])  # rank 1 has not sent epoch 1 yet
    assert agg.progress("r")["epoch_throughput"] == 1200 / 2.0  # epoch 0: both ranks' samples over the slowest rank
    agg.ingest([epoch(1, 1, 1, 0.6)])
    assert agg.progress("r")["epoch_throughput"] == 1200 / 0.6
    agg.ingest([epoch(0, 0, 0, 3.0, attempt=1)])  # restarted: the live view follows attempt 1 only
    assert agg.progress("r") == {
        "ranks": 1,
        "epoch": 0,
        "epochs_done": 1,
        "epoch_throughput": 600 / 3.0,
        "step_s": None,
        "cpu_pct": None,
        "gpu_util_pct": None,
    }


def test_a_restarted_aggregator_still_knows_each_runs_nodes_and_progress(tmp_path):
    store = StudyStore(tmp_path / "study")
    store.create()
    start = {**IDS, "seq": 0, "time": 1.0, "kind": "lifecycle", "event": "worker_start"}
    epoch = {**IDS, "seq": 1, "time": 2.0, "kind": "epoch", "epoch": 0, "samples": 100, "epoch_time_s": 0.5}
    Aggregator(str(store.root)).ingest([start, epoch])
    again = Aggregator(str(store.root))
    assert again.nodes("r") == ["n"]
    assert again.progress("r")["epoch_throughput"] == 200.0


def test_after_the_disk_fills_nothing_is_written_past_a_hole(tmp_path, monkeypatch):
    import errno

    import scaleprof.telemetry.segments as segments

    store = StudyStore(tmp_path / "study")
    store.create()
    agg = Aggregator(str(store.root))
    assert agg.ingest(_events([0, 1])) == 2
    real_write = segments.pq.write_table

    def full(table, where, **options):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(segments.pq, "write_table", full)
    with pytest.raises(OSError):
        agg.ingest(_events([2, 3, 4, 5]))
    monkeypatch.setattr(segments.pq, "write_table", real_write)  # a little space came back
    with pytest.raises(OSError):
        agg.ingest(_events([6]))  # a later, smaller batch would fit: refused, or 2..5 become a hole
    assert [e["seq"] for e in store.events().to_dict("records")] == [0, 1]
    assert agg.ingest(_events([2, 3, 4, 5])) == 4  # the sender resends in order: written
    assert agg.ingest(_events([6])) == 1 and agg.stats()["gaps"] == 0


def test_gpu_sampler_reads_energy_gpm_and_processes_through_the_real_binding(monkeypatch):
    """No GPU here: NVML's calls are replaced by thin stand-ins (the library cannot load), while the binding's
    own ctypes structures stay real, so the GPM query is built exactly as on a GPU."""
    from types import SimpleNamespace

    import pynvml
    import torch

    calls: dict[str, Any] = {"gpm_get": 0}

    def metrics_get(query):
        calls["metrics"] = (query.numMetrics, query.metrics[0].metricId, bool(query.sample1), bool(query.sample2))
        query.metrics[0].value, query.metrics[0].nvmlReturn = 37.5, pynvml.NVML_SUCCESS
        return query

    def sample_get(handle, sample):
        calls["gpm_get"] += 1
        return sample

    fakes = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetHandleByUUID": lambda uuid: ("handle", uuid),
        "nvmlDeviceGetName": lambda h: b"NVIDIA H200",
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=98),
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=2**30),
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [object(), object()],
        "nvmlDeviceGetPowerUsage": lambda h: 350_000,
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: 123_456_789,
        "nvmlGpmQueryDeviceSupport": lambda h: SimpleNamespace(isSupportedDevice=1),
        "nvmlGpmSampleAlloc": lambda: pynvml.c_nvmlGpmSample_t(pynvml.struct_c_nvmlGpmSample_t()),
        "nvmlGpmSampleGet": sample_get,
        "nvmlGpmMetricsGet": metrics_get,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(pynvml, name, fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="1234-abcd"))
    sampler = GpuSampler(0)
    sampler.start()
    assert sampler.uuid == "GPU-1234-abcd" and sampler.name == "NVIDIA H200" and sampler.unavailable_reason is None
    first, second = sampler.sample(), sampler.sample()
    assert first == {
        "gpu_util_pct": 98.0,
        "gpu_mem_used_mb": 1024.0,
        "gpu_sm_active_pct": 37.5,
        "gpu_processes": 2.0,
        "gpu_power_w": 350.0,
        "gpu_energy_mj": 123_456_789.0,
    }
    assert second["gpu_sm_active_pct"] == 37.5 and calls["gpm_get"] == 3  # one at start, one per interval
    assert calls["metrics"] == (1, pynvml.NVML_GPM_METRIC_SM_UTIL, True, True)
    sampler.stop()


def test_gpu_node_facts_keep_nccl_settings_and_need_no_gpu(monkeypatch):
    from scaleprof.versions import gpu_node_facts

    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("NCCL_IB_DISABLE", "1")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no driver or topology, and no error
    assert gpu_node_facts() == {"nccl_env": {"NCCL_DEBUG": "INFO", "NCCL_IB_DISABLE": "1"}}
