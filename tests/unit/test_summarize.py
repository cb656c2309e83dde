"""Which runs carry a headline figure: only those that finished and recorded steps (analysis/summarize.py)."""

import math

from scaleprof.analysis.summarize import summarize
from scaleprof.records import NO_STEPS, RunKind, RunStatus
from scaleprof.telemetry.aggregator import Aggregator

from .study_data import _worker_events, make_study

FAILED = "002-mlp-cpu-2-r0"


def test_a_failed_run_shows_no_steady_state_figure_and_is_no_scaling_point(tmp_path):
    store = make_study(tmp_path / "s")
    store.append_run_record({"run_id": FAILED, "status": RunStatus.FAILED, "reason": "ValueError: boom in epoch 3"})
    tables = summarize(store)
    run = tables.runs.set_index("run_id").loc[FAILED]
    assert run["status"] == "failed" and run["events"] > 0  # it measured something before it failed ...
    for name in (
        "throughput",
        "throughput_low",
        "throughput_high",
        "speedup",
        "scaling_efficiency",
        "cost_per_sample_usd",
        "step_time_p50_s",
    ):
        assert math.isnan(run[name]), name  # ... but gives no figure a reader could take for the placement's
    assert tables.fits.empty  # one ok worker count left: nothing to fit
    assert tables.findings.largest_scale is None and tables.findings.negative_scaling == []


def test_a_run_that_recorded_no_step_is_unmeasured_with_how_to_record_them(tmp_path):
    store = make_study(tmp_path / "s")
    store.append_run_record(
        {
            "run_id": "004-mlp-cpu-1-r0",
            "index": 4,
            "model": "mlp",
            "placement": "cpu-1b",
            "device": "cpu",
            "workers": 1,
            "kind": RunKind.FIXED_SPLIT,
            "status": RunStatus.OK,
        }
    )
    silent = [e for e in _worker_events("004-mlp-cpu-1-r0", 0, epoch_time=1.0) if e["kind"] not in ("step", "epoch")]
    Aggregator(str(store.root), shard="1").ingest(silent)  # its worker started and evaluated, but timed no step
    runs = summarize(store).runs.set_index("run_id")
    assert runs.loc["004-mlp-cpu-1-r0", "status"] == RunStatus.UNMEASURED
    assert runs.loc["004-mlp-cpu-1-r0", "reason"] == NO_STEPS and "session.steps(loader)" in NO_STEPS
    assert math.isnan(runs.loc["004-mlp-cpu-1-r0", "throughput"])
    assert runs.loc["001-mlp-cpu-1-r0", "status"] == "ok"


def test_steps_lost_to_a_damaged_segment_are_said_as_damage_naming_the_file(tmp_path):
    store = make_study(tmp_path / "s")
    (first,) = [p for p in sorted((store.root / "events" / "0").iterdir()) if p.name.startswith("00000000")]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    tables = summarize(store)
    run = tables.runs.set_index("run_id").loc["001-mlp-cpu-1-r0"]
    assert run["status"] == RunStatus.UNMEASURED
    assert f"events/0/{first.name}" in run["reason"]
    assert any(line.startswith("events: ") and first.name in line for line in tables.damage)
    assert not any("events.jsonl" in line for line in tables.damage)  # the file this study does not have
