"""The report's findings in words: each sentence formats a figure analysis computed (analysis/findings.py,
analysis/stragglers.py, analysis/quality_shift.py, the prediction ledger) and names the table or chart behind it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.findings import Bottleneck, Cheapest, ContendedRun, LawPeak, RunCaveats
from scaleprof.analysis.summarize import StudyTables
from scaleprof.report.goal_text import describe
from scaleprof.report.tables import caveat_words, known_verdict, per_million, short_list

# What to try when one part dominates the largest run's step time.
SUGGESTIONS = {
    "loading data": "the input pipeline is the limit: more data-loader workers, pinned memory or a faster source",
    "gradient all-reduce": "communication is the limit: larger per-worker batches, gradient accumulation, or fewer "
    "nodes with a faster interconnect",
    "compute": "the workers are busy computing: more or faster devices are what helps",
    "other": "the time goes outside the measured phases (the loop's own work between steps)",
}


# Why adding workers did not help (analysis.findings.step_bottleneck's `cause`).
CAUSES = {
    "contended": "something outside the study competed for the hardware during that run (see Contended); "
    "rerun it on a quiet machine before reading its scaling",
    "communication": "exchanging gradients costs more than splitting the work saves; larger per-worker batches or "
    "gradient accumulation exchange them less often",
    "shared hardware": "the workers likely compete for the same cores, memory bandwidth or device; give each "
    "worker cores (or a device) of its own",
}


def _bottleneck_sentence(b: Bottleneck) -> str:
    """Where the largest run's step goes, and advice that agrees with what adding workers did."""
    head = f"Where the time goes: at {b.workers} workers ({b.placement}) {100 * b.share:.0f}% of a step is "
    if b.verdict == "slower":
        advice = (
            f"{b.part}, but {b.workers} workers ran slower than one (speedup {b.speedup:.2f}), so more "
            f"devices of this kind will not help: {CAUSES[b.cause]}"
        )
    elif b.verdict == "poor" and b.part == "compute":
        advice = (
            f"compute, but scaling efficiency is only {b.scaling_efficiency:.0%}: each worker computes more "
            f"slowly beside the others, so more devices of this kind help little: {CAUSES[b.cause]}"
        )
    else:
        advice = f"{b.part}; {SUGGESTIONS[b.part]}"
    return f"{head}{advice} (step time breakdown chart)."


def findings_sentences(tables: StudyTables) -> list[str]:
    """The report's opening: the answer in words and numbers, each backed by a table or chart below."""
    found, out = tables.findings, []
    out += _damage_notes(tables)
    if found.top_throughput is not None:
        t = found.top_throughput
        out.append(
            f"Fastest: {t.model} on {t.placement} ({t.workers} worker(s)) at "
            f"{t.throughput:,.0f} samples/s in steady state{_between(t.throughput_low, t.throughput_high, '{:,.0f}')}"
            f"{_caveat(t.caveats)} (Runs table, throughput chart)."
        )
    if found.largest_scale is not None:
        s = found.largest_scale
        out.append(
            f"Scaling: at {s.workers} workers ({s.placement}) {s.model} runs {s.speedup:.2f}x as fast "
            f"as on one worker: scaling efficiency {100 * s.scaling_efficiency:.0f}%"
            f"{_between(s.scaling_efficiency_low, s.scaling_efficiency_high, '{:.0%}')} (scaling efficiency chart)."
        )
    if found.law_peak is not None:
        out.append(_law_peak_sentence(found.law_peak))
    for bad in found.invalid_laws:
        out.append(
            f"No scaling law for {bad.model} ({bad.device}), so nothing is extrapolated from one: the fitted "
            f"{bad.reason} (Scaling law table)."
        )
    out += _ledger_sentences(tables.ledger)
    tolerance = tables.manifest.experiment.evaluation.quality_tolerance
    out += [_quality_shift_sentence(shift, tolerance) for shift in found.quality_shifts]
    out += [_straggler_sentence(late) for late in found.stragglers]
    out += _stall_sentences(found.stalls)
    if found.bottleneck is not None:
        out.append(_bottleneck_sentence(found.bottleneck))
    if found.cheapest is not None:
        out.append(_cheapest_sentence(found.cheapest))
    advice = describe(found.recommendation, tables.manifest.experiment.goal)
    if advice:
        out.append(advice)
    return out + _warning_sentences(tables)


def _law_peak_sentence(p: LawPeak) -> str:
    """Where the fitted law puts the peak, or that it places none within the curves' reach."""
    peak = p.peak_workers
    if not np.isfinite(peak):
        where = f"has no peak for {p.model} ({p.device}): throughput keeps rising with workers"
    elif p.within_reach:
        where = f"puts {p.model}'s ({p.device}) peak throughput at about {peak:,.0f} workers"
    else:
        where = (
            f"places no peak for {p.model} ({p.device}) within {p.reach} workers (as far as its curve is "
            "drawn); further out than that the curve is arithmetic, not a measurement"
        )
    return (
        f"The fitted scaling law {where}; measured up to {p.max_measured_workers} workers "
        f"[{p.basis.words('not used')}] (Scaling law table)."
    )


def _cheapest_sentence(c: Cheapest) -> str:
    """The cheapest placement whose quality held, and a cheaper one whose quality fell beside it."""
    fell = c.cheaper_but_fell
    also = (
        f"; {fell.model} on {fell.placement} costs less ({per_million(fell.cost_per_sample_usd)}) but its "
        "quality fell (see Quality above)"
        if fell is not None
        else ""
    )
    return (
        f"Cheapest per sample: {c.model} on {c.placement} at {per_million(c.cost_per_sample_usd)}"
        f"{_caveat(c.caveats)}{also} (cost chart)."
    )


def _warning_sentences(tables: StudyTables) -> list[str]:
    """What went wrong or is less firm than it looks: slower than one worker, noise, too few steps,
    contention, skipped runs."""
    found, out = tables.findings, []
    for slow in found.negative_scaling:
        out.append(
            f"Warning: {slow.model} on {slow.placement} ({slow.workers} workers) is slower than on one "
            f"worker (speedup {slow.speedup:.2f})."
        )
    if found.noisy:
        listed = ", ".join(f"{n.model} on {n.placement}" for n in found.noisy)
        out.append(f"Warning: repeats disagree beyond the noise threshold for {listed} (Repeats table).")
    if found.low_confidence:
        floor = tables.manifest.experiment.evaluation.min_steady_steps
        listed = short_list([f"{r.placement} ({r.steady_steps})" for r in found.low_confidence])
        out.append(
            f"Low confidence: {len(found.low_confidence)} run(s) measured fewer than {floor} steady steps per worker: "
            f"{listed}. Their figures rest on too few steps; set train.steps_per_epoch or more epochs "
            "(step-time chart)."
        )
    if found.contended:
        listed = short_list([_contention_text(c) for c in found.contended])
        out.append(
            f"Contended: something outside the study competed for the hardware during {len(found.contended)} "
            f"run(s): {listed}. Their speed is not the hardware's alone; rerun them on a quiet machine."
        )
    for reason, count in list(found.skipped.items())[:3]:
        out.append(f"Skipped: {count} run(s): {reason}.")
    if len(found.skipped) > 3:
        out.append(f"Skipped for {len(found.skipped) - 3} other reason(s): see the notes.")
    return out


def _between(low: float, high: float, spec: str) -> str:
    """' (95% interval LOW–HIGH)' when the figure has one (both ends finite), else nothing."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f" (95% interval {spec.format(low)}–{spec.format(high)})"


def _caveat(run: RunCaveats) -> str:
    """' [low confidence: 10 steady steps]' after a headline figure whose run has a caveat, else nothing."""
    text = caveat_words(run)
    return f" [{text}]" if text else ""


def _contention_text(c: ContendedRun) -> str:
    parts = []
    if np.isfinite(c.outside_cpu_pct):
        parts.append(f"{c.outside_cpu_pct / 100:.1f} cores, {c.outside_cpu_share:.0%} of the node, busy outside Ray")
    if c.gpu_other_processes > 0:  # NaN: not measured
        parts.append(f"{c.gpu_other_processes:.0f} other process(es) on its GPU")
    return f"{c.placement} ({'; '.join(parts)})"


def _damage_notes(tables: StudyTables) -> list[str]:
    """First of all: what reading the study left out (damaged lines, repeated events, unreadable files)."""
    if not tables.damage:
        return []
    runs = tables.runs
    gaps = int(runs["seq_gaps"].fillna(0).sum()) if "seq_gaps" in runs else 0
    return [
        "DAMAGED STUDY: its files were damaged or copied over; every figure here is computed without what was left "
        f"out ({'; '.join(tables.damage)}; {gaps} sequence gap(s) in what was read)."
    ]


def _rank_where(rank: int, node: str, host: str) -> str:
    where = ", ".join(part for part in (f"node {node}" if node else "", f"host {host}" if host else "") if part)
    return f"rank {rank}" + (f" ({where})" if where else "")


def _straggler_sentence(late: Any) -> str:
    """A rank that kept the others waiting (analysis/stragglers.Straggler)."""
    return (
        f"Slow rank: in {late.run_id} ({late.placement}) {_rank_where(late.rank, late.node, late.host)} arrived last "
        f"at {late.exchange} in {late.last_share:.0%} of {late.steps} steps, {1e3 * late.late_s:.2f} ms late on "
        f"average, from {late.cause} ({1e3 * late.cause_s:.2f} ms more than the other ranks); the other ranks lost "
        f"{late.others_lost_share:.0%} of their step time waiting for it (clocks aligned to within "
        f"{1e3 * late.clock_error_s:.2f} ms; rank lateness chart)."
    )


def _stall_sentences(stalls: list[Any], most: int = 5) -> list[str]:
    """Steps in which a rank was far later than usual (analysis/stragglers.Stall), the first `most` listed."""
    if not stalls:
        return []
    listed = []
    for stall in stalls[:most]:
        when = f", {stall.at_s:.1f} s into its steps" if np.isfinite(stall.at_s) else ""
        who = "every rank" if stall.rank < 0 else _rank_where(stall.rank, stall.node, stall.host)
        what = "late by" if stall.late else "a step of"
        listed.append(
            f"{who} of {stall.run_id}: {what} {stall.lasted_s:.2f} s at step {stall.step + 1} of epoch "
            f"{stall.epoch + 1}{when}"
        )
    more = f" and {len(stalls) - most} more" if len(stalls) > most else ""
    waited = " A rank late for the exchange kept the others waiting." if any(s.late for s in stalls) else ""
    return [
        f"Stalls: {len(stalls)} step(s) far longer than the run's usual step (paused, swapping, descheduled, or "
        f"recompiling?): {'; '.join(listed)}{more}.{waited} Those steps are in the run's figures."
    ]


def _quality_shift_sentence(shift: Any, tolerance: float) -> str:
    """A placement whose held-out quality is not one worker's (analysis/quality_shift.QualityShift)."""
    what = "test accuracy" if shift.metric == "accuracy" else "test perplexity"
    verdict = (
        "scaling changed what was learned, so its throughput is not a like-for-like gain, and no goal recommends it"
        if shift.worse
        else "scaling changed what was learned (here for the better)"
    )
    return (
        f"Quality: {shift.model} on {shift.placement} ({shift.workers} workers) reached {what} {shift.value:.4g} "
        f"against {shift.base:.4g} on one worker ({shift.change:+.0%}; beyond its repeats' spread and the "
        f"{tolerance:.0%} tolerance), with a global batch of {shift.global_batch:g} against "
        f"{shift.base_global_batch:g} and a learning rate of {shift.lr:.3g} against {shift.base_lr:.3g}: {verdict}. "
        "train.scaling: strong keeps the global batch, train.lr_scaling: linear scales the learning rate with it, "
        "and the time-to-target figures compare placements at equal quality (Quality table)."
    )


def _ledger_sentences(ledger: pd.DataFrame) -> list[str]:
    """The study's check of its own predictions: each multi-worker run the physics model predicted from
    the smaller placements' runs and the fabric alone, against what was measured."""
    if ledger.empty:
        return []
    made = ledger[(ledger["method"] == "physics") & ledger["predicted"].notna()]
    out = []
    for _, r in made.iterrows():
        said = (
            f"Self-check: from {r['base']} and the measured fabric alone, the physics model predicted {r['model']} on "
            f"{r['placement']} ({int(r['workers'])} workers) at {r['predicted']:,.0f} samples/s "
            f"({r['low']:,.0f}–{r['high']:,.0f}); measured {r['measured']:,.0f}, {r['error_pct']:+.0f}%"
        )
        if known_verdict(r["covered"]) and not r["covered"] and r.get("caveat"):
            said += f", outside the interval: {r['caveat']} (Prediction ledger table).{_miss(r)}"
        elif known_verdict(r["covered"]) and not r["covered"]:
            said += (
                ", outside the interval: something the model does not see slowed or sped this run (contention on "
                f"the node, NUMA, a slow link, a straggler) (Prediction ledger table).{_miss(r)}"
            )
        else:
            said += ", inside the interval (Prediction ledger table)."
        out.append(said)
    return out


def _miss(r: pd.Series) -> str:
    """Where a ledger row's miss came from: per step, compute and sync measured against predicted."""
    pairs = [
        ("compute", "compute"),
        ("sync", "the gradient sync (DDP's own cost, the all-reduce, the wait for the slowest rank)"),
    ]
    said = []
    for part, what in pairs:
        measured, predicted = r.get(f"{part}_measured_s", np.nan), r.get(f"{part}_predicted_s", np.nan)
        if not (np.isfinite(measured) and np.isfinite(predicted) and predicted > 0):
            continue
        ratio = measured / predicted
        off = f"{ratio:.3g}x" if ratio >= 2 else f"{100 * (ratio - 1):+.0f}%"
        said.append(f"{what} {measured * 1e3:.3g} ms measured against {predicted * 1e3:.3g} ms predicted ({off})")
    return f" Per step: {'; '.join(said)}." if said else ""
