"""What the report points out, computed by analysis: checked on the hand-made study's known figures."""

import dataclasses
import json
import math

import pandas as pd
import pytest

from scaleprof.analysis.findings import Bottleneck, Findings, cheapest, findings, headline, step_bottleneck
from scaleprof.analysis.language import LossFloor
from scaleprof.analysis.scaling import FitBasis
from scaleprof.report.findings_text import findings_sentences


def test_best_cheapest_fastest_and_fixed_cost(study):
    _, tables, _ = study
    found = tables.findings
    assert found.best_run_id == "001-mlp-cpu-1-r0"  # both runs have the same F1: the first in study order
    assert found.cheapest.placement == "cpu-2" and found.fastest.placement == "cpu-2"
    assert found.cheapest.cost_per_sample_usd == pytest.approx(0.001 / 300)  # $3.6/h over 300 samples/s
    assert found.recommendation is None  # the experiment sets no goal
    assert found.restarted == []
    assert found.throughput_bases == ["steps after epoch 1 (warm-up)"]


def test_quality_medians_per_placement(study):
    _, tables, _ = study
    summary = tables.quality_summary.set_index("placement")
    assert summary.loc["cpu-1", "accuracy"] == pytest.approx(0.8)  # every 5th of 20 predictions wrong
    assert summary.loc["cpu-1", "runs_ok"] == 1 and "gpu-1" not in summary.index  # skipped runs have no quality


def test_law_curves_cover_four_times_the_largest_measured_count(study):
    _, tables, _ = study
    curves = tables.law_curves
    assert curves["workers"].min() == 1 and curves["workers"].max() == 16  # max(16, 4 x 2 workers)
    one = curves[curves["workers"] == 2].iloc[0]
    assert one["throughput"] == pytest.approx(300.0, rel=1e-6)  # two points: the law passes through both


def _largest_run(speedup: float, workers: int = 2, contended: bool = False, allreduce_s: float = 0.0) -> pd.Series:
    """A run whose step is 0.87 s compute (forward 0.4 + backward 0.47) and 0.13 s data loading."""
    return pd.Series(
        {
            "run_id": "r",
            "placement": f"cpu-{workers}",
            "workers": workers,
            "speedup": speedup,
            "scaling_efficiency": speedup / workers,
            "contended": contended,
            "step_data_s": 0.13,
            "step_forward_s": 0.4,
            "step_backward_compute_s": 0.47,
            "step_allreduce_s": allreduce_s,
        }
    )


def _bottleneck(run: pd.Series) -> Bottleneck:
    found = step_bottleneck(run)
    assert found is not None
    return found


def test_the_bottleneck_says_whether_adding_workers_helped():
    slower = _bottleneck(_largest_run(speedup=0.37, contended=True))
    assert slower.part == "compute" and slower.share == pytest.approx(0.87)
    assert slower.verdict == "slower" and slower.speedup == pytest.approx(0.37)
    assert slower.cause == "contended"
    assert _bottleneck(_largest_run(speedup=0.8)).cause == "shared hardware"
    assert _bottleneck(_largest_run(speedup=0.8, allreduce_s=1.0)).cause == "communication"
    assert _bottleneck(_largest_run(speedup=1.2, workers=4)).verdict == "poor"  # 30% efficiency
    assert _bottleneck(_largest_run(speedup=1.9)).verdict == "scales"  # 95% efficiency
    unknown = _largest_run(speedup=float("nan"))
    assert _bottleneck(unknown).verdict == "unknown"


def test_a_law_outside_its_meaning_is_not_drawn_nor_used_for_the_peak(slower_study):
    """2 workers at 80 samples/s against one at 200: Amdahl's α = 4 (outside 0-1)."""
    _, tables = slower_study
    assert not tables.fits.loc[0, "valid"]  # still in the fits table, marked
    assert tables.law_curves.empty
    found = tables.findings
    assert found.law_peak is None
    assert [(b.model, b.device) for b in found.invalid_laws] == [("mlp", "cpu")]
    assert "α = 4.00" in found.invalid_laws[0].reason
    assert found.bottleneck.verdict == "slower"


def test_the_law_peak_carries_the_fits_caveats(study):
    _, tables, _ = study
    peak = tables.findings.law_peak
    assert peak.model == "mlp" and tables.findings.invalid_laws == []
    # both runs measured 8 steady steps, under the default floor of 30
    assert (peak.basis.worker_counts, peak.basis.points, peak.basis.exact_fit) == (2, 2, True)
    assert peak.basis.low_confidence == ("cpu-1", "cpu-2") and peak.basis.contended == ()
    assert peak.basis.words("not used") == (
        "from 2 worker counts (2 runs), exact fit (no band); cpu-1 low confidence; cpu-2 low confidence"
    )
    assert FitBasis.of(tables.fits.iloc[0]) == peak.basis  # the stored columns hold all of it


def test_a_language_study_gets_its_loss_floor_with_its_perplexity(study):
    """The floor is the chain's entropy (the manifest's); its perplexity is e to it: e^ln(4) = 4 (a uniform
    choice among 4 tokens)."""
    _, tables, _ = study
    assert tables.findings.loss_floor is None  # digits: no chain, no floor
    found = findings(tables.runs, None, loss_floor_nats=math.log(4))
    assert isinstance(found.loss_floor, LossFloor)
    assert found.loss_floor.nats == pytest.approx(1.386294) and found.loss_floor.perplexity == pytest.approx(4.0)


def test_the_study_hands_its_manifests_floor_to_the_findings(tmp_path):
    from scaleprof.analysis.summarize import summarize
    from tests.unit.study_data import make_study

    store = make_study(tmp_path / "study")
    stored = json.loads((store.root / "manifest.json").read_text())
    stored["data"]["loss_floor_nats"] = math.log(4)
    (store.root / "manifest.json").write_text(json.dumps(stored))
    floor = summarize(store).findings.loss_floor
    assert floor is not None and floor.perplexity == pytest.approx(4.0)


def _priced(rows: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": f"m-{p}",
                "model": "m",
                "placement": p,
                "cost_per_sample_usd": c,
                "low_confidence": False,
                "steady_steps": 40,
                "contended": False,
                "outside_cpu_share": 0.0,
            }
            for p, c in rows
        ]
    )


def test_the_cheapest_is_among_placements_whose_quality_held():
    """cpu-4 is cheapest per sample but its accuracy fell: cpu-2 is named, cpu-4 beside it with why."""
    priced = _priced([("cpu-1", 3e-6), ("cpu-2", 2e-6), ("cpu-4", 1e-6)])
    found = cheapest(priced, {("m", "cpu-4")})
    assert found is not None
    assert found.placement == "cpu-2" and found.cost_per_sample_usd == pytest.approx(2e-6)
    assert found.cheaper_but_fell is not None and found.cheaper_but_fell.placement == "cpu-4"
    held = cheapest(priced, set())
    assert held is not None
    assert held.placement == "cpu-4" and held.cheaper_but_fell is None
    fallen_costs_more = cheapest(priced, {("m", "cpu-1")})
    assert fallen_costs_more is not None
    assert fallen_costs_more.cheaper_but_fell is None  # the fallen one costs more
    assert cheapest(priced.iloc[[2]], {("m", "cpu-4")}) is None  # nothing whose quality held


def test_a_law_peak_far_past_the_measured_counts_is_not_stated_as_a_worker_count(study):
    """A USL with tiny β peaks at millions of workers: the fit's arithmetic, which the report does not quote."""
    _, tables, _ = study
    fits = tables.fits.copy()
    fits.loc[0, ["peak_workers", "peak_placed"]] = [80_583_090.0, False]
    out = Findings()
    headline(out, tables.runs, fits, None)
    assert out.law_peak is not None
    assert out.law_peak.within_reach is False
    text = " ".join(findings_sentences(dataclasses.replace(tables, findings=out)))
    assert "80583090" not in text and "80,583,090" not in text
    assert "places no peak for mlp (cpu) within 16 workers" in text  # as far as the curve is drawn: max(16, 4 x 2)
    fits.loc[0, ["peak_workers", "peak_placed"]] = [6.4, True]
    headline(out, tables.runs, fits, None)
    text = " ".join(findings_sentences(dataclasses.replace(tables, findings=out)))
    assert out.law_peak is not None
    assert out.law_peak.within_reach is True and "peak throughput at about 6 workers" in text


def test_the_cost_chart_marks_the_findings_cheapest_and_fastest(study):
    """The chart labels what analysis chose (not a minimum of its own, which could name a fallen placement)."""
    from scaleprof.report.charts import cost_vs_throughput
    from scaleprof.report.render import _cost_marks

    _, tables, _ = study
    marked = cost_vs_throughput(tables.runs, _cost_marks(tables.findings))
    assert marked is not None
    spec = json.dumps(marked.to_dict())
    assert "cpu-2 (cheapest + fastest)" in spec and "cpu-1 (" not in spec
    unmarked = cost_vs_throughput(tables.runs, {})
    assert unmarked is not None
    assert "(cheapest" not in json.dumps(unmarked.to_dict())
