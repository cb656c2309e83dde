"""Which placement to buy: the cheapest that meets the study's goal, measured or predicted.

Measured runs come first. When none meets the goal, the scaling law of each (model, device) is
asked at worker counts up to 4x the largest measured, with the cost per worker-hour of that
group's largest measured run (cost assumed to grow linearly with workers), and the cheapest
predicted count that meets the goal is named, marked as a prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scaleprof.records import RunKind, RunStatus


def _meets(throughput: float, cost: float, goal: dict[str, Any]) -> bool:
    if goal.get("min_throughput") is not None and not throughput >= goal["min_throughput"]:
        return False
    return goal.get("max_cost_per_sample_usd") is None or cost <= goal["max_cost_per_sample_usd"]


def recommend(runs: pd.DataFrame, goal: dict[str, Any] | None) -> dict[str, Any] | None:
    if not goal:
        return None
    from scaleprof.analysis.cost import cost_per_sample_usd
    from scaleprof.analysis.scaling import predictions

    ok = runs[(runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT) & runs["throughput"].notna()]
    cost = ok["cost_per_sample_usd"] if "cost_per_sample_usd" in ok else pd.Series(np.nan, index=ok.index)
    meeting = ok[[_meets(t, c, goal) for t, c in zip(ok["throughput"], cost)]]
    if not meeting.empty:
        key = "cost_per_sample_usd" if meeting["cost_per_sample_usd"].notna().any() else "throughput"
        best = meeting.sort_values(key, ascending=key != "throughput").iloc[0]
        return {"basis": "measured", "model": best["model"], "placement": best["placement"],
                "workers": int(best["workers"]), "throughput": float(best["throughput"]),
                "throughput_low": float(best.get("throughput_low", np.nan)),
                "cost_per_sample_usd": float(best.get("cost_per_sample_usd", np.nan)),
                "cost_per_sample_high_usd": float(best.get("cost_per_sample_high_usd", np.nan))}  # fmt: skip
    candidates = []
    for (model, device), group in ok.groupby(["model", "device"]):
        if group["workers"].nunique() < 2:
            continue
        largest = group.sort_values("workers").iloc[-1]
        per_worker_hour = largest.get("cost_per_hour_usd", np.nan) / largest["workers"]
        top = 4 * int(group["workers"].max())
        curve = predictions(group, list(range(1, top + 1)))
        for _, p in curve[curve["valid"]].iterrows():  # a law outside its meaning predicts nothing
            c = cost_per_sample_usd(per_worker_hour * p["workers"], p["throughput"])
            if _meets(p["throughput"], c, goal):
                candidates.append({"basis": "predicted", "model": model, "device": device, "workers": int(p["workers"]),
                                   "throughput": float(p["throughput"]), "cost_per_sample_usd": float(c),
                                   "caveats": p["caveats"]})  # fmt: skip
    if candidates:
        frame = pd.DataFrame(candidates)
        key = "cost_per_sample_usd" if frame["cost_per_sample_usd"].notna().any() else "workers"
        return frame.sort_values(key).iloc[0].to_dict()
    return {"basis": "none"}


def _margin(r: dict[str, Any], goal: dict[str, Any]) -> str:
    """A caveat when the goal is met by the point figure but not by its whole 95% interval."""
    misses = []
    low = r.get("throughput_low", np.nan)
    if goal.get("min_throughput") is not None and np.isfinite(low) and low < goal["min_throughput"]:
        misses.append(f"its throughput's 95% interval reaches down to {low:,.0f} samples/s")
    high = r.get("cost_per_sample_high_usd", np.nan)
    budget = goal.get("max_cost_per_sample_usd")
    if budget is not None and np.isfinite(high) and high > budget:
        misses.append(f"its cost's 95% interval reaches up to ${high * 1e6:.4f} per 1M samples")
    return f", but only just: {' and '.join(misses)}" if misses else ""


def describe(recommendation: dict[str, Any] | None, goal: dict[str, Any] | None) -> str | None:
    if recommendation is None or not goal:
        return None
    wants = []
    if goal.get("min_throughput") is not None:
        wants.append(f"at least {goal['min_throughput']:,.0f} samples/s")
    if goal.get("max_cost_per_sample_usd") is not None:
        wants.append(f"at most ${goal['max_cost_per_sample_usd'] * 1e6:.4f} per 1M samples")
    head = "Goal (" + " and ".join(wants) + "): "
    r = recommendation
    cost = r.get("cost_per_sample_usd", np.nan)
    cost_text = f", ${cost * 1e6:.4f} per 1M samples" if cost is not None and np.isfinite(cost) else ""
    if r["basis"] == "measured":
        return (
            head
            + f"met cheapest by {r['model']} on {r['placement']} "
            + f"({r['throughput']:,.0f} samples/s{cost_text}, measured){_margin(r, goal)}."
        )
    if r["basis"] == "predicted":
        return head + (
            f"no measured placement meets it; the scaling law predicts {r['workers']} {r['device']} worker(s) of "
            f"{r['model']} would ({r['throughput']:,.0f} samples/s{cost_text}; a prediction, not a measurement"
            f"{'; ' + r['caveats'] if r.get('caveats') else ''})."
        )
    return head + "neither a measured placement nor the scaling law up to 4x the largest measured count meets it."
