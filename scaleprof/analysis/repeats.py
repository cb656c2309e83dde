"""Repeats, cross-validation and divergence: how much of a difference is noise.

- `spread_table`: per model x placement over its repeats, the median, min-max, coefficient of
  variation and a 95% t-interval of throughput and quality; flags what varies more than allowed.
- `cv_table`: per model, k-fold mean and standard deviation of each metric beside the fixed split.
- `add_loss_divergence`: how far each run's training-loss curve is from the 1-worker run's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from scaleprof.analysis.quality import RUN_METRICS
from scaleprof.records import RunKind, RunStatus

SPREAD_METRICS = ["throughput", "epoch_time_s", "accuracy", "f1", "roc_auc"]


def describe_values(values: pd.Series) -> dict[str, float]:
    """Median, min, max, coefficient of variation and a 95% t-interval of the mean (n >= 2)."""
    v = values.dropna().to_numpy(dtype=float)
    out = {"median": np.nan, "min": np.nan, "max": np.nan, "cv": np.nan, "ci95_low": np.nan, "ci95_high": np.nan}
    if len(v) == 0:
        return out
    out.update(median=float(np.median(v)), min=float(v.min()), max=float(v.max()))
    if len(v) >= 2:
        mean, sd = float(v.mean()), float(v.std(ddof=1))
        out["cv"] = sd / mean if mean else np.nan
        half = float(stats.t.ppf(0.975, len(v) - 1)) * sd / np.sqrt(len(v))
        out.update(ci95_low=mean - half, ci95_high=mean + half)
    return out


def spread_table(runs: pd.DataFrame, noisy_cv: float) -> pd.DataFrame:
    rows = []
    fixed = runs[runs["kind"] == RunKind.FIXED_SPLIT]
    for (model, placement), group in fixed.groupby(["model", "placement"], sort=False):
        ok = group[group["status"] == RunStatus.OK]
        row = {
            "model": model,
            "placement": placement,
            "device": group["device"].iloc[0],
            "workers": int(group["workers"].iloc[0]),
            "runs": len(group),
            "runs_ok": len(ok),
            "status": "ok" if len(ok) == len(group) else ", ".join(sorted(set(group["status"]))),
            "reason": "; ".join(sorted({r for r in group["reason"] if r})),
        }
        noisy = []
        for metric in SPREAD_METRICS:
            if metric not in ok:
                continue
            d = describe_values(ok[metric])
            row.update({f"{metric}_{k}": v for k, v in d.items()})
            if np.isfinite(d["cv"]) and d["cv"] > noisy_cv:
                noisy.append(metric)
        row["noisy"] = bool(noisy)
        row["noisy_metrics"] = ", ".join(noisy)
        rows.append(row)
    return pd.DataFrame(rows)


def cv_table(runs: pd.DataFrame) -> pd.DataFrame:
    cv = runs[(runs["kind"] == RunKind.CV) & (runs["status"] == RunStatus.OK)]
    rows = []
    for model, folds in cv.groupby("model", sort=False):
        placement = folds["placement"].iloc[0]
        fixed = runs[
            (runs["kind"] == RunKind.FIXED_SPLIT)
            & (runs["status"] == RunStatus.OK)
            & (runs["model"] == model)
            & (runs["placement"] == placement)
        ]
        row = {"model": model, "placement": placement, "folds": len(folds)}
        for metric in RUN_METRICS:
            if metric not in folds:
                continue
            row[f"{metric}_mean"] = float(folds[metric].mean())
            row[f"{metric}_std"] = float(folds[metric].std(ddof=1)) if len(folds) > 1 else np.nan
            row[f"{metric}_fixed_split"] = float(fixed[metric].median()) if len(fixed) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def add_loss_divergence(runs: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per epoch, the train-loss difference from the same model's first 1-worker run on the same
    device kind; per run, its mean absolute value (`loss_divergence`). Weak scaling changes the
    global batch, so curves legitimately differ: this shows by how much instead of hiding it."""
    runs, epochs = runs.copy(), epochs.copy()
    runs["loss_divergence"] = np.nan
    if epochs.empty:
        epochs["train_loss_delta_vs_1w"] = pd.Series(dtype=float)
        return runs, epochs
    meta = runs.set_index("run_id")
    reference = runs[(runs["kind"] == RunKind.FIXED_SPLIT) & (runs["status"] == RunStatus.OK) & (runs["workers"] == 1)]
    reference = reference.sort_values("index").groupby(["model", "device"])["run_id"].first()
    curves = epochs.set_index(["run_id", "epoch"])["train_loss"]
    deltas = []
    for run_id, epoch in zip(epochs["run_id"], epochs["epoch"]):
        ref = reference.get((meta.at[run_id, "model"], meta.at[run_id, "device"])) if run_id in meta.index else None
        deltas.append(curves[(run_id, epoch)] - curves[(ref, epoch)] if ref and (ref, epoch) in curves else np.nan)
    epochs["train_loss_delta_vs_1w"] = deltas
    divergence = epochs.groupby("run_id")["train_loss_delta_vs_1w"].apply(lambda d: d.abs().mean())
    runs["loss_divergence"] = runs["run_id"].map(divergence)
    return runs, epochs
