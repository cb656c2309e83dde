"""Analysis and report from a study directory alone: real pandas, real Altair, real vl-convert."""

import re

import pandas as pd
import pytest

from scaleprof.analysis.summarize import summarize, write_tables
from scaleprof.report.render import render_report
from scaleprof.telemetry.store import RUNS_TABLE

from .study_data import make_study

REQUIRED = [
    "run_id", "model", "placement", "workers", "gpus", "status", "reason", "throughput", "scaling_efficiency",
    "epoch_time_s", "step_time_p50_s", "step_time_p95_s", "peak_rss_mb", "cpu_util_pct", "gpu_util_pct",
    "gpu_mem_peak_mb",
]  # fmt: skip


def test_runs_table_has_the_promised_columns_and_known_figures(study):
    store, tables, _ = study
    runs = pd.read_parquet(store.root / RUNS_TABLE)
    assert set(REQUIRED) <= set(runs.columns)
    runs = runs.set_index("placement")
    assert runs.loc["cpu-1", "throughput"] == pytest.approx(200.0)  # 4 x 50 samples per 1 s epoch
    assert runs.loc["cpu-2", "throughput"] == pytest.approx(300.0)  # 2 ranks x 200 samples per 4/3 s
    assert runs.loc["cpu-2", "scaling_efficiency"] == pytest.approx(0.75)
    assert runs.loc["cpu-2", "peak_rss_mb"] == 510.0
    assert runs.loc["cpu-2", "step_time_p50_s"] == pytest.approx(1 / 3)
    assert runs.loc["cpu-2", "seq_gaps"] == 0
    assert runs.loc["gpu-1", "status"] == "skipped"
    epochs = tables.epochs
    assert list(epochs[epochs["placement"] == "cpu-2"]["steady"]) == [False, True, True]
    assert runs.loc["cpu-1", "accuracy"] == pytest.approx(0.8)  # 4 of 20 held-out predictions wrong
    quality = pd.read_parquet(store.root / "quality.parquet")
    assert len(quality) == 2 * 4 and set(quality["run_id"]) == set(runs["run_id"][:2])


def test_report_is_self_contained_and_escapes_study_text(study):
    _, _, report = study
    page = report.read_text()
    assert not re.search(r"<script[^>]+src=", page)  # no external JS: works offline
    assert "vegaEmbed" in page and page.count('id="chart-') == 11  # the step-time chart is the 11th
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_chart_images_and_summary_written(study):
    store, _, _ = study
    for name in (
        "throughput",
        "scaling_efficiency",
        "scaling_law",
        "step_breakdown",
        "step_times",
        "epoch_time",
        "memory",
        "utilisation",
        "cost",
        "learning_curves",
        "confusion_matrix",
    ):
        data = (store.root / "charts" / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG")
    summary = (store.root / "summary.md").read_text()
    assert (
        "| cpu-2 | mlp | cpu | 2 | 1 | ok | 300 | 1.50x | 75% | 1.33 | 333.3 | 333.3 | 15.0% | 30.00 "
        "| 8 |" in summary  # equal hand-made step times: a zero-width interval, shown as the bare figure
    )
    assert "| cpu-2 | mlp | cpu | 2 | 1 | 510 | 90 |" in summary  # resources
    assert "| cpu-2 | mlp | cpu | 2 | 1 | test | 0.8000 | 0.8000 |" in summary  # quality
    assert "## Quality on the held-out test split" in summary
    assert "Weak scaling" in summary and "steps after epoch 1 (warm-up)" in summary
    assert "Low confidence: 2 run(s) measured fewer than 30 steady steps per worker: cpu-1 (8), cpu-2 (8)" in summary


def test_a_loop_that_reports_no_loss_still_gets_its_report(tmp_path):
    """session.report_loss is optional: without it the loss columns are empty, everything else is there."""
    import math

    store = make_study(tmp_path / "noloss", loss=False)
    tables = summarize(store)
    write_tables(store, tables)
    assert render_report(store.root, tables).stat().st_size > 0
    runs = tables.runs.set_index("placement")
    assert runs.loc["cpu-2", "throughput"] == pytest.approx(300.0) and math.isnan(runs.loc["cpu-2", "final_train_loss"])
    assert tables.epochs["train_loss"].isna().all()


def _swept_runs() -> pd.DataFrame:
    rows = []
    for parallelism, memory in (("ddp", 900.0), ("fsdp", 700.0)):
        for batch, throughput in ((8, 100.0), (16, 150.0), (32, 160.0)):
            rows.append(
                {
                    "run_id": f"{parallelism}-{batch}",
                    "model": f"lm-{parallelism}-b{batch}",
                    "batch_series": f"lm-{parallelism}",
                    "placement": "cpu-2",
                    "device": "cpu",
                    "workers": 2,
                    "status": "ok",
                    "kind": "fixed-split",
                    "throughput": throughput,
                    "per_worker_batch": batch,
                    "mem_peak_mb": memory + batch,
                    "train_precision": "bf16",
                    "parallelism": parallelism,
                    "compile_phase_s": 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_batch_size_and_memory_charts_appear_for_a_sweep_and_settings_show_only_when_they_vary():
    from scaleprof.report.charts import memory_vs_throughput, throughput_vs_batch
    from scaleprof.report.tables import headline_table

    runs = _swept_runs()
    drawn = throughput_vs_batch(runs)
    assert drawn is not None
    chart = drawn.to_dict()
    assert chart["facet"]["column"]["field"] == "batch_series"  # one column per model and setting
    values = chart["datasets"][chart["data"]["name"]]
    assert {v["metric"] for v in values} == {"throughput (samples/s)", "memory (MiB per rank)"}
    assert len(values) == 2 * len(runs)
    assert memory_vs_throughput(runs) is not None
    assert throughput_vs_batch(runs[runs["per_worker_batch"] == 8]) is None  # one batch size: no knee to find
    table = headline_table(runs)
    assert "parallelism" in table and "batch / worker" in table  # they vary between runs
    assert "precision" not in table and "compile (s)" not in table  # the same everywhere / never compiled


def test_the_report_opens_with_findings_backed_by_its_figures(study):
    from scaleprof.report.findings_text import findings_sentences

    _, tables, report = study
    found = findings_sentences(tables)
    # cpu-1 trains 200 samples/s, cpu-2 300 (efficiency 75%); gpu-1 is skipped
    assert found[0].startswith("Fastest: mlp on cpu-2 (2 worker(s)) at 300 samples/s in steady state")
    assert "at 2 workers (cpu-2) mlp runs 1.50x as fast as on one worker: scaling efficiency 75%" in found[1]
    bottleneck = next(s for s in found if s.startswith("Where the time goes"))
    assert re.search(r"at 2 workers \(cpu-2\) \d+% of a step is (compute|loading data|gradient all-reduce)", bottleneck)
    assert any(s.startswith("Cheapest per sample: mlp on cpu-2") for s in found)
    assert any(s.startswith("Skipped: 1 run(s): needs <script>") for s in found)
    html = report.read_text()
    assert html.index('id="findings"') < html.index('id="runs"')  # first, before the tables
    assert "needs &lt;script&gt;" in html and 'runs sortable"' in html and '<a href="#charts">' in html
    efficiency = '<th title="speedup / workers (100% = linear scaling), with its 95% interval">efficiency</th>'
    assert efficiency in html  # headings explain


def test_utilisation_stays_one_readable_chart_with_many_runs():
    from scaleprof.report.charts import MAX_FACETS, utilisation_over_time

    def timeline(runs: int) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"run_id": f"r{i:03d}", "rank": 0, "t_s": t, "cpu_util_pct": 50.0 + t}
                for i in range(runs)
                for t in range(3)
            ]
        )

    few_chart, many_chart = utilisation_over_time(timeline(2)), utilisation_over_time(timeline(MAX_FACETS + 40))
    assert few_chart is not None and many_chart is not None
    few, many = few_chart.to_dict(), many_chart.to_dict()
    assert "facet" in few  # a panel per run over time
    assert "facet" not in many and many["title"] == "Utilisation per run"  # 48 runs: one bar (mean, peak tick) each


def test_gpu_nodes_interconnect_is_shown_once_per_node():
    from scaleprof.report.notes import node_facts

    topo = "\tGPU0\tGPU1\nGPU0\t X \tNV18\nGPU1\tNV18\t X "
    workers = pd.DataFrame(
        {
            "run_id": ["a", "a", "b"],
            "rank": [0, 1, 0],
            "node_id": ["n1", "n1", "n1"],
            "hostname": "h",
            "gpu_topology": [topo, None, topo],
            "gpu_driver": ["560.35", None, "560.35"],
            "nccl_env": ['{"NCCL_DEBUG": "INFO"}', None, '{"NCCL_DEBUG": "INFO"}'],
        }
    )
    [(head, body)] = node_facts(workers)
    assert "node n1 (h): driver 560.35" in head and "NCCL_DEBUG" in head and "NV18" in body
    assert node_facts(pd.DataFrame({"run_id": ["a"], "node_id": ["n1"]})) == []  # CPU studies: nothing


def test_a_gpu_busy_to_nvml_but_idle_to_its_sms_gets_a_note():
    from scaleprof.analysis.findings import busy_but_idle
    from scaleprof.report.notes import _gpu_activity_notes

    runs = pd.DataFrame(
        {"placement": ["gpu-1", "gpu-8"], "gpu_util_pct": [95.0, 97.0], "gpu_sm_active_pct": [80.0, 30.0]}
    )
    assert [r.placement for r in busy_but_idle(runs)] == ["gpu-8"]
    [note] = _gpu_activity_notes(busy_but_idle(runs))
    assert "gpu-8 (97% vs 30%)" in note and "NCCL" in note
    assert busy_but_idle(runs.drop(columns="gpu_sm_active_pct")) == []  # no GPM: nothing said


def test_a_skipped_run_has_no_caveats():
    import numpy as np

    from scaleprof.report.tables import caveats

    assert caveats(pd.Series({"contended": np.nan, "low_confidence": np.nan, "steady_steps": np.nan})) == ""
    assert caveats(pd.Series({"contended": None, "low_confidence": False, "steady_steps": 900})) == ""
    flagged = caveats(
        pd.Series({"contended": np.True_, "outside_cpu_share": 0.4, "low_confidence": True, "steady_steps": 12})
    )
    assert flagged == "low confidence: 12 steady steps; contended: 40% of the node's CPU used outside Ray"


def test_findings_give_no_advice_the_measurements_contradict(slower_study):
    """cpu-2's 2 workers run 0.4x as fast as cpu-1's one: no 'more devices', no law, no peak."""
    from scaleprof.report.findings_text import findings_sentences
    from scaleprof.report.tables import fits_display

    _, tables = slower_study
    found = findings_sentences(tables)
    bottleneck = next(s for s in found if s.startswith("Where the time goes"))
    assert "of a step is compute" in bottleneck and "devices are what helps" not in bottleneck
    assert "2 workers ran slower than one (speedup 0.40)" in bottleneck
    assert not any("peak throughput" in s for s in found)
    law = next(s for s in found if s.startswith("No scaling law"))
    assert "mlp (cpu)" in law and "α = 4.00" in law
    fits = fits_display(tables.fits).iloc[0]
    assert fits["peak at N*"] == "–" and fits["rests on"].startswith("not used: ")


def test_the_law_sentence_and_fits_table_say_what_the_fit_rests_on(study):
    from scaleprof.report.findings_text import findings_sentences
    from scaleprof.report.tables import fits_display

    _, tables, _ = study
    law = next(s for s in findings_sentences(tables) if s.startswith("The fitted scaling law"))
    assert "from 2 worker counts" in law and "low confidence" in law  # both runs: 8 steady steps, floor 30
    assert "from 2 worker counts" in fits_display(tables.fits).iloc[0]["rests on"]


def test_throughput_legend_draws_measured_and_ideal_as_different_lines(study):
    """Measured is a solid line with points, ideal a dashed line without: the legend shows the two strokes
    (a line with points made both entries the same dot)."""
    from scaleprof.report.charts import throughput_vs_workers

    _, tables, _ = study
    chart = throughput_vs_workers(tables.runs)
    assert chart is not None
    layers = chart.to_dict()["layer"]
    lines = [layer for layer in layers if layer["mark"] == {"type": "line"} or layer["mark"] == "line"]
    assert len(lines) == 1
    dash = lines[0]["encoding"]["strokeDash"]
    assert dash["scale"]["domain"] == ["measured", "ideal (linear)"] and dash["scale"]["range"] == [[1, 0], [6, 4]]
    assert dash["legend"]["symbolType"] == "stroke"
    points = [layer for layer in layers if "point" in str(layer["mark"])]
    assert points and all("strokeDash" not in layer["encoding"] for layer in points)
    assert all(not (isinstance(layer["mark"], dict) and layer["mark"].get("point")) for layer in layers)


def test_step_breakdown_legend_sits_below_with_whole_labels(study):
    """Beside the bars the legend ran out of the report's column and cut 'backward incl. all-reduce (not
    probed)' short; below them, in two columns, every label is whole."""
    from scaleprof.report.charts import step_breakdown

    _, tables, _ = study
    chart = step_breakdown(tables.runs)
    assert chart is not None
    legend = chart.to_dict()["encoding"]["color"]["legend"]
    assert legend["orient"] == "bottom" and legend["labelLimit"] == 0
