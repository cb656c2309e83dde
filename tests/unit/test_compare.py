from typing import Any

import pandas as pd
import pytest

from scaleprof.analysis.compare import compare_runs


def runs(throughputs_by_placement, accuracy=0.9):
    rows = []
    for placement, values in throughputs_by_placement.items():
        for v in values:
            rows.append(
                {
                    "model": "m",
                    "placement": placement,
                    "kind": "fixed-split",
                    "status": "ok",
                    "throughput": v,
                    "scaling_efficiency": 1.0,
                    "cost_per_sample_usd": 1e-6 * 100 / v,
                    "accuracy": accuracy,
                }
            )
    return pd.DataFrame(rows)


def test_change_beyond_measured_noise_is_flagged_and_within_is_not():
    a = runs({"cpu-1": [100, 102, 98], "cpu-2": [150, 150, 150]})
    b = runs({"cpu-1": [103, 101, 105], "cpu-2": [120, 121, 119]})
    table = compare_runs(a, b).set_index("placement")
    assert table.loc["cpu-1", "throughput_change"] == pytest.approx(0.03)
    assert table.loc["cpu-1", "throughput_noise_basis"] == "measured"
    assert "throughput" not in table.loc["cpu-1", "significant"]  # 3% within 2 x CV (4%)
    assert table.loc["cpu-2", "throughput_change"] == pytest.approx(-0.2)
    assert "throughput" in table.loc["cpu-2", "significant"] and "cost/sample" in table.loc["cpu-2", "significant"]


def test_single_runs_fall_back_to_the_floor_and_say_so():
    table = compare_runs(runs({"cpu-1": [100]}), runs({"cpu-1": [104]}), noise_floor=0.05).iloc[0]
    assert table["throughput_noise_basis"] == "floor" and table["throughput_noise"] == 0.05
    assert table["significant"] == ""


def test_single_runs_with_intervals_use_them():
    a, b = runs({"cpu-1": [100]}), runs({"cpu-1": [104]})
    a["throughput_low"], a["throughput_high"] = 99.0, 101.0  # ±1%
    b["throughput_low"], b["throughput_high"] = 103.0, 105.0  # ±0.96%
    row = compare_runs(a, b, noise_floor=0.05).iloc[0]
    assert row["throughput_noise_basis"] == "interval"
    assert row["throughput_noise"] == pytest.approx((0.01**2 + (1 / 104) ** 2) ** 0.5)
    assert "throughput" in row["significant"]  # 4% against ±1.4%: beyond the noise the runs measured
    assert row["accuracy_noise_basis"] == "floor"  # no interval for quality: the floor stands in


def test_only_shared_placements_are_compared():
    table = compare_runs(runs({"cpu-1": [100], "cpu-4": [300]}), runs({"cpu-1": [100], "gpu-1": [900]}))
    assert list(table["placement"]) == ["cpu-1"]


def test_language_models_are_compared_on_perplexity():
    a, b = runs({"cpu-1": [100]}), runs({"cpu-1": [100]})
    a["perplexity"], b["perplexity"] = 4.0, 5.0
    row = compare_runs(a, b).iloc[0]
    assert row["perplexity_change"] == pytest.approx(0.25) and "perplexity" in row["significant"]


def test_a_contended_or_low_confidence_side_is_said_beside_the_change():
    a, b = runs({"cpu-1": [100]}), runs({"cpu-1": [60]})
    a["contended"], b["contended"] = False, True
    a["low_confidence"], b["low_confidence"] = True, False
    row = compare_runs(a, b).iloc[0]
    assert "throughput" in row["significant"] and row["caveats"] == "A low-confidence; B contended"
    assert compare_runs(runs({"cpu-1": [100]}), runs({"cpu-1": [60]})).iloc[0]["caveats"] == ""


def test_a_rows_caveats_are_typed_and_worded_settings_first():
    from scaleprof.analysis.compare import RowCaveats

    said = RowCaveats(("train.lr: 0.1 vs 0.2",), (("a", "contended"), ("b", "low_confidence"))).words()
    assert said == "settings differ (train.lr: 0.1 vs 0.2); A contended; B low-confidence"
    assert RowCaveats((), ()).words() == ""


def test_studies_whose_settings_differ_say_which_fields_beside_every_change(tmp_path, capsys):
    import json

    from scaleprof import cli
    from scaleprof.analysis.summarize import summarize
    from tests.unit.study_data import make_study

    a, b = make_study(tmp_path / "a"), make_study(tmp_path / "b")
    manifest = b.manifest().raw
    manifest["experiment"]["train"]["epochs"] = 40
    manifest["experiment"]["name"] = "other"  # a study's name measures nothing: not a caveat
    b.write_manifest(manifest)
    ta, tb = summarize(a), summarize(b)
    resolved_a, resolved_b = ta.manifest.experiment.resolved(), tb.manifest.experiment.resolved()
    same = compare_runs(ta.runs, ta.runs, experiments=(resolved_a, resolved_a))
    assert (same["settings_differ"] == "").all() and not same["caveats"].str.contains("settings").any()
    table = compare_runs(ta.runs, tb.runs, experiments=(resolved_a, resolved_b))
    settings = "settings differ (train.epochs: 3 vs 40)"  # then the handmade runs' own: too few steady steps
    assert list(table["caveats"]) == [f"{settings}; A low-confidence; B low-confidence"] * 2
    assert cli.main(["compare", str(a.root), str(b.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["caveats"].startswith(settings) for r in rows)
    assert {r["settings_differ"] for r in rows} == {"train.epochs: 3 vs 40"}
    assert cli.main(["compare", str(a.root), str(b.root)]) == 0
    out = capsys.readouterr().out
    assert "caveats" in out and "train.epochs: 3 vs 40" in out


def test_many_differing_settings_are_shortened_and_another_placement_is_not_this_rows_caveat():
    a = {
        "train": {"epochs": 4, "lr": 0.1, "batch_size": 64, "momentum": 0.9, "precision": "fp32"},
        "placements": [{"name": "cpu-1", "workers": 1}],
    }
    b: dict[str, Any] = {
        "train": {"epochs": 40, "lr": 0.2, "batch_size": 32, "momentum": 0.5, "precision": "bf16"},
        "placements": [{"name": "cpu-1", "workers": 1}, {"name": "cpu-4", "workers": 4}],
    }
    row = compare_runs(runs({"cpu-1": [100]}), runs({"cpu-1": [100]}), experiments=(a, b)).iloc[0]
    assert row["caveats"] == (
        "settings differ (train.epochs: 4 vs 40; train.lr: 0.1 vs 0.2; train.batch_size: 64 vs 32; and 2 more)"
    )
    assert len(row["settings_differ"].split("; ")) == 5 and "placements" not in row["settings_differ"]
    b["placements"][0]["workers"] = 2
    row = compare_runs(runs({"cpu-1": [100]}), runs({"cpu-1": [100]}), experiments=(a, b)).iloc[0]
    assert row["settings_differ"].endswith("placements.cpu-1.workers: 1 vs 2")
