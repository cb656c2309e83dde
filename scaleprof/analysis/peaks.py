"""Peak dense FP32 FLOP/s of common GPUs, for model FLOPs utilisation (MFU).

FP32 without tensor cores, because scaleprof trains in FP32 and PyTorch leaves TF32 matmuls off by
default. Figures from NVIDIA's product datasheets (boost clock, dense). CPUs have no such table:
each worker measures its own peak with a timed FP32 matrix multiply on its threads.
"""

from __future__ import annotations

# substring of the NVML device name -> peak FP32 FLOP/s
GPU_FP32_PEAK_FLOPS = {
    "H200": 67e12,  # H200 SXM
    "H100": 67e12,  # H100 SXM (PCIe: 51e12; matched as "H100 PCIe" below)
    "H100 PCIe": 51e12,
    "A100": 19.5e12,
    "A10G": 31.2e12,
    "A10": 31.2e12,
    "L4": 30.3e12,
    "L40S": 91.6e12,
    "T4": 8.1e12,
    "V100": 15.7e12,
}


def gpu_peak_flops(name: str | None) -> float | None:
    """The longest table key contained in the device name wins ('H100 PCIe' before 'H100')."""
    if not name:
        return None
    matches = [key for key in GPU_FP32_PEAK_FLOPS if key in name]
    return GPU_FP32_PEAK_FLOPS[max(matches, key=len)] if matches else None
