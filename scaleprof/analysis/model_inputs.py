"""What the physics model (analysis/physics.py) needs from one run, measured over its steady window,
each figure with its 95% interval, stored as runs-table columns so a prediction needs only the table.

- **Phases** (data, forward, backward compute, optimizer, other): the mean per step over every rank's
  steady steps (analysis/breakdown.py's figures), with the interval of batch means
  (analysis/steady.batch_means_interval) of the per-step series, moved to sit around that mean.
- **Exposed communication**: the sync probe's all-reduce (backward with DDP's sync − without), the
  median over ranks; its interval runs from the fastest rank's to the slowest's (one rank: none).
- **Rank spread** (`rank_step_sd_s`): the standard deviation of the per-rank, per-step time that no
  collective synchronises (with one worker the whole compute; with several, data + forward +
  optimizer, since DDP's all-reduce makes every rank's backward end together); its interval is the
  chi-square one with the batch means as degrees of freedom (steps are autocorrelated).
- **Host sharing** (`host_sharing`, over `host_ranks` ranks on a machine): the sync probe's ratio of a
  rank's forward + backward with its machine's ranks computing at once to the same alone, the median
  over ranks; its interval runs from the lowest rank's ratio to the highest's (one rank: none). Only
  where a run's ranks share machines (physics.HostSharing).
- **DDP's own cost** (`step_wrapper_s`, one-worker runs only): the wrapper probe's forward + backward
  through DDP over the run's one-rank group less the same through the bare model (hooks, gradients copied
  into buckets and back): what every step pays from 2 workers on, on top of the all-reduce itself; its
  interval is the range of the probe's rounds. A run with several workers measured under the wrapper already.
- **Gradient bytes**: the parameters × 4 bytes, the float32 gradient DDP all-reduces (scaleprof's
  bf16 and fp16 are autocast: parameters and their gradients stay float32).

A run gives no inputs (`inputs_reason` says why) when it did not finish, recorded no phase marks,
ran FSDP (its per-layer collectives are not modelled yet), or ran several workers without the sync
probe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from scaleprof.analysis.physics import LEVEL, Figure, HostSharing, MeasuredRun, link_class_for
from scaleprof.analysis.steady import batch_means_interval

GRADIENT_BYTES_PER_PARAMETER = 4  # float32 gradients (autocast keeps parameters float32)
# The phases of a step the model takes from a run: runs-table column (breakdown.py's) -> step-event columns.
PHASES = {
    "step_data_s": ("data_s",),
    "step_forward_s": ("forward_s",),
    "step_optimizer_s": ("optimizer_s",),
    "step_backward_compute_s": ("backward_s",),  # less the probe's all-reduce, as the breakdown takes it
    "step_other_s": (),  # step_s less the marked phases
}
INPUT_COLUMNS = [
    *(f"{name}_{side}" for name in PHASES for side in ("low", "high")),
    "step_allreduce_s_low", "step_allreduce_s_high", "rank_step_sd_s", "rank_step_sd_s_low", "rank_step_sd_s_high",
    "gradient_bytes", "inputs_reason", "worker_cores_busy", "node_cpus", "hosts_realized",
    "host_sharing", "host_sharing_low", "host_sharing_high", "host_ranks",
    "step_wrapper_s", "step_wrapper_s_low", "step_wrapper_s_high",
]  # fmt: skip
# A CPU placement whose workers on one node would keep this share of its cores busy or more has none to spare
# for the collectives, Ray and the OS: its compute is no longer what one worker alone measured.
FULL_NODE = 0.9


def model_input_columns(
    steady: pd.DataFrame, probe: pd.DataFrame, breakdown: Mapping[str, float], workers: int, parameters: float
) -> dict[str, Any]:
    """The intervals of a run's breakdown (`breakdown`: analysis/breakdown.step_breakdown's figures over
    the same `steady` steps), its probe's spread over ranks, the rank spread and the gradient's bytes."""
    out: dict[str, Any] = dict.fromkeys(INPUT_COLUMNS, math.nan)
    out["inputs_reason"] = ""
    if not breakdown or steady.empty:
        out["inputs_reason"] = "no phase marks were recorded (a loop without session.mark)"
        return out
    per_step = _per_step(steady)
    allreduce = float(breakdown.get("step_allreduce_s", math.nan))
    for name in PHASES:
        values = per_step[name]
        if name == "step_backward_compute_s":
            values = values - (allreduce if math.isfinite(allreduce) else 0.0)
        out[f"{name}_low"], out[f"{name}_high"] = _around(float(breakdown.get(name, math.nan)), values)
    if "allreduce_s" in probe and not probe["allreduce_s"].dropna().empty:
        ranks = probe["allreduce_s"].dropna()
        out["step_allreduce_s_low"] = min(float(ranks.min()), allreduce)
        out["step_allreduce_s_high"] = max(float(ranks.max()), allreduce)
    sd, low, high = _rank_spread(steady, workers)
    out.update(rank_step_sd_s=sd, rank_step_sd_s_low=low, rank_step_sd_s_high=high)
    out.update(host_sharing_columns(probe))
    if workers == 1:
        out.update(wrapper_columns(probe))
    out["gradient_bytes"] = float(parameters) * GRADIENT_BYTES_PER_PARAMETER if parameters else math.nan
    return out


def core_demand(row: Mapping[str, Any], starts: pd.DataFrame) -> dict[str, float]:
    """A CPU run's cores busy per worker (its training process's mean CPU), the smallest node's logical
    CPUs (WorkerStart.node_cpus) and the machines its workers ran on (Ray nodes on one host share its
    cores, as the tests' two-node cluster on one machine does): what `oversubscribed` compares."""
    busy = math.nan
    if row.get("device") == "cpu" and finite(row.get("cpu_util_pct")) and row.get("workers"):
        busy = float(row["cpu_util_pct"]) / 100 * float(row["cpus"]) / float(row["workers"])
    cpus = starts["node_cpus"].dropna() if "node_cpus" in starts else pd.Series(dtype=float)
    hosts = float(starts["hostname"].nunique()) if "hostname" in starts and not starts.empty else math.nan
    return {
        "worker_cores_busy": busy,
        "node_cpus": float(cpus.min()) if not cpus.empty else math.nan,
        "hosts_realized": hosts,
    }


@dataclass(frozen=True)
class Oversubscription:
    """A CPU placement whose workers per machine would keep the machine's cores busy at the base run's
    per-worker CPU: its compute would not be the base run's, as the physics model takes it."""

    workers_per_machine: int
    cores_busy: float  # per worker, in the base run
    machine_cores: float  # the smallest node's logical CPUs
    base_placement: str

    def words(self) -> str:
        """The caveat as the prediction tables store it (their `caveat` column)."""
        n, busy = self.workers_per_machine, self.cores_busy
        return (
            f"{n} workers on one machine would keep about {n * busy:.1f} of its {self.machine_cores:.0f} cores "
            f"busy ({busy:.2f} each in {self.base_placement}): they would share cores, which the model does not "
            "include"
        )


def oversubscribed(base: Mapping[str, Any], workers: int, hosts: int) -> Oversubscription | None:
    """Whether a CPU placement's compute would not be the base run's (its workers per machine would keep the
    machine's cores busy, at the base run's per-worker CPU); None when it would. `hosts`: the machines the
    placement spreads over (for a placement not measured, its nodes)."""
    if not (finite(base.get("worker_cores_busy")) and finite(base.get("node_cpus"))):
        return None
    busy, cpus = float(base["worker_cores_busy"]), float(base["node_cpus"])
    per_node = math.ceil(workers / hosts)
    if per_node * busy < FULL_NODE * cpus:
        return None
    return Oversubscription(
        workers_per_machine=per_node, cores_busy=busy, machine_cores=cpus, base_placement=str(base.get("placement"))
    )


def measured_run(row: Mapping[str, Any]) -> MeasuredRun | str:
    """The physics model's inputs from one row of the runs table, or why that row has none."""
    if row.get("status") != "ok":
        return f"the run did not finish ({row.get('status')})"
    if row.get("parallelism") == "fsdp":
        return "FSDP's per-layer reduce-scatter and all-gather are not modelled yet (DDP only)"
    reason = row.get("inputs_reason")
    if isinstance(reason, str) and reason:
        return reason
    if not isinstance(reason, str):
        return "the study was summarised before the model's inputs were recorded: re-render it (scaleprof report)"
    workers = int(row["workers"])
    if workers > 1 and not finite(row.get("step_allreduce_s")):
        return f"{workers} workers without the sync probe (session.measure_allreduce): its communication is unknown"
    if not finite(row.get("gradient_bytes")):
        return "the model's parameter count was not recorded"
    nodes = int(row["nodes_realized"]) if finite(row.get("nodes_realized")) else 1
    compute = sum(float(row[name]) for name in PHASES)
    sd = _figure(row, "rank_step_sd_s")
    cv = Figure(sd.value / compute, sd.low / compute, sd.high / compute) if compute > 0 else Figure.exact(0.0)
    return MeasuredRun(
        batch_per_worker=int(row["per_worker_batch"]),
        workers=workers,
        nodes=min(nodes, workers),
        link_class=link_class_for(nodes),
        data_s=_figure(row, "step_data_s"),
        forward_s=_figure(row, "step_forward_s"),
        backward_compute_s=_figure(row, "step_backward_compute_s"),
        optimizer_s=_figure(row, "step_optimizer_s"),
        other_s=_figure(row, "step_other_s"),
        gradient_bytes=float(row["gradient_bytes"]),
        exposed_comm_s=_figure(row, "step_allreduce_s") if workers > 1 else None,
        step_cv=cv,
        ranks_per_host=ranks_per_host(row),
        wrapper_s=_figure(row, "step_wrapper_s") if workers == 1 and finite(row.get("step_wrapper_s")) else None,
    )


def host_sharing_columns(probe: pd.DataFrame) -> dict[str, float]:
    if not {"compute_alone_s", "compute_together_s", "host_ranks"} <= set(probe.columns):
        return {}
    ranks = probe[["compute_alone_s", "compute_together_s", "host_ranks"]].dropna()
    ranks = ranks[ranks["compute_alone_s"] > 0]
    if ranks.empty:
        return {}
    ratio = ranks["compute_together_s"] / ranks["compute_alone_s"]
    low, high = (float(ratio.min()), float(ratio.max())) if len(ratio) > 1 else (math.nan, math.nan)
    return {
        "host_sharing": float(ratio.median()),
        "host_sharing_low": low,
        "host_sharing_high": high,
        "host_ranks": float(ranks["host_ranks"].max()),
    }


def wrapper_columns(probe: pd.DataFrame) -> dict[str, float]:
    """DDP's own cost per step from a one-worker run's wrapper probe: through the wrapper less bare (never
    below 0), its range over the probe's rounds; {} without the probe (an older study, a loop outside Ray Train)."""
    if not {"bare_s", "wrapped_s"} <= set(probe.columns):
        return {}
    found = probe.dropna(subset=["bare_s", "wrapped_s"])
    if found.empty:
        return {}
    first = found.iloc[0]
    value = max(float(first["wrapped_s"]) - float(first["bare_s"]), 0.0)
    low, high = float(first.get("wrapper_low_s", math.nan)), float(first.get("wrapper_high_s", math.nan))
    if not (math.isfinite(low) and math.isfinite(high)):
        return {"step_wrapper_s": value}
    return {
        "step_wrapper_s": value,
        "step_wrapper_s_low": min(max(low, 0.0), value),
        "step_wrapper_s_high": max(high, value),
    }


def host_sharing(row: Mapping[str, Any]) -> HostSharing | None:
    """The host-sharing probe's figure of one runs-table row, or None where its ranks shared no machine."""
    if not (finite(row.get("host_sharing")) and finite(row.get("host_ranks")) and float(row["host_ranks"]) >= 2):
        return None
    return HostSharing(_figure(row, "host_sharing"), int(row["host_ranks"]))


def ranks_per_host(row: Mapping[str, Any]) -> int:
    """The ranks a run had computing at once on each machine (its workers over the machines they ran on)."""
    workers = int(row["workers"])
    hosts = float(row["hosts_realized"]) if finite(row.get("hosts_realized")) else math.nan
    return min(workers, math.ceil(workers / hosts)) if hosts >= 1 else 1


def _per_step(steady: pd.DataFrame) -> pd.DataFrame:
    """Each phase per (epoch, step), the mean over ranks, in step order (the series batch means need)."""
    frame = pd.DataFrame({"epoch": steady["epoch"], "step": steady["step"]})
    for name, columns in PHASES.items():
        if columns:
            frame[name] = steady[columns[0]].astype(float)
    marked = steady[["data_s", "forward_s", "backward_s", "optimizer_s"]].sum(axis=1)
    frame["step_other_s"] = (steady["step_s"] - marked).clip(lower=0)
    return frame.groupby(["epoch", "step"], sort=True).mean()


def _around(mean: float, values: pd.Series) -> tuple[float, float]:
    """A 95% interval for `mean` from the batch means of `values` (NaN when none can be made)."""
    interval = batch_means_interval(values.to_numpy())
    if not math.isfinite(mean) or not math.isfinite(interval.low):
        return math.nan, math.nan
    return max(mean - (interval.mean - interval.low), 0.0), mean + (interval.high - interval.mean)


def _rank_spread(steady: pd.DataFrame, workers: int) -> tuple[float, float, float]:
    columns = ["data_s", "forward_s", "optimizer_s"] + (["backward_s"] if workers == 1 else [])
    free = steady[columns].sum(axis=1).to_numpy(dtype=float)
    free = free[np.isfinite(free)]
    if len(free) < 2:
        return math.nan, math.nan, math.nan
    sd = float(free.std(ddof=1))
    dof = max(math.isqrt(len(free)) - 1, 1)  # the batch means' count, less one: steps are autocorrelated
    low = sd * math.sqrt(dof / float(stats.chi2.ppf(0.5 + LEVEL / 2, dof)))
    high = sd * math.sqrt(dof / float(stats.chi2.ppf(0.5 - LEVEL / 2, dof)))
    return sd, low, high


def finite(value: Any) -> bool:
    """A number that is not NaN or infinite (None, text and NaN are not)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _figure(row: Mapping[str, Any], name: str) -> Figure:
    value = float(row[name])
    low, high = float(row.get(f"{name}_low", math.nan)), float(row.get(f"{name}_high", math.nan))
    if not (math.isfinite(low) and math.isfinite(high)):
        return Figure(value, math.nan, math.nan)
    return Figure(value, min(low, value), max(high, value))
