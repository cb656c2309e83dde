"""The language-modeling task and the training knobs on the session's real two-node Ray: DDP against
FSDP (gloo, one worker per node), bf16 autocast, fp16 skipped on CPU, torch.compile's time kept out of
steady state, gradient accumulation, and a Hugging Face model built from a config."""

import math

import pandas as pd
import pytest

from scaleprof.config import Experiment
from scaleprof.telemetry.store import StudyStore

pytestmark = pytest.mark.slow


def run(tmp_path, spec):
    from scaleprof.analysis.summarize import summarize, write_tables
    from scaleprof.execution.runner import run_study
    from scaleprof.report.render import render_report
    from scaleprof.telemetry.store import StudyStore

    result = run_study(Experiment.model_validate(spec), tmp_path)
    store = StudyStore(result.study_dir)
    tables = summarize(store)
    write_tables(store, tables)
    render_report(result.study_dir, tables)
    return result.study_dir, tables


def test_fsdp_shards_model_state_and_bf16_runs_while_fp16_is_skipped_on_cpu(ray_session, tmp_path):
    study_dir, tables = run(
        tmp_path,
        {
            "name": "lm-knobs",
            "task": "language-modeling",
            # ~6.5M parameters: large enough that the model state dwarfs rounding
            "model": {"name": "transformer", "kwargs": {"layers": 2, "width": 512, "heads": 8}},
            "data": {"name": "synthetic-tokens", "vocab_size": 128, "seq_len": 16, "size": 96},
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.001, "optimizer": "adamw"},
            "sweep": {"train.parallelism": ["ddp", "fsdp"], "train.precision": ["bf16", "fp16"]},
            "monitor": {"interval_s": 0.5},
            "placements": [{"name": "cpu-2", "workers": 2}],
            "ray": {"placement_timeout_s": 10},
        },
    )
    runs = tables.runs.set_index("model")
    assert list(runs.index) == [
        "transformer-ddp-bf16",
        "transformer-ddp-fp16",
        "transformer-fsdp-bf16",
        "transformer-fsdp-fp16",
    ]
    for series in ("transformer-ddp-fp16", "transformer-fsdp-fp16"):  # never silently run in fp32
        assert runs.at[series, "status"] == "skipped"
        assert "fp16 training needs a GPU" in runs.at[series, "reason"]
    ddp, fsdp = runs.loc["transformer-ddp-bf16"], runs.loc["transformer-fsdp-bf16"]
    assert ddp["status"] == fsdp["status"] == "ok", (ddp["reason"], fsdp["reason"])
    assert (ddp["parallelism"], fsdp["parallelism"]) == ("ddp", "fsdp")
    assert ddp["train_precision"] == fsdp["train_precision"] == "bf16" and ddp["nodes_realized"] == 2
    # AdamW: weights, gradients and two moments per parameter; FSDP holds half of each on each of 2 ranks
    full = 4 * 4 * ddp["parameters"] / 2**20
    assert ddp["state_mem_mb"] == pytest.approx(full, rel=0.01)
    assert fsdp["state_mem_mb"] == pytest.approx(full / 2, rel=0.05)
    assert fsdp["mem_peak_mb"] > 0 and ddp["mem_peak_mb"] > 0  # the OS's view is reported beside it
    for r in (ddp, fsdp):  # tokens/s, perplexity and the 6N check, each from its one definition
        assert r["tokens_per_s"] == pytest.approx(r["throughput"] * 16)
        assert r["perplexity"] == pytest.approx(math.exp(r["test_loss"]))
        assert r["perplexity"] < 128  # it learned: better than guessing among 128 tokens
        assert 0 < r["token_accuracy"] <= 1 and r["eval_split"] == "test"
        assert r["flops_6n_per_sample"] == 6 * r["parameters"] * 16 and r["mfu_6n"] > 0
        assert "bfloat16 matmul peak" in r["peak_flops_basis"]
    # the same seeded model and data: sharding changes where the state lives, not what is learned
    assert fsdp["test_loss"] == pytest.approx(ddp["test_loss"], rel=0.02)
    assert pd.notna(ddp["step_allreduce_s"]) and pd.isna(fsdp["step_allreduce_s"])  # no no_sync to probe
    # Both record each rank's arrival at the gradient exchange (DDP: its gradients ready; FSDP: entering backward)
    ranks = tables.ranks.set_index("run_id")
    assert {ddp["run_id"], fsdp["run_id"]} <= set(ranks.index) and (ranks["steps"] > 0).all()
    report = (study_dir / "report.html").read_text()
    assert "model state / rank (MiB)" in report and "test perplexity" in report and "F1 (macro)" not in report
    assert (study_dir / "charts" / "memory_vs_throughput.png").exists()


def test_compile_time_is_kept_out_of_steady_state_with_accumulation_on_a_hugging_face_model(ray_session, tmp_path):
    study_dir, tables = run(
        tmp_path,
        {
            "name": "lm-compile",
            "task": "language-modeling",
            "model": {"name": "hf:gpt2", "config": {"n_layer": 2, "n_embd": 64, "n_head": 4}},
            "data": {"name": "synthetic-tokens", "vocab_size": 64, "seq_len": 16, "size": 320},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "lr": 0.003,
                "optimizer": "adamw",
                "grad_accumulation": 2,
                "compile": {"backend": "aot_eager"},  # Dynamo and AOTAutograd, without a C++ compiler's minutes
            },
            "placements": [{"name": "cpu-1", "workers": 1}],
        },
    )
    run_row = tables.runs.iloc[0]
    assert run_row["status"] == "ok", run_row["reason"]
    assert run_row["compile"] == "aot_eager" and run_row["grad_accumulation"] == 2
    assert run_row["global_batch"] == 8 * 1 * 2
    events = StudyStore(study_dir).event_records()
    epochs = {e["epoch"]: e for e in events if e["kind"] == "epoch"}
    assert epochs[0]["compile_s"] > 0 and not epochs[1].get("compile_s")  # compiled once, in the first steps
    assert run_row["compile_phase_s"] == pytest.approx(epochs[0]["compile_s"])
    assert run_row["throughput_basis"].startswith("steps after epoch 1")  # steady state leaves the compiling epoch out
    assert run_row["model_name"] == "hf:gpt2" and run_row["perplexity"] < 64
    phases = tables.runs.iloc[0][["launch_s", "setup_s", "compile_phase_s", "training_s", "finish_s", "teardown_s"]]
    assert float(phases.sum()) == pytest.approx(run_row["wall_s"], rel=1e-6)
