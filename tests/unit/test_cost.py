"""Cost per sample, per epoch, end to end and to a target, from the pricing rows."""

import numpy as np
import pytest

from scaleprof.report.notes import study_notes


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


def test_a_node_type_without_a_public_price_gets_no_cost_and_says_why(tmp_path):
    from scaleprof.analysis.summarize import summarize
    from tests.unit.study_data import make_study

    store = make_study(tmp_path / "study")
    manifest = store.manifest().raw
    manifest["pricing"]["test-node"].update(price_per_hour_usd=None, source="no public list price was found")
    store.write_manifest(manifest)
    tables = summarize(store)
    assert tables.runs["cost_per_sample_usd"].isna().all() and tables.runs["cost_run_usd"].isna().all()
    assert "Not priced: test-node (test t): no public list price was found" in " ".join(study_notes(tables))
