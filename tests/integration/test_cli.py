"""The command line as a user runs it: exit codes, messages, no tracebacks for user errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scaleprof.execution.fabric_probe import STUDY_REPEATS
from scaleprof.telemetry.store import StudyStore
from tests.integration.cli import REPO, run_cli


def scaleprof(*args, cwd=REPO, timeout=300):
    return run_cli(list(args), cwd=cwd, timeout=timeout)


def test_bad_experiment_exits_2_with_field_named_and_nothing_written(tmp_path):
    """In a fresh process: the message and exit code, no traceback. The other bad inputs are answered in
    process (tests/unit/test_cli_errors.py), through the same `main`."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: mlp}\ndata: {name: digits}\nplacements:\n  - {name: a, workerz: 1}\n")
    out = tmp_path / "out"
    proc = scaleprof("run", str(bad), "--out", str(out))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert str(bad) in proc.stderr and "placements.0.workerz: unknown key" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_run_end_to_end_shows_progress_and_writes_report(tmp_path):
    """The main user path in a fresh process: its own local Ray, two models, progress lines, a report."""
    exp = tmp_path / "tiny.yaml"
    exp.write_text(
        "name: tiny\nmodels: [{name: mlp}, {name: small-cnn}]\ndata: {name: digits}\ntrain: {epochs: 2}\n"
        "placements:\n  - {name: cpu-1, workers: 1}\n"
    )
    proc = scaleprof("run", str(exp), "--out", str(tmp_path / "reports"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run 1/2 cpu-1 (1 worker(s), mlp): epoch 2/2" in proc.stdout
    assert "run 2/2 cpu-1 (1 worker(s), small-cnn): epoch 2/2" in proc.stdout
    assert "samples/s" in proc.stdout
    (study,) = (tmp_path / "reports").iterdir()
    assert f"Report: {study / 'report.html'}" in proc.stdout
    for name in ("runs.parquet", "epochs.parquet", "quality.parquet", "manifest.json", "summary.md"):
        assert (study / name).stat().st_size > 0
    assert len(list((study / "events" / "0").glob("*.parquet"))) == 1  # the small segments merged at the end
    runs = pd.read_parquet(study / "runs.parquet")
    assert list(runs["model"]) == ["mlp", "small-cnn"] and (runs["status"] == "ok").all()
    assert runs["accuracy"].between(0, 1).all()


def test_predict_and_compare_on_a_real_study(study):
    result, _ = study
    proc = scaleprof("predict", str(result.study_dir), "--workers", "4", "16")
    # On a contended 2-core machine the 2-worker run can be slower than the 1-worker one: then the law is
    # outside its meaning (alpha > 1) and predict refuses, naming why, instead of extrapolating it.
    fits = pd.read_parquet(result.study_dir / "scaling_fits.parquet")
    if fits["valid"].any():
        assert proc.returncode == 0, proc.stderr
        assert "mlp / cpu: alpha" in proc.stdout and "16" in proc.stdout and "worker counts" in proc.stdout
    else:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "no prediction: the scaling law fitted is outside its meaning" in proc.stderr
        assert "adding workers made it slower" in proc.stderr
    # The 2-worker run (one worker on each node) swept its all-reduce after training; the ledger predicted it
    # from the 1-worker runs and that sweep alone, or says why not (a fit too noisy to have figures).
    events = StudyStore(result.study_dir).events()
    sweep = events[events["kind"] == "fabric"]
    assert set(sweep["link_class"]) == {"inter-node"} and set(sweep["world"]) == {2}
    per_size = sweep.groupby("bytes").size()  # 4 KiB up to past the model's gradient, each size repeated
    assert per_size.index.min() == 4096 and len(per_size) >= 4 and (per_size == STUDY_REPEATS).all(), per_size
    ledger = pd.read_parquet(result.study_dir / "predictions.parquet")
    physics = ledger[ledger["method"] == "physics"].set_index("placement").loc["cpu-2"]
    assert physics["nodes"] == 2 and physics["measured"] > 0
    if np.isfinite(physics["predicted"]):
        assert physics["base"].startswith("cpu-1") and physics["low"] <= physics["predicted"] <= physics["high"]
    else:
        assert "inter-node link has no fitted figures" in physics["reason"], physics["reason"]
    # A stated link always gives the physics model a figure: 16 workers on 4 nodes, across the boundary.
    proc = scaleprof(
        "predict",
        str(result.study_dir),
        "--workers",
        "16",
        "--nodes",
        "4",
        "--json",
        "--link",
        "inter-node=10Gbit/s,20us",
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in json.loads(proc.stdout) if r["method"] == "physics" and r["model"] == "mlp"]
    assert row["crosses_node_boundary"] and row["low"] <= row["throughput"] <= row["high"]
    assert row["link_source"] == "stated (10Gbit/s,20us)"
    proc = scaleprof("compare", str(result.study_dir), str(result.study_dir))
    assert proc.returncode == 0, proc.stderr
    assert "+0.0%" in proc.stdout and "beyond noise" in proc.stdout
    assert "throughput, " not in proc.stdout  # a study against itself changes nothing


def _run_until(cmd: list[str], env: dict[str, str], line: str, sig: int) -> tuple[int, str]:
    """Start `scaleprof run`, send `sig` once `line` shows up in its output; (exit code, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    assert proc.stdout is not None  # stdout=PIPE
    seen = []
    for out in proc.stdout:
        seen.append(out)
        if line in out:
            proc.send_signal(sig)
            break
    rest, _ = proc.communicate(timeout=180)
    return proc.returncode, "".join(seen) + rest


@pytest.mark.slow
def test_interrupted_study_resumes_and_the_report_covers_all_runs(ray_cluster, tmp_path):
    """Ctrl-C after run 1, --resume; SIGTERM (what `ray job stop` sends) after run 2, --resume again:
    finished runs are kept, the interrupted ones rerun, the report covers all three runs. Each process
    joins the session's cluster (RAY_ADDRESS, as under `ray job submit`); the Ctrl-C test below starts
    its own local Ray, as on a laptop."""
    import signal

    exp = tmp_path / "resumable.yaml"
    exp.write_text(
        "name: resumable\nmodel: {name: mlp}\ndata: {name: digits}\ntrain: {epochs: 2}\n"
        "placements:\n  - {name: a, workers: 1}\n  - {name: b, workers: 1}\n  - {name: c, workers: 1}\n"
    )
    out = tmp_path / "reports"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    cmd = [sys.executable, "-m", "scaleprof.cli", "run", str(exp), "--out", str(out)]
    rc, seen = _run_until(cmd, env, "run 1/3 a (1 worker(s), mlp): ok", signal.SIGINT)  # as Ctrl-C would
    assert rc == 130 and "interrupted: what was stored" in seen and "Traceback" not in seen, seen[-3000:]
    (study,) = out.iterdir()
    assert StudyStore(study).events()["kind"].eq("step").any()  # what was stored stays readable

    resume = [sys.executable, "-m", "scaleprof.cli", "run", str(exp), "--resume", str(study)]
    rc, seen = _run_until(resume, env, "run 2/3 b (1 worker(s), mlp): ok", signal.SIGTERM)
    assert rc == 143 and "terminated: what was stored" in seen and "Traceback" not in seen, seen[-3000:]
    assert "run 1/3 a (1 worker(s), mlp): ok" in seen and "kept from the interrupted study" in seen

    resumed = run_cli(["run", str(exp), "--resume", str(study)], ray_address=ray_cluster.address, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.stdout.count("kept from the interrupted study") == 2
    assert "run 3/3 c (1 worker(s), mlp): epoch 2/2" in resumed.stdout
    runs = pd.read_parquet(study / "runs.parquet")
    assert list(runs["placement"]) == ["a", "b", "c"] and (runs["status"] == "ok").all()
    assert (runs["seq_gaps"] == 0).all()
    wrong = scaleprof("run", str(REPO / "experiments" / "smoke.yaml"), "--resume", str(study))
    assert wrong.returncode == 2 and "was made from a different experiment" in wrong.stderr


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_a_run_records_it_interrupted(tmp_path):
    """SIGINT while a run trains (not between runs): the in-flight run's record says `interrupted`,
    the study stops with exit 130 and no traceback."""
    import json
    import signal

    exp = tmp_path / "midrun.yaml"
    exp.write_text(
        "name: midrun\nmodel: {name: mlp}\ndata: {name: digits}\ntrain: {epochs: 200}\n"
        "placements:\n  - {name: a, workers: 1}\n"
    )
    out = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "scaleprof.cli", "run", str(exp), "--out", str(out)]
    rc, seen = _run_until(cmd, env, "run 1/1 a (1 worker(s), mlp): epoch", signal.SIGINT)
    assert rc == 130 and "interrupted: what was stored" in seen and "Traceback" not in seen, seen[-3000:]
    (study,) = out.iterdir()
    records = [json.loads(line) for line in (study / "run_records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["planned", "placed", "running", "failed"]
    assert records[-1]["reason"] == "interrupted" and records[-1]["started_at"] <= records[-1]["ended_at"]
