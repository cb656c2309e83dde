"""Losing Ray mid-study: the study's own local Ray loses its GCS (killed) while a run trains. The user
gets one scaleprof message with the resume command, the run is recorded as failed with the reason, and
Ray Train's scratch directory is gone — not Ray's log lines and a run left 'running'."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from tests.integration.cli import REPO

STUDY = """\
name: lost
model: {name: mlp}
data: {name: digits}
train: {epochs: 400}
placements:
  - {name: one, workers: 1}
"""


def test_a_study_whose_ray_loses_its_gcs_stops_with_a_resume_command(tmp_path):
    (tmp_path / "lost.yaml").write_text(STUDY)
    out = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "20"  # Ray's own wait; scaleprof declares the loss at 5 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaleprof.cli", "run", str(tmp_path / "lost.yaml"), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("*/events/*/*.parquet")):  # a step stored: the run is training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        family = psutil.Process(proc.pid).children(recursive=True)
        gcs = [p for p in family if "gcs_server" in " ".join(p.cmdline())]
        raylets = [p for p in family if p.name() == "raylet"]
        assert len(gcs) == 1 and raylets
        gcs[0].send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    (study,) = out.iterdir()
    assert proc.returncode == 1, stdout[-3000:] + stderr[-3000:]  # not 139: Ray's exit hook never ran on a dead GCS
    _, alive = psutil.wait_procs(raylets, timeout=30)
    assert not alive, "the local Ray's raylet outlived the study that started it"
    assert f"scaleprof run {tmp_path / 'lost.yaml'} --resume {study}" in stderr, stderr
    assert "Ray stopped answering: its GCS" in stderr and "Traceback" not in stderr
    assert "Failed to connect to GCS" not in stderr  # scaleprof spoke before Ray's client gave up
    records = [json.loads(line) for line in (study / "run_records.jsonl").read_text().splitlines()]
    assert records[-1]["status"] == "failed" and "GCS" in records[-1]["reason"]
    assert not (study / "_ray_train").exists()
