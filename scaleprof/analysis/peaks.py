"""Dense peak FLOP/s of common GPUs per math mode, for model FLOPs utilisation (MFU).

The mode is what the run's math actually used (the worker reports it, `session.math_mode`):
- `fp32`: FP32 on CUDA cores (TF32 off for the model's matmuls and convolutions);
- `tf32`: FP32 tensors on TF32 tensor cores: PyTorch runs FP32 *convolutions* on TF32 by default
  (`torch.backends.cudnn.allow_tf32`), matmuls when `torch.set_float32_matmul_precision("high")`;
- `bf16`, `fp16`: autocast on tensor cores (FP32 accumulate).
Figures from NVIDIA's product datasheets, dense (the datasheets' "with sparsity" figures halved),
boost clock; a mode a GPU lacks (no bf16 before Ampere) or a GPU not listed gives no MFU, never a guess.
Sources: H100/H200 (SXM, PCIe), A100 (SXM/PCIe 80 GB), L4, L40S, T4 and V100 (SXM2) datasheets.
CPUs have no such table: each worker measures its own peak with a timed matrix multiply on its threads.
"""

from __future__ import annotations

# substring of the NVML device name -> peak FLOP/s per mode
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},  # H200 SXM
    "H100": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},  # H100 SXM
    "H100 PCIe": {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
    "A10G": {"fp32": 31.2e12},  # AWS's A10 variant: no public tensor-core figures
    "A10": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
    "L4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12},
    "L40S": {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362e12, "fp16": 362e12},
    "T4": {"fp32": 8.1e12, "fp16": 65e12},  # Turing: no TF32, no bf16
    "V100": {"fp32": 15.7e12, "fp16": 125e12},  # V100 SXM2; Volta: no TF32, no bf16
}


def gpu_peak_flops(name: str | None, mode: str = "fp32") -> float | None:
    """The longest table key contained in the device name wins ('H100 PCIe' before 'H100'); None when
    the GPU or its figure for this mode is not in the table."""
    if not name:
        return None
    matches = [key for key in GPU_PEAK_FLOPS if key in name]
    return GPU_PEAK_FLOPS[max(matches, key=len)].get(mode) if matches else None
