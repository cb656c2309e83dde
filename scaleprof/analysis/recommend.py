"""Which placement to buy: the cheapest that meets the study's goal, measured or predicted, and how sure.

A goal is a throughput it needs (`min_throughput`; `samples` in `deadline_hours`, as samples per second)
and a budget per sample (`max_cost_per_sample_usd`), which at a placement's hourly price is a throughput
too (analysis/cost.throughput_for_cost): a placement meets the goal when its throughput reaches the highest
of them (`required_throughput`).

Measured runs come first. When none meets the goal, each (model, device) is predicted at worker counts up
to 4x the largest measured, priced at that group's largest measured run's cost per worker-hour (cost
assumed to grow linearly with workers): by the physics model (analysis/prediction.py) where the study's
fabric gives it a figure, with as many workers per node as that largest run had; else by the scaling law.
How sure: the chance the placement's throughput reaches the goal under its 95% interval (physics.Figure's
two-piece normal). The cheapest placement that meets the goal with 97.5% or more (its whole interval
above what the goal needs) is named; failing one, the cheapest whose predicted figure meets it, with its
chance. Beside a physics prediction stands how far the model was off on the study's own runs (the ledger).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from scaleprof.records import RunKind, RunStatus

if TYPE_CHECKING:
    from scaleprof.config import GoalSpec

SURE = 0.975  # the whole 95% interval meets the goal
METHOD_NAMES = {"physics": "physics model", "scaling law": "scaling law"}


@dataclass(frozen=True)
class Recommendation:
    """The placement named for the goal. `basis`: "measured" (a run met it), "predicted" (a worker count no
    run measured, by `method`) or "none" (neither meets it); a figure its basis does not give is NaN, a name "".
    """

    basis: Literal["measured", "predicted", "none"]
    model: str = ""
    placement: str = ""  # measured
    device: str = ""  # predicted
    method: str = ""  # predicted: "physics" or "scaling law" (keys of METHOD_NAMES)
    workers: int = 0
    nodes: float = math.nan  # predicted: the nodes its workers span (NaN: by the scaling law, which has no nodes)
    throughput: float = math.nan  # samples/s
    throughput_low: float = math.nan  # its 95% interval
    throughput_high: float = math.nan  # predicted
    cost_per_sample_usd: float = math.nan
    cost_per_sample_high_usd: float = math.nan  # measured: the top of its 95% interval
    chance: float = math.nan  # predicted: that the throughput reaches the goal
    rests_on: str = ""  # predicted: its prediction's caveat as its table says it (the law's basis, oversubscription)
    quality_fell_on: tuple[str, ...] = ()  # predicted: the model's placements whose quality fell, sorted
    ledger_error_pct: float = math.nan  # predicted by physics: its median |error| on this study's runs


def required_throughput(goal: GoalSpec, cost_per_hour_usd: float) -> float:
    """The throughput a placement billed `cost_per_hour_usd` needs to meet `goal` (0 when nothing asks any;
    inf when a budget is set and the price is unknown)."""
    from scaleprof.analysis.cost import throughput_for_cost

    needs = [speed_needed(goal)]
    if goal.max_cost_per_sample_usd is not None:
        hourly = float(cost_per_hour_usd)
        needs.append(throughput_for_cost(hourly, goal.max_cost_per_sample_usd) if math.isfinite(hourly) else math.inf)
    return max(needs)


def speed_needed(goal: GoalSpec) -> float:
    """The throughput the goal asks outright: `min_throughput`, and `samples` in `deadline_hours` (0: neither)."""
    needs = [0.0]
    if goal.min_throughput is not None:
        needs.append(float(goal.min_throughput))
    if goal.samples is not None and goal.deadline_hours is not None:
        needs.append(float(goal.samples) / (float(goal.deadline_hours) * 3600))
    return max(needs)


def _meets(throughput: float, cost: float, goal: GoalSpec) -> bool:
    if not throughput >= speed_needed(goal):
        return False
    return goal.max_cost_per_sample_usd is None or cost <= goal.max_cost_per_sample_usd


def recommend(
    runs: pd.DataFrame,
    goal: GoalSpec | None,
    fabric: Any = None,
    ledger: pd.DataFrame | None = None,
    fell: set[tuple[str, str]] | None = None,
) -> Recommendation | None:
    """The recommendation for `goal` (see the module's docstring); `fabric` (analysis/prediction.Fabric) lets
    the physics model predict, `ledger` says how far it was off on this study's runs. Placements in `fell`
    ((model, placement) whose quality fell below one worker's, analysis/quality_shift.py) are never named, and
    a prediction for that model says where quality fell."""
    if not goal:
        return None
    fell = fell or set()
    measured = runs[
        (runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT) & runs["throughput"].notna()
    ]
    keep = [(model, placement) not in fell for model, placement in zip(measured["model"], measured["placement"])]
    ok = measured[np.array(keep, bool)]
    cost = ok["cost_per_sample_usd"] if "cost_per_sample_usd" in ok else pd.Series(np.nan, index=ok.index)
    meeting = ok[np.array([_meets(t, c, goal) for t, c in zip(ok["throughput"], cost)], bool)]
    if not meeting.empty:
        key = "cost_per_sample_usd" if meeting["cost_per_sample_usd"].notna().any() else "throughput"
        best = meeting.sort_values(key, ascending=key != "throughput").iloc[0]
        return Recommendation(
            basis="measured",
            model=str(best["model"]),
            placement=str(best["placement"]),
            workers=int(best["workers"]),
            throughput=float(best["throughput"]),
            throughput_low=float(best.get("throughput_low", np.nan)),
            cost_per_sample_usd=float(best.get("cost_per_sample_usd", np.nan)),
            cost_per_sample_high_usd=float(best.get("cost_per_sample_high_usd", np.nan)),
        )
    # Predicted from every measured run (one whose quality fell still measured its speed), at counts none measured.
    candidates = [c for _, group in measured.groupby(["model", "device"]) for c in _predicted(group, goal, fabric)]
    if not candidates:
        return Recommendation(basis="none")
    frame = pd.DataFrame([asdict(c) for c in candidates])
    order = ["cost_per_sample_usd", "workers"] if frame["cost_per_sample_usd"].notna().any() else ["workers"]
    sure = frame[frame["chance"] >= SURE]
    best = candidates[int((sure if not sure.empty else frame).sort_values(order).index[0])]
    if best.method == "physics" and ledger is not None and not ledger.empty:
        best = replace(best, ledger_error_pct=_ledger_error(ledger, best.model, best.device))
    lost = tuple(sorted(placement for model, placement in fell if model == best.model))
    return replace(best, quality_fell_on=lost)


def _predicted(group: pd.DataFrame, goal: GoalSpec, fabric: Any) -> list[Recommendation]:
    """Each worker count of one (model, device) up to 4x its largest measured that meets the goal by its
    predicted figure: physics where it has one, else the scaling law; with its price and chance."""
    from scaleprof.analysis.cost import cost_per_sample_usd
    from scaleprof.analysis.physics import Figure
    from scaleprof.analysis.prediction import physics_predictions
    from scaleprof.analysis.scaling import predictions

    model, device = group["model"].iloc[0], group["device"].iloc[0]
    largest = group.sort_values("workers").iloc[-1]
    per_worker_hour = float(largest.get("cost_per_hour_usd", np.nan)) / float(largest["workers"])
    nodes = float(largest.get("nodes_realized", np.nan))
    per_node = max(1, round(float(largest["workers"]) / nodes)) if np.isfinite(nodes) and nodes >= 1 else 1
    counts = list(range(1, 4 * int(group["workers"].max()) + 1))
    rows: dict[int, dict[str, Any]] = {}
    if group["workers"].nunique() >= 2:
        law = predictions(group, counts)
        for p in law[law["valid"]].to_dict("records"):  # a law outside its meaning predicts nothing
            rows[int(p["workers"])] = p | {"method": "scaling law", "nodes": math.nan}
    if fabric is not None and not fabric.empty:
        physics = physics_predictions(group, [(w, math.ceil(w / per_node)) for w in counts], fabric)
        for p in physics.to_dict("records") if not physics.empty else []:
            if np.isfinite(p["throughput"]):
                rows[int(p["workers"])] = p | {"method": "physics", "caveats": p.get("caveat", "")}
    out = []
    measured = set(group["workers"].astype(int))
    for workers, p in sorted(rows.items()):
        if workers in measured:  # measured there: the measurement stands (it did not meet the goal, or learned less)
            continue
        hourly = per_worker_hour * workers
        needed = required_throughput(goal, hourly)
        if not p["throughput"] >= needed:
            continue
        low, high = float(p.get("low", np.nan)), float(p.get("high", np.nan))
        interval = Figure(float(p["throughput"]), min(low, p["throughput"]), max(high, p["throughput"]))
        if not (np.isfinite(low) and np.isfinite(high)):
            interval = Figure(float(p["throughput"]), math.nan, math.nan)
        out.append(
            Recommendation(
                basis="predicted",
                method=p["method"],
                model=str(model),
                device=str(device),
                workers=workers,
                nodes=float(p["nodes"]),
                throughput=float(p["throughput"]),
                throughput_low=low,
                throughput_high=high,
                cost_per_sample_usd=float(cost_per_sample_usd(hourly, p["throughput"])),
                chance=interval.share_above(needed),
                rests_on=p.get("caveats", "") or "",
            )
        )
    return out


def _ledger_error(ledger: pd.DataFrame, model: str, device: str) -> float:
    """The physics model's median |error| (%) on this study's own runs of that model and device (NaN: none)."""
    from scaleprof.analysis.prediction import PHYSICS, ledger_summary

    summary = ledger_summary(ledger[(ledger["model"] == model) & (ledger["device"] == device)])
    physics = summary[summary["method"] == PHYSICS]["median_abs_error_pct"]
    return float(physics.iloc[0]) if not physics.empty else math.nan
