"""Predicting placements nobody measured: the model's inputs recorded per run, the physics prediction in
`scaleprof predict`, and the ledger by which a study checks its own predictions. On the hand-made study
(tests/unit/study_data.py) every step of cpu-1 takes 0.25 s: data 10%, forward 30%, backward 40%,
optimizer 10% and 10% unmarked ("other"); 1,000 parameters; cpu-2's sync probe saw 0.05 s."""

import json
import math

import pandas as pd
import pytest

from scaleprof import cli
from scaleprof.analysis.fabric import ring_time
from scaleprof.analysis.model_inputs import Oversubscription, host_sharing_columns, measured_run, oversubscribed
from scaleprof.analysis.prediction import fabric_of, physics_predictions, prediction_ledger, study_sweep
from scaleprof.analysis.summarize import summarize
from scaleprof.records import FABRIC_COLUMNS
from scaleprof.report.findings_text import findings_sentences
from scaleprof.report.tables import ledger_display

from .study_data import make_study

ALPHA, BETA = 1e-4, 1e-9  # the sweep below is timed exactly by the ring model with these


def exact_sweep(link_class: str = "intra-node", worlds: tuple[int, ...] = (2, 4)) -> pd.DataFrame:
    rows = [
        {
            "collective": "all_reduce",
            "backend": "gloo",
            "link_class": link_class,
            "world": world,
            "bytes": size,
            "repeat": 0,
            "time_s": float(ring_time(ALPHA, BETA, "all_reduce", size, world)),
        }
        for world in worlds
        for size in (4**k for k in range(6, 12))
    ]
    return pd.DataFrame(rows, columns=list(FABRIC_COLUMNS))


@pytest.fixture
def tables(tmp_path):
    return summarize(make_study(tmp_path / "study"))


def row(tables, placement):
    return tables.runs.set_index("placement").loc[placement].to_dict() | {"placement": placement}


def test_each_run_records_the_model_inputs_with_intervals(tables):
    one, two = row(tables, "cpu-1"), row(tables, "cpu-2")
    assert one["inputs_reason"] == "" and one["gradient_bytes"] == 4 * 1000  # float32 gradients
    for name in ("step_data_s", "step_forward_s", "step_backward_compute_s", "step_optimizer_s", "step_other_s"):
        assert one[f"{name}_low"] <= one[name] <= one[f"{name}_high"], name
    assert one["step_other_s"] == pytest.approx(0.025)  # the unmarked tenth of a 0.25 s step
    assert two["step_allreduce_s_low"] <= two["step_allreduce_s"] <= two["step_allreduce_s_high"]
    measured = measured_run(one)
    assert not isinstance(measured, str)
    assert measured.exposed_comm_s is None and measured.other_s.value == pytest.approx(0.025)
    assert measured.data_s.value + measured.forward_s.value + measured.backward_compute_s.value == pytest.approx(0.2)
    measured_two = measured_run(two)
    assert not isinstance(measured_two, str) and measured_two.exposed_comm_s is not None
    assert measured_two.exposed_comm_s.value == pytest.approx(0.05)


def test_a_run_without_the_inputs_says_why(tables):
    two = row(tables, "cpu-2")

    def reason(changes: dict) -> str:
        said = measured_run(two | changes)
        assert isinstance(said, str), said
        return said

    assert "FSDP" in reason({"parallelism": "fsdp"})
    assert "sync probe" in reason({"step_allreduce_s": math.nan})
    assert "re-render" in reason({"inputs_reason": math.nan})  # a study summarised by an older scaleprof
    assert "did not finish" in reason({"status": "failed"})


def test_the_ledger_predicts_the_two_worker_run_from_the_one_worker_run_and_the_fabric(tables):
    ledger = prediction_ledger(tables.runs, fabric_of(exact_sweep(), "test"))
    physics = ledger[ledger["method"] == "physics"].iloc[0]
    # 0.25 s of compute + the whole all-reduce of 4,000 bytes on 2 ranks (no overlap known from cpu-1), no spread.
    step = 0.25 + float(ring_time(ALPHA, BETA, "all_reduce", 4000, 2))
    assert physics["base"] == "cpu-1" and physics["predicted"] == pytest.approx(2 * 50 / step, rel=1e-3)
    assert physics["measured"] == pytest.approx(300)  # 2 x 200 samples per 4/3 s epoch
    assert physics["error_pct"] == pytest.approx(100 * (2 * 50 / step - 300) / 300, rel=1e-3)
    assert physics["covered"] is False or physics["covered"] == False  # noqa: E712
    curve = ledger[ledger["method"] == "scaling law"].iloc[0]
    assert math.isnan(curve["predicted"]) and "two or more smaller worker counts" in curve["reason"]
    shown = ledger_display(ledger)
    assert list(shown["inside"]) == ["no", "–"] and shown["error"].iloc[0].startswith("+33")


def test_a_run_with_no_smaller_run_to_be_predicted_from_is_kept_but_not_shown(tables):
    """A study of multi-worker placements only: its smallest has nothing to be predicted from. The ledger keeps
    the row (with why); the report's table leaves it out rather than list "–" and the reason for each method."""
    ledger = prediction_ledger(tables.runs[tables.runs["placement"] != "cpu-1"], fabric_of(exact_sweep(), "test"))
    assert list(ledger["placement"]) == ["cpu-2", "cpu-2"] and ledger["predicted"].isna().all()
    assert ledger.set_index("method").loc["physics", "reason"] == "no finished run with fewer workers"
    assert ledger_display(ledger).empty
    shown = ledger_display(prediction_ledger(tables.runs, fabric_of(exact_sweep(), "test")))
    assert list(shown["placement"]) == ["cpu-2", "cpu-2"]  # with cpu-1 measured, cpu-2's rows are shown


def test_without_a_fabric_the_ledger_names_the_missing_link(tables):
    ledger = prediction_ledger(tables.runs, fabric_of(None))
    assert "intra-node link, which has no fit" in ledger.iloc[0]["reason"]


def test_the_report_opens_with_the_self_check(tmp_path):
    store = make_study(tmp_path / "study")
    store.write_fabric(exact_sweep())
    tables = summarize(store)
    assert tables.fabric is not None and len(tables.fabric) == len(exact_sweep())  # the stored sweep is the fabric
    said = [s for s in findings_sentences(tables) if s.startswith("Self-check")]
    assert len(said) == 1 and "from cpu-1 and the measured fabric alone" in said[0]
    assert "outside the interval" in said[0]
    # cpu-2's sync probe saw 50 ms; the fabric's 2-rank all-reduce of 4,000 bytes takes 2 x 0.1 ms + 4 us
    assert (
        "the gradient sync (DDP's own cost, the all-reduce, the wait for the slowest rank) 50 ms measured against "
        "0.204 ms predicted (245x)" in said[0]
    )
    assert "Per step: compute " in said[0]


def test_a_stored_sweep_wins_over_the_runs_own(tables):
    own = exact_sweep().assign(time_s=1.0)
    stored, runs_own = study_sweep(exact_sweep(), own), study_sweep(None, own.assign(kind="fabric"))
    assert stored is not None and stored["time_s"].max() < 1.0
    assert runs_own is not None and runs_own["time_s"].eq(1.0).all()
    assert study_sweep(None, pd.DataFrame()) is None


def test_physics_predictions_cross_nodes_only_over_a_known_link(tables):
    stated = fabric_of(exact_sweep(), "test", {"inter-node": "10Mbit/s,1ms"})
    table = physics_predictions(tables.runs, [(4, 1), (4, 2), (4, 4)], stated)
    one_node, two_nodes, _ = table.itertuples()
    assert two_nodes.crosses_node_boundary and not one_node.crosses_node_boundary
    assert two_nodes.throughput < one_node.throughput  # 10 Mbit/s with 1 ms per hop is far slower than the sweep
    assert two_nodes.link_source == "stated (10Mbit/s,1ms)"
    assert set(table["device"]) == {"cpu"}  # the GPU placement was skipped: no row for it
    missing = physics_predictions(tables.runs, [(4, 2)], fabric_of(exact_sweep(), "test"))
    assert math.isnan(missing["throughput"].iloc[0]) and "inter-node" in missing["reason"].iloc[0]


def test_predict_prints_the_physics_beside_the_law(tmp_path, capsys):
    store = make_study(tmp_path / "study")
    store.write_fabric(exact_sweep())
    args = ["predict", str(store.root), "--workers", "8", "--nodes", "1", "2", "--link", "inter-node=100Gbit/s,5us"]
    assert cli.main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    physics = [r for r in rows if r["method"] == "physics"]
    assert [(r["workers"], r["nodes"]) for r in physics] == [(8, 1), (8, 2)]
    assert all(r["throughput"] > 0 and r["low"] <= r["throughput"] <= r["high"] for r in physics)
    assert any(r["method"] == "scaling law" for r in rows)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "physics model: predictions" in out and "scaling law: predictions" in out and "crosses nodes" in out
    assert "rests on: compute from the measured 2-worker run" in out


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--link", "intra-node=fast"], "--link"),
        (["--link", "rack=1GB/s,1us"], "--link rack=1GB/s,1us: the link class is intra-node or inter-node"),
        (["--fabric", "/nonexistent/fabric.parquet"], "--fabric /nonexistent/fabric.parquet: no such file"),
        (["--nodes", "16"], "--nodes 16: a placement needs at least one worker per node"),
    ],
)
def test_predict_names_the_option_at_fault(tmp_path, capsys, extra, said):
    store = make_study(tmp_path / "study")
    assert cli.main(["predict", str(store.root), "--workers", "8", *extra]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_cpu_placement_that_would_fill_its_node_says_so():
    """Each worker of the base run kept 0.96 cores busy on a 2-core node: 2 on a node leave none to spare."""
    base = {"placement": "w1", "worker_cores_busy": 0.96, "node_cpus": 2.0}
    assert oversubscribed(base, 1, 1) is None
    said = oversubscribed(base, 2, 1)
    assert said == Oversubscription(workers_per_machine=2, cores_busy=0.96, machine_cores=2.0, base_placement="w1")
    assert "2 workers on one machine would keep about 1.9 of its 2 cores busy (0.96 each in w1)" in said.words()
    assert oversubscribed(base, 4, 2) is not None and oversubscribed(base, 4, 4) is None  # 2 per node, then 1
    assert oversubscribed({"placement": "g1", "worker_cores_busy": math.nan, "node_cpus": 2.0}, 8, 1) is None  # GPU


def test_the_throughput_chart_draws_the_ledger_beside_the_measured_points(tables):
    from scaleprof.report.charts import throughput_vs_workers

    ledger = prediction_ledger(tables.runs, fabric_of(exact_sweep(), "test"))
    with_ledger, without = throughput_vs_workers(tables.runs, ledger), throughput_vs_workers(tables.runs)
    assert with_ledger is not None and without is not None
    spec = json.dumps(with_ledger.to_dict())
    assert "physics (from smaller runs)" in spec and "diamond" in spec
    assert "physics (from smaller runs)" not in json.dumps(without.to_dict())


def test_the_host_sharing_probe_gives_the_median_ratio_over_ranks_within_their_range():
    """Two ranks on one machine: together 1.2x and 1.3x their time alone."""
    probe = pd.DataFrame(
        {
            "allreduce_s": [0.05, 0.05],
            "compute_alone_s": [0.10, 0.20],
            "compute_together_s": [0.12, 0.26],
            "host_ranks": [2, 2],
        }
    )
    assert host_sharing_columns(probe) == pytest.approx(
        {"host_sharing": 1.25, "host_sharing_low": 1.2, "host_sharing_high": 1.3, "host_ranks": 2}
    )
    assert host_sharing_columns(probe.drop(columns=["compute_alone_s"])) == {}  # a study from before the probe
    assert host_sharing_columns(probe.assign(compute_alone_s=None)) == {}  # ranks that shared no machine


def test_host_sharing_reaches_predictions_but_never_the_ledger_row_of_the_run_that_measured_it(tables):
    """cpu-2's two ranks shared a machine and its probe saw 1.25x. Predicting cpu-2 itself, the ledger uses
    only runs with fewer workers (none probed sharing): it predicts as before and keeps the caveat. A
    prediction of a placement nobody ran takes the probe: compute as cpu-2 had it (2 ranks to a machine)
    on one node, 1/1.25 of it with one rank per node."""
    fabric = fabric_of(exact_sweep(), "test")
    runs = tables.runs.copy()
    runs[["worker_cores_busy", "node_cpus"]] = [0.96, 2.0]  # cpu-1 kept 0.96 of 2 cores busy
    two = runs["placement"] == "cpu-2"
    runs.loc[two, "hosts_realized"] = 1.0  # and cpu-2's two ranks shared one machine
    runs.loc[two, ["host_sharing", "host_sharing_low", "host_sharing_high", "host_ranks"]] = [1.25, 1.2, 1.3, 2.0]
    physics = prediction_ledger(runs, fabric).set_index("method").loc["physics"]
    comm = float(ring_time(ALPHA, BETA, "all_reduce", 4000, 2))
    assert physics["predicted"] == pytest.approx(2 * 50 / (0.25 + comm), rel=1e-3)
    assert "would share cores" in physics["caveat"]
    # Where the miss came from: per step, compute and sync predicted against cpu-2's measured breakdown.
    assert physics["compute_predicted_s"] == pytest.approx(0.25) and physics["sync_predicted_s"] == pytest.approx(comm)
    measured = row(tables, "cpu-2")
    assert physics["sync_measured_s"] == pytest.approx(measured["step_allreduce_s"]) == pytest.approx(0.05)
    assert physics["compute_measured_s"] == pytest.approx(
        sum(
            measured[f"step_{name}"] for name in ("data_s", "forward_s", "backward_compute_s", "optimizer_s", "other_s")
        )
    )
    table = physics_predictions(runs, [(2, 1), (2, 2)], fabric_of(exact_sweep(), "test", {"inter-node": "1GB/s,1us"}))
    one_node, two_nodes = table.itertuples()  # from cpu-2 itself (the most workers), measured 2 to a machine
    assert one_node.compute_factor == 1.0 and two_nodes.compute_factor == pytest.approx(1 / 1.25)
