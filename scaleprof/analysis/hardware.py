"""Inference results and the hardware comparison table a reader looks for first."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaleprof.records import RunKind, RunStatus


def inference_table(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records)


def hardware_table(runs: pd.DataFrame, inference: pd.DataFrame) -> pd.DataFrame:
    """Per model x device kind: memory at the largest inference batch, best inference throughput,
    training epoch time, peak utilisation, cost and energy per training sample (best 1-worker run)."""
    ok_runs = runs[(runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT)].copy()
    if "model_label" in ok_runs:  # a swept model is one model: inference benchmarks it by its label
        ok_runs["model"] = ok_runs["model_label"].fillna(ok_runs["model"])
    keys = set(zip(ok_runs["model"], ok_runs["device"]))
    ok_inf = inference[inference["status"] == RunStatus.OK] if not inference.empty else inference
    if not ok_inf.empty:
        keys |= set(zip(ok_inf["model"], ok_inf["device"]))
    rows = []
    for model, device in sorted(keys):
        row: dict = {"model": model, "device": device}
        inf = ok_inf[(ok_inf["model"] == model) & (ok_inf["device"] == device)] if not ok_inf.empty else ok_inf
        if not inf.empty:
            largest = inf.loc[inf["batch_size"].idxmax()]
            best = inf.loc[inf["throughput"].idxmax()]
            row.update(
                inference_throughput=float(best["throughput"]),
                inference_best_batch=int(best["batch_size"]),
                inference_latency_p50_s_batch1=float(inf.loc[inf["batch_size"].idxmin(), "latency_p50_s"]),
                memory_gb_largest_batch=float(largest["peak_mem_mb"]) / 1024,
                largest_batch=int(largest["batch_size"]),
                memory_kind=largest.get("memory_kind"),
            )
        train = ok_runs[(ok_runs["model"] == model) & (ok_runs["device"] == device) & (ok_runs["workers"] == 1)]
        train = train[train["throughput"].notna()]  # an ok run whose events are lost has no figure to compare
        if not train.empty:
            fastest = train.loc[train["throughput"].idxmax()]
            util = "gpu_util_peak_pct" if device == "gpu" else "cpu_util_peak_pct"
            row.update(
                train_epoch_time_s=float(fastest["epoch_time_s"]),
                train_throughput=float(fastest["throughput"]),
                peak_util_pct=float(fastest.get(util, np.nan)),
                cost_per_sample_usd=float(fastest.get("cost_per_sample_usd", np.nan)),
                energy_per_sample_j=float(fastest.get("energy_per_sample_j", np.nan)),
            )
        rows.append(row)
    return pd.DataFrame(rows)
