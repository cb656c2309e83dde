"""What the report points out, computed here so the report only formats: the best, cheapest and fastest
runs, the largest learning-curve divergence, the fixed cost per run, restarted runs, a language study's loss
floor, the goal's recommendation, per-placement quality medians and the scaling law's curves. Each figure is
a small frozen dataclass defined beside the function that computes it; `Findings` gathers them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.language import LossFloor, loss_floor
from scaleprof.analysis.phases import WALL_PHASES
from scaleprof.analysis.quality import RUN_METRICS
from scaleprof.analysis.quality_shift import DEFAULT_TOLERANCE, QualityShift, quality_shifts
from scaleprof.analysis.recommend import Recommendation, recommend
from scaleprof.analysis.scaling import FitBasis, law_reach, predictions
from scaleprof.analysis.stragglers import Stall, Straggler
from scaleprof.config import GoalSpec
from scaleprof.records import RunKind, RunStatus


@dataclass
class Findings:
    best_run_id: str | None = None  # the fixed-split run with the highest macro F1
    cheapest: Cheapest | None = None  # among placements whose quality held (analysis/quality_shift.py)
    fastest: Fastest | None = None
    largest_divergence: Divergence | None = None
    fixed_cost: FixedCost | None = None
    busy_but_idle: list[BusyButIdle] = field(default_factory=list)  # GPU runs busy to NVML, idle to their SMs
    restarted: list[RestartedRun] = field(default_factory=list)
    throughput_bases: list[str] = field(default_factory=list)  # which part of the runs counted as steady state
    loss_floor: LossFloor | None = None  # synthetic tokens: the loss of a model that knew the chain exactly
    recommendation: Recommendation | None = None  # see analysis/recommend.py
    # The report's opening summary: each backed by a table or chart further down.
    top_throughput: TopThroughput | None = None
    largest_scale: LargestScale | None = None
    law_peak: LawPeak | None = None
    invalid_laws: list[InvalidLaw] = field(default_factory=list)  # fits not used
    bottleneck: Bottleneck | None = None  # see step_bottleneck
    negative_scaling: list[NegativeScaling] = field(default_factory=list)
    noisy: list[NoisyPlacement] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> runs
    low_confidence: list[LowConfidence] = field(default_factory=list)
    contended: list[ContendedRun] = field(default_factory=list)
    quality_shifts: list[QualityShift] = field(default_factory=list)  # placements whose quality one worker's is not
    stragglers: list[Straggler] = field(default_factory=list)  # ranks that kept the others waiting
    stalls: list[Stall] = field(default_factory=list)  # steps in which a rank was far later than usual


def is_set(value: Any) -> bool:
    """A flag column's value: True only when set (a run without the figure, e.g. skipped, has NaN or None)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and bool(value)


def _number(value: Any) -> float:
    """A figure as a float: NaN where the run has none (None, NaN, NA, no such column)."""
    return float(value) if value is not None and pd.notna(value) else math.nan


@dataclass(frozen=True)
class RunCaveats:
    """What makes a headline run's figures less firm than they look (report/tables.caveat_words says it)."""

    low_confidence: bool  # fewer steady steps than evaluation.min_steady_steps
    steady_steps: float  # NaN: not measured
    contended: bool  # something outside the study competed for the hardware
    outside_cpu_share: float  # of the node's CPU, used outside Ray (NaN: not measured)

    @classmethod
    def of(cls, run: pd.Series) -> RunCaveats:
        """A run's caveats from its row of the runs table (a flag that is NaN or None was not measured: unset)."""
        return cls(
            low_confidence=is_set(run.get("low_confidence")),
            steady_steps=_number(run.get("steady_steps")),
            contended=is_set(run.get("contended")),
            outside_cpu_share=_number(run.get("outside_cpu_share")),
        )


def _scaling_points(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT)]


def best_run(runs: pd.DataFrame) -> str | None:
    """The fixed-split run with the highest macro F1 (first in study order on a tie)."""
    ok = _scaling_points(runs).dropna(subset=["f1"])
    if ok.empty:
        return None
    return str(ok.sort_values(["f1", "index"], ascending=[False, True]).iloc[0]["run_id"])


@dataclass(frozen=True)
class FixedCost:
    """The fixed cost every run pays around its training: each wall-time phase (analysis/phases.WALL_PHASES)
    at its median over finished runs, in seconds."""

    launch_s: float
    setup_s: float
    compile_phase_s: float
    training_s: float
    finish_s: float
    teardown_s: float
    runs: int  # finished runs the medians are over
    training_share: float  # median of training_s over the run's wall phases
    fixed_s: float  # every phase but training, at its median


def fixed_cost(runs: pd.DataFrame) -> FixedCost | None:
    """The fixed cost every run pays around its training: medians over finished runs."""
    columns = list(WALL_PHASES)
    done = runs[runs["status"] == RunStatus.OK].dropna(subset=columns)
    if done.empty:
        return None
    medians = {str(k): float(v) for k, v in done[columns].median().items()}
    share = float((done["training_s"] / done[columns].sum(axis=1)).median())
    fixed = sum(medians[k] for k in columns) - medians["training_s"]  # every phase but training, at its median
    return FixedCost(**medians, runs=len(done), training_share=share, fixed_s=fixed)


@dataclass(frozen=True)
class BusyButIdle:
    """A GPU run busy to NVML (`utilization.gpu`) while its SMs were mostly idle (GPM's SM activity)."""

    placement: str
    gpu_util_pct: float
    gpu_sm_active_pct: float


def busy_but_idle(runs: pd.DataFrame) -> list[BusyButIdle]:
    """Runs whose GPU looked busy to `utilization.gpu` (a kernel running, 50% or more) while its SMs were
    mostly idle (GPM's SM activity under half of it): ranks waiting in NCCL, or kernels too small to fill
    the GPU."""
    if "gpu_sm_active_pct" not in runs or "gpu_util_pct" not in runs:
        return []
    both = runs.dropna(subset=["gpu_util_pct", "gpu_sm_active_pct"])
    idle = both[(both["gpu_util_pct"] >= 50) & (both["gpu_sm_active_pct"] < 0.5 * both["gpu_util_pct"])]
    return [
        BusyButIdle(
            placement=str(r.placement),
            gpu_util_pct=float(r.gpu_util_pct),
            gpu_sm_active_pct=float(r.gpu_sm_active_pct),
        )
        for r in idle.itertuples()
    ]


LANGUAGE_METRICS = ["test_loss", "perplexity", "token_accuracy"]


def quality_metrics_of(runs: pd.DataFrame) -> list[str]:
    """The study's quality metrics: a language model's loss and perplexity, or a classifier's."""
    language = "perplexity" in runs and runs["perplexity"].notna().any()
    return LANGUAGE_METRICS if language else list(RUN_METRICS)


def quality_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Model x placement: the median of each quality metric over the fixed-split repeats (macro averages)."""
    ok = _scaling_points(runs)
    metrics = quality_metrics_of(runs)
    if ok.empty or ok[metrics[0]].isna().all():
        return pd.DataFrame()
    grouped = ok.groupby(["model", "placement"], sort=False)
    table = grouped[metrics].median().reset_index()
    table.insert(2, "runs_ok", grouped.size().to_numpy())
    return table


def law_curves(runs: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """The fitted laws on a grid of worker counts up to LAW_REACH x the largest measured (at least 16); a
    law whose parameters are outside their meaning is not drawn."""
    if fits.empty or not fits["valid"].any():
        return pd.DataFrame()
    top = law_reach(int(fits.loc[fits["valid"], "max_measured_workers"].max()))
    grid = sorted({int(round(v)) for v in np.geomspace(1, top, 40)})
    curves = predictions(runs, grid)
    return curves[curves["valid"]].reset_index(drop=True)


# Step time by what it went to (the breakdown's columns, summed per part).
STEP_PARTS = {
    "loading data": ["step_data_s"],
    "compute": ["step_forward_s", "step_backward_compute_s", "step_backward_unsplit_s", "step_optimizer_s"],
    "gradient all-reduce": ["step_allreduce_s"],
    "other": ["step_other_s"],
}


# Below this scaling efficiency, adding workers of this kind is not what helps, whatever the step goes to.
POOR_EFFICIENCY = 0.5
# An all-reduce share of the step from which communication is named as the likely cost of adding workers.
COMMUNICATION_SHARE = 0.25


@dataclass(frozen=True)
class Bottleneck:
    """Where one run's mean step time goes, and whether adding workers helped (see step_bottleneck)."""

    run_id: str
    placement: str
    workers: int
    part: str  # the largest part: a key of STEP_PARTS
    share: float  # of the mean step time
    speedup: float  # NaN: no 1-worker baseline
    scaling_efficiency: float
    verdict: str  # "slower", "poor", "scales" or "unknown"
    cause: str  # when it did not help: "contended", "communication" or "shared hardware"; else ""


def step_bottleneck(run: pd.Series) -> Bottleneck | None:
    """The part of one run's mean step time that is largest, its share, and whether adding workers
    helped (`verdict`): "slower" (speedup below 1), "poor" (efficiency below POOR_EFFICIENCY),
    "scales", or "unknown" (no 1-worker baseline). When it did not help, `cause` names the likely
    reason: "contended" (something outside the study competed), "communication" (the all-reduce),
    or "shared hardware" (the workers compete for the same cores, memory or devices)."""
    parts = {
        part: sum(float(run.get(c, np.nan) or 0.0) for c in cols if pd.notna(run.get(c)))
        for part, cols in STEP_PARTS.items()
    }
    total = sum(parts.values())
    if total <= 0:
        return None
    part = max(parts, key=lambda k: parts[k])
    gain, efficiency = float(run.get("speedup", np.nan)), float(run.get("scaling_efficiency", np.nan))
    if not (np.isfinite(gain) and np.isfinite(efficiency)):
        verdict = "unknown"
    else:
        verdict = "slower" if gain < 1 else "poor" if efficiency < POOR_EFFICIENCY else "scales"
    cause = ""
    if verdict in ("slower", "poor"):
        if isinstance(run.get("contended"), (bool, np.bool_)) and run["contended"]:  # NaN: not measured
            cause = "contended"
        elif parts["gradient all-reduce"] / total >= COMMUNICATION_SHARE:
            cause = "communication"
        else:
            cause = "shared hardware"
    return Bottleneck(
        run_id=str(run["run_id"]),
        placement=str(run["placement"]),
        workers=int(run["workers"]),
        part=part,
        share=parts[part] / total,
        speedup=gain,
        scaling_efficiency=efficiency,
        verdict=verdict,
        cause=cause,
    )


@dataclass(frozen=True)
class TopThroughput:
    """The fixed-split run with the highest steady-state throughput."""

    model: str
    placement: str
    workers: int
    throughput: float  # samples/s in steady state
    throughput_low: float  # its 95% interval (NaN: none)
    throughput_high: float
    caveats: RunCaveats


@dataclass(frozen=True)
class LargestScale:
    """Scaling at the largest worker count: its fastest run against one worker."""

    model: str
    placement: str
    workers: int
    speedup: float
    scaling_efficiency: float
    scaling_efficiency_low: float  # its 95% interval (NaN: none)
    scaling_efficiency_high: float


@dataclass(frozen=True)
class NegativeScaling:
    """A (model, placement) of more than one worker that ran slower than on one."""

    model: str
    placement: str
    workers: int
    speedup: float  # below 1


def _speed_headline(out: Findings, ok: pd.DataFrame) -> None:
    """The fastest run, scaling at the largest worker count and where its step time goes, and the
    placements slower than one worker; `ok`: the fixed-split runs that finished with a throughput."""
    top = ok.loc[ok["throughput"].idxmax()]
    out.top_throughput = TopThroughput(
        model=str(top["model"]),
        placement=str(top["placement"]),
        workers=int(top["workers"]),
        throughput=float(top["throughput"]),
        throughput_low=_number(top.get("throughput_low")),
        throughput_high=_number(top.get("throughput_high")),
        caveats=RunCaveats.of(top),
    )
    scaled = ok.dropna(subset=["scaling_efficiency"])
    scaled = scaled[scaled["workers"] == scaled["workers"].max()] if not scaled.empty else scaled
    if not scaled.empty and int(scaled["workers"].max()) > 1:
        big = scaled.loc[scaled["throughput"].idxmax()]
        out.largest_scale = LargestScale(
            model=str(big["model"]),
            placement=str(big["placement"]),
            workers=int(big["workers"]),
            speedup=_number(big.get("speedup")),
            scaling_efficiency=float(big["scaling_efficiency"]),
            scaling_efficiency_low=_number(big.get("scaling_efficiency_low")),
            scaling_efficiency_high=_number(big.get("scaling_efficiency_high")),
        )
        out.bottleneck = step_bottleneck(big)
    worse = ok[(ok["workers"] > 1) & (ok["speedup"] < 1)]
    out.negative_scaling = [
        NegativeScaling(
            model=str(r.model), placement=str(r.placement), workers=int(r.workers), speedup=float(r.speedup)
        )
        for r in worse.drop_duplicates(["model", "placement"]).itertuples()
    ]


@dataclass(frozen=True)
class LawPeak:
    """Where the first valid scaling law puts the peak throughput."""

    model: str
    device: str
    peak_workers: float  # inf: throughput keeps rising with workers
    max_measured_workers: int
    basis: FitBasis  # what the fit rests on (analysis/scaling.py)
    within_reach: bool  # False: a peak far past the measured counts, the fit's arithmetic
    reach: int  # how far the law's curve is drawn (scaling.law_reach)


@dataclass(frozen=True)
class InvalidLaw:
    """A fitted law whose parameters are outside their meaning: it is not used."""

    model: str
    device: str
    law: str
    reason: str


def law_peak(fits: pd.DataFrame) -> LawPeak | None:
    """The first valid law's peak (None: no law is valid)."""
    valid = fits[fits["valid"]]
    if valid.empty:
        return None
    fit = valid.iloc[0]
    return LawPeak(
        model=str(fit["model"]),
        device=str(fit["device"]),
        peak_workers=float(fit["peak_workers"]),
        max_measured_workers=int(fit["max_measured_workers"]),
        basis=FitBasis.of(fit),
        # A peak far past the measured counts is the fit's arithmetic, not something these points place.
        within_reach=bool(fit.get("peak_placed", True)),
        reach=law_reach(int(fit["max_measured_workers"])),
    )


@dataclass(frozen=True)
class NoisyPlacement:
    """A (model, placement) whose repeats disagree beyond the noise threshold."""

    model: str
    placement: str


@dataclass(frozen=True)
class LowConfidence:
    """A run that measured fewer steady steps per worker than evaluation.min_steady_steps."""

    run_id: str
    placement: str
    steady_steps: int


@dataclass(frozen=True)
class ContendedRun:
    """A run during which something outside the study competed for the hardware (analysis/contention.py)."""

    run_id: str
    placement: str
    outside_cpu_pct: float  # CPU busy outside Ray, % of one core (NaN: not measured)
    outside_cpu_share: float  # the same as a share of the node's CPU
    gpu_other_processes: float  # other processes on its GPU


def headline(out: Findings, runs: pd.DataFrame, fits: pd.DataFrame | None, placements: pd.DataFrame | None) -> None:
    """What the report opens with: the fastest run, scaling at the largest worker count, the law's peak,
    where the largest run's step time goes, and what went wrong (negative scaling, noise, skips)."""
    ok = _scaling_points(runs).dropna(subset=["throughput"])
    if not ok.empty:
        _speed_headline(out, ok)
    if fits is not None and not fits.empty:
        out.law_peak = law_peak(fits)
        invalid = fits[~fits["valid"]].itertuples()
        out.invalid_laws = [
            InvalidLaw(model=str(f.model), device=str(f.device), law=str(f.law), reason=str(f.invalid_reason))
            for f in invalid
        ]
    if placements is not None and not placements.empty and "noisy" in placements:
        out.noisy = [
            NoisyPlacement(model=str(r.model), placement=str(r.placement))
            for r in placements[placements["noisy"]].itertuples()
        ]
    skipped = runs[runs["status"] == RunStatus.SKIPPED]
    out.skipped = {str(k): int(v) for k, v in skipped["reason"].value_counts().items()}
    done = runs[runs["status"] == RunStatus.OK]
    if "low_confidence" in done:
        few = done[done["low_confidence"].eq(True)]
        out.low_confidence = [
            LowConfidence(run_id=str(r.run_id), placement=str(r.placement), steady_steps=int(r.steady_steps))
            for r in few.itertuples()
        ]
    if "contended" in done:
        busy = done[done["contended"].eq(True)]
        out.contended = [
            ContendedRun(
                run_id=str(r.run_id),
                placement=str(r.placement),
                outside_cpu_pct=float(r.outside_cpu_pct),
                outside_cpu_share=float(r.outside_cpu_share),
                gpu_other_processes=float(r.gpu_other_processes),
            )
            for r in busy.itertuples()
        ]


@dataclass(frozen=True)
class CheaperButFell:
    """A placement cheaper per sample than the cheapest named, whose quality fell (analysis/quality_shift.py)."""

    model: str
    placement: str
    cost_per_sample_usd: float  # steady state


@dataclass(frozen=True)
class Cheapest:
    """The run with the lowest steady-state cost per sample among placements whose quality held."""

    run_id: str
    model: str
    placement: str
    cost_per_sample_usd: float  # steady state
    caveats: RunCaveats
    cheaper_but_fell: CheaperButFell | None  # a cheaper placement whose quality fell, named beside it


def cheapest(priced: pd.DataFrame, fell: set[tuple[str, str]]) -> Cheapest | None:
    """The run with the lowest steady-state cost per sample among placements whose quality held; a cheaper
    one whose quality fell is named beside it (a low price for a different result is not a saving)."""
    lost = [(m, p) in fell for m, p in zip(priced["model"], priced["placement"], strict=True)]
    held, fallen = priced[~np.array(lost, dtype=bool)], priced[np.array(lost, dtype=bool)]
    if held.empty:
        return None
    cheap = held.loc[held["cost_per_sample_usd"].idxmin()]
    cheaper = None
    if not fallen.empty and fallen["cost_per_sample_usd"].min() < cheap["cost_per_sample_usd"]:
        other = fallen.loc[fallen["cost_per_sample_usd"].idxmin()]
        cheaper = CheaperButFell(
            model=str(other["model"]),
            placement=str(other["placement"]),
            cost_per_sample_usd=float(other["cost_per_sample_usd"]),
        )
    return Cheapest(
        run_id=str(cheap["run_id"]),
        model=str(cheap["model"]),
        placement=str(cheap["placement"]),
        cost_per_sample_usd=float(cheap["cost_per_sample_usd"]),
        caveats=RunCaveats.of(cheap),
        cheaper_but_fell=cheaper,
    )


@dataclass(frozen=True)
class Fastest:
    """The priced run with the highest steady-state throughput (beside the cheapest in the cost notes)."""

    run_id: str
    model: str
    placement: str
    throughput: float  # samples/s in steady state


@dataclass(frozen=True)
class Divergence:
    """The run whose learning curve is furthest from the 1-worker curve."""

    run_id: str
    loss_divergence: float  # mean train-loss distance from the 1-worker curve


@dataclass(frozen=True)
class RestartedRun:
    """A run restarted after a worker or node failure (train.max_failures)."""

    run_id: str
    attempts: int


def findings(
    runs: pd.DataFrame,
    goal: GoalSpec | None,
    fits: pd.DataFrame | None = None,
    placements: pd.DataFrame | None = None,
    fabric: Any = None,
    ledger: pd.DataFrame | None = None,
    quality_tolerance: float = DEFAULT_TOLERANCE,
    loss_floor_nats: float | None = None,
) -> Findings:
    """`fabric` (analysis/prediction.Fabric) and `ledger` let the recommendation predict by the physics model
    and say how far it was off on this study; a placement whose quality fell (analysis/quality_shift.py) is
    never recommended. `loss_floor_nats`: the synthetic chain's entropy (the manifest's), for `loss_floor`."""
    shifts = quality_shifts(runs, quality_tolerance)
    fell = {(shift.model, shift.placement) for shift in shifts if shift.worse}
    out = Findings(
        best_run_id=best_run(runs),
        fixed_cost=fixed_cost(runs),
        quality_shifts=shifts,
        recommendation=recommend(runs, goal, fabric, ledger, fell),
        loss_floor=loss_floor(loss_floor_nats),
    )
    headline(out, runs, fits, placements)
    out.busy_but_idle = busy_but_idle(runs)
    priced = _scaling_points(runs).dropna(subset=["cost_per_sample_usd"])
    if not priced.empty:
        out.cheapest = cheapest(priced, fell)
        fast = priced.loc[priced["throughput"].idxmax()]
        out.fastest = Fastest(
            run_id=str(fast["run_id"]),
            model=str(fast["model"]),
            placement=str(fast["placement"]),
            throughput=float(fast["throughput"]),
        )
    if runs["loss_divergence"].notna().any():
        worst = runs.loc[runs["loss_divergence"].idxmax()]
        out.largest_divergence = Divergence(
            run_id=str(worst["run_id"]), loss_divergence=float(worst["loss_divergence"])
        )
    restarted = runs[runs["attempts"].fillna(1) > 1]
    out.restarted = [RestartedRun(run_id=str(r.run_id), attempts=int(r.attempts)) for r in restarted.itertuples()]
    bases = [b for b in runs["throughput_basis"].dropna() if b]
    out.throughput_bases = sorted({b.split("; ")[0] for b in bases})
    settling = sum("MSER-5" in b for b in bases)
    if settling:
        out.throughput_bases.append(
            f"in {settling} run(s) step times were still settling after that and the window starts later (MSER-5)"
        )
    return out
