"""The inference benchmark inside a real study: a Ray actor per device kind, results in the store,
the hardware comparison table in the report."""

import pandas as pd


def test_cpu_inference_rows_and_gpu_skipped_with_reason(study):
    result, _ = study
    inference = pd.read_parquet(result.study_dir / "inference.parquet")
    cpu = inference[inference["device"] == "cpu"].sort_values("batch_size")
    assert list(cpu["batch_size"]) == [1, 8, 32] and (cpu["status"] == "ok").all()
    assert (cpu["latency_p99_s"] >= cpu["latency_p50_s"]).all()
    gpu = inference[inference["device"] == "gpu"]
    assert list(gpu["status"]) == ["skipped"] and "needs 1 GPU" in gpu["reason"].iloc[0]


def test_hardware_comparison_table_joins_training_and_inference(study):
    result, _ = study
    hardware = pd.read_parquet(result.study_dir / "hardware.parquet").set_index("device")
    cpu = hardware.loc["cpu"]
    assert cpu["inference_throughput"] > 0 and cpu["train_epoch_time_s"] > 0
    assert 0 < cpu["peak_util_pct"] <= 100 * 4 and cpu["cost_per_sample_usd"] > 0
    summary = (result.study_dir / "summary.md").read_text()
    assert "## Hardware comparison" in summary and "Inference options on: none" in summary
    for name in ("inference_latency", "inference_throughput", "inference_tradeoff"):
        assert (result.study_dir / "charts" / f"{name}.png").exists()
