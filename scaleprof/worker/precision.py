"""Which training precisions a device can be measured in: one rule for the driver's plan (a device kind it
knows before the run) and the worker (a GPU's bf16 support, known only on the GPU)."""

from __future__ import annotations


def precision_problem(precision: str, device_kind: str, bf16_capable: bool = True, gpu: str = "") -> str | None:
    """Why a device cannot train in this precision, or None."""
    if precision == "fp16" and device_kind == "cpu":
        return (
            "fp16 training needs a GPU: on CPU, float16 autocast is emulated, so its speed says nothing about "
            "the hardware (train in bf16 or fp32 on CPU)"
        )
    if precision == "bf16" and device_kind == "gpu" and not bf16_capable:
        return f"{gpu or 'this GPU'} has no bf16 tensor cores (compute capability 8.0 or newer needed); try fp16"
    return None
