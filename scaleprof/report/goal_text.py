"""The goal's recommendation in words (analysis/recommend.py decides; this only says it): what the goal
asks, which placement meets it cheapest, measured or predicted, and how sure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from scaleprof.analysis.recommend import METHOD_NAMES, SURE, Recommendation, speed_needed
from scaleprof.report.tables import per_million

if TYPE_CHECKING:
    from scaleprof.config import GoalSpec


def _margin(r: Recommendation, goal: GoalSpec) -> str:
    """A caveat when the goal is met by the point figure but not by its whole 95% interval."""
    misses = []
    low = r.throughput_low
    if goal.min_throughput is not None and np.isfinite(low) and low < speed_needed(goal):
        misses.append(f"its throughput's 95% interval reaches down to {low:,.0f} samples/s")
    high = r.cost_per_sample_high_usd
    budget = goal.max_cost_per_sample_usd
    if budget is not None and np.isfinite(high) and high > budget:
        misses.append(f"its cost's 95% interval reaches up to {per_million(high)}")
    return f", but only just: {' and '.join(misses)}" if misses else ""


def describe(recommendation: Recommendation | None, goal: GoalSpec | None) -> str | None:
    if recommendation is None or not goal:
        return None
    wants = []
    if goal.min_throughput is not None:
        wants.append(f"at least {goal.min_throughput:,.0f} samples/s")
    if goal.samples is not None and goal.deadline_hours is not None:
        wants.append(
            f"{goal.samples:,.0f} samples in {goal.deadline_hours:g} h "
            f"({float(goal.samples) / (float(goal.deadline_hours) * 3600):,.0f} samples/s)"
        )
    if goal.max_cost_per_sample_usd is not None:
        wants.append(f"at most {per_million(goal.max_cost_per_sample_usd)}")
    head = "Goal (" + " and ".join(wants) + "): "
    r = recommendation
    cost = r.cost_per_sample_usd
    cost_text = f", {per_million(cost)}" if np.isfinite(cost) else ""
    if r.basis == "measured":
        return (
            head
            + f"met cheapest by {r.model} on {r.placement} "
            + f"({r.throughput:,.0f} samples/s{cost_text}, measured){_margin(r, goal)}."
        )
    if r.basis == "predicted":
        return head + _predicted_text(r, cost_text)
    return head + "neither a measured placement nor a prediction up to 4x the largest measured count meets it."


def _predicted_text(r: Recommendation, cost_text: str) -> str:
    physics = r.method == "physics"
    where = f" on {int(r.nodes)} node(s)" if physics and np.isfinite(r.nodes) else ""
    low, high = r.throughput_low, r.throughput_high
    interval = f", 95% interval {low:,.0f}–{high:,.0f}" if np.isfinite(low) and np.isfinite(high) and high > low else ""
    chance = r.chance
    if interval and chance >= SURE:
        sure = "its whole 95% interval meets the goal"
    elif interval:
        sure = f"no predicted placement meets it with its whole interval; this one about {chance:.0%} of the time"
    else:
        sure = "it has no interval to say how sure"
    said = (
        f"no measured placement meets it; the {METHOD_NAMES.get(r.method, 'scaling law')} predicts "
        f"{r.workers} "
        f"{r.device} worker(s){where} of {r.model} would ({r.throughput:,.0f} samples/s{interval}"
        f"{cost_text}): {sure}"
    )
    error = r.ledger_error_pct
    if physics and np.isfinite(error):
        said += f"; on this study's own multi-worker runs the physics model was off by {error:.0f}% (median)"
    caveats = [r.rests_on] if r.rests_on else []
    if r.quality_fell_on:
        caveats.append(
            f"quality fell on {', '.join(r.quality_fell_on)} (more workers than one may learn less, see the Quality "
            "finding)"
        )
    return said + f"; a prediction, not a measurement{''.join('; ' + caveat for caveat in caveats)}."
