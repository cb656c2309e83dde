"""Which rank kept the others waiting, by how much, from what, and when a rank stalled.

Under DDP every rank's step lasts as long as the slowest rank's, because the all-reduce waits for the
last one to arrive: per-rank step or backward times cannot name it. The time each rank's gradients
became ready (`arrive_t`, scaleprof/worker/arrivals.py) can. Per step with every rank's arrival:

- each rank's clock is put on rank 0's by its measured offset (ClockSync; `error_s` is what it cannot
  resolve, reported with the figures);
- lateness = a rank's arrival minus the median arrival of the other ranks; the rank that arrived last
  kept every other rank waiting (the others' wait = the last arrival minus their own);
- what made a rank late: its step split into the parts before its arrival - starting the step (the
  previous step's end, against the others'), loading data, forward, backward compute (forward and
  backward as one part where the loop does not mark them) - each compared with the other ranks' median
  in the same step; the part with the largest excess over the steps it arrived last is the cause.

A straggler is a rank that arrived last in at least STRAGGLER_LAST_FACTOR / world of the steps (1.5x its fair
share: 75% of steps with 2 ranks), more often than chance allows (a binomial test against 1 / world at 1%: with 16
ranks and 20 steps 1.5x the share is 2 of 20, which luck gives often), while the others lost at least
STRAGGLER_WAIT_SHARE of their step time waiting for it, by more than the clocks can resolve (its mean lateness
above the spread of the offset measurement, 2 x the run's largest `error_s`: a balanced run on one machine measured
rank 1 "late" by 0.14 ms with a 0.26 ms clock error, which is the offset's bias, not a rank).

A stall is a step in which a rank was late (or, with one rank or no arrivals, took) more than
max(STALL_MIN_S, STALL_FACTOR x the run's median step time): paused, swapping, descheduled.
Pure functions over the stored events; the report only words what is here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.throughput import without_traced_steps

STRAGGLER_LAST_FACTOR = 1.5
STRAGGLER_WAIT_SHARE = 0.05
STRAGGLER_CHANCE = 0.01  # and arriving last that often is not chance (binomial test against 1 / world)
STALL_FACTOR = 10.0
STALL_MIN_S = 0.5

# The parts of a step before the rank's arrival, in step order (the `cause` of lateness names one).
PARTS = ("starting the step", "loading data", "forward", "backward compute", "forward and backward")


@dataclass(frozen=True)
class Straggler:
    run_id: str
    placement: str
    rank: int
    node: str  # the first 8 characters of the Ray node id
    host: str
    steps: int  # steps with every rank's arrival
    last_share: float  # of those steps, the share in which this rank arrived last
    late_s: float  # mean lateness (against the others' median arrival) over the steps it arrived last
    cause: str  # one of PARTS
    cause_s: float  # that part's mean excess over the other ranks' median, over the steps it arrived last
    exchange: str  # where the ranks first meet in a step (EXCHANGES)
    others_lost_share: float  # the other ranks' waiting for it, as a share of their step time
    clock_error_s: float  # the largest clock-offset error of the run's ranks


@dataclass(frozen=True)
class Stall:
    run_id: str
    placement: str
    rank: int
    node: str
    host: str
    epoch: int
    step: int
    at_s: float  # since the run's first step started
    lasted_s: float  # how late the rank was (or, without arrivals, how long the step took)
    late: bool = True  # late for the exchange (named by its arrival); False: a step far longer than usual
    # rank -1: every rank of a run without arrivals took that long (they wait for each other: none can be named)


# Where ranks first meet in a step: at forward entry when the step's forward starts with an exchange (DDP's
# buffer broadcast, FSDP's all-gather: `enter_t`), else where their gradients are exchanged (`arrive_t`).
EXCHANGES = {"enter_t": "the exchange at forward entry", "arrive_t": "the gradient exchange"}


def first_exchange(steps: pd.DataFrame) -> str:
    """The step events' column of the first point the ranks meet in each step (a key of EXCHANGES)."""
    return "enter_t" if "enter_t" in steps and steps["enter_t"].notna().any() else "arrive_t"


def aligned(steps: pd.DataFrame, clocks: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (epoch, step, rank) for the steps every rank arrived at, times on rank 0's clock, with
    `late_s` (against the others' median arrival), `wait_s` (until the last arrival), `last` and each
    part's time before arrival (PARTS). The arrival is at the step's first exchange (first_exchange): a
    rank late there kept the others waiting; after it they leave together."""
    need = {"rank", "epoch", "step", "start_t", "data_s"}
    if steps.empty or not need <= set(steps) or steps["rank"].nunique() < 2:
        return pd.DataFrame()
    point = first_exchange(steps)
    if point not in steps:
        return pd.DataFrame()
    frame = steps.dropna(subset=[point, "start_t"]).copy()
    offsets = clocks.set_index("rank")["offset_s"] if clocks is not None and not clocks.empty else {}
    shift = frame["rank"].map(offsets).fillna(0.0)
    frame["start"], frame["arrive"] = frame["start_t"] - shift, frame[point] - shift
    frame["exchange"] = EXCHANGES[point]
    world = frame["rank"].nunique()
    frame = frame[frame.groupby(["epoch", "step"])["rank"].transform("nunique") == world]
    if frame.empty:
        return pd.DataFrame()
    by_step = frame.groupby(["epoch", "step"])
    latest = by_step["arrive"].transform("max")
    frame["wait_s"] = latest - frame["arrive"]
    frame["late_s"] = frame["arrive"] - _others_median(frame, "arrive")
    frame["last"] = (frame["arrive"] == latest) & (frame["late_s"] > 0)  # a tie keeps nobody waiting
    before = frame["arrive"] - frame["start"]
    frame["starting the step"] = frame["start"]
    frame["loading data"] = frame["data_s"]
    forward = (
        frame["forward_s"] if "forward_s" in frame and point == "arrive_t" else pd.Series(np.nan, index=frame.index)
    )
    marked = forward.notna()
    frame["forward"] = forward
    frame["backward compute"] = np.where(marked, before - frame["data_s"] - forward, np.nan)
    frame["forward and backward"] = (
        np.where(marked, np.nan, before - frame["data_s"]) if point == "arrive_t" else np.nan
    )  # forward entry comes before both
    return frame.reset_index(drop=True)


def _others_median(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per row, the median of `column` over the other ranks of the same step (a steps x ranks matrix, one
    column left out at a time: a loop over the ranks, not over the rows)."""
    table = frame.pivot_table(index=["epoch", "step"], columns="rank", values=column, aggfunc="first", dropna=False)
    values = table.to_numpy(dtype=float)
    others = np.full(values.shape, np.nan)
    for position in range(values.shape[1]):
        rest = np.delete(values, position, axis=1)
        if rest.shape[1]:
            with warnings.catch_warnings():  # a step where no other rank has the figure stays NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                others[:, position] = np.nanmedian(rest, axis=1)
    wide = pd.DataFrame(others, index=table.index, columns=table.columns).stack(future_stack=True)
    keys = pd.MultiIndex.from_arrays([frame["epoch"], frame["step"], frame["rank"]])
    return pd.Series(wide.reindex(keys).to_numpy(), index=frame.index)


def rank_table(frame: pd.DataFrame, clocks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per rank: steps, the share it arrived last, its mean lateness when last, the time it kept the others
    waiting and the time it waited, and the part of its step that made it late (with its excess)."""
    if frame.empty:
        return pd.DataFrame()
    steps = frame.groupby(["epoch", "step"]).ngroups
    step_time = frame.groupby(["epoch", "step"])["step_s"].transform("median") if "step_s" in frame else None
    rows = []
    for rank, mine in frame.groupby("rank"):
        last = mine[mine["last"]]
        others = frame[
            (frame["rank"] != rank)
            & frame.set_index(["epoch", "step"]).index.isin(last.set_index(["epoch", "step"]).index)
        ]
        cause, cause_s = _cause(frame, last)
        lost = float(others["wait_s"].sum())
        total = float(step_time[frame["rank"] != rank].sum()) if step_time is not None else np.nan
        rows.append(
            {
                "rank": int(rank),
                "steps": steps,
                "last_share": len(last) / steps,
                "late_s": float(last["late_s"].mean()) if len(last) else 0.0,
                "kept_waiting_s": lost / max(1, frame["rank"].nunique() - 1),
                "waited_s": float(mine["wait_s"].sum()),
                "others_lost_share": lost / total if total else np.nan,
                "cause": cause,
                "cause_s": cause_s,
                "exchange": str(frame["exchange"].iloc[0]),
            }
        )
    table = pd.DataFrame(rows)
    if clocks is not None and not clocks.empty:
        table = table.merge(clocks[["rank", "offset_s", "error_s"]], on="rank", how="left")
    return table


def _cause(frame: pd.DataFrame, last: pd.DataFrame) -> tuple[str, float]:
    """The part of the step with the largest mean excess over the other ranks' median, over `last`'s steps."""
    if last.empty:
        return "", 0.0
    excess = {}
    keys = last.set_index(["epoch", "step"]).index
    in_steps = frame[frame.set_index(["epoch", "step"]).index.isin(keys)]
    for part in PARTS:
        if in_steps[part].isna().all():
            continue
        others = _others_median(in_steps, part)
        excess[part] = float(
            (in_steps[part] - others)[in_steps["last"] & (in_steps["rank"] == last["rank"].iloc[0])].mean()
        )
    if not excess:
        return "", 0.0
    part = max(excess, key=lambda name: excess[name])
    return part, excess[part]


def stragglers(ranks: pd.DataFrame, world: int, run_id: str, placement: str, hosts: pd.DataFrame) -> list[Straggler]:
    """The ranks of one run that arrived last far beyond their share while the others lost time to them. A
    run whose clocks were not compared (no ClockSync: a loop that skipped session.prepare_model) names nobody:
    its ranks' clocks may differ by more than any lateness."""
    if ranks.empty or "error_s" not in ranks or ranks["error_s"].isna().any():
        return []
    error = float(ranks["error_s"].max())
    out = []
    for row in ranks.itertuples():
        often = row.last_share >= min(1.0, STRAGGLER_LAST_FACTOR / world) and not _by_chance(row, world)
        if often and row.others_lost_share >= STRAGGLER_WAIT_SHARE and row.late_s > 2 * error:
            node, host = _where(hosts, int(row.rank))
            out.append(
                Straggler(
                    run_id,
                    placement,
                    int(row.rank),
                    node,
                    host,
                    int(row.steps),
                    float(row.last_share),
                    float(row.late_s),
                    str(row.cause),
                    float(row.cause_s),
                    str(row.exchange),
                    float(row.others_lost_share),
                    error,
                )
            )
    return out


def _by_chance(row: Any, world: int) -> bool:
    """Whether arriving last this often could be chance among `world` alike ranks (a one-sided binomial test
    at STRAGGLER_CHANCE): with many ranks and few steps some rank passes 1.5x its share by luck."""
    from scipy.stats import binomtest

    steps = int(row.steps)
    last = round(float(row.last_share) * steps)
    return bool(binomtest(last, steps, 1 / world, alternative="greater").pvalue >= STRAGGLER_CHANCE)


def stalls(
    steps: pd.DataFrame, frame: pd.DataFrame, run_id: str, placement: str, hosts: pd.DataFrame, origin: float = np.nan
) -> list[Stall]:
    """Steps in which a rank was late (with arrivals) or slow (without) far beyond the run's usual step;
    `origin` is when the run's first step started (rank 0's clock), what `at_s` counts from."""
    if steps.empty or "step_s" not in steps:
        return []
    usual = float(steps["step_s"].median())
    limit = max(STALL_MIN_S, STALL_FACTOR * usual)
    if not frame.empty:
        late = frame[frame["late_s"] > limit]
        found = [
            (int(r.rank), int(r.epoch), int(r.step), float(r.late_s), float(r.start) - origin, True)
            for r in late.itertuples()
        ]
    else:  # no arrivals: the step's slowest time, one stall per step (with several ranks, none can be named)
        slowest = steps.groupby(["epoch", "step"], as_index=False).agg(step_s=("step_s", "max"), rank=("rank", "min"))
        many = steps["rank"].nunique() > 1
        found = [
            (-1 if many else int(r.rank), int(r.epoch), int(r.step), float(r.step_s), np.nan, False)
            for r in slowest[slowest["step_s"] > limit].itertuples()
        ]
    out = []
    for rank, epoch, step, lasted, at, late_for_it in found:
        node, host = _where(hosts, rank) if rank >= 0 else ("", "")
        out.append(Stall(run_id, placement, rank, node, host, epoch, step, at, lasted, late_for_it))
    return out


def _where(hosts: pd.DataFrame, rank: int) -> tuple[str, str]:
    """(short node id, hostname) of a rank, from the workers table's rows of its run."""
    if hosts.empty or "rank" not in hosts:
        return "", ""
    mine = hosts[hosts["rank"] == rank]
    if mine.empty:
        return "", ""
    row = mine.iloc[-1]
    return str(row.get("node_id") or "")[:8], str(row.get("hostname") or "")


def lateness_series(frame: pd.DataFrame, all_steps: pd.DataFrame | None = None, points: int = 120) -> pd.DataFrame:
    """For the rank x step chart: each rank's lateness (ms) in at most `points` means of consecutive steps;
    `step_index` counts the run's steps from its first (`all_steps`: the warm-up included), as the step-time
    chart does."""
    if frame.empty:
        return pd.DataFrame(columns=["rank", "step_index", "late_ms"])
    ordered = frame.sort_values(["epoch", "step"])
    keys = all_steps if all_steps is not None and not all_steps.empty else ordered
    ordinal = {key: i for i, key in enumerate(sorted(set(zip(keys["epoch"], keys["step"], strict=True))))}
    index = pd.Series(
        [ordinal[key] for key in zip(ordered["epoch"], ordered["step"], strict=True)], index=ordered.index
    )
    size = max(1, int(np.ceil((index.max() + 1) / points)))
    ordered = ordered.assign(step_index=(index // size) * size)
    series = ordered.groupby(["rank", "step_index"], as_index=False)["late_s"].mean()
    return series.assign(late_ms=series["late_s"] * 1e3).drop(columns="late_s")


@dataclass
class RankTables:
    ranks: pd.DataFrame  # per run x rank: rank_table's columns with run_id, placement, node, host
    lateness: pd.DataFrame  # per run x rank x step bin: late_ms (lateness_series)
    stragglers: list[Straggler]
    stalls: list[Stall]


def settled(steps: pd.DataFrame, warmup: int) -> pd.DataFrame:
    """The steps after the run's first `warmup` (in epoch, step order: compilation, first allocations, a
    rank still joining), without the ones a torch.profiler trace slowed."""
    if steps.empty or not {"epoch", "step"} <= set(steps):
        return steps
    order = steps.groupby(["epoch", "step"], sort=True).ngroup()
    return without_traced_steps(steps[order >= warmup])  # every rank's events of a traced step, as throughput does


def rank_tables(
    runs: dict[str, tuple[str, pd.DataFrame, pd.DataFrame]], workers: pd.DataFrame, warmup: int = 0
) -> RankTables:
    """Every run's rank figures: `runs` maps run id to (placement, its last attempt's step events, its
    last attempt's clock-sync events); `workers` is the workers table (where each rank ran); the first
    `warmup` steps of each run are left out (see `settled`)."""
    ranks, lateness, late, stalled = [], [], [], []
    for run_id, (placement, all_steps, clocks) in runs.items():
        steps = settled(all_steps, warmup)
        hosts = workers[workers["run_id"] == run_id] if not workers.empty and "run_id" in workers else pd.DataFrame()
        if not hosts.empty:
            hosts = hosts[hosts["attempt"] == hosts["attempt"].max()]
        frame = aligned(steps, clocks)
        first = all_steps.loc[all_steps["rank"] == 0, "start_t"] if "start_t" in all_steps else pd.Series(dtype=float)
        stalled += stalls(steps, frame, run_id, placement, hosts, float(first.min()) if len(first) else np.nan)
        table = rank_table(frame, clocks)
        if table.empty:
            continue
        where = [_where(hosts, int(r)) for r in table["rank"]]
        ranks.append(
            table.assign(run_id=run_id, placement=placement, node=[w[0] for w in where], host=[w[1] for w in where])
        )
        lateness.append(lateness_series(frame, all_steps).assign(run_id=run_id, placement=placement))
        late += stragglers(table, int(frame["rank"].nunique()), run_id, placement, hosts)
    first = ["run_id", "placement", "rank", "node", "host"]
    ranks_frame = pd.concat(ranks, ignore_index=True) if ranks else pd.DataFrame(columns=first)
    ranks_frame = ranks_frame[first + [c for c in ranks_frame.columns if c not in first]]
    late_frame = (
        pd.concat(lateness, ignore_index=True)
        if lateness
        else pd.DataFrame(columns=["run_id", "placement", "rank", "step_index", "late_ms"])
    )
    return RankTables(ranks_frame, late_frame, late, stalled)
