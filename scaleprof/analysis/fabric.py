"""The fabric: how long a collective takes over a link, fitted from a measured sweep of collectives.

A link's model is the ring algorithm's alpha-beta cost: one call of a collective over n ranks with a
message of S bytes takes

    t = α · steps + β · S · factor

where α is the latency of one ring step (seconds), β the time per byte on the link (seconds per
byte, the inverse of its bandwidth), and (steps, factor) the ring's step count and the share of S
each rank sends (`ring_terms`): all-reduce 2(n−1) steps and 2(n−1)/n · S, reduce-scatter and
all-gather (n−1) steps and (n−1)/n · S. S follows nccl-tests: for all-reduce the buffer each rank
holds, for all-gather and reduce-scatter world × each rank's chunk (all-gather's output,
reduce-scatter's input). The byte factor is nccl-tests' bus bandwidth factor, so 1/β is the bus
bandwidth the link reaches on large messages.

The sweep (`fabric.parquet`) has one row per timed repeat: collective, backend, link_class, world,
bytes, repeat, time_s (the slowest rank's time for one call). `fit_fabric` fits α and β per
(backend, link class) over every collective, size and world in it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather")
SWEEP_COLUMNS = ["collective", "backend", "link_class", "world", "bytes", "repeat", "time_s"]
LEVEL = 0.95


def ring_terms(collective: str, world: int) -> tuple[float, float]:
    """(steps, byte factor) of the ring algorithm for `collective` over `world` ranks: the one
    definition both fitting and prediction use. One rank has nothing to exchange: (0, 0)."""
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}: expected one of {', '.join(COLLECTIVES)}")
    if world < 2:
        return 0.0, 0.0
    share = (world - 1) / world
    if collective == "all_reduce":  # a reduce-scatter, then an all-gather
        return 2.0 * (world - 1), 2.0 * share
    return float(world - 1), share


def ring_time(
    alpha_s: float | np.ndarray, beta_s_per_byte: float | np.ndarray, collective: str, message_bytes: float, world: int
) -> float | np.ndarray:
    """Seconds for one call: α · steps + β · bytes · factor (numbers or arrays of α and β)."""
    steps, factor = ring_terms(collective, world)
    return alpha_s * steps + beta_s_per_byte * message_bytes * factor


def bus_bandwidth(collective: str, message_bytes: float, world: int, time_s: float) -> float:
    """nccl-tests' bus bandwidth (bytes per second) of one timed call (NVIDIA/nccl-tests,
    doc/PERFORMANCE.md): algorithm bandwidth = bytes / time; bus bandwidth = algbw · 2(n−1)/n for
    all-reduce and algbw · (n−1)/n for reduce-scatter and all-gather. It does not depend on n for a
    ring running at the link's speed, so runs at different worlds compare. These are the ring's byte
    factors (`ring_terms`): the formula is defined once, there."""
    _, factor = ring_terms(collective, world)
    return message_bytes / time_s * factor


@dataclass(frozen=True)
class LinkFit:
    """α and β of one (backend, link class), with 95% intervals; `valid` says whether they describe the
    sweep (`invalid_reason` says why not)."""

    backend: str
    link_class: str
    alpha_s: float  # latency of one ring step
    alpha_low: float
    alpha_high: float
    beta_s_per_byte: float  # inverse bus bandwidth
    beta_low: float
    beta_high: float
    bandwidth_bytes_per_s: float  # 1 / β
    points: int  # sweep rows fitted (0 for a stated link)
    worlds: tuple[int, ...]
    max_relative_error: float  # the fitted model against the worst row, |model / measured − 1|
    valid: bool
    invalid_reason: str


def fit_link(sweep_rows: pd.DataFrame) -> LinkFit:
    """Fit α and β of one (backend, link class) by least squares over all its rows (rows with fewer
    than 2 ranks, or without a positive time, are left out).

    Each row is divided by its time, so the fit minimises relative error: times run from
    microseconds (latency-bound small messages) to seconds (bandwidth-bound large ones), and plain
    least squares would let the largest messages decide both parameters, leaving α to chance. The
    first pass divides by the measured time, the second (the fit reported) by the first pass's model
    time: a noisy divisor sits in the regressors and biases both estimates low by about the noise's
    variance (half a standard error with 3% noise and 270 rows). The 95% intervals are the analytic
    ones of the weighted fit (covariance s²(XᵀX)⁻¹, t quantile), which assume independent relative
    errors: repeats that share a slow period make them too narrow.
    A negative estimate has no meaning; it is fixed at 0 and the other refitted alone; the fit is
    invalid when the data exclude 0 (the whole interval is negative) or β is at 0 (no bandwidth
    could be resolved).
    """
    rows = _usable(sweep_rows)
    backend, link_class = _one_link(rows)
    regressors, time_s = _regressors(rows), rows["time_s"].to_numpy(dtype=float)
    if len(rows) < 3 or np.linalg.matrix_rank(regressors / np.linalg.norm(regressors, axis=0)) < 2:
        raise ValueError(
            f"fitting the {backend} {link_class} link needs three or more timed calls at two or more "
            "message sizes, to separate latency from bandwidth"
        )
    first, _ = _least_squares(regressors / time_s[:, None], np.ones(len(rows)))
    model_s = regressors @ np.maximum(first, 0.0)
    weight = np.where(model_s > 0, model_s, time_s)
    (alpha, beta), (alpha_ci, beta_ci), reason = _fit_non_negative(regressors / weight[:, None], time_s / weight)
    model = regressors @ np.array([alpha, beta]) / time_s
    return LinkFit(
        backend=backend,
        link_class=link_class,
        alpha_s=alpha,
        alpha_low=alpha_ci[0],
        alpha_high=alpha_ci[1],
        beta_s_per_byte=beta,
        beta_low=beta_ci[0],
        beta_high=beta_ci[1],
        bandwidth_bytes_per_s=1 / beta if beta > 0 else math.inf,
        points=len(rows),
        worlds=tuple(sorted(int(w) for w in rows["world"].unique())),
        max_relative_error=float(np.max(np.abs(model - 1))),
        valid=not reason,
        invalid_reason=reason,
    )


def fit_fabric(sweep: pd.DataFrame) -> list[LinkFit]:
    """One LinkFit per (backend, link class) in the sweep, sorted; a pair whose rows cannot be
    fitted comes back invalid with the reason, not as an exception."""
    missing = [name for name in SWEEP_COLUMNS if name not in sweep]
    if missing:
        raise ValueError(f"the fabric sweep lacks column(s) {', '.join(missing)}; expected {', '.join(SWEEP_COLUMNS)}")
    fits = []
    for (backend, link_class), rows in sweep.groupby(["backend", "link_class"], sort=True):
        try:
            fits.append(fit_link(rows))
        except ValueError as error:
            fits.append(_unfitted(str(backend), str(link_class), len(rows), str(error)))
    return fits


def collective_time(link: LinkFit, collective: str, message_bytes: float, world: int) -> tuple[float, float, float]:
    """Predicted seconds of one call (mid, low, high). The bounds put both parameters at their own
    bounds together, which ignores that the fit's α and β errors are negatively correlated: the
    interval is conservative (wider than the joint 95% one)."""
    return (
        float(ring_time(link.alpha_s, link.beta_s_per_byte, collective, message_bytes, world)),
        float(ring_time(link.alpha_low, link.beta_low, collective, message_bytes, world)),
        float(ring_time(link.alpha_high, link.beta_high, collective, message_bytes, world)),
    )


_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_RATE = re.compile(_NUMBER + r"\s*([kMGT]i?)?(bit/s|b/s|bps|B/s|Bps)")
_LATENCY = re.compile(_NUMBER + r"\s*(s|ms|us|µs|ns)")
_PREFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def stated_link(spec: str, link_class: str = "inter-node") -> LinkFit:
    """A link a user states instead of measuring: "BANDWIDTH,LATENCY" such as "100Gbit/s,5us" or
    "25GB/s,2us" (either order). Bandwidth in bit/s or B/s with a k, M, G, T prefix (decimal, as
    network and vendor figures are; Ki, Mi, Gi, Ti binary); latency per ring step in s, ms, us or ns.
    The intervals have zero width: a stated figure carries no measured uncertainty."""
    parts = [part.strip() for part in spec.split(",")]
    rates = [_RATE.fullmatch(part) for part in parts]
    latencies = [_LATENCY.fullmatch(part) for part in parts]
    for part, rate, latency in zip(parts, rates, latencies):
        if rate is None and latency is None:
            raise ValueError(
                f"cannot read the link {spec!r}: {part!r} is neither a bandwidth (e.g. 100Gbit/s, 25GB/s, 800MB/s) "
                "nor a latency (e.g. 5us, 0.01ms); expected 'BANDWIDTH,LATENCY' such as '100Gbit/s,5us'"
            )
    rate = next((m for m in rates if m), None)
    latency = next((m for m in latencies if m), None)
    if len(parts) != 2 or rate is None or latency is None:
        raise ValueError(f"cannot read the link {spec!r}: expected one bandwidth and one latency, e.g. '100Gbit/s,5us'")
    bytes_per_s = float(rate[1]) * _PREFIX[rate[2] or ""] / (8 if rate[3] in ("bit/s", "b/s", "bps") else 1)
    if bytes_per_s <= 0:
        raise ValueError(f"cannot read the link {spec!r}: bandwidth {rate[0]!r} is not positive")
    alpha, beta = float(latency[1]) * _SECONDS[latency[2]], 1 / bytes_per_s
    return LinkFit(
        backend="stated",
        link_class=link_class,
        alpha_s=alpha,
        alpha_low=alpha,
        alpha_high=alpha,
        beta_s_per_byte=beta,
        beta_low=beta,
        beta_high=beta,
        bandwidth_bytes_per_s=bytes_per_s,
        points=0,
        worlds=(),
        max_relative_error=math.nan,
        valid=True,
        invalid_reason="",
    )


def _usable(rows: pd.DataFrame) -> pd.DataFrame:
    unknown = sorted(set(rows["collective"]) - set(COLLECTIVES))
    if unknown:
        raise ValueError(f"unknown collective(s) {', '.join(map(str, unknown))}: expected {', '.join(COLLECTIVES)}")
    keep = (rows["world"] >= 2) & np.isfinite(rows["time_s"]) & (rows["time_s"] > 0) & (rows["bytes"] >= 0)
    return rows[keep]


def _one_link(rows: pd.DataFrame) -> tuple[str, str]:
    pairs = rows[["backend", "link_class"]].drop_duplicates()
    if len(pairs) != 1:
        found = "none" if pairs.empty else ", ".join(f"{b} {c}" for b, c in pairs.itertuples(index=False))
        raise ValueError(f"fit_link fits one (backend, link class) at a time; got {found}")
    backend, link_class = pairs.iloc[0]
    return str(backend), str(link_class)


def _regressors(rows: pd.DataFrame) -> np.ndarray:
    """The regressors (steps, bytes × factor) of each row."""
    terms = np.array([ring_terms(c, int(w)) for c, w in zip(rows["collective"], rows["world"])], dtype=float)
    size = rows["bytes"].to_numpy(dtype=float)
    return np.column_stack([terms[:, 0], size * terms[:, 1]])


def _least_squares(design: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parameters p of design @ p ≈ target and their 95% half-widths (t quantile; NaN with no residual
    degrees of freedom). Columns are scaled first: steps and bytes differ by ten orders of magnitude."""
    scale = np.linalg.norm(design, axis=0)
    scaled = design / scale
    params, *_ = np.linalg.lstsq(scaled, target, rcond=None)
    residual = target - scaled @ params
    dof = len(design) - design.shape[1]
    if dof <= 0:
        return params / scale, np.full(len(params), math.nan)
    covariance = float(residual @ residual) / dof * np.linalg.inv(scaled.T @ scaled)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, dof)) * np.sqrt(np.diag(covariance))
    return params / scale, half / scale


def _fit_non_negative(
    design: np.ndarray, target: np.ndarray
) -> tuple[tuple[float, float], tuple[tuple[float, float], ...], str]:
    """(α, β), their intervals (low bounds at 0) and the invalid reason (empty when valid)."""
    params, half = _least_squares(design, target)
    names = ("latency α", "time per byte β")
    negative = [i for i in (0, 1) if params[i] < 0]
    if not negative:
        bounds = tuple((max(0.0, float(p - h)), float(p + h)) for p, h in zip(params, half))
        return (float(params[0]), float(params[1])), bounds, ""
    if len(negative) == 2:
        return (0.0, 0.0), ((0.0, 0.0), (0.0, 0.0)), "latency α and time per byte β both fitted negative"
    fixed = negative[0]
    free = 1 - fixed
    value, free_half = _least_squares(design[:, [free]], target)
    estimates, intervals = [0.0, 0.0], [(0.0, 0.0), (0.0, 0.0)]
    estimates[free] = float(value[0])
    intervals[free] = (max(0.0, float(value[0] - free_half[0])), float(value[0] + free_half[0]))
    intervals[fixed] = (0.0, max(0.0, float(params[fixed] + half[fixed])))
    reason = ""
    if params[fixed] + half[fixed] < 0:
        reason = (
            f"{names[fixed]} fitted negative ({params[fixed]:.3g}, 95% up to {params[fixed] + half[fixed]:.3g}): the "
            "times do not follow latency + size / bandwidth (e.g. the algorithm changes with size); fixed at 0"
        )
    elif fixed == 1:
        reason = "time per byte β fitted at or below 0: the sweep's sizes are too small to resolve a bandwidth"
    return (estimates[0], estimates[1]), tuple(intervals), reason


def _unfitted(backend: str, link_class: str, points: int, reason: str) -> LinkFit:
    nan = math.nan
    return LinkFit(backend, link_class, nan, nan, nan, nan, nan, nan, nan, points, (), nan, False, reason)
