"""scaleprof's own cost, measured side by side in one run (not in timed unit tests).

    .venv/bin/python benchmarks/bench.py all   # or one: overhead, monitor-cpu, plain, ddp, user, session, lm,
                                               # fsdp-memory, telemetry, report
    .venv/bin/python benchmarks/bench.py overhead --pairs 5
    .venv/bin/python benchmarks/bench.py ddp --repeats 3 --epochs 20

Each benchmark writes benchmarks/results/<name>.json; RESULTS.md beside them is written by hand from those.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scaleprof.config import Experiment

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _local_ray(runtime_env: dict | None = None) -> Iterator[None]:
    """A new local Ray of the benchmark's own (never a cluster already running here), shut down after."""
    import ray

    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",  # type: ignore[arg-type]  # Ray's own default is a level name ("info"), not int
        runtime_env=runtime_env,
    )
    try:
        yield
    finally:
        ray.shutdown()


def _experiment(name: str, monitor: bool, epochs: int = 6, workers: int = 1) -> Experiment:
    from scaleprof.config import Experiment

    return Experiment.model_validate(
        {
            "name": name,
            "model": {"name": "small-cnn"},
            "data": {"name": "digits"},
            "train": {"epochs": epochs, "batch_size": 64},
            "monitor": {"enabled": monitor, "interval_s": 1.0},
            "placements": [{"name": f"cpu-{workers}", "workers": workers}],
        }
    )


def _throughput(study_dir: Path) -> dict:
    from scaleprof.analysis.phases import WALL_PHASES
    from scaleprof.analysis.summarize import summarize
    from scaleprof.telemetry.store import StudyStore

    runs = summarize(StudyStore(study_dir)).runs
    run = runs.iloc[0]
    phases = {k: float(run[k]) for k in WALL_PHASES}
    return {
        "throughput": float(run["throughput"]),
        "throughput_low": float(run["throughput_low"]),  # its 95% interval from its own steady steps
        "throughput_high": float(run["throughput_high"]),
        "steady_steps": int(run["steady_steps"]),
        "contended": bool(run["contended"]),
        "wall_s": float(run["wall_s"]),
        "startup_s": float(run["startup_s"]),
        **phases,
    }


def bench_overhead(pairs: int, epochs: int) -> dict:
    """The same 1-worker study with monitors on and off, alternated, in one Ray session."""
    from scaleprof.execution.runner import run_study

    out = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    rows = []
    with _local_ray():
        for i in range(pairs):
            order = (True, False) if i % 2 == 0 else (False, True)  # alternate which goes first
            for monitor in order:
                result = run_study(_experiment(f"overhead-{'on' if monitor else 'off'}", monitor, epochs), out)
                rows.append({"pair": i, "monitor": monitor, **_throughput(result.study_dir)})
    ratios = []
    for i in range(pairs):
        on = next(r["throughput"] for r in rows if r["pair"] == i and r["monitor"])
        off = next(r["throughput"] for r in rows if r["pair"] == i and not r["monitor"])
        ratios.append(on / off)
    from scaleprof.analysis.phases import WALL_PHASES

    return {
        "what": f"steady-state throughput with monitor.enabled true / false, small-cnn on digits, 1 worker, {epochs} "
        "epochs, interval 1 s, alternated pairs in one Ray session",
        "fixed_cost_median_s": {k: statistics.median(r[k] for r in rows) for k in WALL_PHASES},
        "pairs": pairs,
        "runs": rows,
        "ratios_on_over_off": ratios,
        "median_ratio": statistics.median(ratios),
        "target": ">= 0.99",
    }


def _in_process(function, *args):
    """Call a benchmark in a fresh Python process (nothing imported or cached from an earlier one)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def bench_monitor_cpu(seconds: float, steps_per_s: float, rounds: int, flush_intervals: list[float]) -> dict:
    """The monitor's own CPU time, measured directly: a Ray worker emits `steps_per_s` step events as a
    training loop would, with the real 1 Hz sampler thread and a real sink to a real aggregator (sending
    a batch every `flush_s`, for each of `flush_intervals`), then runs the same loop without them; the
    arms alternate, their order rotated each round. The difference in the process's CPU time over the
    wall time is the monitor's cost as a fraction of one core: a bound on what it takes from a CPU-bound step."""
    import ray

    from scaleprof.telemetry.handle import start_aggregators
    from scaleprof.telemetry.store import StudyStore

    @ray.remote(num_cpus=1)
    class Worker:
        def run(self, aggregator, flush_s: float | None, seconds: float, steps_per_s: float) -> dict:
            import psutil

            from scaleprof.records import StepEvent
            from scaleprof.telemetry.monitor import EventSink, GpuSampler, Monitor, SystemSampler

            proc = psutil.Process()
            ids = {"study_id": "bench", "run_id": f"r-{time.time_ns()}", "attempt": 0, "rank": 0, "node_id": "n"}
            before = proc.cpu_times()
            monitored = flush_s is not None
            if flush_s is not None:
                to = aggregator.for_node("n")
                sink = EventSink(ids, lambda batch: to.ingest.remote(batch), flush_interval_s=flush_s).start()
                monitor = Monitor(sink, [SystemSampler(), GpuSampler(None)], interval_s=1.0).start()
            steps, period = 0, 1.0 / steps_per_s
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                if monitored:
                    sink.emit(
                        StepEvent(
                            epoch=0,
                            step=steps,
                            samples=64,
                            data_s=0.0001,
                            compute_s=period,
                            forward_s=period / 3,
                            backward_s=period / 2,
                            optimizer_s=period / 6,
                            step_s=period,
                        )
                    )
                steps += 1
                time.sleep(max(0.0, start + steps * period - time.monotonic()))
            if monitored:
                monitor.stop()
                sink.close()
            after = proc.cpu_times()
            wall = time.monotonic() - start
            return {
                "cpu_s": (after.user + after.system) - (before.user + before.system),
                "wall_s": wall,
                "steps": steps,
            }

    rows = []
    arms: list[float | None] = [None, *flush_intervals]
    with _local_ray():
        study = Path(tempfile.mkdtemp(prefix="bench-monitor-cpu-")) / "study"
        StudyStore(study).create()
        aggregator = start_aggregators(str(study))
        worker = Worker.remote()  # type: ignore[attr-defined]  # mypy keeps a decorated class's own type
        ray.get(worker.run.remote(aggregator, flush_intervals[0], 2.0, steps_per_s))  # warm-up: imports, first calls
        for i in range(rounds):
            for flush_s in arms[i % len(arms) :] + arms[: i % len(arms)]:
                rows.append(
                    {
                        "round": i,
                        "flush_s": flush_s,
                        **ray.get(worker.run.remote(aggregator, flush_s, seconds, steps_per_s)),
                    }
                )
    cost = {
        str(flush_s): [
            (
                next(r for r in rows if r["round"] == i and r["flush_s"] == flush_s)["cpu_s"]
                - next(r for r in rows if r["round"] == i and r["flush_s"] is None)["cpu_s"]
            )
            / seconds
            for i in range(rounds)
        ]
        for flush_s in flush_intervals
    }
    return {
        "what": f"CPU time of the monitor (1 Hz sampler thread) and event sink (column batches to a real aggregator "
        f"every flush_s) in a Ray worker emitting {steps_per_s:g} step events/s, minus the same loop without them; "
        f"{seconds:g} s per run, {rounds} rounds, arms in rotated order",
        "runs": rows,
        "core_fraction_per_round": cost,
        "median_core_fraction": {k: statistics.median(v) for k, v in cost.items()},
    }


def _plain_loop(epochs: int, batch: int, threads: int) -> dict:
    """The same model, data, batch and thread count in a plain PyTorch loop without Ray or telemetry."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from scaleprof.config import DataSpec, ModelSpec
    from scaleprof.workloads.data import load_dataset
    from scaleprof.workloads.models import build_model

    torch.set_num_threads(threads)
    data = load_dataset(DataSpec(name="digits"), 0)
    assert data.x is not None  # digits are held in memory
    model = build_model(ModelSpec(name="small-cnn"), data.input_shape, data.num_classes, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train = TensorDataset(torch.from_numpy(data.x[data.train_idx]), torch.from_numpy(data.y[data.train_idx]))
    loader = DataLoader(train, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    return _timed_epochs(loader, epochs, step)


def bench_plain(repeats: int, epochs: int) -> dict:
    """scaleprof's reported 1-worker throughput beside a plain loop, alternated in one process."""
    from scaleprof.execution.runner import run_study

    out = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    rows = []
    with _local_ray():
        for i in range(repeats):
            plain = _plain_loop(epochs=epochs, batch=64, threads=1)
            result = run_study(_experiment("plain-vs-ray", True, epochs), out)
            rows.append(
                {
                    "repeat": i,
                    "plain": plain["throughput"],
                    **{f"scaleprof_{k}": v for k, v in _throughput(result.study_dir).items()},
                }
            )
    ratios = [r["scaleprof_throughput"] / r["plain"] for r in rows]
    return {
        "what": "steady-state throughput: scaleprof 1-worker run (Ray Train worker, 1 CPU, 1 torch thread) / plain "
        f"PyTorch loop in the driver process (1 torch thread); small-cnn, digits, batch 64, {epochs} epochs",
        "runs": rows,
        "ratios_scaleprof_over_plain": ratios,
        "median_ratio": statistics.median(ratios),
    }


def _ddp_rank(rank: int, world: int, experiment, epochs: int) -> dict:
    """One gloo rank of a plain PyTorch DDP loop (no Ray, no scaleprof): the experiment's model, train split,
    per-worker batch and SGD, a DistributedSampler; each epoch starts after a barrier, as scaleprof's do.
    Alone (world 1) the model is not wrapped, as Ray Train does not wrap it either."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, DistributedSampler

    from scaleprof.workloads.data import load_dataset, open_source, subset
    from scaleprof.workloads.models import build_model

    data = load_dataset(experiment.data, experiment.seed)
    train = subset(open_source(experiment.data, experiment.seed).dataset, data.train_idx)
    model = build_model(experiment.model_list[0], data.input_shape, data.num_classes, experiment.seed)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=experiment.train.lr, momentum=experiment.train.momentum)
    sampler: DistributedSampler[Any] = DistributedSampler(
        train, num_replicas=world, rank=rank, shuffle=True, seed=experiment.seed
    )
    loader = DataLoader(train, batch_size=experiment.train.batch_size, sampler=sampler)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    def before_epoch(epoch: int) -> None:
        sampler.set_epoch(epoch)
        dist.barrier()

    return {"rank": rank, **_timed_epochs(loader, epochs, step, before_epoch)}


def bench_ddp(repeats: int, epochs: int) -> dict:
    """scaleprof's reported 2-worker throughput beside a plain PyTorch DDP loop on 2 gloo ranks (spawned
    processes, no Ray), alternated with the order rotated, in one Ray session."""
    import pandas as pd

    from scaleprof.analysis.throughput import steady_state_throughput
    from scaleprof.execution.runner import run_study

    out = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    experiment = _experiment("ddp-vs-ray", True, epochs, workers=2)

    def plain_ddp() -> dict:
        ranks = _gloo_ranks(_ddp_rank, experiment, epochs)
        steps = pd.DataFrame([{**row, "rank": r["rank"]} for r in ranks for row in r["step_rows"]])
        counts = {k: [sum(c) for c in zip(*(r[k] for r in ranks))] for k in ("samples_per_epoch", "steps_per_epoch")}
        throughput = steady_state_throughput(steps, warmup_steps=0).samples_per_s
        return {"throughput": throughput, "epoch_times_s": [r["epoch_times_s"] for r in ranks], **counts}

    rows = []
    with _local_ray():
        for i in range(repeats):
            arms = {"plain": plain_ddp, "scaleprof": lambda: run_study(experiment, out).study_dir}
            order = list(arms) if i % 2 == 0 else list(arms)[::-1]  # rotate which goes first
            done: dict[str, Any] = {name: arms[name]() for name in order}
            plain, study_dir = done["plain"], done["scaleprof"]
            recorded = _recorded_counts(study_dir)
            rows.append(
                {
                    "repeat": i,
                    "order": order,
                    "plain": plain["throughput"],
                    "plain_epoch_times_s_per_rank": plain["epoch_times_s"],
                    **{f"scaleprof_{k}": v for k, v in _throughput(study_dir).items()},
                    "counts_equal": recorded == {k: plain[k] for k in recorded},
                }
            )
    ratios = [r["scaleprof_throughput"] / r["plain"] for r in rows]
    return {
        "what": "steady-state throughput: scaleprof 2-worker run (2 Ray Train workers, 1 CPU and 1 torch thread "
        "each, DDP over gloo) / a plain PyTorch DDP loop on 2 gloo ranks in spawned processes (no Ray, 1 torch "
        "thread each); small-cnn, digits (the same train split), batch 64 per worker, DistributedSampler, SGD, "
        f"{epochs} epochs; both by scaleprof's one definition (steps after epoch 1 and the MSER-5 cut, samples of "
        "both ranks / the slowest rank's summed step time), epochs started after a barrier; alternated, the order "
        "rotated",
        "runs": rows,
        "ratios_scaleprof_over_plain": ratios,
        "median_ratio": statistics.median(ratios),
    }


# The footprint matrix's workloads: per-worker batch 64, one torch thread per worker, a step of about 1, 10 and
# 100 ms on this machine's cores (measured: the rows' step_s); data sized so an epoch lasts a few seconds.
FOOTPRINT_WORKLOADS = {
    "~1 ms": ({"name": "mlp"}, {"name": "synthetic-images", "shape": [1, 8, 8], "size": 480_000}),
    "~10 ms": ({"name": "small-cnn"}, {"name": "synthetic-images", "shape": [1, 10, 10], "size": 48_000}),
    "~100 ms": ({"name": "torchvision:resnet18"}, {"name": "synthetic-images", "shape": [3, 32, 32], "size": 4_096}),
}


def _plain_ranks(experiment, epochs: int, workers: int) -> dict:
    """The plain loop on `workers` gloo ranks (spawned processes, no Ray)."""
    return _steady(_gloo_ranks(_ddp_rank, experiment, epochs, world=workers))


def _steady(ranks: list[dict]) -> dict:
    """Plain ranks' step rows by scaleprof's throughput definition, with its interval and mean step time."""
    import pandas as pd

    from scaleprof.analysis.throughput import steady_state_throughput

    steps = pd.DataFrame([{**row, "rank": r["rank"]} for r in ranks for row in r["step_rows"]])
    result = steady_state_throughput(steps, warmup_steps=0)
    steady = result.steady if result.steady is not None else steps
    return {
        "throughput": result.samples_per_s,
        "throughput_low": result.low,
        "throughput_high": result.high,
        "step_s": float(steady["step_s"].mean()),
    }


def _plain_in_ray_train(experiment, epochs: int, workers: int, out: Path) -> dict:
    """The same plain loop (`_ddp_rank`) in `workers` 1-CPU Ray Train workers, whose process group Ray Train
    set up: what Ray Train's processes cost, without scaleprof."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    stem = f"plain-in-ray-{time.time_ns()}"

    def loop(config):
        import ray.train
        import torch

        torch.set_num_threads(1)
        ctx = ray.train.get_context()
        rank = ctx.get_world_rank()
        row = _ddp_rank(rank, ctx.get_world_size(), config["experiment"], config["epochs"])
        (Path(config["out"]) / f"{config['stem']}-{rank}.json").write_text(json.dumps(row))

    TorchTrainer(
        loop,
        train_loop_config={"experiment": experiment, "epochs": epochs, "out": str(out), "stem": stem},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(out / "ray-train"), name=stem),
    ).fit()
    return _steady([json.loads((out / f"{stem}-{r}.json").read_text()) for r in range(workers)])


def _ledgered(arm, *args) -> tuple[dict, dict]:
    """`arm(*args)` under the CPU ledger: its result, and each role's cores over the middle of its wall time
    (past the first 40%, the start-up and warm-up; the last second left out)."""
    from footprint import CpuLedger

    ledger = CpuLedger().start()
    start = time.time()
    try:
        result = arm(*args)
    finally:
        ledger.stop()
    end = time.time()
    return result, ledger.between(start + 0.4 * (end - start), end - 1)


def _scaleprof_arm(experiment, out: Path) -> dict:
    from footprint import measure

    study = measure(experiment, out)
    measured = _throughput(Path(study["study_dir"]))
    keys = ("throughput", "throughput_low", "throughput_high", "steady_steps", "contended")
    figures = {k: measured[k] for k in keys}
    return {**figures, "steady_cores_by_role": study["cores"], "steady_window_s": study["window_s"]}


FOOTPRINT_ARMS = ("plain", "plain in Ray Train", "scaleprof")


def bench_footprint(pairs: int, epochs: int, only: list[str] | None = None, worker_counts: tuple = (1, 2)) -> dict:
    """scaleprof's steady-state throughput against the same training as a plain PyTorch loop (1 worker) or plain
    DDP over gloo (2 workers) in spawned processes without Ray, and as that plain loop inside Ray Train's workers
    (what Ray Train costs without scaleprof); three step sizes, everything on by default, rounds of the three arms
    with the order rotated. Beside each run, where the machine's CPU went (benchmarks/footprint.py: cores by role;
    for scaleprof over its steady window, epoch 2 to the end, for the others over the middle of their wall time)."""
    from footprint import experiment_for

    out = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    rows = []
    with _local_ray():
        for step, (model, data) in FOOTPRINT_WORKLOADS.items():
            if only and step not in only:
                continue
            for workers in worker_counts:
                experiment = experiment_for(model, data, workers, epochs)
                arms = {
                    "plain": functools.partial(_ledgered, _plain_ranks, experiment, epochs, workers),
                    "plain in Ray Train": functools.partial(
                        _ledgered, _plain_in_ray_train, experiment, epochs, workers, out
                    ),
                    "scaleprof": functools.partial(_ledgered, _scaleprof_arm, experiment, out),
                }
                for i in range(pairs):
                    order = FOOTPRINT_ARMS[i % 3 :] + FOOTPRINT_ARMS[: i % 3]  # each arm goes first once in 3
                    done = {name: arms[name]() for name in order}
                    row = {"step": step, "model": model["name"], "workers": workers, "round": i, "order": order}
                    for name, (result, cores) in done.items():
                        row[name] = {**result, "cores_by_role": cores}
                    plain, in_ray, ours = (row[name]["throughput"] for name in FOOTPRINT_ARMS)
                    row |= {
                        "ratio_over_plain": ours / plain,
                        "ratio_over_plain_in_ray": ours / in_ray,
                        "ray_over_plain": in_ray / plain,
                    }
                    rows.append(row)
                    print(
                        f"{step} x{workers} round {i}: plain {plain:,.0f}, in Ray Train {in_ray:,.0f}, "
                        f"scaleprof {ours:,.0f} samples/s",
                        flush=True,
                    )
    return {
        "what": bench_footprint.__doc__,
        "target": "scaleprof / plain >= 0.97 at 2 workers on ~100 ms steps, >= 0.95 on ~1 ms steps",
        "epochs": epochs,
        "summary": _footprint_summary(rows),
        "rows": rows,
    }


def _footprint_summary(rows: list[dict]) -> list[dict]:
    """Per step size and worker count: the median ratios, the plain step time, and the median cores by role of
    the scaleprof runs' steady windows, with scaleprof's own share (aggregator, relays, the workers' telemetry
    threads) and the rest of Ray's."""
    from footprint import OWN_ROLES

    summary = []
    for step, workers in dict.fromkeys((r["step"], r["workers"]) for r in rows):
        cell = [r for r in rows if r["step"] == step and r["workers"] == workers]
        cores = [r["scaleprof"]["steady_cores_by_role"] for r in cell]
        roles = sorted({k for c in cores for k in c})
        median = {k: statistics.median(c.get(k, 0.0) for c in cores) for k in roles}
        summary.append(
            {
                "step": step,
                "workers": workers,
                "rounds": len(cell),
                "plain_step_s": statistics.median(r["plain"]["step_s"] for r in cell),
                **{
                    f"median_{k}": statistics.median(r[k] for r in cell)
                    for k in ("ratio_over_plain", "ratio_over_plain_in_ray", "ray_over_plain")
                },
                "ratios_over_plain": [r["ratio_over_plain"] for r in cell],
                "ratios_over_plain_in_ray": [r["ratio_over_plain_in_ray"] for r in cell],
                "scaleprof_own_cores": sum(median.get(k, 0.0) for k in OWN_ROLES),
                "steady_cores_by_role_median": median,
            }
        )
    return summary


def _plain_user_model(experiment, epochs: int) -> dict:
    """The user's factory model and factory data, the study's own train split, batch, optimiser and
    thread count, in a plain PyTorch loop without Ray or telemetry."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from scaleprof.workloads.data import load_dataset, open_source, subset
    from scaleprof.workloads.imports import user_code
    from scaleprof.workloads.models import build_model

    torch.set_num_threads(1)
    with user_code(experiment.code_dirs):  # the factories' modules, importable while they are built
        data = load_dataset(experiment.data, experiment.seed)
        train = subset(open_source(experiment.data, experiment.seed).dataset, data.train_idx)
        model = build_model(experiment.model_list[0], data.input_shape, data.num_classes, experiment.seed)
    opt = torch.optim.SGD(model.parameters(), lr=experiment.train.lr, momentum=experiment.train.momentum)
    loader = DataLoader(
        train, batch_size=experiment.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    return _timed_epochs(loader, epochs, step)


def _plain_user_loop(settings: dict, epochs: int, batch: int) -> dict:
    """examples/custom-loop's training, line for line, without scaleprof or Ray."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(REPO / "examples" / "custom-loop"))
    import my_loop

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_set, _ = my_loop.make_data(0)
    model = my_loop.build_model(hidden=settings["hidden"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.01)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True)

    def step(x, y):
        loss = F.cross_entropy(model(x), y, label_smoothing=settings["label_smoothing"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["clip"])
        optimizer.step()

    return _timed_epochs(loader, epochs, step)


def _timed_epochs(loader, epochs: int, step, before_epoch=None) -> dict:
    """A plain loop's epochs, timed by the host clock: steady-state throughput by scaleprof's own
    definition (the same function the report uses), and the samples and steps it ran. `before_epoch(epoch)`
    runs before each epoch's clock starts (a DistributedSampler's set_epoch, a barrier)."""
    import pandas as pd

    from scaleprof.analysis.throughput import steady_state_throughput

    times, samples, steps, step_rows = [], [], [], []
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        start, n, k = time.perf_counter(), 0, 0
        previous = start
        for x, y in loader:  # a step runs from the end of the previous one (or the epoch's start), as scaleprof's
            step(x, y)
            end = time.perf_counter()
            step_rows.append({"rank": 0, "epoch": epoch, "step": k, "samples": len(y), "step_s": end - previous})
            previous, n, k = end, n + len(y), k + 1
        times.append(time.perf_counter() - start)
        samples.append(n)
        steps.append(k)
    throughput = steady_state_throughput(pd.DataFrame(step_rows), warmup_steps=0).samples_per_s
    return {
        "throughput": throughput,
        "epoch_times_s": times,
        "samples_per_epoch": samples,
        "steps_per_epoch": steps,
        "step_rows": step_rows,
    }


def _in_ray_train_worker(plain_fn, out: Path) -> dict:
    """`plain_fn` (a plain PyTorch loop, no scaleprof) run in a 1-CPU Ray Train worker: what Ray's own
    worker process costs, apart from scaleprof's instrumentation."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    result_file = out / f"plain-in-ray-{time.time_ns()}.json"

    def loop(config):
        Path(config["file"]).write_text(json.dumps(config["fn"]()))

    TorchTrainer(
        loop,
        train_loop_config={"fn": plain_fn, "file": str(result_file)},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(out / "ray-train"), name=result_file.stem),
    ).fit()
    return json.loads(result_file.read_text())


def _recorded_counts(study_dir: Path) -> dict:
    """What scaleprof stored of the run's epochs: samples and steps per epoch (all ranks together)."""
    from scaleprof.telemetry.store import StudyStore

    events = StudyStore(study_dir).events()
    epochs = events[events["kind"] == "epoch"].groupby("epoch")[["samples", "steps"]].sum()
    return {
        "samples_per_epoch": epochs["samples"].astype(int).tolist(),
        "steps_per_epoch": epochs["steps"].astype(int).tolist(),
    }


def bench_user_workloads(repeats: int, epochs: int) -> dict:
    """The two examples (a factory model + factory data on the built-in loop; a user's own loop) on one
    worker, alternated with the same training as a plain PyTorch loop in the driver process: the
    throughput ratio, the spread of each side over its repeats (the noise), and whether scaleprof's
    recorded epochs, steps and samples equal what the plain loop ran."""
    from scaleprof.config import load_experiment
    from scaleprof.execution.ray_session import job_runtime_env
    from scaleprof.execution.runner import run_study

    out = Path(tempfile.mkdtemp(prefix="bench-user-"))
    one_worker = [{"name": "cpu-1", "workers": 1}]
    model_exp = load_experiment(REPO / "examples" / "custom-model" / "experiment.yaml")
    assert model_exp.models is not None
    model_exp = model_exp.model_copy(
        update={
            "models": model_exp.models[:1],
            "placements": [p for p in model_exp.placements if p.workers == 1],
            "train": model_exp.train.model_copy(update={"epochs": epochs}),
        }
    )
    loop_exp = load_experiment(REPO / "examples" / "custom-loop" / "experiment.yaml")
    loop_exp = loop_exp.model_copy(
        update={
            "placements": [p for p in loop_exp.placements if p.workers == 1],
            "train": loop_exp.train.model_copy(update={"epochs": epochs}),
        }
    )
    assert [p.workers for p in model_exp.placements + loop_exp.placements] == [1, 1], one_worker
    model_env, loop_env = job_runtime_env(model_exp), job_runtime_env(loop_exp)
    assert model_env is not None and loop_env is not None  # both examples bring their own code
    modules = sorted(set(model_env["py_modules"] + loop_env["py_modules"]))
    rows = []
    with _local_ray({"py_modules": modules}):
        for i in range(repeats):
            for name, experiment, plain_fn in (
                ("custom-model", model_exp, lambda: _plain_user_model(model_exp, epochs)),
                (
                    "custom-loop",
                    loop_exp,
                    lambda: _plain_user_loop(loop_exp.train.loop_config, epochs, loop_exp.train.batch_size),
                ),
            ):
                plain = plain_fn()
                in_ray = _in_ray_train_worker(plain_fn, out)
                result = run_study(experiment, out)
                recorded = _recorded_counts(result.study_dir)
                rows.append(
                    {
                        "workload": name,
                        "repeat": i,
                        "plain": plain["throughput"],
                        "plain_in_ray": in_ray["throughput"],
                        "scaleprof": _throughput(result.study_dir)["throughput"],
                        "counts_equal": recorded == {k: plain[k] for k in recorded},
                        "recorded": recorded,
                        "plain_counts": {k: plain[k] for k in recorded},
                    }
                )
    summary = {}
    for name in ("custom-model", "custom-loop"):
        mine = [r for r in rows if r["workload"] == name]
        ratios = [r["scaleprof"] / r["plain"] for r in mine]
        over_in_ray = [r["scaleprof"] / r["plain_in_ray"] for r in mine]
        ray_cost = [r["plain_in_ray"] / r["plain"] for r in mine]
        spread = {
            side: statistics.pstdev([r[side] for r in mine]) / statistics.mean([r[side] for r in mine])
            for side in ("plain", "plain_in_ray", "scaleprof")
        }
        summary[name] = {
            "ratios_scaleprof_over_plain": ratios,
            "median_ratio": statistics.median(ratios),
            "ratios_scaleprof_over_plain_in_ray_worker": over_in_ray,
            "median_ratio_vs_ray_worker": statistics.median(over_in_ray),
            "ratios_plain_in_ray_worker_over_plain": ray_cost,
            "median_ray_worker_cost": statistics.median(ray_cost),
            "cv_over_repeats": spread,
            "counts_equal": all(r["counts_equal"] for r in mine),
        }
    return {
        "what": f"examples/custom-model (conv1d-32 on sensors, built-in loop) and examples/custom-loop (AdamW, "
        f"clipping, label smoothing), 1 worker, 1 CPU / 1 thread, {epochs} epochs, each alternated with the same "
        "training as a plain PyTorch loop (no Ray) in the driver and the same plain loop in a 1-CPU Ray Train "
        "worker (no scaleprof); steady state by scaleprof's one definition on every side",
        "rows": rows,
        "summary": summary,
    }


def bench_session_step_cost(rounds: int, epochs: int) -> dict:
    """The per-step cost of scaleprof.session's instrumentation and of Ray's prepare_data_loader wrapper,
    each beside the bare loop over the same DataLoader (no model: the loop body is empty, so the
    difference is the wrapper's own time), alternated, in one process without a cluster."""
    import torch
    from ray.train.torch.train_loop_utils import _WrappedDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    from scaleprof.telemetry.monitor import EventSink
    from scaleprof.worker.session import WorkerSession

    torch.set_num_threads(1)
    loader = DataLoader(TensorDataset(torch.randn(4800, 32), torch.arange(4800) % 5), batch_size=64, shuffle=True)
    wrapped = _WrappedDataLoader(loader, torch.device("cpu"), False)
    sink = EventSink({"run_id": "bench"}, lambda batch: None).start()

    def bare(source) -> float:
        start, n = time.perf_counter(), 0
        for _ in range(epochs):
            for _batch in source:
                n += 1
        return (time.perf_counter() - start) / n

    def instrumented() -> float:
        session = WorkerSession(
            sink.emit, lambda p: None, rank=0, world_size=1, device=torch.device("cpu"), threads=1, epochs=epochs
        )
        start, n, loss = time.perf_counter(), 0, torch.tensor(1.0)
        for _ in session.epochs():
            for _batch in session.steps(loader):
                session.report_loss(loss)
                n += 1
        return (time.perf_counter() - start) / n

    rows = []
    for i in range(rounds):
        plain = bare(loader)
        rows.append(
            {
                "round": i,
                "bare_us": 1e6 * plain,
                "session_us": 1e6 * instrumented(),
                "ray_wrapped_us": 1e6 * bare(wrapped),
            }
        )
    sink.close()
    session_cost = [r["session_us"] - r["bare_us"] for r in rows]
    ray_cost = [r["ray_wrapped_us"] - r["bare_us"] for r in rows]
    return {
        "what": "microseconds per step of an empty loop over a 64-sample TensorDataset loader: bare, through "
        "scaleprof.session (steps + report_loss, events into a real EventSink), and through Ray's "
        f"prepare_data_loader wrapper on CPU; {rounds} alternated rounds of {epochs} epochs x 75 steps",
        "rows": rows,
        "median_session_cost_us": statistics.median(session_cost),
        "median_ray_loader_cost_us": statistics.median(ray_cost),
    }


def bench_telemetry(
    senders: int,
    workers: int,
    events_per_s: float,
    seconds: float,
    aggregators: list[int],
    flush_s: float,
    prebuilt: bool = False,
    relays: bool = False,
    per_node: int = 8,
) -> dict:
    import random

    """`workers` simulated workers, spread over `senders` actors, each a real EventSink emitting step events
    evenly at `events_per_s` and sending a batch every `flush_s` (staggered, as real workers are), into one
    study through `n` aggregator actors for each n in `aggregators`. Measured: events stored per second,
    loss and duplication (every worker's sequence read back from disk), lag from an event's time to its
    segment on disk, each aggregator's CPU time and peak memory, and bytes per event on disk."""
    import ray

    from scaleprof.telemetry.handle import start_aggregators
    from scaleprof.telemetry.segments import disk_bytes
    from scaleprof.telemetry.store import StudyStore

    @ray.remote(num_cpus=0)
    class Sender:
        def run(self, aggs, first: int, n: int, rate: float, seconds: float, flush_s: float, prebuilt: bool) -> dict:
            from scaleprof.records import StepEvent
            from scaleprof.telemetry.monitor import EventSink

            if prebuilt:
                return self.send_prebuilt(aggs, first, n, rate, seconds, flush_s)

            def sink_for(rank: int) -> EventSink:
                node = f"node-{rank // per_node}"  # 8 workers a node, as on an 8-GPU machine
                to = aggs.for_node(node)
                ids = {"study_id": "bench", "run_id": "r", "attempt": 0, "rank": rank, "node_id": node}
                return EventSink(ids, lambda batch: to.ingest.remote(batch), flush_interval_s=flush_s)

            sinks = [sink_for(first + w) for w in range(n)]
            rng = random.Random(first)
            began = time.time()
            tick_s = 0.05
            ticks_per_flush = max(1, round(flush_s / tick_s))
            per_tick = rate * tick_s
            owed = [0.0] * n
            steps = [0] * n
            start = time.monotonic()
            tick = 0
            while time.monotonic() - start < seconds:
                for w, sink in enumerate(sinks):
                    owed[w] += per_tick
                    while owed[w] >= 1:
                        step_s = rng.gauss(1.0 / rate, 0.05 / rate)  # real step times jitter: they compress less
                        sink.emit(
                            StepEvent(
                                epoch=steps[w] // 1000,
                                step=steps[w],
                                samples=64,
                                data_s=step_s * 0.05,
                                compute_s=step_s * 0.95,
                                step_s=step_s,
                                forward_s=step_s * 0.3,
                                backward_s=step_s * 0.5,
                                optimizer_s=step_s * 0.1,
                            )
                        )
                        steps[w] += 1
                        owed[w] -= 1
                    if (tick + w) % ticks_per_flush == 0:  # staggered: workers do not flush in lockstep
                        sink.flush(wait_s=0.0)
                tick += 1
                time.sleep(max(0.0, start + tick * tick_s - time.monotonic()))
            for sink in sinks:
                sink.close(timeout_s=120)
            return {
                "emitted": sum(steps),
                "sent": sum(s.sent for s in sinks),
                "dropped": sum(s.dropped for s in sinks),
                "started": began,
                "finished": time.time(),
            }

        def send_prebuilt(self, aggs, first: int, n: int, rate: float, seconds: float, flush_s: float) -> dict:
            """The aggregator's side alone: each worker's batch (the sink's wire format) built once, then sent
            with fresh sequence numbers and times spread over the interval before the send, as a worker
            emitting evenly would have stamped them; at most 8 calls in flight per worker, as the sink."""
            from scaleprof.records import StepEvent, event_batch, stamped

            rng = random.Random(first)
            k = max(1, round(rate * flush_s))
            ranks = range(first, first + n)
            node = {r: f"node-{r // per_node}" for r in ranks}

            def step(i: int) -> StepEvent:
                t = rng.gauss(1 / rate, 0.05 / rate)
                return StepEvent(
                    epoch=0,
                    step=i,
                    samples=64,
                    data_s=t * 0.05,
                    compute_s=t * 0.95,
                    step_s=t,
                    forward_s=t * 0.3,
                    backward_s=t * 0.5,
                    optimizer_s=t * 0.1,
                )

            template = {
                r: event_batch(
                    {"study_id": "bench", "run_id": "r", "attempt": 0, "rank": r, "node_id": node[r]},
                    [stamped(0, 0.0, step(i)) for i in range(k)],
                )
                for r in ranks
            }
            seqs = dict.fromkeys(ranks, 0)
            in_flight: dict[int, list] = {r: [] for r in ranks}
            start, sent, began = time.monotonic(), 0, time.time()
            tick = 0
            ticks_per_flush = max(1, round(flush_s / 0.05))
            while time.monotonic() - start < seconds:
                now = time.time()
                for r in ranks:
                    if (tick + r) % ticks_per_flush:
                        continue  # staggered, as the sinks' threads are
                    if len(in_flight[r]) >= 8:
                        done, in_flight[r] = ray.wait(in_flight[r], num_returns=len(in_flight[r]), timeout=0)
                        if len(in_flight[r]) >= 8:
                            continue  # back-pressure: this worker's events wait, as in the sink's outbox
                    columns = dict(template[r]["columns"])
                    columns["seq"] = list(range(seqs[r], seqs[r] + k))
                    columns["time"] = [now - flush_s * (1 - i / k) for i in range(k)]
                    columns["step"] = columns["seq"]
                    seqs[r] += k
                    in_flight[r].append(
                        aggs.for_node(node[r]).ingest.remote({"ids": template[r]["ids"], "columns": columns})
                    )
                    sent += k
                tick += 1
                time.sleep(max(0.0, start + tick * 0.05 - time.monotonic()))
            ray.get([ref for refs in in_flight.values() for ref in refs])
            return {"emitted": sent, "sent": sent, "dropped": 0, "started": began, "finished": time.time()}

    def usage(actor) -> dict:
        def read(self):
            import resource

            import psutil

            t, peak_kib = psutil.Process().cpu_times(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return {"cpu_s": t.user + t.system, "peak_rss_mb": peak_kib / 1024}

        return ray.get(actor.__ray_call__.remote(read))

    rows = []
    with _local_ray():
        for count in aggregators:
            study = Path(tempfile.mkdtemp(prefix="bench-telemetry-")) / "study"
            StudyStore(study).create()
            aggs = start_aggregators(str(study), count)
            if relays:  # the simulated nodes are names: their relays run here, each forwarding its workers' batches
                aggs = aggs.with_relays(str(study), [f"node-{i}" for i in range(workers // per_node)], place=False)
            before = [usage(a) for a in aggs.actors]
            actors = [Sender.remote() for _ in range(senders)]  # type: ignore[attr-defined]  # as Worker's above
            per = workers // senders
            start = time.monotonic()
            sent = ray.get(
                [
                    a.run.remote(aggs, i * per, per, events_per_s, seconds, flush_s, prebuilt)
                    for i, a in enumerate(actors)
                ]
            )
            elapsed = time.monotonic() - start
            window = max(s["finished"] for s in sent) - min(s["started"] for s in sent)  # first send to last ack
            stats = aggs.close()  # relay stats included
            after = [usage(a) for a in aggs.actors]
            stored = StudyStore(study).events(columns=[])
            seqs_ok = all(
                (g.sort_values().to_numpy() == np.arange(len(g))).all() for _, g in stored.groupby("rank")["seq"]
            )
            emitted = sum(s["emitted"] for s in sent)
            rows.append(
                {
                    "aggregators": count,
                    "senders": "prebuilt batches" if prebuilt else "EventSink",
                    "node_relays": (workers // per_node) if relays else 0,
                    "workers_per_node": per_node,
                    "aggregator_calls_per_s": stats.get("relay_calls", 0) / window if relays else workers / flush_s,
                    "simulated_workers": workers,
                    "events_per_s_per_worker": events_per_s,
                    "flush_s": flush_s,
                    "offered_events_per_s": workers * events_per_s,
                    "emitted": emitted,
                    "acknowledged": sum(s["sent"] for s in sent),
                    "dropped_by_senders": sum(s["dropped"] for s in sent),
                    "stored": len(stored),
                    "every_seq_once": bool(seqs_ok and len(stored) == emitted),
                    "gaps": stats["gaps"],
                    "duplicates": stats["duplicates"],
                    "stored_events_per_s": len(stored) / window,
                    "sending_window_s": window,
                    "elapsed_s": elapsed,
                    "lag_p50_s": stats["lag_p50_s"],
                    "lag_p99_s": stats["lag_p99_s"],
                    "aggregator_cpu_s": [b["cpu_s"] - a["cpu_s"] for a, b in zip(before, after, strict=True)],
                    "aggregator_cpu_us_per_event": sum(
                        b["cpu_s"] - a["cpu_s"] for a, b in zip(before, after, strict=True)
                    )
                    / max(len(stored), 1)
                    * 1e6,
                    "aggregator_peak_rss_mb": [b["peak_rss_mb"] for b in after],
                    "disk_bytes_per_event": disk_bytes(study) / max(len(stored), 1),
                    "segment_files": sum(1 for _ in study.glob("events/*/*.parquet")),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
            for a in actors:
                ray.kill(a)
            aggs.kill()
    return {
        "what": f"{workers} simulated workers in {senders} sender actors, each a real EventSink emitting "
        f"{events_per_s:g} step events/s evenly and sending a batch every {flush_s:g} s (staggered), for "
        f"{seconds:g} s, into one study through 1..n aggregator actors (a worker sends to the one chosen by its "
        "node, 8 workers a node); stored events read back from disk",
        "rows": rows,
    }


def bench_report(runs: int, samples_per_worker: int, jsonl: bool = False) -> dict:
    """A synthetic study of `runs` runs x 2 workers with long timelines, stored through the aggregator as
    a real study is (or, `jsonl`, as JSON lines, as scaleprof stored events before segments): summarize +
    render time, peak memory, HTML size."""
    import resource

    sys.path.insert(0, str(REPO))
    from scaleprof.analysis.summarize import summarize, write_tables
    from scaleprof.report.render import render_report
    from scaleprof.telemetry.aggregator import Aggregator
    from scaleprof.telemetry.store import StudyStore, append_jsonl
    from tests.unit.study_data import make_study

    root = Path(tempfile.mkdtemp(prefix="bench-report-")) / "study"
    store: StudyStore = make_study(root, jsonl=jsonl)
    aggregator = Aggregator(str(root))
    write = (lambda rows: append_jsonl(store.events_path, rows)) if jsonl else aggregator.ingest
    base = {
        "model": "mlp",
        "kind": "fixed-split",
        "node_type": "test-node",
        "cpus_per_worker": 1,
        "gpus_per_worker": 0,
        "per_worker_batch": 50,
        "repeat": 0,
        "device": "cpu",
        "status": "ok",
        "reason": "",
        "wall_s": 60.0,
    }
    rng = np.random.default_rng(0)
    for i in range(runs):
        run_id, workers = f"{i + 10:04d}-mlp-w{i % 8 + 1}-r{i}", i % 8 + 1
        store.append_run_record(
            {
                **base,
                "run_id": run_id,
                "index": i + 10,
                "placement": f"p{i}",
                "workers": workers,
                "global_batch": 50 * workers,
            }
        )
        events = []
        for rank in range(2):
            ids = {"study_id": "s", "run_id": run_id, "attempt": 0, "rank": rank, "node_id": "n"}
            for k in range(samples_per_worker):
                events.append(
                    {
                        **ids,
                        "seq": k,
                        "time": 1000.0 + k,
                        "kind": "system",
                        "cpu_pct": float(rng.uniform(50, 100)),
                        "rss_mb": 500.0,
                    }
                )
            for epoch in range(3):
                events.append(
                    {
                        **ids,
                        "seq": samples_per_worker + epoch,
                        "time": 1000.0 + epoch,
                        "kind": "epoch",
                        "epoch": epoch,
                        "epoch_time_s": 1.0,
                        "epoch_start": 1000.0 + epoch,
                        "samples": 200 * workers,
                        "steps": 4,
                        "train_loss": 1.0,
                    }
                )
        write(events)
    aggregator.compact()
    start = time.perf_counter()
    tables = summarize(store)
    write_tables(store, tables)
    report = render_report(root, tables)
    elapsed = time.perf_counter() - start
    return {
        "what": f"a synthetic study of {runs + 2} runs, 2 workers each, {samples_per_worker} system samples per "
        "worker, " + ("stored as JSON lines (before segments)" if jsonl else "stored as segments by the aggregator"),
        "store": "jsonl" if jsonl else "segments",
        "runs": runs + 2,
        "events": int(len(store.events(columns=[]))),
        "summarize_and_render_s": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "report_html_mb": report.stat().st_size / 2**20,
    }


def _plain_language_model(experiment, epochs: int) -> dict:
    """The built-in transformer on the study's own train split, batch, AdamW and precision, as a plain
    PyTorch loop (autocast when bf16) without Ray or telemetry."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from scaleprof.workloads.data import load_dataset, open_source, subset
    from scaleprof.workloads.models import build_model

    torch.set_num_threads(1)
    data = load_dataset(experiment.data, experiment.seed)
    train = subset(open_source(experiment.data, experiment.seed).dataset, data.train_idx)
    model = build_model(experiment.model_list[0], data.input_shape, data.num_classes, experiment.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=experiment.train.lr, weight_decay=0.0)  # as the experiment's
    loader = DataLoader(
        train,
        batch_size=experiment.train.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    bf16 = experiment.train.precision == "bf16"

    def step(ids, targets):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = F.cross_entropy(model(ids).flatten(0, 1).float(), targets.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _timed_epochs(loader, epochs, step)


def bench_language_model(repeats: int, epochs: int) -> dict:
    """experiments/lm-cpu.yaml's model and data (DDP, batch 16) on one worker in fp32 and in bf16, each
    alternated with the same training as a plain PyTorch loop in the driver: tokens/s side by side."""
    from scaleprof.config import load_experiment
    from scaleprof.execution.runner import run_study

    out = Path(tempfile.mkdtemp(prefix="bench-lm-"))
    base = load_experiment(REPO / "experiments" / "lm-cpu.yaml")
    base = base.model_copy(
        update={
            "sweep": {},
            "placements": [p for p in base.placements if p.workers == 1],
            "train": base.train.model_copy(update={"epochs": epochs}),
        }
    )
    assert base.data is not None
    tokens = base.data.seq_len
    rows = []
    with _local_ray():
        for i in range(repeats):
            for precision in ("fp32", "bf16"):
                experiment = base.at({"train.precision": precision, "train.batch_size": 16})
                arms = {
                    "plain": lambda e=experiment: _plain_language_model(e, epochs),
                    "plain_in_ray": lambda e=experiment: _in_ray_train_worker(
                        lambda: _plain_language_model(e, epochs), out
                    ),
                    "scaleprof": lambda e=experiment: run_study(e, out).study_dir,
                }
                order = list(arms)[i % 3 :] + list(arms)[: i % 3]  # each arm goes first once: no order bias
                done: dict[str, Any] = {name: arms[name]() for name in order}
                plain, in_ray, study_dir = done["plain"], done["plain_in_ray"], done["scaleprof"]
                rows.append(
                    {
                        "precision": precision,
                        "repeat": i,
                        "order": order,
                        "plain_tokens_per_s": plain["throughput"] * tokens,
                        "plain_in_ray_tokens_per_s": in_ray["throughput"] * tokens,
                        "scaleprof_tokens_per_s": _throughput(study_dir)["throughput"] * tokens,
                        "counts_equal": _recorded_counts(study_dir)
                        == {k: plain[k] for k in ("samples_per_epoch", "steps_per_epoch")},
                    }
                )
    summary = {}
    for precision in ("fp32", "bf16"):
        mine = [r for r in rows if r["precision"] == precision]
        ratios = [r["scaleprof_tokens_per_s"] / r["plain_tokens_per_s"] for r in mine]
        in_ray = [r["scaleprof_tokens_per_s"] / r["plain_in_ray_tokens_per_s"] for r in mine]
        summary[precision] = {
            "ratios_scaleprof_over_plain": ratios,
            "median_ratio": statistics.median(ratios),
            "ratios_scaleprof_over_plain_in_ray_worker": in_ray,
            "median_ratio_vs_ray_worker": statistics.median(in_ray),
            "median_plain_in_ray_tokens_per_s": statistics.median(r["plain_in_ray_tokens_per_s"] for r in mine),
            "median_plain_tokens_per_s": statistics.median(r["plain_tokens_per_s"] for r in mine),
            "median_scaleprof_tokens_per_s": statistics.median(r["scaleprof_tokens_per_s"] for r in mine),
            "counts_equal": all(r["counts_equal"] for r in mine),
        }
    return {
        "what": f"the built-in transformer of experiments/lm-cpu.yaml (2 layers, width 128, seq 64, vocab 256), "
        f"1 worker, 1 CPU / 1 thread, batch 16, AdamW, {epochs} epochs, fp32 and bf16 autocast, each alternated "
        "with the same training as a plain PyTorch loop (no Ray) in the driver and the same plain loop in a 1-CPU "
        "Ray Train worker (no scaleprof), the three arms' order rotated over the repeats; steady state = epochs "
        "2..E on every side",
        "rows": rows,
        "summary": summary,
    }


def _gloo_rank(rank: int, world: int, port: int, queue, fn, args: tuple) -> None:
    """A spawned process as gloo rank `rank` of `world`, 1 torch thread: puts `fn(rank, world, *args)` on `queue`."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    queue.put(fn(rank, world, *args))
    dist.destroy_process_group()


def _gloo_ranks(fn, *args, world: int = 2) -> list[dict]:
    """`fn(rank, world, *args)` on `world` gloo ranks in fresh spawned processes; their results by rank."""
    import multiprocessing
    import random

    ctx = multiprocessing.get_context("spawn")
    queue, port = ctx.Queue(), random.randint(20000, 40000)
    procs = [ctx.Process(target=_gloo_rank, args=(r, world, port, queue, fn, args)) for r in range(world)]
    for p in procs:
        p.start()
    ranks = sorted((queue.get(timeout=300) for _ in procs), key=lambda r: r["rank"])
    for p in procs:
        p.join()
    return ranks


def _memory_rank(rank: int, world: int, mode: str) -> dict:
    """One gloo rank: a 28.6M-parameter transformer under DDP or FSDP2, 5 AdamW steps; resident peak growth."""
    import resource

    import torch
    import torch.nn.functional as F

    from scaleprof.config import ModelSpec
    from scaleprof.worker.training import shard
    from scaleprof.workloads.models import build_model

    model = build_model(ModelSpec(name="transformer", kwargs={"layers": 4, "width": 768, "heads": 8}), (32,), 256, 0)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = torch.nn.parallel.DistributedDataParallel(model) if mode == "ddp" else shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(rank))
    for _ in range(5):
        F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rank": rank, "built_mb": built, "peak_mb": peak, "growth_mb": peak - built}


def bench_fsdp_memory() -> dict:
    """DDP against FSDP2 on 2 gloo ranks (no Ray): how much each rank's resident memory grows over its
    post-build size, with glibc's default allocator settings and with a fixed mmap threshold (freed large
    blocks returned to the OS at once), in fresh processes."""
    rows = []
    for allocator, env in (
        ("glibc default", {}),
        ("MALLOC_MMAP_THRESHOLD_=65536", {"MALLOC_MMAP_THRESHOLD_": "65536"}),
    ):
        for mode in ("ddp", "fsdp"):
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # read by glibc when each spawned process starts
            try:
                ranks = _gloo_ranks(_memory_rank, mode)
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            rows.append(
                {
                    "allocator": allocator,
                    "mode": mode,
                    "ranks": ranks,
                    "max_growth_mb": max(r["growth_mb"] for r in ranks),
                }
            )
    return {
        "what": "a 28.6M-parameter transformer (4 layers, width 768), 2 gloo ranks, fp32, AdamW, 5 steps of batch 4 x "
        "32 tokens; resident high-water mark (ru_maxrss) growth over the post-build size, per rank",
        "rows": rows,
    }


def _write(name: str, result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        **result,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "which",
        choices=[
            "overhead",
            "monitor-cpu",
            "plain",
            "ddp",
            "user",
            "session",
            "lm",
            "fsdp-memory",
            "telemetry",
            "report",
            "report-1000",
            "footprint",
            "prediction",
            "arrivals",
            "shared-cores",
            "inference",
            "all",
        ],
    )
    parser.add_argument("--pairs", type=int, default=5, help="monitor on/off pairs")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run (steady state: after epoch 1)")
    parser.add_argument("--repeats", type=int, default=3, help="plain / scaleprof pairs (ddp)")
    parser.add_argument("--only", nargs="*", help="footprint: only these step sizes (e.g. '~100 ms')")
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2], help="footprint: these worker counts")
    args = parser.parse_args()
    if args.which in ("footprint", "all"):
        _write("footprint", bench_footprint(args.repeats, epochs=4, only=args.only, worker_counts=tuple(args.workers)))
    if args.which in ("prediction", "all"):
        from prediction import bench_prediction

        _write("prediction", bench_prediction(rounds=args.repeats))
    if args.which in ("arrivals", "all"):
        from arrivals import bench_arrivals

        _write("arrivals", bench_arrivals(rounds=12, steps=300))
    if args.which in ("shared-cores", "all"):
        from shared_cores import bench_shared_cores

        _write("shared_cores", bench_shared_cores(rounds=3, iterations=200))
    if args.which in ("inference", "all"):
        from inference_batches import bench_inference_batches

        _write("inference_batches", bench_inference_batches(rounds=5))
    if args.which in ("overhead", "all"):
        _write("overhead", bench_overhead(args.pairs, args.epochs))
    if args.which in ("monitor-cpu", "all"):
        _write("monitor_cpu", bench_monitor_cpu(seconds=20, steps_per_s=100, rounds=3, flush_intervals=[1.0, 0.5]))
    if args.which in ("plain", "all"):
        _write("plain", bench_plain(repeats=3, epochs=args.epochs))
    if args.which in ("ddp", "all"):
        _write("ddp", bench_ddp(repeats=args.repeats, epochs=args.epochs))
    if args.which in ("user", "all"):
        _write("user_workloads", bench_user_workloads(repeats=3, epochs=args.epochs))
    if args.which in ("session", "all"):
        _write("session_step_cost", bench_session_step_cost(rounds=5, epochs=20))
    if args.which in ("lm", "all"):
        _write("language_model", bench_language_model(repeats=3, epochs=min(args.epochs, 6)))
    if args.which in ("fsdp-memory", "all"):
        _write("fsdp_memory", bench_fsdp_memory())
    if args.which in ("telemetry", "all"):
        # 256 fast workers (200 steps/s) batching every 0.5 s, then 1,024 GPU-like ones (30 steps/s) at the sink's
        # default 1 s: the same events/s order, four times the calls.
        # The aggregator's side alone (senders send prebuilt batches in the sink's format): 256 fast workers
        # (200 steps/s) batching every 0.5 s through 1, 2 and 4 aggregators, and 1,024 GPU-like ones (30 steps/s)
        # at the sink's default 1 s. Then whole EventSinks (their emit cost on the same 2 cores too).
        _write(
            "telemetry",
            {
                "rows": [
                    *bench_telemetry(
                        senders=4,
                        workers=256,
                        events_per_s=200,
                        seconds=20,
                        aggregators=[1, 2, 4],
                        flush_s=0.5,
                        prebuilt=True,
                    )["rows"],
                    *bench_telemetry(
                        senders=4,
                        workers=1024,
                        events_per_s=30,
                        seconds=20,
                        aggregators=[1, 2],
                        flush_s=1.0,
                        prebuilt=True,
                    )["rows"],
                    *bench_telemetry(
                        senders=4, workers=256, events_per_s=200, seconds=20, aggregators=[1, 4], flush_s=0.5
                    )["rows"],
                    # Through node relays (one per simulated node, all on this machine): the aggregator's calls drop.
                    *bench_telemetry(
                        senders=4,
                        workers=256,
                        events_per_s=200,
                        seconds=20,
                        aggregators=[1],
                        flush_s=0.5,
                        prebuilt=True,
                        relays=True,
                    )["rows"],
                    *bench_telemetry(
                        senders=4,
                        workers=1024,
                        events_per_s=30,
                        seconds=20,
                        aggregators=[1],
                        flush_s=1.0,
                        prebuilt=True,
                        relays=True,
                        per_node=32,
                    )["rows"],
                ],
                "what": bench_telemetry.__doc__,
            },
        )
    if args.which in ("report", "all"):
        # Side by side, each in a fresh process (imports and caches paid alike): JSON lines, then segments.
        _write("report", {"rows": [_in_process(bench_report, 100, 600, jsonl) for jsonl in (True, False)]})
    if args.which in ("report-1000", "all"):
        _write("report_1000", _in_process(bench_report, 1000, 600))


if __name__ == "__main__":
    main()
