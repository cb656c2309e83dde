"""Naming the slow rank on the session's real two-node Ray (one worker per node): a user loop injects a
fault on rank 1 only, and the study's findings must name rank 1 with the phase (or the stall with its
step and length); a balanced run (every rank computing 20 ms a step, as the faulty ones do) must name nobody.
(Its steps once were the bare 2 ms model: this machine's background on one rank's core then made that rank
0.45 ms late in 76% of the steps, 18% of the other's step time, a real straggler by the rule.) Through the
CLI, as a user runs it."""

import json
import textwrap

import pandas as pd
import pytest

from scaleprof.analysis.summarize import summarize
from scaleprof.report.findings_text import findings_sentences
from scaleprof.telemetry.store import StudyStore
from tests.integration.cli import run_cli

pytestmark = pytest.mark.slow

LOOP = """
import os
import subprocess
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from scaleprof import session

PAUSE_AT = 40


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def until_stopped(last, most=10.0):
    # compute until the clock jumps (this process was stopped and continued), so the pause lands in this step;
    # `last` was read before the stop was asked for, so a stop that landed at once is seen too
    start = last
    while last - start < most:
        now = time.perf_counter()
        if now - last > 1.0:
            return
        last = now


def delayed(loader, seconds):
    for batch in loader:
        time.sleep(seconds)
        yield batch


def train_func(config):
    fault = config["model"]["kwargs"]["fault"]
    late = session.world_rank() == 1
    torch.manual_seed(config["seed"])
    g = torch.Generator().manual_seed(config["seed"])
    y = torch.arange(2048) % 4
    x = torch.randn(2048, 16, generator=g) + y[:, None].float()
    model = session.prepare_model(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = session.prepare_data_loader(DataLoader(TensorDataset(x, y), batch_size=config["batch_size"]))
    for epoch in session.epochs():
        batches = delayed(loader, 0.02) if fault == "data" and late else loader
        for step, (xb, yb) in enumerate(session.steps(batches)):
            if fault == "pause" and late and step == PAUSE_AT:
                # stopped from outside, as SIGSTOP/SIGCONT would hit a real worker, while it computes
                me, before = os.getpid(), time.perf_counter()
                subprocess.Popen(["sh", "-c", f"kill -STOP {me}; sleep 2; kill -CONT {me}"])
                until_stopped(before)
            out = model(xb)
            if (fault == "forward" and late) or fault == "balanced":
                spin(0.02)  # balanced: every rank computes 20 ms, as a real job's step does
            loss = F.cross_entropy(out, yb)
            session.mark("forward")
            optimizer.zero_grad()
            loss.backward()
            session.mark("backward")
            optimizer.step()
            session.mark("optimizer")
"""


def test_the_late_rank_is_named_with_its_phase_and_a_pause_as_a_stall(ray_cluster, tmp_path):
    code = tmp_path / "project"
    code.mkdir()
    (code / "faulty.py").write_text(textwrap.dedent(LOOP))
    models = "".join(f"  - {{label: {f}, kwargs: {{fault: {f}}}}}\n" for f in ("balanced", "data", "forward", "pause"))
    (code / "experiment.yaml").write_text(
        "name: slow-rank\ntrain: {loop: 'faulty:train_func', epochs: 1, batch_size: 16}\nmodels:\n"
        + models
        + "placements:\n  - {name: two, workers: 2, strategy: STRICT_SPREAD}\nray: {placement_timeout_s: 10}\n"
        "profile: {fabric_probe: false}\nmonitor: {interval_s: 0.5}\n"
    )
    proc = run_cli(
        ["run", str(code / "experiment.yaml"), "--out", str(tmp_path / "out")], ray_cluster.address, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (study,) = (tmp_path / "out").iterdir()
    tables = summarize(StudyStore(study))
    late = {s.run_id.split("-")[1]: s for s in tables.findings.stragglers}
    print(pd.read_parquet(study / "ranks.parquet").to_string())  # shown when an assertion fails
    stalls = {s.run_id.split("-")[1]: s for s in tables.findings.stalls}
    text = " ".join(findings_sentences(tables))
    ranks = pd.read_parquet(study / "ranks.parquet")
    clocks = ranks.set_index(["run_id", "rank"])["error_s"]
    assert (clocks < 0.05).all(), clocks  # one machine: the ranks' clocks agree to well within a step

    assert late["data"].rank == 1 and late["data"].cause == "loading data", late
    assert late["data"].late_s == pytest.approx(0.02, abs=0.01) and late["data"].last_share >= 0.9
    assert late["forward"].rank == 1 and late["forward"].cause == "forward", late
    assert late["forward"].cause_s == pytest.approx(0.02, abs=0.01)
    assert "balanced" not in late, late.get("balanced")
    assert stalls["pause"].rank == 1 and stalls["pause"].step == 40 and 1.5 < stalls["pause"].lasted_s < 4, stalls
    assert "rank 1 (node " in text and "from loading data" in text and "from forward" in text and "Stalls: " in text
    assert (study / "charts" / "rank_lateness.png").stat().st_size > 0
    assert json.loads((study / "manifest.json").read_text())["experiment"]["profile"]["arrivals"] is True
