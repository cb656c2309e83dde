"""A real study on a real local Ray: Ray Train workers, monitors, aggregator, store, report."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from scaleprof.config import Experiment
from scaleprof.telemetry.store import StudyStore


def by_placement(tables, placement, repeat=0):
    runs = tables.runs
    return runs[(runs["placement"] == placement) & (runs["kind"] == "fixed-split") & (runs["repeat"] == repeat)].iloc[0]


def test_every_run_reaches_a_final_status(study):
    result, tables = study
    runs = tables.runs
    status = list(zip(runs["placement"], runs["kind"], runs["status"]))
    assert status == [
        ("cpu-1", "fixed-split", "ok"),
        ("cpu-1", "fixed-split", "ok"),
        ("cpu-2", "fixed-split", "ok"),
        ("pack-2", "fixed-split", "skipped"),
        ("gpu-1", "fixed-split", "skipped"),
        ("cpu-1", "cv", "ok"),
        ("cpu-1", "cv", "ok"),
    ]


def test_gpu_placement_on_gpu_less_cluster_is_skipped_with_reason_not_run_on_cpu(study):
    result, tables = study
    gpu = by_placement(tables, "gpu-1")
    assert "needs 1 GPU(s), the cluster has 0" in gpu["reason"]
    assert gpu["wait_s"] == 0  # a fixed cluster: skipped at once, not after the placement timeout
    events = StudyStore(result.study_dir).events()
    assert not (events["run_id"] == gpu["run_id"]).any()  # no worker ever started for it
    # Ray's read-only monitor (every head without an autoscaling config) is not an autoscaler.
    assert tables.manifest.ray.autoscaler == {"autoscaling": False, "nodes_by_type": {}, "node_types": None}


def test_two_worker_run_has_events_from_both_ranks_without_gaps(study):
    result, tables = study
    events = StudyStore(result.study_dir).events()
    cpu2 = events[events["run_id"] == by_placement(tables, "cpu-2")["run_id"]]
    for kind in ("step", "epoch", "system", "lifecycle"):
        assert set(cpu2[cpu2["kind"] == kind]["rank"]) == {0, 1}, kind
    for _, seq in cpu2.groupby("rank")["seq"]:
        assert sorted(seq) == list(range(len(seq)))  # gap-free, no duplicates
    assert result.aggregator_stats["gaps"] == 0 and result.aggregator_stats["duplicates"] == 0
    # DistributedSampler splits the training set: the ranks' epoch samples add up to it (padded to even)
    train_size = tables.manifest.data.split_sizes["train"]
    per_epoch = cpu2[cpu2["kind"] == "epoch"].groupby("epoch")["samples"].sum()
    assert all(train_size <= s <= train_size + 1 for s in per_epoch)


def test_monitor_figures_are_plausible(study):
    result, tables = study
    system = tables.timeline
    assert (system["rss_mb"] > 100).all()  # a worker with torch imported holds hundreds of MiB
    assert (system["cpu_pct"] >= 0).all()
    ok = tables.runs[tables.runs["status"] == "ok"]
    # A 1-thread training worker keeps about one core busy: its mean CPU% over the cores it was given lands
    # between a mostly idle process and one core plus the sampler, sink and gloo threads.
    assert ok["cpu_util_pct"].between(10, 150).all(), ok[["run_id", "cpu_util_pct"]]
    assert (ok["throughput"] > 0).all() and ok["throughput_basis"].str.contains("warm-up").all()
    assert (ok["step_time_p95_s"] >= ok["step_time_p50_s"]).all()
    assert set(ok["nodes_realized"]) == {1, 2}
    assert (tables.workers["gpu_unavailable"] == "no GPU assigned to this worker").all()  # recorded, not a crash
    assert ok["gpu_util_pct"].isna().all()


def test_quiet_runs_are_not_flagged_contended_and_carry_their_window_and_interval(study):
    result, tables = study
    ok = tables.runs[tables.runs["status"] == "ok"]
    # nothing but the study ran beside these runs: what was outside Ray is below the flag's share
    assert not ok["contended"].any(), ok[["run_id", "outside_cpu_pct", "outside_cpu_share"]]
    assert (ok["outside_cpu_share"] < 0.20).all() and ok["outside_cpu_pct"].notna().all()  # the study's flag share
    assert (ok["throughput_low"] <= ok["throughput"]).all() and (ok["throughput"] <= ok["throughput_high"]).all()
    assert (ok["warmup_steps"] >= 20).all() and (ok["steady_steps"] > 0).all()  # epoch 1: 20+ steps of 32
    assert (ok["low_confidence"] == (ok["steady_steps"] < 30)).all() and ok["low_confidence"].any()  # cpu-2: 20
    assert not tables.steps.empty and set(tables.steps["run_id"]) >= set(ok["run_id"])


def test_manifest_records_experiment_splits_and_cluster(study):
    result, tables = study
    m = tables.manifest
    assert m.experiment.name == "itest" and len(m.experiment_sha256 or "") == 64
    assert set(m.data.split_sha256) == {"train", "val", "test"}
    assert m.ray.cluster_resources["CPU"] == 2.0 and len(m.ray.nodes) == 2
    assert m.packages["torch"] and m.packages["ray"] == "2.60.0"
    assert m.telemetry is not None and m.telemetry.events_written == len(StudyStore(result.study_dir).events())
    # Two aggregators, a relay on each of the 2 nodes, every event through them once (seq_gaps below are 0).
    assert m.telemetry.aggregators == 2 and m.telemetry.relays == 2 and m.telemetry.relay_calls > 0
    assert m.telemetry.gaps == 0 and m.telemetry.duplicates == 0
    assert m.gpu is None  # no GPU here: nothing probed, nothing claimed


def test_report_command_reproduces_the_report_from_disk_without_ray(study, tmp_path):
    result, _ = study
    study_dir = result.study_dir
    before = pd.read_parquet(study_dir / "runs.parquet")
    (study_dir / "report.html").unlink()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "scaleprof.cli", "report", str(study_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Report:" in proc.stdout
    assert "ray" not in proc.stderr.lower()  # no Ray started
    after = pd.read_parquet(study_dir / "runs.parquet")
    pd.testing.assert_frame_equal(before, after)
    report = (study_dir / "report.html").read_text()
    assert len(report) > 100_000
    assert "Where each worker ran" in report and "none: no GPU assigned to this worker" in report


@pytest.mark.parametrize(
    "name",
    ["throughput", "scaling_efficiency", "epoch_time", "memory", "utilisation", "learning_curves", "confusion_matrix"],
)
def test_charts_written(study, name):
    result, _ = study
    assert (result.study_dir / "charts" / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_strict_spread_lands_on_two_nodes_and_says_so(study):
    result, tables = study
    cpu2 = by_placement(tables, "cpu-2")
    assert cpu2["nodes_realized"] == 2 and cpu2["nodes_requested"] == 2 and cpu2["strategy"] == "STRICT_SPREAD"
    assert cpu2["placement_warning"] == ""
    workers = pd.read_parquet(result.study_dir / "workers.parquet")
    cpu2_workers = workers[workers["run_id"] == cpu2["run_id"]]
    assert list(cpu2_workers["rank"]) == [0, 1] and cpu2_workers["node_id"].nunique() == 2
    assert set(cpu2_workers["node_id"]) == {n.node_id for n in tables.manifest.ray.nodes}


def test_placement_no_node_can_hold_is_skipped_at_once_with_reason(study):
    _, tables = study
    pack = by_placement(tables, "pack-2")
    assert pack["status"] == "skipped"
    assert pack["reason"] == "STRICT_PACK needs one node with 2 x {'CPU': 1.0}, no node has that"


def test_cost_figures_follow_from_the_pricing_table(study):
    _, tables = study
    price = tables.manifest.pricing["aws-t3.large"]
    assert price.price_per_hour_usd == 0.0832 and price.source.startswith("https://")
    for _, run in tables.runs[tables.runs["status"] == "ok"].iterrows():
        per_s = run["nodes_realized"] * price.price_per_hour_usd / 3600  # billing: whole nodes
        assert run["cost_per_sample_usd"] == pytest.approx(per_s / run["throughput"])
        assert run["cost_per_sample_e2e_usd"] == pytest.approx(per_s * run["wall_s"] / run["samples_total"])
        assert run["cost_per_sample_e2e_usd"] > run["cost_per_sample_usd"]  # start-up costs money too
    assert by_placement(tables, "cpu-2")["billed_nodes"] == 2


def test_step_breakdown_mfu_and_sync_probe_on_real_runs(study):
    _, tables = study
    cpu1, cpu2 = by_placement(tables, "cpu-1"), by_placement(tables, "cpu-2")
    # mlp 64-256-128-10: forward 2 x 50,432 FLOPs; backward: weight grads 2 x 50,432 plus input grads
    # of the two later layers 2 x 34,048 (the first layer's input needs no gradient)
    assert cpu1["flops_per_sample"] == 269_824
    assert 0 < cpu1["mfu"] < 1 and cpu1["peak_flops_basis"].startswith("measured")
    assert cpu1["step_allreduce_s"] == 0.0  # one worker: nothing to synchronise
    assert cpu2["step_allreduce_s"] > 0  # two workers on two nodes: gloo all-reduce measured by the probe
    parts = cpu2[["step_data_s", "step_forward_s", "step_backward_compute_s", "step_allreduce_s", "step_optimizer_s"]]
    assert (parts >= 0).all() and parts.sum() <= cpu2["step_time_p95_s"] * 1.5
    # Its two Ray nodes are one machine: the probe timed each rank's compute alone on it and with the other at once.
    assert cpu2["host_ranks"] == 2 and cpu2["hosts_realized"] == 1
    assert cpu2["host_sharing_low"] <= cpu2["host_sharing"] <= cpu2["host_sharing_high"] and cpu2["host_sharing"] > 0.5
    assert pd.isna(cpu1["host_sharing"])  # one rank shares its machine with no other


def test_live_figures_reach_rays_metrics_endpoint(ray_session, tmp_path):
    """While a run trains, what the progress line shows is exported as Ray metrics (ray_scaleprof_*): on a
    cluster it appears in the Ray dashboard's metrics view and Grafana. Read back, during the run, from the
    nodes' Prometheus endpoints (Ray exports a gauge's latest value, so a scraper sees it while it is set)."""
    import re
    import threading
    import time
    import urllib.request

    from scaleprof.execution.runner import run_study

    experiment = Experiment.model_validate(
        {
            "name": "live",
            "model": {"name": "mlp"},
            "data": {"name": "digits"},
            "train": {"epochs": 40},
            "monitor": {"interval_s": 0.2},
            "placements": [{"name": "cpu-1", "workers": 1}],
        }
    )
    done, results = threading.Event(), []
    # A neighbour burns a core all through the run: the run must come out flagged contended (below).
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def run_in_background() -> None:
        results.append(run_study(experiment, tmp_path))
        done.set()

    study = threading.Thread(target=run_in_background, daemon=True)
    study.start()
    ports = [n["MetricsExportPort"] for n in ray_session.nodes() if n["Alive"]]
    pattern = re.compile(
        r'^ray_scaleprof_epoch_throughput_samples_per_s{[^}]*run_id="001-mlp-cpu-1-r0"[^}]*} ([0-9.e+]+)$', re.M
    )
    found, text, ended = None, "", None
    # Ray exports a gauge every few seconds: keep looking a while after a short run ends
    while found is None and (ended is None or time.monotonic() - ended < 30):
        if ended is None and done.is_set():
            ended = time.monotonic()
        time.sleep(1)
        text = "".join(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode() for port in ports
        )
        found = pattern.search(text)
    study.join(timeout=300)
    burner.kill()
    burner.wait()
    assert found and float(found.group(1)) > 0, "no live throughput was exported while the run trained"
    from scaleprof.analysis.summarize import summarize

    run = summarize(StudyStore(results[0].study_dir)).runs.iloc[0]
    # the burner took about a core of this 2-core machine: well over the 10% share that flags a run
    assert run["contended"] and run["outside_cpu_share"] > 0.25, run[["outside_cpu_pct", "outside_cpu_share"]]
    assert 'placement="cpu-1"' in found.group(0) and 'study_id="live-' in found.group(0)
    assert "ray_scaleprof_step_time_s{" in text and "ray_scaleprof_epoch{" in text
