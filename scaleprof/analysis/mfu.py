"""Model FLOPs utilisation: the one definition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.frames import column
from scaleprof.analysis.language import six_n_flops
from scaleprof.analysis.peaks import gpu_peak_flops
from scaleprof.records import Lifecycle


def utilisation_of_peak(row: dict[str, Any], lifecycle: pd.DataFrame, starts: pd.DataFrame) -> dict[str, Any]:
    """MFU = model FLOPs per sample x throughput / (peak FLOP/s per worker x workers)."""
    info = lifecycle[lifecycle["event"] == Lifecycle.MODEL_INFO]
    if info.empty:
        return {}
    info = info.iloc[0]
    flops = info.get("flops_per_sample")
    out: dict[str, Any] = {
        "flops_per_sample": float(flops) if flops is not None and pd.notna(flops) else float("nan"),
        "parameters": int(info["parameters"]),
    }
    names = column(starts, "gpu_name").dropna()
    dtype = info.get("math_dtype") if isinstance(info.get("math_dtype"), str) else "float32"
    # CPU runs too: bf16 under autocast is what the measured peak was measured in (fp32 otherwise)
    mode = info.get("math_mode") if isinstance(info.get("math_mode"), str) else DTYPE_MODES.get(dtype, "fp32")
    out["math_mode"] = mode
    if row.get("gpus"):
        peak = gpu_peak_flops(names.iloc[0], mode) if len(names) else None
        name = names.iloc[0] if len(names) else "the GPU"
        basis = f"datasheet {mode.upper()} dense peak of {name}" if peak else f"no {mode.upper()} peak for {name}"
    else:
        peak = float(info["cpu_peak_flops"]) if "cpu_peak_flops" in info and pd.notna(info["cpu_peak_flops"]) else None
        basis = f"measured {dtype} matmul peak of one worker's threads"
    out["peak_flops_per_worker"], out["peak_flops_basis"] = peak, basis
    throughput = row.get("throughput")
    tokens = row.get("tokens_per_sample")
    if tokens is not None and np.isfinite(tokens):  # language models: the 6·N·tokens estimate as a check
        out["flops_6n_per_sample"] = six_n_flops(out["parameters"], tokens)
    out["mfu"] = mfu(out["flops_per_sample"], throughput, peak, row["workers"])
    out["mfu_6n"] = mfu(out.get("flops_6n_per_sample", float("nan")), throughput, peak, row["workers"])
    return out


# A study written before workers reported their math mode: its precision's mode (FP32 then meant CUDA cores).
DTYPE_MODES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def mfu(flops_per_sample: float, throughput: Any, peak: float | None, workers: int) -> float:
    """Model FLOPs utilisation (NaN when a figure is missing)."""
    if not peak or throughput is None or not np.isfinite(throughput) or not np.isfinite(flops_per_sample):
        return float("nan")
    return flops_per_sample * throughput / (peak * workers)
