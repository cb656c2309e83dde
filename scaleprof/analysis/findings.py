"""What the report points out, computed here so the report only formats: the best, cheapest and fastest
runs, the largest learning-curve divergence, the fixed cost per run, restarted runs, the goal's
recommendation, per-placement quality medians and the scaling law's curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.phases import WALL_PHASES
from scaleprof.analysis.quality import RUN_METRICS
from scaleprof.analysis.quality_shift import DEFAULT_TOLERANCE, QualityShift, quality_shifts
from scaleprof.analysis.recommend import recommend
from scaleprof.analysis.scaling import law_reach, predictions
from scaleprof.analysis.stragglers import Stall, Straggler
from scaleprof.records import RunKind, RunStatus


@dataclass
class Findings:
    best_run_id: str | None = None  # the fixed-split run with the highest macro F1
    # run_id, model, placement, cost_per_sample_usd (steady state) among placements whose quality held;
    # cheaper_but_fell: the same for a cheaper one whose quality fell (analysis/quality_shift.py), else None
    cheapest: dict[str, Any] | None = None
    fastest: dict[str, Any] | None = None  # run_id, model, placement, throughput
    largest_divergence: dict[str, Any] | None = None  # run_id, loss_divergence
    fixed_cost: dict[str, float] | None = None  # medians of the wall-time phases; runs; training_share; fixed_s
    busy_but_idle: list[dict[str, Any]] = field(default_factory=list)  # GPU runs busy to NVML, idle to their SMs
    restarted: list[dict[str, Any]] = field(default_factory=list)  # run_id, attempts
    throughput_bases: list[str] = field(default_factory=list)  # which part of the runs counted as steady state
    recommendation: dict[str, Any] | None = None  # see analysis/recommend.py
    # The report's opening summary: each backed by a table or chart further down.
    top_throughput: dict[str, Any] | None = None  # model, placement, workers, throughput
    largest_scale: dict[str, Any] | None = None  # model, placement, workers, speedup, scaling_efficiency
    law_peak: dict[str, Any] | None = None  # model, device, peak_workers, max_measured_workers, caveats, within_reach
    invalid_laws: list[dict[str, Any]] = field(default_factory=list)  # model, device, law, reason: fits not used
    bottleneck: dict[str, Any] | None = None  # see step_bottleneck
    negative_scaling: list[dict[str, Any]] = field(default_factory=list)  # model, placement, workers, speedup
    noisy: list[dict[str, Any]] = field(default_factory=list)  # model, placement
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> runs
    low_confidence: list[dict[str, Any]] = field(default_factory=list)  # run_id, placement, steady_steps
    contended: list[dict[str, Any]] = field(default_factory=list)  # run_id, placement, outside_cpu_*, gpu_other_*
    quality_shifts: list[QualityShift] = field(default_factory=list)  # placements whose quality one worker's is not
    stragglers: list[Straggler] = field(default_factory=list)  # ranks that kept the others waiting
    stalls: list[Stall] = field(default_factory=list)  # steps in which a rank was far later than usual


# What a headline run's caveats are made of (the report words them: report/tables.caveats).
CAVEAT_FIELDS = ("low_confidence", "steady_steps", "contended", "outside_cpu_share")


def _scaling_points(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT)]


def best_run(runs: pd.DataFrame) -> str | None:
    """The fixed-split run with the highest macro F1 (first in study order on a tie)."""
    ok = _scaling_points(runs).dropna(subset=["f1"])
    if ok.empty:
        return None
    return str(ok.sort_values(["f1", "index"], ascending=[False, True]).iloc[0]["run_id"])


def fixed_cost(runs: pd.DataFrame) -> dict[str, float] | None:
    """The fixed cost every run pays around its training: medians over finished runs."""
    columns = list(WALL_PHASES)
    done = runs[runs["status"] == RunStatus.OK].dropna(subset=columns)
    if done.empty:
        return None
    medians = {k: float(v) for k, v in done[columns].median().items()}
    share = float((done["training_s"] / done[columns].sum(axis=1)).median())
    fixed = sum(medians[k] for k in columns) - medians["training_s"]  # every phase but training, at its median
    return {**medians, "runs": float(len(done)), "training_share": share, "fixed_s": fixed}


def busy_but_idle(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Runs whose GPU looked busy to `utilization.gpu` (a kernel running, 50% or more) while its SMs were
    mostly idle (GPM's SM activity under half of it): ranks waiting in NCCL, or kernels too small to fill
    the GPU. Each: placement, gpu_util_pct, gpu_sm_active_pct."""
    if "gpu_sm_active_pct" not in runs or "gpu_util_pct" not in runs:
        return []
    both = runs.dropna(subset=["gpu_util_pct", "gpu_sm_active_pct"])
    idle = both[(both["gpu_util_pct"] >= 50) & (both["gpu_sm_active_pct"] < 0.5 * both["gpu_util_pct"])]
    return [
        {
            "placement": r.placement,
            "gpu_util_pct": float(r.gpu_util_pct),
            "gpu_sm_active_pct": float(r.gpu_sm_active_pct),
        }
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


def step_bottleneck(run: pd.Series) -> dict[str, Any] | None:
    """The part of one run's mean step time that is largest, its share, and whether adding workers
    helped (`verdict`): "slower" (speedup below 1), "poor" (efficiency below POOR_EFFICIENCY),
    "scales", or "unknown" (no 1-worker baseline). When it did not help, `cause` names the likely
    reason: "contended" (something outside the study competed), "communication" (the all-reduce),
    or "shared hardware" (the workers compete for the same cores, memory or devices)."""
    parts = {part: sum(float(run.get(c, np.nan) or 0.0) for c in cols if pd.notna(run.get(c))) for part, cols in
             STEP_PARTS.items()}  # fmt: skip
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
    return {
        "run_id": run["run_id"],
        "placement": run["placement"],
        "workers": int(run["workers"]),
        "part": part,
        "share": parts[part] / total,
        "speedup": gain,
        "scaling_efficiency": efficiency,
        "verdict": verdict,
        "cause": cause,
    }


def headline(out: Findings, runs: pd.DataFrame, fits: pd.DataFrame | None, placements: pd.DataFrame | None) -> None:
    """What the report opens with: the fastest run, scaling at the largest worker count, the law's peak,
    where the largest run's step time goes, and what went wrong (negative scaling, noise, skips)."""
    ok = _scaling_points(runs).dropna(subset=["throughput"])
    if not ok.empty:
        top = ok.loc[ok["throughput"].idxmax()]
        out.top_throughput = {
            k: top.get(k, np.nan) for k in ("model", "placement", "workers", "throughput", "throughput_low",
                                             "throughput_high", *CAVEAT_FIELDS)
        }  # fmt: skip
        scaled = ok.dropna(subset=["scaling_efficiency"])
        scaled = scaled[scaled["workers"] == scaled["workers"].max()] if not scaled.empty else scaled
        if not scaled.empty and int(scaled["workers"].max()) > 1:
            big = scaled.loc[scaled["throughput"].idxmax()]
            out.largest_scale = {
                k: big.get(k, np.nan) for k in ("model", "placement", "workers", "speedup", "scaling_efficiency",
                                                "scaling_efficiency_low", "scaling_efficiency_high")
            }  # fmt: skip
            out.bottleneck = step_bottleneck(big)
        worse = ok[(ok["workers"] > 1) & (ok["speedup"] < 1)]
        out.negative_scaling = [
            {"model": r.model, "placement": r.placement, "workers": int(r.workers), "speedup": float(r.speedup)}
            for r in worse.drop_duplicates(["model", "placement"]).itertuples()
        ]
    if fits is not None and not fits.empty:
        valid = fits[fits["valid"]]
        if not valid.empty:
            fit = valid.iloc[0]
            out.law_peak = {k: fit[k] for k in ("model", "device", "peak_workers", "max_measured_workers", "caveats")}
            # A peak far past the measured counts is the fit's arithmetic, not something these points place.
            out.law_peak["within_reach"] = bool(fit.get("peak_placed", True))
            out.law_peak["reach"] = law_reach(int(fit["max_measured_workers"]))
        invalid = fits[~fits["valid"]].itertuples()
        out.invalid_laws = [
            {"model": f.model, "device": f.device, "law": f.law, "reason": f.invalid_reason} for f in invalid
        ]
    if placements is not None and not placements.empty and "noisy" in placements:
        out.noisy = [{"model": r.model, "placement": r.placement} for r in placements[placements["noisy"]].itertuples()]
    skipped = runs[runs["status"] == RunStatus.SKIPPED]
    out.skipped = {str(k): int(v) for k, v in skipped["reason"].value_counts().items()}
    done = runs[runs["status"] == RunStatus.OK]
    if "low_confidence" in done:
        few = done[done["low_confidence"].eq(True)]
        out.low_confidence = [{"run_id": r.run_id, "placement": r.placement, "steady_steps": int(r.steady_steps)}
                              for r in few.itertuples()]  # fmt: skip
    if "contended" in done:
        busy = done[done["contended"].eq(True)]
        out.contended = [
            {"run_id": r.run_id, "placement": r.placement, "outside_cpu_pct": float(r.outside_cpu_pct),
             "outside_cpu_share": float(r.outside_cpu_share), "gpu_other_processes": float(r.gpu_other_processes)}
            for r in busy.itertuples()
        ]  # fmt: skip


def cheapest(priced: pd.DataFrame, fell: set[tuple[str, str]]) -> dict[str, Any] | None:
    """The run with the lowest steady-state cost per sample among placements whose quality held; a cheaper
    one whose quality fell is named beside it (a low price for a different result is not a saving)."""
    fields = ("run_id", "model", "placement", "cost_per_sample_usd", *CAVEAT_FIELDS)
    lost = [(m, p) in fell for m, p in zip(priced["model"], priced["placement"], strict=True)]
    held, fallen = priced[~np.array(lost, dtype=bool)], priced[np.array(lost, dtype=bool)]
    if held.empty:
        return None
    cheap = held.loc[held["cost_per_sample_usd"].idxmin()]
    out = {k: cheap.get(k, np.nan) for k in fields}
    out["cheaper_but_fell"] = None
    if not fallen.empty and fallen["cost_per_sample_usd"].min() < cheap["cost_per_sample_usd"]:
        other = fallen.loc[fallen["cost_per_sample_usd"].idxmin()]
        out["cheaper_but_fell"] = {k: other[k] for k in ("model", "placement", "cost_per_sample_usd")}
    return out


def findings(
    runs: pd.DataFrame,
    goal: dict[str, Any] | None,
    fits: pd.DataFrame | None = None,
    placements: pd.DataFrame | None = None,
    fabric: Any = None,
    ledger: pd.DataFrame | None = None,
    quality_tolerance: float = DEFAULT_TOLERANCE,
) -> Findings:
    """`fabric` (analysis/prediction.Fabric) and `ledger` let the recommendation predict by the physics model
    and say how far it was off on this study; a placement whose quality fell (analysis/quality_shift.py) is
    never recommended."""
    shifts = quality_shifts(runs, quality_tolerance)
    fell = {(shift.model, shift.placement) for shift in shifts if shift.worse}
    out = Findings(
        best_run_id=best_run(runs), fixed_cost=fixed_cost(runs), quality_shifts=shifts,
        recommendation=recommend(runs, goal, fabric, ledger, fell),
    )  # fmt: skip
    headline(out, runs, fits, placements)
    out.busy_but_idle = busy_but_idle(runs)
    priced = _scaling_points(runs).dropna(subset=["cost_per_sample_usd"])
    if not priced.empty:
        out.cheapest = cheapest(priced, fell)
        fast = priced.loc[priced["throughput"].idxmax()]
        out.fastest = {k: fast[k] for k in ("run_id", "model", "placement", "throughput")}
    if runs["loss_divergence"].notna().any():
        worst = runs.loc[runs["loss_divergence"].idxmax()]
        out.largest_divergence = {"run_id": worst["run_id"], "loss_divergence": float(worst["loss_divergence"])}
    restarted = runs[runs["attempts"].fillna(1) > 1]
    out.restarted = [{"run_id": r.run_id, "attempts": int(r.attempts)} for r in restarted.itertuples()]
    bases = [b for b in runs["throughput_basis"].dropna() if b]
    out.throughput_bases = sorted({b.split("; ")[0] for b in bases})
    settling = sum("MSER-5" in b for b in bases)
    if settling:
        out.throughput_bases.append(
            f"in {settling} run(s) step times were still settling after that and the window starts later (MSER-5)"
        )
    return out
