"""Speedup and scaling efficiency against the 1-worker run of the same model and device kind.

S(N) = X(N) / X(1) and E(N) = S(N) / N, whether the study used weak scaling (per-worker batch fixed)
or strong scaling (global batch fixed); the report says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scaleprof.records import RunKind, RunStatus

if TYPE_CHECKING:
    from scaleprof.analysis.usl import USLFit


def speedup(throughput: float, baseline_throughput: float) -> float:
    if not baseline_throughput or not np.isfinite(baseline_throughput):
        return float("nan")
    return throughput / baseline_throughput


def scaling_efficiency(speedup: Any, workers: Any) -> Any:
    """E(N) = S(N) / N (numbers or columns)."""
    return speedup / workers


def baselines(runs: pd.DataFrame) -> pd.Series:
    """X(1) per (model, device): the median throughput of its ok fixed-split 1-worker runs."""
    ok_single = runs[(runs["status"] == RunStatus.OK) & (runs["workers"] == 1) & (runs["kind"] == RunKind.FIXED_SPLIT)]
    return ok_single.groupby(["model", "device"])["throughput"].median()


def add_scaling_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `baseline_throughput`, `speedup` and `scaling_efficiency` to a runs table.

    The baseline of a (model, device) group is the median throughput of its ok 1-worker runs;
    a group without one gets NaN, never a made-up baseline.
    """
    runs = runs.copy()
    one_worker = baselines(runs)
    keys = list(zip(runs["model"], runs["device"]))
    runs["baseline_throughput"] = [one_worker.get(k, float("nan")) for k in keys]
    runs["speedup"] = [speedup(x, b) for x, b in zip(runs["throughput"], runs["baseline_throughput"])]
    runs["scaling_efficiency"] = scaling_efficiency(runs["speedup"], runs["workers"])
    add_efficiency_interval(runs)
    # cross-validation folds repeat the reference placement: not a scaling point
    runs.loc[runs["kind"] == RunKind.CV, ["speedup", "scaling_efficiency", *EFFICIENCY_INTERVAL]] = float("nan")
    return runs


EFFICIENCY_INTERVAL = ["scaling_efficiency_low", "scaling_efficiency_high"]


def add_efficiency_interval(runs: pd.DataFrame) -> None:
    """The 95% interval of each run's scaling efficiency, carried from its own throughput interval and
    its baseline's (the 1-worker runs' median bounds), as independent measurements."""
    from scaleprof.analysis.steady import ratio_interval

    for bound in EFFICIENCY_INTERVAL:
        runs[bound] = float("nan")
    if "throughput_low" not in runs:
        return
    ok_single = runs[(runs["status"] == RunStatus.OK) & (runs["workers"] == 1) & (runs["kind"] == RunKind.FIXED_SPLIT)]
    bounds = ok_single.groupby(["model", "device"])[["throughput_low", "throughput_high"]].median()
    for i, run in runs.iterrows():
        key = (run["model"], run["device"])
        if key not in bounds.index:
            continue
        low, high = ratio_interval(
            run["scaling_efficiency"],
            (run["throughput"], run["throughput_low"], run["throughput_high"]),
            (run["baseline_throughput"], bounds.at[key, "throughput_low"], bounds.at[key, "throughput_high"]),
        )
        if run["workers"] == 1 and run["throughput"] == run["baseline_throughput"]:
            low = high = 1.0  # the baseline itself: exactly 1 by definition
        runs.at[i, "scaling_efficiency_low"], runs.at[i, "scaling_efficiency_high"] = low, high


def _fittable_groups(runs: pd.DataFrame):
    """(model, device, runs) for each group of ok fixed-split runs measured at 2+ worker counts."""
    ok = runs[(runs["status"] == RunStatus.OK) & runs["throughput"].notna() & (runs["kind"] == RunKind.FIXED_SPLIT)]
    for (model, device), group in ok.groupby(["model", "device"], sort=False):
        if group["workers"].nunique() >= 2:
            yield model, device, group


def _flagged(group: pd.DataFrame, column: str) -> list[str]:
    """The placements (in study order) of the group with a run flagged in `column`."""
    if column not in group:
        return []
    flagged = group[group[column].eq(True)]
    names = flagged["placement"] if "placement" in flagged else flagged["workers"].map("{} workers".format)
    return list(dict.fromkeys(str(n) for n in names))


@dataclass(frozen=True)
class FitBasis:
    """What a fitted law rests on, for every figure drawn from it: whether its parameters keep their meaning,
    its worker counts and runs, whether it is exact (no band), and which of its placements had a contended
    or a low-confidence run."""

    valid: bool
    invalid_reason: str  # "" when valid
    worker_counts: int
    points: int  # runs
    exact_fit: bool  # as many parameters as points: no band
    contended: tuple[str, ...]  # placements with a contended run, in study order
    low_confidence: tuple[str, ...]  # placements with a low-confidence run, in study order

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> FitBasis:
        """From a row of the fits or predictions table (its `columns`)."""
        return cls(
            valid=bool(row["valid"]),
            invalid_reason=str(row["invalid_reason"] or ""),
            worker_counts=int(row["worker_counts"]),
            points=int(row["points"]),
            exact_fit=bool(row["exact_fit"]),
            contended=_placements(row["contended_placements"]),
            low_confidence=_placements(row["low_confidence_placements"]),
        )

    def columns(self, refused: str) -> dict[str, Any]:
        """As the fits and predictions tables store it; `caveats` (`words`) says all of it in one line."""
        return {
            "valid": self.valid,
            "invalid_reason": self.invalid_reason,
            "worker_counts": self.worker_counts,
            "points": self.points,
            "exact_fit": self.exact_fit,
            "contended_placements": ", ".join(self.contended),
            "low_confidence_placements": ", ".join(self.low_confidence),
            "caveats": self.words(refused),
        }

    def words(self, refused: str) -> str:
        """All of it in one line, starting with `refused` ("not used", "no prediction") and the reason when the
        law is outside its meaning: the tables' `caveats` column, and the report's."""
        parts = [
            f"from {self.worker_counts} worker counts ({self.points} runs)"
            + (", exact fit (no band)" if self.exact_fit else "")
        ]
        flags: dict[str, list[str]] = {}
        for placements, label in ((self.contended, "contended"), (self.low_confidence, "low confidence")):
            for placement in placements:
                flags.setdefault(placement, []).append(label)
        parts += [f"{placement} {', '.join(labels)}" for placement, labels in flags.items()]
        if not self.valid:
            parts.insert(0, f"{refused}: {self.invalid_reason}")
        return "; ".join(parts)


def _placements(listed: Any) -> tuple[str, ...]:
    """A `, `-separated column of placement names (names have no commas: config.NAME_PATTERN) as a tuple."""
    return tuple(name for name in str(listed or "").split(", ") if name)


def fit_basis(group: pd.DataFrame, fit: USLFit) -> FitBasis:
    """What a fit to `group` rests on."""
    return FitBasis(
        valid=fit.valid,
        invalid_reason=fit.invalid_reason,
        worker_counts=int(group["workers"].nunique()),
        points=fit.points,
        exact_fit=fit.dof == 0,
        contended=tuple(_flagged(group, "contended")),
        low_confidence=tuple(_flagged(group, "low_confidence")),
    )


# How far past the largest measured worker count a fitted law is read: its curves are drawn up to this multiple
# (at least 16 workers), and a peak beyond that is not stated as a worker count (the fit's arithmetic, not
# something the measured points place).
LAW_REACH = 4


def law_reach(max_measured_workers: int) -> int:
    """The largest worker count a fitted law is read at."""
    return max(16, LAW_REACH * int(max_measured_workers))


def scaling_fits(runs: pd.DataFrame) -> pd.DataFrame:
    """One scaling-law fit per (model, device) over its ok fixed-split runs (repeats are separate
    points), with a hold-out check: refit without the largest worker count and predict it. A fit
    whose parameters are outside their meaning stays here, marked (`valid`, `invalid_reason`), with
    no peak and no hold-out prediction: nothing else uses it."""
    from scaleprof.analysis.usl import fit_usl

    rows = []
    for model, device, group in _fittable_groups(runs):
        counts = sorted(group["workers"].unique())
        fit = fit_usl(group["workers"], group["throughput"])
        row = {
            "model": model,
            "device": device,
            "law": fit.model,
            "points": fit.points,
            "dof": fit.dof,
            "alpha": fit.alpha,
            "alpha_se": fit.alpha_se,
            "beta": fit.beta,
            "beta_se": fit.beta_se,
            "gamma": fit.gamma,
            "gamma_se": fit.gamma_se,
            "peak_workers": fit.peak_workers if fit.valid else float("nan"),
            "peak_placed": bool(fit.valid and fit.peak_workers <= law_reach(int(counts[-1]))),
            "max_measured_workers": int(counts[-1]),
            **fit_basis(group, fit).columns("not used"),
        }
        if len(counts) >= 3 and fit.valid:
            row.update(_holdout(group, int(counts[-1])))
        rows.append(row)
    return pd.DataFrame(rows)


def _holdout(group: pd.DataFrame, largest: int) -> dict[str, Any]:
    """Refit without the largest worker count and predict it; nothing when that refit's parameters
    are outside their meaning (its prediction would be a number from a law that does not apply)."""
    from scaleprof.analysis.usl import fit_usl

    rest = group[group["workers"] != largest]
    refit = fit_usl(rest["workers"], rest["throughput"])
    if not refit.valid:
        return {}
    predicted = float(refit.predict(largest))
    measured = float(group.loc[group["workers"] == largest, "throughput"].median())
    return {
        "holdout_workers": largest,
        "holdout_predicted": predicted,
        "holdout_measured": measured,
        "holdout_error_pct": 100 * (predicted - measured) / measured,
    }


def predictions(runs: pd.DataFrame, workers: list[int], level: float = 0.95) -> pd.DataFrame:
    """Predicted throughput (with a confidence band) at the given worker counts, per (model, device),
    and the scaling efficiency that throughput would have: against the *measured* 1-worker baseline,
    as for measured runs (NaN without one), so one word means one number. Each row carries what its
    fit rests on (`fit_basis`); a law outside its meaning predicts nothing (NaN) and says why."""
    from scaleprof.analysis.usl import fit_usl

    rows = []
    one_worker = baselines(runs)
    for model, device, group in _fittable_groups(runs):
        fit = fit_usl(group["workers"], group["throughput"])
        basis = fit_basis(group, fit).columns("no prediction")
        counts = np.asarray(workers, dtype=float)
        low, high = fit.interval(counts, level)
        predicted = fit.predict(counts) if fit.valid else np.full(len(counts), np.nan)
        if not fit.valid:
            low = high = predicted
        baseline = float(one_worker.get((model, device), float("nan")))
        for n, x, lo, hi in zip(workers, predicted, low, high):
            rows.append(
                {
                    "model": model,
                    "device": device,
                    "workers": n,
                    "throughput": float(x),
                    "low": max(float(lo), 0.0) if np.isfinite(lo) else float(lo),
                    "high": float(hi),
                    "efficiency": float(scaling_efficiency(speedup(float(x), baseline), n)),
                    "law": fit.model,
                    "extrapolated": n > group["workers"].max(),
                    **basis,
                }
            )
    return pd.DataFrame(rows)
