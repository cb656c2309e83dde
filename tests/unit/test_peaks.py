"""The GPU peak table per math mode, and the math mode a run's model uses."""

import torch


def test_gpu_peak_table_lookup():
    from scaleprof.analysis.peaks import gpu_peak_flops

    assert gpu_peak_flops("NVIDIA H100 PCIe") == 51e12
    assert gpu_peak_flops("NVIDIA H200") == 67e12
    assert gpu_peak_flops("NVIDIA A10G") == 31.2e12
    assert gpu_peak_flops("Mystery GPU") is None and gpu_peak_flops(None) is None


def test_each_math_mode_has_its_own_peak_and_a_missing_one_gives_none():
    from scaleprof.analysis.peaks import gpu_peak_flops

    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12  # 8x its FP32 peak
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.5e12
    assert gpu_peak_flops("Tesla T4", "bf16") is None  # Turing has no bf16: no MFU, not a wrong one
    assert gpu_peak_flops("NVIDIA A10G", "bf16") is None  # no public figure


def test_math_mode_follows_precision_and_pytorchs_tf32_switches():
    from scaleprof.worker.session import math_mode

    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert math_mode(cnn, "bf16", cuda) == "bf16" and math_mode(cnn, "fp16", cuda) == "fp16"
    assert math_mode(cnn, "fp32", cpu) == "fp32"
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: FP32 convolutions on TF32 tensor cores
        torch.set_float32_matmul_precision("highest")  # and its default for matmuls: no TF32
        assert math_mode(cnn, "fp32", cuda) == "tf32" and math_mode(mlp, "fp32", cuda) == "fp32"
        torch.set_float32_matmul_precision("high")
        assert math_mode(mlp, "fp32", cuda) == "tf32"
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        assert math_mode(cnn, "fp32", cuda) == "fp32"
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])
