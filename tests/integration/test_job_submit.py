"""`ray job submit` for real: a `ray start --head` cluster with token authentication, a study submitted
to it as a job, and the report found where the job was told to put it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.ray_processes import free_ports, head_command, stop_tree, wait_for_port

VENV_BIN = Path(sys.executable).parent
# The user's model lives beside the experiment file, in a subdirectory of the job's working directory that
# no worker has on its path: it reaches the workers only as the job's py_modules, as on a real cluster.
EXPERIMENT = """name: jobtiny
model: {factory: "my_models:build", kwargs: {width: 32}}
data: {name: digits}
train: {epochs: 2}
placements:
  - {name: cpu-1, workers: 1}
  - {name: gpu-1, workers: 1, gpus_per_worker: 1}
"""
MODELS = """
from torch import nn

def build(width=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
"""


def wait_for_dashboard(port: int, proc: subprocess.Popen) -> None:
    wait_for_port(port, proc, "the Ray dashboard (job server)")


def submit(cmd: list[str], env: dict[str, str], ready_timeout_s: float = 120) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent is still starting (a busy machine can take
    a while after the dashboard port opens): Ray answers "No available agent" then, and nothing ran."""
    deadline = time.monotonic() + ready_timeout_s
    while True:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
        if "No available agent to submit job" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(3)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node `ray start --head` cluster started from this venv (the job's `scaleprof` comes from its PATH)."""
    temp = tmp_path_factory.mktemp("rayhead")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    for attempt in range(3):  # `ray start` once exited at once in CI (its output was not kept): kept now, retried
        gcs, dashboard = free_ports(2)
        cmd = head_command(gcs, str(temp), "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}")
        log = temp / f"ray-start-{attempt}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_dashboard(dashboard, proc)
            break
        except RuntimeError:
            stop_tree(proc)
            if attempt == 2:
                raise RuntimeError(f"ray start exited 3 times; the last said:\n{log.read_text()[-3000:]}") from None
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        stop_tree(proc)


@pytest.mark.slow
def test_ray_job_submit_runs_the_study_and_the_report_lands_at_the_uri(head, tmp_path):
    address, env = head
    work = tmp_path / "work"
    (work / "study").mkdir(parents=True)
    (work / "study" / "jobtiny.yaml").write_text(EXPERIMENT)
    (work / "study" / "my_models.py").write_text(MODELS)
    out = tmp_path / "published"
    cmd = [
        str(VENV_BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(work),
        "--",
        "scaleprof",
        "run",
        "study/jobtiny.yaml",
        "--out",
        f"file://{out}",
    ]
    proc = submit(cmd, env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "succeeded" in log
    assert "run 1/2 cpu-1 (1 worker(s), my_models-build): ok" in log  # the job's progress reaches the submitter
    assert "skipped: needs 1 GPU(s), the cluster has 0" in log
    (study,) = out.iterdir()
    assert study.name.startswith("jobtiny-")
    for name in ("report.html", "runs.parquet", "manifest.json", "summary.md", "events/0"):
        assert (study / name).stat().st_size > 0
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["ray"]["job"]["submission_id"].startswith("raysubmit_")  # which Ray job made the study
    assert manifest["toolchain"]["ray"] and manifest["toolchain"]["torch"]
    token_path = Path.home() / ".ray" / "auth_token"
    if token_path.exists():  # the token authenticated the submission and never reached the study
        token = token_path.read_text().strip()
        assert token and all(token not in p.read_text(errors="ignore") for p in study.rglob("*") if p.is_file())
        assert token not in log
