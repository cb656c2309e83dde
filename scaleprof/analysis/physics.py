"""The physics of data-parallel training: a step's time at N workers on M nodes, with compute taken
from a real run's measured profile and communication from a fitted fabric (analysis/fabric.py).

    step = data + forward + backward compute + optimizer + other + DDP's own cost + exposed all-reduce
           + slowest-of-N wait

- **Other**: the part of a measured step outside its marked phases (the loop's own bookkeeping, loss
  logging): a fixed cost per step, kept as measured at every placement.

- **DDP's own cost** (`wrapper_s`): from 2 workers on every step runs under DDP's wrapper, whose hooks
  and copies of the gradient into buckets and back cost time beyond the all-reduce itself. A one-worker
  run never ran under it (Ray Train wraps only with several): its wrapper probe measured it over a
  one-rank group, and it is added at 2 or more workers (not scaled with the batch: it works on the
  parameters). A run with several workers measured its phases and its sync probe under the wrapper
  already: nothing is added. Not measured (an older study): 0, and the basis says so.
- **All-reduce**: DDP all-reduces the gradient every step; its time is the ring model's over the
  bottleneck link class: intra-node on one node, inter-node on several (a ring is as slow as its
  slowest hop). One worker, or a model with no gradient, has nothing to send. Modelled as one
  all-reduce of all the gradient bytes: DDP's buckets add one latency term each, which matters only
  for latency-bound links.
- **Overlap**: DDP runs the all-reduce under the backward pass; only the part longer than the share
  `overlap` of backward compute it can hide under is exposed (`exposed_comm`). With a measured
  ≥ 2-worker run, `overlap` is the value that makes the model reproduce that run's sync probe
  (`infer_overlap`); without one, `DEFAULT_OVERLAP` = 0 (nothing hidden: the pessimistic bound).
- **Slowest-of-N**: ranks wait for the slowest at every all-reduce. With per-rank compute times
  roughly normal with standard deviation σ = CV × compute, the expected maximum of N is
  mean + σ · E[max of N standard normals] (`expected_max_standard_normal`, integrated numerically).
- **Host sharing**: ranks that compute at once on one machine slow each other (its cores, memory
  bandwidth, caches; on the tests' cluster two Ray nodes share one 2-core machine). The sync probe
  measures it where a run's ranks share machines (`HostSharing`: a rank's forward + backward with its
  machine's `ranks` ranks computing at once over the same alone); at r ranks per machine every compute
  term is multiplied by slowdown(r) / slowdown(the measured run's), slowdown(r) = 1 + (s − 1)(r − 1) /
  (ranks − 1): linear in the other ranks, 1 alone, the measured s at the probe's count (beyond it,
  extrapolated, and the basis says so); a ratio under 1 is the probe's noise (ranks do not speed each
  other up) and counts as 1. Without a probe, compute is as the measured run had it.
- **Scaling**: weak keeps the per-worker batch; strong keeps the global batch, and data, forward
  and backward scale in proportion to the per-worker batch (linear: optimistic where small batches
  under-use a device); the optimizer works on the parameters and does not scale; nor does the
  all-reduce (the gradient's size is the model's).
- **Interval**: Monte Carlo, `DRAWS` draws with a fixed seed: each input (and each link's α and β)
  from a two-piece normal whose halves give its own 95% interval, clipped at 0, independent of each
  other; the 2.5% and 97.5% quantiles of the throughput drawn, widened to contain the point value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import integrate, stats

from scaleprof.analysis.fabric import LinkFit, ring_time

Scaling = Literal["weak", "strong"]
INTRA_NODE, INTER_NODE = "intra-node", "inter-node"
DEFAULT_OVERLAP = 0.0
DRAWS = 2000
SEED = 0
LEVEL = 0.95
Z95 = float(stats.norm.ppf(0.5 + LEVEL / 2))
# The terms a step's time is the sum of (Prediction.terms also has "comm_s", the whole all-reduce).
STEP_TERMS = (
    "data_s", "forward_s", "backward_compute_s", "optimizer_s", "other_s", "wrapper_s", "exposed_comm_s",
    "straggler_s",
)  # fmt: skip


@dataclass(frozen=True)
class Figure:
    """A measured value with its 95% interval; NaN bounds mean none is known (drawn as exact)."""

    value: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"a figure needs a finite value; got {self.value}")
        if self.has_interval and not self.low <= self.value <= self.high:
            raise ValueError(f"interval [{self.low}, {self.high}] does not contain its value {self.value}")

    @classmethod
    def exact(cls, value: float) -> Figure:
        return cls(value, value, value)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def share_above(self, threshold: float) -> float:
        """The probability that the quantity is at least `threshold`, under the two-piece normal `draw`
        samples from (a step at the value without an interval)."""
        if not self.has_interval:
            return float(self.value >= threshold)
        side = (self.value - self.low if threshold < self.value else self.high - self.value) / Z95
        if side <= 0:
            return float(self.value >= threshold)
        return float(stats.norm.sf((threshold - self.value) / side))

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """`size` draws from a two-piece normal centred on the value, each side scaled so the 95%
        interval is [low, high], clipped at 0. Always takes `size` normals from `rng`, so widening
        one figure leaves the others' draws as they were."""
        z = rng.standard_normal(size)
        if not self.has_interval:
            return np.full(size, max(self.value, 0.0))
        side = np.where(z < 0, self.value - self.low, self.high - self.value) / Z95
        return np.clip(self.value + z * side, 0.0, None)


NO_SPREAD = Figure.exact(0.0)


@dataclass(frozen=True)
class MeasuredRun:
    """What one real run measured, per worker and per step (seconds): the model's inputs."""

    batch_per_worker: int
    workers: int
    nodes: int
    link_class: str  # the link its all-reduce crossed (intra-node / inter-node); unused with 1 worker
    data_s: Figure
    forward_s: Figure
    backward_compute_s: Figure  # backward without gradient sync
    optimizer_s: Figure
    gradient_bytes: float  # all-reduced per step: parameters × bytes per gradient element
    exposed_comm_s: Figure | None = None  # sync probe: backward with sync − without (≥ 2 workers)
    step_cv: Figure = NO_SPREAD  # spread of per-rank compute times, std / mean
    other_s: Figure = NO_SPREAD  # the rest of a step, outside the marked phases
    ranks_per_host: int = 1  # ranks that computed at once on each machine while it was measured
    wrapper_s: Figure | None = None  # DDP's own cost per step, by a one-worker run's wrapper probe

    def __post_init__(self) -> None:
        if self.batch_per_worker < 1 or self.workers < 1 or not 1 <= self.nodes <= self.workers:
            raise ValueError(
                f"a measured run needs batch ≥ 1 and 1 ≤ nodes ≤ workers; got batch {self.batch_per_worker}, "
                f"{self.workers} workers on {self.nodes} nodes"
            )
        if self.exposed_comm_s is not None and self.workers < 2:
            raise ValueError("exposed communication is measured by the sync probe, which needs 2 or more workers")
        if self.wrapper_s is not None and self.workers > 1:
            raise ValueError("DDP's own cost is measured by a one-worker run; a run with more ran under DDP")
        if self.gradient_bytes < 0:
            raise ValueError(f"gradient bytes {self.gradient_bytes} is negative")
        if not 1 <= self.ranks_per_host <= self.workers:
            raise ValueError(f"{self.ranks_per_host} ranks per machine out of {self.workers} workers")


@dataclass(frozen=True)
class HostSharing:
    """The host-sharing probe's figure: a rank's compute with `ranks` ranks computing at once on its
    machine, over the same rank's alone on it (≥ 1 where they contend; 1 where they do not)."""

    slowdown: Figure
    ranks: int

    def __post_init__(self) -> None:
        if self.ranks < 2:
            raise ValueError(f"host sharing is measured with 2 or more ranks on a machine; got {self.ranks}")
        if self.slowdown.value <= 0:
            raise ValueError(f"a slowdown of {self.slowdown.value} is not a ratio of two times")

    def at(self, ranks: int, drawn: np.ndarray) -> np.ndarray:
        """slowdown(ranks), for each drawn slowdown at the probe's count (see the module's docstring)."""
        return 1.0 + (np.maximum(drawn, 1.0) - 1.0) * (max(ranks, 1) - 1) / (self.ranks - 1)


@dataclass(frozen=True)
class Prediction:
    """Predicted steady-state throughput (samples per second) at one placement, with its 95% interval."""

    workers: int
    nodes: int
    scaling: Scaling
    per_worker_batch: float
    throughput: float
    low: float
    high: float
    step_s: float
    terms: dict[str, float]  # STEP_TERMS (summing to step_s) and comm_s, the whole modelled all-reduce
    overlap: float
    overlap_source: str
    crosses_node_boundary: bool  # nodes > 1: the all-reduce runs over the inter-node link
    link_class: str  # the link the all-reduce was modelled over ("" with one worker)
    basis: str  # which inputs the figure rests on, in words
    ranks_per_host: int = 1  # ranks computing at once on each machine at this placement
    compute_factor: float = 1.0  # host sharing's factor on every compute term (1: none applied)


def link_class_for(nodes: int) -> str:
    """The bottleneck link of a ring over `nodes` nodes."""
    return INTRA_NODE if nodes == 1 else INTER_NODE


def exposed_comm(comm_s: np.ndarray, backward_compute_s: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """The all-reduce time not hidden under backward compute: max(0, comm − overlap · backward)."""
    return np.maximum(0.0, comm_s - overlap * backward_compute_s)


def infer_overlap(
    exposed_measured_s: np.ndarray,
    modelled_comm_s: np.ndarray,
    backward_compute_s: np.ndarray,
    straggler_s: np.ndarray | float = 0.0,
) -> np.ndarray:
    """The overlap that makes `exposed_comm` reproduce a measured run, clamped to [0, 1].

    The sync probe (backward with sync − without) also holds each rank's wait for the slowest
    (`straggler_s`), which the model adds as a term of its own: it is taken out first. Then
    overlap = (modelled comm − exposed) / backward, the inverse of `exposed_comm`. (1 − exposed /
    comm, the share of the all-reduce hidden, is a different quantity: put into `exposed_comm` it
    reproduces the measured run only when comm equals backward.)"""
    return np.clip(_hidden_share(exposed_measured_s, modelled_comm_s, backward_compute_s, straggler_s), 0.0, 1.0)


@lru_cache(maxsize=256)
def expected_max_standard_normal(n: int) -> float:
    """E[max of n independent standard normals] (0 for n = 1; 1/√π for n = 2), integrated
    numerically: E[M] = ∫₀^∞ (1 − Φⁿ) dx − ∫_{−∞}^0 Φⁿ dx."""
    if n <= 1:
        return 0.0
    power = lambda x: math.exp(n * float(stats.norm.logcdf(x)))
    upper, _ = integrate.quad(lambda x: 1.0 - power(x), 0.0, 40.0, limit=200)
    lower, _ = integrate.quad(power, -40.0, 0.0, limit=200)
    return upper - lower


def straggler_s(compute_s: np.ndarray, cv: np.ndarray, workers: int) -> np.ndarray:
    """The expected wait for the slowest of `workers` ranks: CV × compute × E[max of N standard normals]."""
    return cv * compute_s * expected_max_standard_normal(workers)


def predict(
    measured: MeasuredRun,
    links: dict[str, LinkFit],
    workers: int,
    nodes: int,
    scaling: Scaling = "weak",
    *,
    global_batch: int | None = None,
    default_overlap: float = DEFAULT_OVERLAP,
    draws: int = DRAWS,
    seed: int = SEED,
    sharing: HostSharing | None = None,
    ranks_per_host: int | None = None,
) -> Prediction:
    """Throughput at `workers` workers on `nodes` nodes from one measured run and the links (keyed by
    link class: intra-node, inter-node). Strong scaling keeps `global_batch` (by default the measured
    run's: its per-worker batch × its workers). `sharing`: the host-sharing probe's figure, applied at
    `ranks_per_host` ranks per machine (by default the workers per node, rounded up)."""
    _check_placement(links, workers, nodes, scaling)
    links = {name: link for name, link in links.items() if _has_figures(link)}
    per_worker = _per_worker_batch(measured, workers, scaling, global_batch)
    per_host = ranks_per_host if ranks_per_host is not None else math.ceil(workers / nodes)
    if not 1 <= per_host <= workers:
        raise ValueError(f"{per_host} ranks per machine out of {workers} workers")
    placement = (workers, nodes, per_worker / measured.batch_per_worker, per_host, sharing)
    point = _point(measured, links, sharing)
    overlap, source = _overlap(measured, links, point, default_overlap)
    terms = _terms(measured, point, overlap, *placement)
    step = float(_step_s(terms)[0])
    if step <= 0:
        raise ValueError("every measured time is zero: a step of no time has no throughput")
    sample = _sample(measured, links, draws, seed, sharing)
    drawn_step = _step_s(_terms(measured, sample, _overlap(measured, links, sample, default_overlap)[0], *placement))
    samples = workers * per_worker
    throughput = samples / step
    low, high = _throughput_interval(samples, drawn_step)
    link_class = link_class_for(nodes) if workers > 1 else ""
    return Prediction(
        workers=workers,
        nodes=nodes,
        scaling=scaling,
        per_worker_batch=per_worker,
        throughput=throughput,
        low=min(low, throughput),
        high=max(high, throughput),
        step_s=step,
        terms={name: float(values[0]) for name, values in terms.items() if name != "compute_factor"},
        overlap=float(overlap[0]),
        overlap_source=source,
        crosses_node_boundary=nodes > 1,
        link_class=link_class,
        basis=_basis(measured, links, link_class, scaling, per_worker, draws, source, sharing, per_host),
        ranks_per_host=per_host,
        compute_factor=float(terms["compute_factor"][0]),
    )


def predict_many(
    measured: MeasuredRun,
    links: dict[str, LinkFit],
    placements: Iterable[tuple[int, int]],
    scaling: Scaling = "weak",
    *,
    global_batch: int | None = None,
    default_overlap: float = DEFAULT_OVERLAP,
    draws: int = DRAWS,
    seed: int = SEED,
    sharing: HostSharing | None = None,
) -> list[Prediction]:
    """`predict` at each (workers, nodes), with the same draws (a fixed seed): neighbouring
    placements differ by the model, not by chance."""
    return [
        predict(
            measured,
            links,
            workers,
            nodes,
            scaling,
            global_batch=global_batch,
            default_overlap=default_overlap,
            draws=draws,
            seed=seed,
            sharing=sharing,
        )
        for workers, nodes in placements
    ]


@dataclass(frozen=True)
class _Inputs:
    """The model's inputs as arrays: one value each (the point) or one per Monte Carlo draw."""

    data_s: np.ndarray
    forward_s: np.ndarray
    backward_compute_s: np.ndarray
    optimizer_s: np.ndarray
    other_s: np.ndarray
    cv: np.ndarray
    exposed_measured_s: np.ndarray | None
    links: dict[str, tuple[np.ndarray, np.ndarray]]  # link class -> (α seconds, β seconds per byte)
    slowdown: np.ndarray  # the host-sharing probe's slowdown at its count of ranks (1 without one)
    wrapper_s: np.ndarray  # DDP's own cost per step (0 where none was measured or it is in the phases)


def _point(measured: MeasuredRun, links: dict[str, LinkFit], sharing: HostSharing | None) -> _Inputs:
    one = lambda value: np.array([value], dtype=float)
    exposed = measured.exposed_comm_s
    return _Inputs(
        one(measured.data_s.value),
        one(measured.forward_s.value),
        one(measured.backward_compute_s.value),
        one(measured.optimizer_s.value),
        one(measured.other_s.value),
        one(measured.step_cv.value),
        None if exposed is None else one(exposed.value),
        {name: (one(link.alpha_s), one(link.beta_s_per_byte)) for name, link in links.items()},
        one(1.0 if sharing is None else sharing.slowdown.value),
        one(0.0 if measured.wrapper_s is None else measured.wrapper_s.value),
    )


def _sample(
    measured: MeasuredRun, links: dict[str, LinkFit], draws: int, seed: int, sharing: HostSharing | None = None
) -> _Inputs:
    rng = np.random.default_rng(seed)
    figures = [measured.data_s, measured.forward_s, measured.backward_compute_s, measured.optimizer_s, measured.step_cv]
    data, forward, backward, optimizer, cv = (figure.draw(rng, draws) for figure in figures)
    exposed = None if measured.exposed_comm_s is None else measured.exposed_comm_s.draw(rng, draws)
    drawn = {}
    for name in sorted(links):
        link = links[name]
        alpha = Figure(link.alpha_s, link.alpha_low, link.alpha_high).draw(rng, draws)
        drawn[name] = (alpha, Figure(link.beta_s_per_byte, link.beta_low, link.beta_high).draw(rng, draws))
    other = measured.other_s.draw(rng, draws)  # drawn after the rest: adding it left their draws as they were
    slowdown = (Figure.exact(1.0) if sharing is None else sharing.slowdown).draw(rng, draws)  # and so on
    wrapper = (measured.wrapper_s or NO_SPREAD).draw(rng, draws)
    return _Inputs(data, forward, backward, optimizer, other, cv, exposed, drawn, slowdown, wrapper)


def _allreduce_s(inputs: _Inputs, link_class: str, gradient_bytes: float, workers: int) -> np.ndarray:
    if workers < 2 or gradient_bytes == 0:  # nothing to exchange: no call, not even its latency
        return np.zeros_like(inputs.data_s)
    alpha, beta = inputs.links[link_class]
    return np.asarray(ring_time(alpha, beta, "all_reduce", gradient_bytes, workers))


def _hidden_share(
    exposed_measured_s: np.ndarray,
    modelled_comm_s: np.ndarray,
    backward_compute_s: np.ndarray,
    straggler: np.ndarray | float,
) -> np.ndarray:
    """infer_overlap before clamping: above 1 or below 0 says the fabric and the probe disagree."""
    hidden = modelled_comm_s - np.maximum(exposed_measured_s - np.asarray(straggler, dtype=float), 0.0)
    backward = np.asarray(backward_compute_s, dtype=float)
    return np.divide(hidden, backward, out=np.zeros(np.broadcast(hidden, backward).shape), where=backward > 0)


def _overlap(
    measured: MeasuredRun, links: dict[str, LinkFit], inputs: _Inputs, default: float
) -> tuple[np.ndarray, str]:
    """The overlap (one per draw) and where it came from, said for the first draw (the point)."""
    fallback = np.full_like(inputs.data_s, default)
    said = f"default {default:g} (nothing hidden: the pessimistic bound)" if default == 0 else f"default {default:g}"
    if inputs.exposed_measured_s is None:
        return fallback, f"{said}; no run with 2 or more workers was measured"
    if measured.link_class not in links:
        return (
            fallback,
            f"{said}; the measured run's {measured.link_class} link has no fabric to compare its probe with",
        )
    comm = _allreduce_s(inputs, measured.link_class, measured.gradient_bytes, measured.workers)
    compute = inputs.data_s + inputs.forward_s + inputs.backward_compute_s + inputs.optimizer_s + inputs.other_s
    wait = straggler_s(compute, inputs.cv, measured.workers)
    share = _hidden_share(inputs.exposed_measured_s, comm, inputs.backward_compute_s, wait)
    source = f"inferred from the {measured.workers}-worker run's sync probe"
    if share[0] > 1:
        source += " (clamped to 1: the probe saw less than the fabric's all-reduce minus all of backward)"
    elif share[0] < 0:
        source += " (clamped to 0: the probe saw more than the fabric's whole all-reduce)"
    return np.clip(share, 0.0, 1.0), source


def _terms(
    measured: MeasuredRun,
    inputs: _Inputs,
    overlap: np.ndarray,
    workers: int,
    nodes: int,
    scale: float,
    per_host: int = 1,
    sharing: HostSharing | None = None,
) -> dict[str, np.ndarray]:
    """Each term of the step time at a placement; `scale` is the per-worker batch over the measured one,
    `per_host` the ranks computing at once on each machine (host sharing's factor on every compute term)."""
    factor = compute_factor(sharing, inputs.slowdown, measured.ranks_per_host, per_host)
    data, forward = inputs.data_s * scale * factor, inputs.forward_s * scale * factor
    backward = inputs.backward_compute_s * scale * factor
    optimizer, other = inputs.optimizer_s * factor, inputs.other_s * factor
    comm = _allreduce_s(inputs, link_class_for(nodes), measured.gradient_bytes, workers)
    compute = data + forward + backward + optimizer + other
    return {
        "data_s": data,
        "forward_s": forward,
        "backward_compute_s": backward,
        "optimizer_s": optimizer,
        "other_s": other,
        "wrapper_s": inputs.wrapper_s * (workers > 1),
        "exposed_comm_s": exposed_comm(comm, backward, overlap),
        "straggler_s": straggler_s(compute, inputs.cv, workers),
        "comm_s": comm,
        "compute_factor": factor,
    }


def compute_factor(
    sharing: HostSharing | None, slowdown: np.ndarray, measured_per_host: int, per_host: int
) -> np.ndarray:
    """What every compute term is multiplied by at `per_host` ranks per machine, the measured run having
    had `measured_per_host`: slowdown(per_host) / slowdown(measured_per_host); 1 without a probe."""
    if sharing is None:
        return np.ones_like(slowdown)
    return sharing.at(per_host, slowdown) / sharing.at(measured_per_host, slowdown)


def _step_s(terms: dict[str, np.ndarray]) -> np.ndarray:
    """The terms added one after another, in one order for the point and every draw (np.sum over stacked
    terms sums a single column pairwise and many columns row by row: the point would differ in its last bit)."""
    total = np.zeros(np.shape(terms[STEP_TERMS[0]]))
    for name in STEP_TERMS:
        total = total + terms[name]
    return total


def _throughput_interval(samples: float, drawn_step_s: np.ndarray) -> tuple[float, float]:
    """The central LEVEL quantiles of the throughput over the drawn step times."""
    with np.errstate(divide="ignore"):  # a draw of all-zero times: infinite throughput, kept as such
        drawn = samples / drawn_step_s
    low, high = np.percentile(drawn, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(low), float(high)


def _check_placement(links: dict[str, LinkFit], workers: int, nodes: int, scaling: str) -> None:
    if scaling not in ("weak", "strong"):
        raise ValueError(f"scaling {scaling!r}: expected 'weak' or 'strong'")
    if workers < 1 or not 1 <= nodes <= workers:
        raise ValueError(f"a placement needs 1 ≤ nodes ≤ workers; got {workers} workers on {nodes} nodes")
    needed = link_class_for(nodes)
    if workers > 1 and needed not in links:
        have = ", ".join(sorted(links)) or "none"
        raise ValueError(
            f"{workers} workers on {nodes} node(s) all-reduce over the {needed} link, which has no fit (have: {have}): "
            "fit one from a fabric sweep or state one, e.g. '100Gbit/s,5us'"
        )
    link = links.get(needed)
    if workers > 1 and link is not None and not _has_figures(link):
        raise ValueError(f"the {needed} link has no fitted figures: {link.invalid_reason}")


def _has_figures(link: LinkFit) -> bool:
    """False for a link that could not be fitted (its figures are NaN): it is treated as absent."""
    return math.isfinite(link.alpha_s) and math.isfinite(link.beta_s_per_byte)


def _per_worker_batch(measured: MeasuredRun, workers: int, scaling: str, global_batch: int | None) -> float:
    if scaling == "weak":
        return float(measured.batch_per_worker)
    total = global_batch if global_batch is not None else measured.batch_per_worker * measured.workers
    if total < workers:
        raise ValueError(f"a global batch of {total} cannot be split over {workers} workers")
    return total / workers


def _basis(
    measured: MeasuredRun,
    links: dict[str, LinkFit],
    link_class: str,
    scaling: str,
    per_worker: float,
    draws: int,
    overlap_source: str,
    sharing: HostSharing | None = None,
    per_host: int = 1,
) -> str:
    compute = f"compute from the measured {measured.workers}-worker run (batch {measured.batch_per_worker} per worker)"
    if per_worker != measured.batch_per_worker:
        compute += f", data/forward/backward scaled to batch {per_worker:g} ({scaling} scaling), optimizer as measured"
    parts = [compute, _sharing_basis(sharing, measured.ranks_per_host, per_host)]
    if link_class and measured.workers == 1:
        wrapper = measured.wrapper_s
        parts.append(
            "DDP's own cost not measured (the 1-worker run has no wrapper probe): 0 added"
            if wrapper is None
            else f"DDP's own cost {wrapper.value * 1e3:.3g} ms per step, by the 1-worker run's wrapper probe"
        )
    if link_class:
        link = links[link_class]
        comm = (
            f"all-reduce of {measured.gradient_bytes / 1e6:.3g} MB over the {link_class} link ({link.backend}: "
            f"α {link.alpha_s * 1e6:.3g} µs, {link.bandwidth_bytes_per_s / 1e9:.3g} GB/s"
        )
        parts.append(comm + (f"; INVALID: {link.invalid_reason})" if not link.valid else ")"))
        parts.append(f"overlap {overlap_source}")
    parts.append(f"slowest-rank wait from a compute CV of {measured.step_cv.value:.3g}")
    parts.append(f"95% interval from {draws} Monte Carlo draws (seed fixed)")
    return "; ".join(parts)


def _sharing_basis(sharing: HostSharing | None, measured_per_host: int, per_host: int) -> str:
    if sharing is None:
        if per_host == measured_per_host:
            return f"{per_host} rank(s) per machine, as measured"
        return (
            f"{per_host} rank(s) per machine (measured with {measured_per_host}); host sharing not probed: "
            "compute as measured"
        )
    factor = float(compute_factor(sharing, np.array([sharing.slowdown.value]), measured_per_host, per_host)[0])
    said = (
        f"compute x{factor:.3g} for {per_host} rank(s) per machine (measured with {measured_per_host}): host "
        f"sharing probed at {sharing.slowdown.value:.3g}x with {sharing.ranks} ranks computing at once on a machine"
    )
    return said + (", extrapolated beyond it" if per_host > sharing.ranks else "")
