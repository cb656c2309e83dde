"""Throughput at placements nobody measured, by the physics model (analysis/physics.py: compute from a
measured run, communication from a fabric), beside the fitted scaling law (analysis/scaling.py), and
the ledger by which every study checks both on its own measured placements.

- **Fabric**: the links' α and β per link class, fitted from a stored sweep (`fabric.parquet`, a
  study's or another cluster's) or stated ("100Gbit/s,5us"); a stated link replaces a fitted one of
  its class. A sweep that holds both gloo and nccl rows gives CPU runs gloo's links and GPU runs
  nccl's.
- **Base run**: the model's inputs come from one measured run of the same model and device kind: the
  ok fixed-split run with the most workers (its sync probe gives the overlap), not contended if one
  such exists; with a limit, only runs with fewer workers than it (the ledger's rule).
- **Host sharing**: where ranks share machines, the probe's slowdown (physics.HostSharing) scales
  compute: a prediction takes it from the runs of the same model and device kind (the one with the
  most ranks on a machine); the ledger only from runs with fewer workers than the one it predicts.
- **Ledger**: each ok fixed-split run with 2 or more workers is predicted from the runs with fewer
  workers only, by the physics model (and the fabric) and by the scaling law refitted to those runs;
  each row keeps predicted vs measured with both intervals, the error and whether the measured
  figure fell inside the predicted interval; a physics row also keeps, per step, the compute (data,
  forward, backward, optimizer, other) and the sync (exposed all-reduce and the wait for the slowest
  rank, which the run's sync probe measures together) predicted and measured: where a miss came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.fabric import LinkFit, fit_fabric, stated_link
from scaleprof.analysis.model_inputs import (
    PHASES,
    Oversubscription,
    finite,
    host_sharing,
    measured_run,
    oversubscribed,
    ranks_per_host,
)
from scaleprof.analysis.physics import HostSharing, MeasuredRun, Prediction, Scaling, predict
from scaleprof.analysis.scaling import baselines, scaling_efficiency, speedup
from scaleprof.records import FABRIC_COLUMNS, RunKind, RunStatus

PHYSICS, CURVE = "physics", "scaling law"
LEDGER_COLUMNS = [
    "run_id", "model", "device", "placement", "workers", "nodes", "method", "predicted", "low", "high", "measured",
    "measured_low", "measured_high", "error_pct", "covered", "base", "reason", "caveat",
    "compute_predicted_s", "compute_measured_s", "sync_predicted_s", "sync_measured_s",
]  # fmt: skip
# The physics model's compute terms: the runs-table phases the model takes (model_inputs.PHASES) by their term names.
COMPUTE_TERMS = tuple(name.removeprefix("step_") for name in PHASES)


@dataclass(frozen=True)
class Fabric:
    """Fitted or stated links, by backend then link class, and where each came from."""

    links: dict[str, dict[str, LinkFit]] = field(default_factory=dict)  # backend -> link class -> fit
    source: dict[str, str] = field(default_factory=dict)  # link class -> where its figures came from

    def for_device(self, device: str) -> dict[str, LinkFit]:
        """The links a run on `device` all-reduces over: nccl's for GPUs, gloo's for CPUs; stated ones
        (backend "stated") over either."""
        backend = "nccl" if device.startswith(("gpu", "cuda")) else "gloo"
        return {**self.links.get(backend, {}), **self.links.get("stated", {})}

    @property
    def empty(self) -> bool:
        return not any(self.links.values())


def fabric_of(sweep: pd.DataFrame | None, where: str = "", stated: Mapping[str, str] | None = None) -> Fabric:
    """The fabric from a stored sweep (`where` names it) and stated links (link class -> spec)."""
    links: dict[str, dict[str, LinkFit]] = {}
    source: dict[str, str] = {}
    if sweep is not None and not sweep.empty:
        for fit in fit_fabric(sweep):
            links.setdefault(fit.backend, {})[fit.link_class] = fit
            source[fit.link_class] = f"measured ({fit.backend} sweep in {where})" if where else "measured"
    for link_class, spec in (stated or {}).items():
        links.setdefault("stated", {})[link_class] = stated_link(spec, link_class)
        source[link_class] = f"stated ({spec})"
    return Fabric(links, source)


def study_sweep(stored: pd.DataFrame | None, fabric_events: pd.DataFrame) -> pd.DataFrame | None:
    """A study's fabric sweep: the one stored beside it (`scaleprof fabric --out STUDY/fabric.parquet`), else
    the rows its multi-worker runs timed after training (profile.fabric_probe); None without either."""
    if stored is not None and not stored.empty:
        return stored
    if fabric_events.empty or not set(FABRIC_COLUMNS) <= set(fabric_events.columns):
        return None
    return fabric_events[list(FABRIC_COLUMNS)].reset_index(drop=True)


# Why a ledger row has no prediction when its run is its model's smallest: nothing to predict it from.
NO_SMALLER_RUN = "no finished run with fewer workers"


def base_run(group: pd.DataFrame, below: int | None = None) -> tuple[pd.Series, MeasuredRun] | str:
    """The run whose inputs the model takes (see the module's docstring), or why there is none."""
    ok = group[(group["status"] == RunStatus.OK) & (group["kind"] == RunKind.FIXED_SPLIT)]
    if below is not None:
        ok = ok[ok["workers"] < below]
    if ok.empty:
        return NO_SMALLER_RUN if below is not None else "no finished run"
    reasons: list[str] = []
    contended = ok["contended"].eq(True) if "contended" in ok else pd.Series(False, index=ok.index)
    order = ok.assign(_quiet=~contended).sort_values(["_quiet", "workers", "steady_steps"], ascending=False)
    for _, row in order.iterrows():
        measured = measured_run(row.to_dict())
        if isinstance(measured, MeasuredRun):
            return row, measured
        reasons.append(f"{row['placement']}: {measured}")
    return "no run gives the model's inputs (" + "; ".join(dict.fromkeys(reasons)) + ")"


def physics_predictions(
    runs: pd.DataFrame, placements: Iterable[tuple[int, int]], fabric: Fabric, scaling: Scaling = "weak"
) -> pd.DataFrame:
    """Per (model, device kind) and placement (workers, nodes): the physics prediction with its interval
    and terms, or the reason there is none."""
    rows = []
    one_worker = baselines(runs)
    for (model, device), group in _groups(runs):
        if not group["status"].eq(RunStatus.OK).any():
            continue  # nothing measured (skipped, failed): no row, as the scaling law gives none
        base, sharing = base_run(group), probed_sharing(group)
        for workers, nodes in placements:
            row: dict[str, Any] = {"model": model, "device": device, "workers": workers, "nodes": nodes}
            if isinstance(base, str):
                rows.append(row | _no_figure(base))
                continue
            found = _predict(base[1], fabric.for_device(str(device)), workers, nodes, scaling, sharing)
            if isinstance(found, str):
                rows.append(row | _no_figure(found))
                continue
            baseline = float(one_worker.get((model, device), math.nan))
            rows.append(
                row
                | _figures(found, base[0], fabric, sharing)
                | {
                    "efficiency": float(scaling_efficiency(speedup(found.throughput, baseline), workers)),
                }
            )
    return pd.DataFrame(rows)


def prediction_ledger(runs: pd.DataFrame, fabric: Fabric, scaling: Scaling = "weak") -> pd.DataFrame:
    """Every ok multi-worker run predicted from the smaller placements' runs only, by both methods."""
    rows = []
    for (model, device), group in _groups(runs):
        ok = group[(group["status"] == RunStatus.OK) & group["throughput"].notna()]
        for _, target in ok[ok["workers"] >= 2].iterrows():
            workers, nodes = int(target["workers"]), _nodes(target)
            common = {
                "run_id": target["run_id"],
                "model": model,
                "device": device,
                "placement": target["placement"],
                "workers": workers,
                "nodes": nodes,
                "measured": float(target["throughput"]),
                "measured_low": float(target.get("throughput_low", math.nan)),
                "measured_high": float(target.get("throughput_high", math.nan)),
            }
            links = fabric.for_device(str(device))
            rows.append(common | {"method": PHYSICS} | _physics_entry(group, links, target, scaling))
            rows.append(common | {"method": CURVE} | _curve_entry(ok[ok["workers"] < workers], workers))
    if not rows:
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    ledger = pd.DataFrame(rows)
    ledger["error_pct"] = 100 * (ledger["predicted"] - ledger["measured"]) / ledger["measured"]
    inside = (ledger["measured"] >= ledger["low"]) & (ledger["measured"] <= ledger["high"])
    ledger["covered"] = inside.astype(object).where(ledger["low"].notna() & ledger["high"].notna())
    return ledger[LEDGER_COLUMNS]


def _physics_entry(
    group: pd.DataFrame, links: dict[str, LinkFit], target: pd.Series, scaling: Scaling
) -> dict[str, Any]:
    """The physics prediction of a measured run from the smaller runs and the fabric alone."""
    workers, nodes, per_host = int(target["workers"]), _nodes(target), ranks_per_host(target)
    base = base_run(group, below=workers)
    if isinstance(base, str):
        return _refused(base)
    sharing = probed_sharing(group[group["workers"] < workers])
    found = _predict(base[1], links, workers, nodes, scaling, sharing, per_host)
    if isinstance(found, str):
        return _refused(found)
    hosts = int(target["hosts_realized"]) if finite(target.get("hosts_realized")) else nodes
    caveat = _caveat(base[0], workers, hosts, sharing, per_host)
    return {
        "predicted": found.throughput,
        "low": found.low,
        "high": found.high,
        "base": str(base[0]["placement"]),
        "reason": "",
        "caveat": _words(caveat),
    } | _parts(found, target)


def _parts(found: Prediction, target: pd.Series) -> dict[str, float]:
    """Per step, the compute and the sync the model predicted and the run measured (NaN where it has no breakdown)."""
    measured = [float(target.get(name, math.nan)) for name in PHASES]
    return {
        "compute_predicted_s": sum(found.terms[name] for name in COMPUTE_TERMS),
        "compute_measured_s": sum(measured) if all(map(math.isfinite, measured)) else math.nan,
        "sync_predicted_s": found.terms["wrapper_s"] + found.terms["exposed_comm_s"] + found.terms["straggler_s"],
        "sync_measured_s": float(target.get("step_allreduce_s", math.nan)),
    }


def probed_sharing(group: pd.DataFrame) -> HostSharing | None:
    """The host-sharing figure of a model's runs: from the ok run with the most ranks on one machine."""
    found = [host_sharing(row) for _, row in group[group["status"] == RunStatus.OK].iterrows()]
    probed = [sharing for sharing in found if sharing is not None]
    return max(probed, key=lambda sharing: sharing.ranks) if probed else None


def _caveat(
    base: pd.Series, workers: int, hosts: int, sharing: HostSharing | None, per_host: int
) -> Oversubscription | None:
    """The oversubscription caveat, unless the host-sharing probe measured as many ranks on a machine."""
    if sharing is not None and sharing.ranks >= per_host:
        return None
    return oversubscribed(base, workers, hosts)


def _words(caveat: Oversubscription | None) -> str:
    """A caveat as the tables' `caveat` column holds it ("" for none)."""
    return caveat.words() if caveat is not None else ""


def _curve_entry(smaller: pd.DataFrame, workers: int) -> dict[str, Any]:
    """The scaling law refitted to the runs with fewer workers, at `workers`."""
    from scaleprof.analysis.usl import fit_usl

    if smaller["workers"].nunique() < 2:
        return _refused("a scaling law needs runs at two or more smaller worker counts")
    fit = fit_usl(smaller["workers"], smaller["throughput"])
    if not fit.valid:
        return _refused(f"the law fitted is outside its meaning: {fit.invalid_reason}")
    low, high = fit.interval(np.array([float(workers)]), 0.95)
    return {
        "predicted": float(fit.predict(float(workers))),
        "low": float(low[0]),
        "high": float(high[0]),
        "base": f"{fit.model} fit to {len(smaller)} runs",
        "reason": "",
        "caveat": "",
    }


def ledger_summary(ledger: pd.DataFrame) -> pd.DataFrame:
    """Per method: predictions made, median |error| (%) and the share whose interval held the measured figure."""
    made = ledger[ledger["predicted"].notna()] if not ledger.empty else ledger
    rows = []
    for method, group in made.groupby("method", sort=False) if not made.empty else []:
        covered = group["covered"].dropna()
        rows.append(
            {
                "method": method,
                "predictions": len(group),
                "median_abs_error_pct": float(group["error_pct"].abs().median()),
                "coverage": float(covered.astype(bool).mean()) if len(covered) else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["method", "predictions", "median_abs_error_pct", "coverage"])


def _groups(runs: pd.DataFrame):
    ok = runs[runs["kind"] == RunKind.FIXED_SPLIT] if "kind" in runs else runs
    return ok.groupby(["model", "device"], sort=False)


def _nodes(row: pd.Series) -> int:
    nodes = row.get("nodes_realized")
    return int(nodes) if nodes is not None and math.isfinite(float(nodes)) else 1


def _predict(
    measured: MeasuredRun,
    links: dict[str, LinkFit],
    workers: int,
    nodes: int,
    scaling: Scaling,
    sharing: HostSharing | None = None,
    per_host: int | None = None,
) -> Prediction | str:
    try:
        return predict(measured, links, workers, nodes, scaling, sharing=sharing, ranks_per_host=per_host)
    except ValueError as error:
        return str(error)


def _refused(reason: str) -> dict[str, Any]:
    return {"predicted": math.nan, "low": math.nan, "high": math.nan, "base": "", "reason": reason, "caveat": ""} | {
        name: math.nan for name in LEDGER_COLUMNS if name.endswith(("_predicted_s", "_measured_s"))
    }


def _no_figure(reason: str) -> dict[str, Any]:
    return {"throughput": math.nan, "low": math.nan, "high": math.nan, "base": "", "reason": reason, "caveat": ""}


def _figures(found: Prediction, base: pd.Series, fabric: Fabric, sharing: HostSharing | None) -> dict[str, Any]:
    link = found.link_class
    return {
        "throughput": found.throughput,
        "low": found.low,
        "high": found.high,
        "step_s": found.step_s,
        **{f"term_{name}": value for name, value in found.terms.items()},
        "overlap": found.overlap,
        "crosses_node_boundary": found.crosses_node_boundary,
        "link_class": link,
        "link_source": fabric.source.get(link, "") if link else "",
        "base": str(base["placement"]),
        "basis": found.basis,
        "reason": "",
        "compute_factor": found.compute_factor,
        "caveat": _words(_caveat(base, found.workers, found.nodes, sharing, found.ranks_per_host)),
    }
