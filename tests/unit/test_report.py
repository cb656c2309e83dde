"""Analysis and report from a study directory alone: real pandas, real Altair, real vl-convert."""

import re

import numpy as np
import pandas as pd
import pytest

from scaleprof.analysis.summarize import summarize, write_tables
from scaleprof.report.render import render_report, study_notes
from scaleprof.telemetry.store import RUNS_TABLE

from .study_data import make_study

REQUIRED = [
    "run_id", "model", "placement", "workers", "gpus", "status", "reason", "throughput", "scaling_efficiency",
    "epoch_time_s", "step_time_p50_s", "step_time_p95_s", "peak_rss_mb", "cpu_util_pct", "gpu_util_pct",
    "gpu_mem_peak_mb",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    store = make_study(tmp_path_factory.mktemp("r") / "study", reason="needs <script>alert(1)</script> GPUs")
    tables = summarize(store)
    write_tables(store, tables)
    report = render_report(store.root, tables)
    return store, tables, report


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
    assert "vegaEmbed" in page and page.count('id="chart-') == 10
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_chart_images_and_summary_written(study):
    store, _, _ = study
    for name in (
        "throughput",
        "scaling_efficiency",
        "scaling_law",
        "step_breakdown",
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
        "| cpu-2 | mlp | cpu | 2 | 1 | ok | test | 300 | 1.50x | 75% | 1.33 | 333.3 | 333.3 | 510 | 90 | 15.0% "
        "| 0.8000 |" in summary
    )
    assert "## Quality on the held-out test split" in summary
    assert "Weak scaling" in summary and "epoch 1 excluded as warm-up" in summary


def test_cost_follows_from_the_pricing_rows(study):
    _, tables, _ = study
    runs = tables.runs.set_index("placement")
    # $3.6/h = $0.001/s on one node; cpu-1 trains 200 samples/s, cpu-2 300 samples/s
    assert runs.loc["cpu-1", "cost_per_sample_usd"] == pytest.approx(0.001 / 200)
    assert runs.loc["cpu-2", "cost_per_sample_usd"] == pytest.approx(0.001 / 300)
    assert runs.loc["cpu-1", "cost_per_sample_e2e_usd"] == pytest.approx(0.001 * 30 / 600)  # 30 s wall, 600 samples
    assert runs.loc["cpu-1", "cost_per_epoch_usd"] == pytest.approx(0.001 * 1.0)
    # validation accuracy 0.5, 0.6, 0.7: the 0.6 target is reached after 2 epochs, start-up is 30 - 3 s
    assert runs.loc["cpu-1", "cost_to_target_usd"] == pytest.approx(0.001 * (27 + 2))
    assert np.isnan(runs.loc["gpu-1", "cost_per_sample_usd"])  # skipped: costs nothing, claims nothing
    notes = " ".join(study_notes(tables))
    assert "Cheapest: mlp on cpu-2" in notes and "fastest: mlp on cpu-2" in notes
    assert "source made up for the test, retrieved 2026-11-29" in notes


def test_step_breakdown_takes_the_probed_all_reduce_out_of_backward(study):
    _, tables, _ = study
    runs = tables.runs.set_index("placement")
    step = 1 / 3  # cpu-2: 4 steps in 4/3 s
    assert runs.loc["cpu-2", "step_allreduce_s"] == pytest.approx(0.05)
    assert runs.loc["cpu-2", "step_backward_compute_s"] == pytest.approx(0.4 * step - 0.05)
    assert runs.loc["cpu-2", "step_forward_s"] == pytest.approx(0.3 * step)
    assert runs.loc["cpu-2", "step_other_s"] == pytest.approx(0.1 * step)
    assert runs.loc["cpu-1", "step_allreduce_s"] == 0.0  # one worker: nothing to synchronise


def test_mfu_from_counted_flops_and_measured_peak(study):
    _, tables, _ = study
    runs = tables.runs.set_index("placement")
    assert runs.loc["cpu-1", "mfu"] == pytest.approx(1e6 * 200 / 1e9)  # 1 MFLOP/sample x 200/s on a 1 GFLOP/s worker
    assert runs.loc["cpu-2", "mfu"] == pytest.approx(1e6 * 300 / (2 * 1e9))
    assert runs.loc["cpu-1", "peak_flops_basis"].startswith("measured")


def test_energy_per_sample_is_steady_power_over_throughput():
    from scaleprof.analysis.summarize import energy

    epochs = pd.DataFrame({"epoch": [0, 1], "epoch_start": [0.0, 10.0], "epoch_time_s": [10.0, 10.0]})
    system = pd.DataFrame(
        {
            "rank": [0, 0, 1, 1, 0],
            "time": [12.0, 18.0, 12.0, 18.0, 5.0],
            "gpu_power_w": [100.0, 100.0, 150.0, 150.0, 999.0],
        }
    )  # the 999 W reading falls in the warm-up epoch and is not counted
    out = energy({"throughput": 500.0}, system, epochs)
    assert out["gpu_power_w"] == 250.0 and out["energy_per_sample_j"] == pytest.approx(0.5)


def test_gpu_peak_table_lookup():
    from scaleprof.analysis.peaks import gpu_peak_flops

    assert gpu_peak_flops("NVIDIA H100 PCIe") == 51e12
    assert gpu_peak_flops("NVIDIA H200") == 67e12
    assert gpu_peak_flops("NVIDIA A10G") == 31.2e12
    assert gpu_peak_flops("Mystery GPU") is None and gpu_peak_flops(None) is None
