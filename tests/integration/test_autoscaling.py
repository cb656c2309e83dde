"""A real Ray autoscaler over local nodes (Ray's fake multi-node provider: the autoscaler launches local
raylets as a cloud would launch machines). A head with 1 CPU and a node type with 2 CPUs, none running:
a STRICT_PACK of 2 workers must ask for the node, wait for it and finish ok; a GPU placement is
skipped at once because no node type has a GPU; once the study is done the idle node goes away."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.integration.ray_processes import free_port, head_command, stop_tree, wait_for_port

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "clusters" / "laptop-autoscaling.yaml"  # as clusters/README.md starts it
EXPERIMENT = REPO / "experiments" / "autoscale-smoke.yaml"


def raylets(proc: subprocess.Popen) -> int:
    return sum(1 for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "raylet")


@pytest.fixture
def autoscaling_cluster():
    from ray._private.services import get_node_ip_address

    temp = tempfile.mkdtemp(prefix="sp-as-")  # short: Ray's socket paths live under it
    ip, port = get_node_ip_address(), free_port()
    config = Path(temp) / "cluster.json"
    cluster = yaml.safe_load(CLUSTER.read_text())
    cluster["provider"]["gcs_address"] = f"{ip}:{port}"  # the shipped file assumes port 6379
    config.write_text(json.dumps(cluster))
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = head_command(port, temp, f"--autoscaling-config={config}", "--include-dashboard=false")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "the head's GCS", host=ip)
        deadline = time.monotonic() + 60
        while raylets(proc) < 1 and time.monotonic() < deadline:  # the GCS comes up before the head's raylet
            time.sleep(1)
        yield proc, {**env, "RAY_ADDRESS": f"{ip}:{port}"}
    finally:
        stop_tree(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_placement_waits_for_the_autoscaler_and_one_no_node_type_holds_is_skipped_at_once(
    autoscaling_cluster, tmp_path
):
    head, env = autoscaling_cluster
    assert raylets(head) == 1  # the head only: min_workers 0
    shutil.copy(EXPERIMENT, tmp_path / "autoscale.yaml")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "scaleprof.cli", "run", "autoscale.yaml", "--out", "out"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=480,
    )
    took = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "run 1/2 pack-2 (2 worker(s), mlp): waiting for the autoscaler: " in log
    assert "1 node(s) of type cpu2" in log
    assert "run 1/2 pack-2 (2 worker(s), mlp): ok" in log
    assert "run 2/2 gpu-1 (1 worker(s), mlp): skipped: needs 1 GPU(s)" in log
    assert took < 300, "the GPU placement waited out the timeout"  # it is skipped at once

    (study,) = (tmp_path / "out").iterdir()
    runs = pd.read_parquet(study / "runs.parquet").set_index("placement")
    pack, gpu = runs.loc["pack-2"], runs.loc["gpu-1"]
    assert pack["status"] == "ok" and pack["nodes_realized"] == 1
    assert pack["ray_node_types"] == "cpu2 x1"  # both workers on the added node
    assert 0.5 < pack["wait_s"] < 300  # waited for the node, then ran
    assert gpu["status"] == "skipped" and gpu["wait_s"] == 0
    assert "even with every node its autoscaler can add" in gpu["reason"] and "cpu2 (2 CPU" in gpu["reason"]
    inference = pd.read_parquet(study / "inference.parquet").set_index("device")
    assert inference.loc["cpu", "status"] == "ok"
    assert inference.loc["gpu", "status"] == "skipped" and "even with every node" in inference.loc["gpu", "reason"]
    assert "resource wait" in (study / "report.html").read_text()  # the wait is its own phase of the wall time
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["ray"]["autoscaler"]["autoscaling"] is True
    assert {t["name"] for t in manifest["ray"]["autoscaler"]["node_types"]} == {"ray.head.default", "cpu2"}

    # The request was withdrawn with the run: the idle node is removed (idle timeout 6 s).
    deadline = time.monotonic() + 120
    while raylets(head) > 1 and time.monotonic() < deadline:
        time.sleep(2)
    assert raylets(head) == 1, "the added node was kept after the study"
