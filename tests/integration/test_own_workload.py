"""The user's own model, data and training loop, profiled through the CLI on the session's real
two-node Ray. The user's modules live in a temporary directory that no Ray worker has on its path:
they reach the workers only through scaleprof's runtime environment, as on a real cluster."""

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from scaleprof.telemetry.store import StudyStore
from tests.integration.cli import run_cli
from tests.unit.test_workloads import write_image_folder

MODELS = """
from torch import nn

def build(features=6, width=16, classes=3):
    return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, classes))
"""

DATA = """
import torch
from torch.utils.data import Dataset

class Points(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.targets = [i % 3 for i in range(n)]
        self.x = torch.randn(n, 6, generator=g) + 2 * torch.tensor(self.targets)[:, None]
    def __len__(self):
        return len(self.targets)
    def __getitem__(self, i):
        return self.x[i], self.targets[i]

def load(n=600):
    return Points(n)
"""

LOOP = """
import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from scaleprof import session


def train_func(config):
    torch.manual_seed(config["seed"])
    g = torch.Generator().manual_seed(config["seed"])
    y = torch.arange(500) % 4
    x = torch.randn(500, 8, generator=g) + y[:, None].float()
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 4))
    model = session.prepare_model(model, example_input=x[:2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["loop_config"]["lr"])
    loader = session.prepare_data_loader(DataLoader(TensorDataset(x, y), batch_size=config["batch_size"], shuffle=True))
    ran = []
    for epoch in session.epochs():
        steps = samples = 0
        for xb, yb in session.steps(loader):
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            session.report_loss(loss)
            steps, samples = steps + 1, samples + len(yb)
        ran.append({"epoch": epoch, "steps": steps, "samples": samples})
    rank = session.world_rank()
    # What the loop itself counted, for the test to hold against what scaleprof recorded.
    with open(os.path.join(config["loop_config"]["out"], f"{config['run_id']}-{rank}.json"), "w") as f:
        json.dump(ran, f)
    if rank == 0:
        with torch.no_grad():
            proba = torch.softmax(model(x[:100].to(session.device())), dim=1)
        session.report_predictions(y[:100], proba)
"""


def scaleprof(args, cluster, timeout=600):
    return run_cli(args, ray_address=cluster.address, timeout=timeout)


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def run_study(experiment: Path, cluster, out: Path) -> Path:
    proc = scaleprof(["run", str(experiment), "--out", str(out)], cluster)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (study,) = out.iterdir()
    return study


@pytest.mark.slow
def test_factory_model_and_data_on_one_and_two_nodes(ray_cluster, tmp_path):
    code = write(tmp_path / "project", {"my_models.py": MODELS, "my_data.py": DATA})
    (code / "experiment.yaml").write_text(
        "name: own\nmodel: {factory: 'my_models:build', kwargs: {width: 16}, label: mine}\n"
        "data: {factory: 'my_data:load', kwargs: {n: 600}}\ntrain: {epochs: 2, batch_size: 32}\n"
        "monitor: {interval_s: 0.2}\nplacements:\n  - {name: one, workers: 1}\n"
        "  - {name: two, workers: 2, strategy: STRICT_SPREAD}\nray: {placement_timeout_s: 10}\n"
    )
    study = run_study(code / "experiment.yaml", ray_cluster, tmp_path / "reports")
    runs = pd.read_parquet(study / "runs.parquet")
    assert list(runs["status"]) == ["ok", "ok"], runs[["run_id", "reason"]]
    assert list(runs["model"]) == ["mine", "mine"] and list(runs["model_name"]) == ["my_models:build"] * 2
    assert list(runs["nodes_realized"]) == [1, 2]  # the user's modules reached the second node too
    assert (runs["throughput"] > 0).all() and runs["accuracy"].between(0.5, 1).all()
    assert (runs["flops_per_sample"] > 0).all() and runs["mfu"].between(
        0, 1
    ).all()  # a peak measured in contention read 4x low once
    assert (runs["samples_total"] == 2 * 420).all()  # 70% of 600 train, every epoch, over all workers
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["data"]["name"] == "my_data:load" and manifest["data"]["split_sizes"]["train"] == 420
    assert str(code) in manifest["code"]
    quality = pd.read_parquet(study / "quality.parquet")
    assert set(quality["class"].astype(str)) == {"0", "1", "2"}


@pytest.mark.slow
def test_user_loop_reports_what_it_ran_with_predictions(ray_cluster, tmp_path):
    code = write(tmp_path / "project", {"loop.py": LOOP})
    counts = tmp_path / "counts"
    counts.mkdir()
    (code / "experiment.yaml").write_text(
        "name: loop\ntrain: {loop: 'loop:train_func', loop_config: {lr: 0.01, out: '" + str(counts) + "'},"
        " epochs: 3, batch_size: 40}\nmonitor: {interval_s: 0.2}\n"
        "placements:\n  - {name: one, workers: 1}\n  - {name: two, workers: 2, strategy: STRICT_SPREAD}\n"
        "ray: {placement_timeout_s: 10}\n"
    )
    study = run_study(code / "experiment.yaml", ray_cluster, tmp_path / "reports")
    runs = pd.read_parquet(study / "runs.parquet")
    epochs = pd.read_parquet(study / "epochs.parquet")
    assert list(runs["status"]) == ["ok", "ok"] and list(runs["model"]) == ["train_func"] * 2
    assert runs["accuracy"].notna().all() and (runs["flops_per_sample"] > 0).all()
    events = StudyStore(study).events()
    for _, run in runs.iterrows():
        mine = epochs[epochs["run_id"] == run["run_id"]].sort_values("epoch")
        counted = [json.loads((counts / f"{run['run_id']}-{rank}.json").read_text()) for rank in range(run["workers"])]
        assert list(mine["epoch"]) == [1, 2, 3]  # 1-based in the table, as the loop ran them
        assert list(mine["samples"]) == [sum(c[e]["samples"] for c in counted) for e in range(3)]
        steps = events[(events["run_id"] == run["run_id"]) & (events["kind"] == "step")]
        assert len(steps) == sum(e["steps"] for c in counted for e in c)
        assert steps["samples"].sum() == sum(e["samples"] for c in counted for e in c)
    loader = events[events["event"] == "loader_info"]
    assert (loader["batch_size"] == 40).all() and (loader["num_workers"] == 0).all()
    summary = (study / "summary.md").read_text()
    assert "Training loop: loop:train_func, the user's own" in summary and "SGD" not in summary


@pytest.mark.slow
def test_image_folder_data_with_loader_workers(ray_cluster, tmp_path):
    images = write_image_folder(tmp_path / "images", per_class=20)
    experiment = tmp_path / "images.yaml"
    experiment.write_text(
        "name: folder\nmodel: {name: small-cnn, kwargs: {width: 8, hidden: 16}}\n"
        "data: {name: image-folder, path: images, image_size: [12, 12],"
        " loader: {num_workers: 1, persistent_workers: true}}\n"
        "train: {epochs: 2, batch_size: 8}\nplacements:\n  - {name: one, workers: 1}\nray: {placement_timeout_s: 10}\n"
    )
    study = run_study(experiment, ray_cluster, tmp_path / "reports")  # `images` is relative to the file
    runs = pd.read_parquet(study / "runs.parquet")
    assert list(runs["status"]) == ["ok"] and runs["accuracy"].notna().all()
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["data"]["input_shape"] == [3, 12, 12] and manifest["data"]["samples"] == 60
    assert manifest["experiment"]["data"]["path"] == str(images)
    assert manifest["data"]["loader"]["num_workers"] == 1
    assert runs["loader_num_workers"].tolist() == [1]  # as the run's loader was built, from its loader_info event


# One loop module, two ways a user's loop goes wrong (each model's kwargs pick one): it raises mid-epoch,
# or it trains but never through session.epochs() / session.steps().
MISBEHAVING = """
import torch

from scaleprof import session

def train_func(config):
    if config["model"]["kwargs"]["behaviour"] == "raises":
        for epoch in session.epochs():
            for i, _ in enumerate(session.steps(range(0, 1000, 10), samples=10)):
                if epoch == 1 and i == 3:
                    raise ValueError("my loop exploded at step 3")
    else:
        model = session.prepare_model(torch.nn.Linear(4, 2))
        for _ in range(20):
            model(torch.randn(8, 4)).sum().backward()
"""


def test_a_loop_that_raises_fails_its_run_and_one_that_records_no_step_is_unmeasured(ray_cluster, tmp_path):
    """Both in one study: the report is still written, exit 3 names each run with what went wrong."""
    code = write(tmp_path / "project", {"misbehaving.py": MISBEHAVING})
    (code / "experiment.yaml").write_text(
        "name: misbehaving\ntrain: {loop: 'misbehaving:train_func', epochs: 2}\nmodels:\n"
        "  - {label: raises, kwargs: {behaviour: raises}}\n  - {label: silent, kwargs: {behaviour: silent}}\n"
        "placements:\n  - {name: one, workers: 1}\nray: {placement_timeout_s: 10}\n"
    )
    out = tmp_path / "reports"
    proc = scaleprof(["run", str(code / "experiment.yaml"), "--out", str(out)], ray_cluster)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 2 run(s) failed: 001-raises-one-r0" in proc.stderr and "Traceback" not in proc.stderr
    assert "1 of 2 run(s) measured nothing: 002-silent-one-r0" in proc.stderr
    assert "session.steps(loader)" in proc.stderr
    (study,) = out.iterdir()
    assert (study / "report.html").stat().st_size > 0
    runs = pd.read_parquet(study / "runs.parquet").set_index("model")
    raised, silent = runs.loc["raises"], runs.loc["silent"]
    assert raised["status"] == "failed" and "my loop exploded at step 3" in raised["reason"]
    # Epoch 1 finished (the warm-up the steady state leaves out): no figure from it reads as the placement's speed.
    assert raised[["throughput", "speedup", "cost_per_sample_usd"]].isna().all()
    events = StudyStore(study).events()
    mine = events[events["run_id"] == raised["run_id"]]
    steps = mine[mine["kind"] == "step"]
    assert len(steps) == 103 and (mine["kind"] == "epoch").sum() == 1  # what it ran; not the epoch it never finished
    assert silent["status"] == "unmeasured" and pd.isna(silent["throughput"])
    records = [json.loads(line) for line in (study / "run_records.jsonl").read_text().splitlines()]
    last = {r["run_id"]: r["status"] for r in records}
    assert last[silent["run_id"]] == "unmeasured"  # as recorded: --resume runs it again once the loop records steps
