"""The GPU peak table."""


def test_gpu_peak_table_lookup():
    from scaleprof.analysis.peaks import gpu_peak_flops

    assert gpu_peak_flops("NVIDIA H100 PCIe") == 51e12
    assert gpu_peak_flops("NVIDIA H200") == 67e12
    assert gpu_peak_flops("NVIDIA A10G") == 31.2e12
    assert gpu_peak_flops("Mystery GPU") is None and gpu_peak_flops(None) is None
