"""The GPU check: scaleprof's GPU paths measured on a real GPU, in one run (benchmarks/gpu_check.sh).

Part 1 needs only PyTorch, NVML and scaleprof's worker-side code (no Ray): the same model and batch
trained three ways, alternated — a plain loop with no per-step sync, a plain loop that reads the loss
every step (`loss.item()`, a host sync), and the loop instrumented by `scaleprof.session` (CUDA events
read lazily) — in fp32 and bf16; the NVML sampler on the same GPU (UUID, name, utilisation, SM activity
from GPM, the energy counter, processes), the math mode and MFU, the node's topology. Part 2, where Ray
is installed, runs `experiments/gpu-check.yaml` (1 GPU worker + the GPU inference benchmark) through
`scaleprof run` and checks what its tables carry. Part 3, on a machine with 2 or more GPUs and Ray, is the
prediction's GPU path: `scaleprof fabric` sweeps NCCL's all-reduce between the machine's GPUs (the intra-node
link: NVLink or PCIe, as the topology in part 1 says) and `experiments/gpu-check-multi.yaml` runs 1 and 2 GPU
workers, whose prediction ledger predicts the 2-GPU run from the 1-GPU run and its NCCL sweep (predicted,
interval, measured, error); with one GPU it says it did not run. Everything goes to OUT/summary.json and
summary.md.

    python benchmarks/gpu_check.py --out DIR            # on a GPU machine
    python benchmarks/gpu_check.py --out DIR --device cpu --steps 8 --batch 8   # the script's own dry run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _model(device: torch.device) -> torch.nn.Module:
    try:
        import torchvision

        model = torchvision.models.resnet18(num_classes=100)
    except ImportError:  # the dry run without torchvision: any conv net shows the mechanics
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 100),
        )
    torch.manual_seed(0)
    return model.to(device)


def _batches(device: torch.device, batch: int, size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        x, y = torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 100, (batch,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain(model, batches, device, precision: str, per_step_sync: bool, warmup: int) -> float:
    """Samples/s of a plain loop over the batches after `warmup` steps, by the host clock around a final sync."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = {"bf16": torch.bfloat16}.get(precision)
    start, samples = None, 0
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            _sync(device)
            start, samples = time.perf_counter(), 0
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if per_step_sync:
            loss.item()
        samples += len(y)
    _sync(device)
    assert start is not None, f"{warmup} warm-up steps take every batch"
    return samples / (time.perf_counter() - start)


def instrumented(model, batches, device, precision: str, warmup: int) -> dict[str, Any]:
    """The same loop through scaleprof.session (no Ray): its step events, its throughput by scaleprof's
    definition, and the host clock around the same steps for comparison."""
    import pandas as pd

    from scaleprof.analysis.throughput import steady_state_throughput
    from scaleprof.config import TrainSpec
    from scaleprof.records import StepEvent
    from scaleprof.worker.session import WorkerSession

    events: list[Any] = []
    stored: list[Any] = []
    train = TrainSpec.model_validate({"precision": precision, "warmup_steps": warmup, "epochs": 1})
    s = WorkerSession(
        events.append, stored.append, rank=0, world_size=1, device=device, threads=1, epochs=1, train=train
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = None
    for _ in s.epochs():
        for i, (x, y) in enumerate(s.steps(batches)):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            with s.autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            s.mark("forward")
            s.backward(loss)
            s.mark("backward")
            s.optimizer_step(opt)
            s.mark("optimizer")
            s.report_loss(loss)
    assert start is not None, f"{warmup} warm-up steps take every batch"
    wall = time.perf_counter() - start  # the session's steps() ends with one sync
    steps = pd.DataFrame([{"rank": 0, **vars(e)} for e in events if isinstance(e, StepEvent)])
    tp = steady_state_throughput(steps, warmup)
    clock = float(steps["samples"].iloc[warmup:].sum()) / wall
    return {
        "throughput": tp.samples_per_s,
        "low": tp.low,
        "high": tp.high,
        "host_clock": clock,
        "steps": len(steps),
        "basis": tp.basis,
        "phases_ms": {
            p: 1000 * float(steps[f"{p}_s"].median()) for p in ("forward", "backward", "optimizer") if f"{p}_s" in steps
        },
    }


def sampler_readings(device: torch.device, seconds: float, work) -> dict[str, Any]:
    """NVML through scaleprof's GpuSampler while `work()` runs: what the monitor would record."""
    from scaleprof.telemetry.monitor import GpuSampler

    sampler = GpuSampler(device.index or 0 if device.type == "cuda" else None)
    sampler.start()
    readings, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        work()
        readings.append({"time": time.time(), **sampler.sample()})
    sampler.stop()
    return {"uuid": sampler.uuid, "name": sampler.name, "unavailable": sampler.unavailable_reason, "samples": readings}


def part_one(args, out: dict[str, Any]) -> None:
    import pandas as pd

    from scaleprof.analysis.energy import energy
    from scaleprof.analysis.mfu import mfu
    from scaleprof.analysis.peaks import gpu_peak_flops
    from scaleprof.versions import gpu_node_facts, toolchain
    from scaleprof.worker.flops import train_flops_per_sample
    from scaleprof.worker.session import math_mode

    device = torch.device(args.device)
    count = args.steps + args.warmup
    batches = _batches(device, args.batch, args.image, count)
    out["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out["toolchain"], out["node"] = toolchain(), gpu_node_facts()
    flops = train_flops_per_sample(_model(torch.device("cpu")), tuple(batches[0][0].shape[1:]))
    for precision in ("fp32", "bf16"):
        rows = []
        for repeat in range(args.repeats):  # alternated, the order rotated
            arms = ["nosync", "sync", "scaleprof"]
            arms = arms[repeat % 3 :] + arms[: repeat % 3]
            row: dict[str, Any] = {"order": arms}
            for arm in arms:
                model = _model(device)
                if arm == "scaleprof":
                    row[arm] = instrumented(model, batches, device, precision, args.warmup)
                else:
                    row[arm] = plain(model, batches, device, precision, arm == "sync", args.warmup)
            rows.append(row)
        mode = math_mode(_model(device), precision, device)
        peak = gpu_peak_flops(out["device"], mode)
        best = max(r["scaleprof"]["throughput"] for r in rows)
        out[precision] = {
            "runs": rows,
            "ratio_scaleprof_over_nosync": [r["scaleprof"]["throughput"] / r["nosync"] for r in rows],
            "ratio_sync_over_nosync": [r["sync"] / r["nosync"] for r in rows],
            "math_mode": mode,
            "peak_flops": peak,
            "flops_per_sample": flops,
            "mfu": mfu(flops or float("nan"), best, peak, 1),
        }
    model, (x, y) = _model(device), batches[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def work() -> None:
        for _ in range(5):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        _sync(device)

    nvml = sampler_readings(device, args.sample_seconds, work)
    frame = pd.DataFrame(nvml["samples"]).assign(rank=0)
    out["nvml"] = {k: v for k, v in nvml.items() if k != "samples"}
    out["nvml"]["fields"] = sorted({k for s in nvml["samples"] for k in s})
    for field in ("gpu_util_pct", "gpu_sm_active_pct", "gpu_power_w", "gpu_processes"):
        if field in frame:
            out["nvml"][f"{field}_mean"] = float(frame[field].mean())
    if "gpu_power_w" in frame or "gpu_energy_mj" in frame:
        out["nvml"]["energy"] = energy({"throughput": float("nan")}, frame, None)


def _scaleprof(arguments: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """`scaleprof ARGUMENTS` from this interpreter, its output kept."""
    return subprocess.run(
        [sys.executable, "-m", "scaleprof.cli", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def part_two(args, out: dict[str, Any], where: Path) -> None:
    """The whole path through Ray, where Ray is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        out["study"] = "not run: Ray is not installed on this machine"
        return
    import pandas as pd

    done = _scaleprof(["run", str(REPO / "experiments" / "gpu-check.yaml"), "--out", str(where)], args.study_timeout)
    out["study_rc"], out["study_tail"] = done.returncode, (done.stdout + done.stderr)[-3000:]
    studies = sorted(where.glob("gpu-check-*"))
    if not studies:
        return
    study = studies[-1]
    runs, workers = pd.read_parquet(study / "runs.parquet"), pd.read_parquet(study / "workers.parquet")
    keep = [
        "run_id",
        "status",
        "throughput",
        "throughput_low",
        "throughput_high",
        "gpu_util_pct",
        "gpu_sm_active_pct",
        "energy_per_sample_j",
        "energy_basis",
        "math_mode",
        "mfu",
        "peak_flops_basis",
        "contended",
        "gpu_other_processes",
        "steady_steps",
    ]
    out["study"] = {
        "dir": str(study),
        "runs": runs[[c for c in keep if c in runs]].to_dict("records"),
        "workers": workers[
            [c for c in ("rank", "gpu_uuid", "gpu_name", "gpu_driver", "versions") if c in workers]
        ].to_dict("records"),
    }
    if (study / "inference.parquet").exists():
        out["study"]["inference"] = pd.read_parquet(study / "inference.parquet").to_dict("records")


def part_three(args, out: dict[str, Any], where: Path) -> None:
    """The prediction's GPU path: NCCL swept between this machine's GPUs, and the 2-GPU run predicted."""
    gpus = torch.cuda.device_count() if args.device == "cuda" and torch.cuda.is_available() else 0
    if gpus < 2:
        out["multi_gpu"] = f"not run: NCCL's sweep and a 2-GPU run need 2 or more GPUs on the machine ({gpus} here)"
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        out["multi_gpu"] = "not run: Ray is not installed on this machine"
        return
    import pandas as pd

    sweep = where / "fabric.parquet"
    fabric = ["fabric", "--workers", str(gpus), "--gpus-per-worker", "1", "--strategy", "STRICT_PACK"]
    done = _scaleprof([*fabric, "--out", str(sweep), "--force", "--json"], args.study_timeout)
    result: dict[str, Any] = {"gpus": gpus, "fabric_rc": done.returncode, "fabric_tail": done.stderr[-2000:]}
    out["multi_gpu"] = result
    if done.returncode == 0:
        result["fabric"] = json.loads(done.stdout)
    done = _scaleprof(
        ["run", str(REPO / "experiments" / "gpu-check-multi.yaml"), "--out", str(where)], args.study_timeout
    )
    result["study_rc"], result["study_tail"] = done.returncode, (done.stdout + done.stderr)[-3000:]
    studies = sorted(where.glob("gpu-check-multi-*"))
    if studies and (studies[-1] / "predictions.parquet").exists():
        ledger = pd.read_parquet(studies[-1] / "predictions.parquet")
        keep = [
            "placement",
            "method",
            "base",
            "predicted",
            "low",
            "high",
            "measured",
            "error_pct",
            "covered",
            "reason",
            "caveat",
        ]
        result["ledger"] = ledger[[c for c in keep if c in ledger]].to_dict("records")


def markdown(out: dict[str, Any]) -> str:
    lines = [f"# GPU check on {out.get('device')} ({out.get('measured_at')})", ""]
    for precision in ("fp32", "bf16"):
        r = out.get(precision)
        if not r:
            continue
        lines.append(
            f"## {precision} ({r['math_mode']}), MFU {r['mfu']:.1%}" if r["mfu"] == r["mfu"] else f"## {precision}"
        )
        lines.append("| order | plain, no sync | plain, loss.item() each step | scaleprof | scaleprof host clock |")
        lines.append("|---|---|---|---|---|")
        for row in r["runs"]:
            s = row["scaleprof"]
            ours = f"{s['throughput']:,.0f} ({s['low']:,.0f}–{s['high']:,.0f})"
            plain = f"{row['nosync']:,.0f} | {row['sync']:,.0f}"
            lines.append(f"| {', '.join(row['order'])} | {plain} | {ours} | {s['host_clock']:,.0f} |")
        ours = ", ".join(f"{v:.3f}" for v in r["ratio_scaleprof_over_nosync"])
        synced = ", ".join(f"{v:.3f}" for v in r["ratio_sync_over_nosync"])
        lines.append(f"scaleprof / no sync: {ours}; sync / no sync: {synced}")
        lines.append("")
    sections = [
        ("NVML", out.get("nvml")),
        ("Study", out.get("study")),
        ("Multi-GPU: NCCL sweep and the prediction ledger", out.get("multi_gpu")),
    ]
    for title, value in sections:
        lines += [f"## {title}", "```", json.dumps(value, indent=1, default=str)[:6000], "```", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--study-timeout", type=int, default=300)
    parser.add_argument("--skip-study", action="store_true")
    args = parser.parse_args()
    where = Path(args.out)
    where.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args)}
    try:
        part_one(args, out)
    except Exception as exc:  # keep what was measured; say what broke
        out["part_one_error"] = f"{type(exc).__name__}: {exc}"
    if not args.skip_study:
        try:
            part_two(args, out, where / "studies")
        except Exception as exc:
            out["part_two_error"] = f"{type(exc).__name__}: {exc}"
        try:
            part_three(args, out, where / "multi")
        except Exception as exc:
            out["part_three_error"] = f"{type(exc).__name__}: {exc}"
    (where / "summary.json").write_text(json.dumps(out, indent=2, default=str))
    (where / "summary.md").write_text(markdown(out))
    print(markdown(out))
    return 1 if "part_one_error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
