"""The report's notes: how each figure was obtained (training settings, the measurement, fixed costs, pricing,
inference) and the environment it ran in, in plain sentences for the HTML page and summary.md."""

from __future__ import annotations

import json

import pandas as pd

from scaleprof.analysis.findings import BusyButIdle, Findings, FixedCost
from scaleprof.analysis.summarize import StudyTables
from scaleprof.config import Experiment
from scaleprof.manifest import Manifest
from scaleprof.records import RunStatus
from scaleprof.report.goal_text import describe
from scaleprof.report.tables import per_million, short_list


def study_notes(tables: StudyTables) -> list[str]:
    """Plain sentences that say how the numbers were obtained (shown in HTML and markdown); the goal's
    recommendation first when the experiment sets one."""
    exp, found = tables.manifest.experiment, tables.findings
    advice = describe(found.recommendation, exp.goal)
    return (
        ([advice] if advice else [])
        + _training_notes(exp, found)
        + _measurement_notes(tables)
        + _fixed_cost_notes(found.fixed_cost)
        + _wait_notes(tables.runs)
        + _gpu_activity_notes(found.busy_but_idle)
        + _trace_notes(tables.traces)
        + _cost_notes(tables.manifest, found)
        + _inference_notes(tables)
    )


def _training_notes(exp: Experiment, found: Findings) -> list[str]:
    """How the runs trained: scaling rule, loop and learning rate, restarts, quality, curve divergence."""
    train = exp.train
    notes = []
    swept_batch = "train.batch_size" in exp.sweep
    batch = "the swept batch sizes" if swept_batch else f"batches of {train.batch_size}"
    if train.scaling == "weak":
        notes.append(f"Weak scaling: each worker trains on {batch}, so the global batch grows with the workers.")
    else:
        notes.append(
            f"Strong scaling: the global batch is fixed at {train.batch_size} and split evenly over the workers."
        )
    if train.loop:
        notes.append(
            f"Training loop: {train.loop}, the user's own (its optimizer, learning rate and loss are its own), "
            "measured through scaleprof.session."
        )
    else:
        if train.lr_scaling == "linear":
            rule = f"the linear scaling rule (lr {train.lr:g} x global batch / {train.batch_size})"
        else:
            rule = f"a fixed learning rate {train.lr:g} on every placement (no scaling rule)"
        warm = f", ramped up over {train.lr_warmup_epochs:g} epoch(s)" if train.lr_warmup_epochs else ""
        optimizer = train.optimizer
        how = (
            f"SGD, momentum {train.momentum:g}" if optimizer.name == "sgd" else f"AdamW, betas {list(optimizer.betas)}"
        )
        task = "language-modeling" if exp.task == "language-modeling" else "classification"
        swept = [k for k in exp.sweep if k in ("train.lr", "train.optimizer")]
        where = f" (where not swept: {', '.join(swept)} vary, see the sweep note)" if swept else ""
        notes.append(f"Learning rate: {rule}{warm}; {how}; the built-in {task} loop{where}.")
    notes += _settings_notes(exp)
    if found.restarted:
        listed = ", ".join(f"{r.run_id} ({r.attempts} attempts)" for r in found.restarted)
        notes.append(
            f"Restarted after a worker or node failure (train.max_failures): {listed}. Their figures come from the "
            "last attempt, which trained from scratch; wall time and end-to-end cost include the failed attempts."
        )
    if exp.task == "language-modeling":
        quality = (
            "Quality is the mean next-token cross-entropy (nats per token) on the held-out test split, perplexity its "
            "exp, and top-1 next-token accuracy, evaluated in fp32 whatever the training precision; validation "
            "perplexity after each epoch is in the learning curves."
        )
        if exp.data is not None:  # a training loop that brings its own tokens says nothing of their length
            quality += f" Throughput in tokens/s is samples/s x {exp.data.seq_len} tokens per sequence."
        floor = found.loss_floor
        if floor is not None:
            quality += (
                f" The synthetic chain's own entropy, the loss a model that knew it exactly would have, is "
                f"{floor.nats:.3f} nats (perplexity {floor.perplexity:.3f})."
            )
    else:
        quality = (
            "Quality metrics are computed with sklearn.metrics from each run's stored predictions on the held-out "
            "test split (macro averages over classes; specificity is the true-negative rate; ROC AUC is one-vs-rest)."
        )
    notes.append(quality + (" Deterministic algorithms were on." if train.deterministic else ""))
    if found.largest_divergence is not None:
        worst = found.largest_divergence
        notes.append(
            "Across worker counts the learning curves legitimately differ; the largest mean train-loss distance from "
            f"the 1-worker curve is {worst.loss_divergence:.4f} ({worst.run_id})."
        )
    return notes


def _settings_notes(exp: Experiment) -> list[str]:
    """The training settings every run shared, and the sweep's axes."""
    train = exp.train
    compiled, precision = train.compile, train.precision
    how = {"fp16": " (autocast, GradScaler)", "bf16": " (autocast)"}.get(precision, "")
    fsdp = train.parallelism == "fsdp"
    parts = [
        f"precision {precision}{how}",
        "parallelism " + ("FSDP (PyTorch FSDP2 fully_shard per block)" if fsdp else "DDP"),
        "torch.compile " + (json.dumps(compiled.model_dump(mode="json")) if compiled is not None else "off"),
        f"gradient accumulation over {train.grad_accumulation} micro-batch(es)",
    ]
    notes = ["Training settings: " + ", ".join(parts) + "."]
    sweep = exp.sweep
    if sweep:
        axes = "; ".join(f"{key} in {values}" for key, values in sweep.items())
        notes[0] = "Training settings (where not swept): " + notes[0].removeprefix("Training settings: ")
        notes.append(
            f"Sweep: {axes}. Every placement ran every point; a model's name in the tables carries its point, and "
            "speedup, efficiency and the scaling law compare each point only with itself (never across batch sizes "
            "or precisions)."
        )
    if any(key != "train.batch_size" for key in sweep) or train.grad_accumulation > 1:
        notes.append(
            "The global batch is batch per worker x workers x gradient accumulation; throughput counts every sample "
            "of every micro-batch."
        )
    return notes


def _measurement_notes(tables: StudyTables) -> list[str]:
    """How the numbers were measured, and what went wrong in which run."""
    exp, found, runs = tables.manifest.experiment, tables.findings, tables.runs
    notes = []
    placements = tables.placements
    if not placements.empty and placements["noisy"].any():
        noisy = placements[placements["noisy"]]
        threshold = exp.evaluation.noisy_cv
        for _, r in noisy.iterrows():
            notes.append(
                f"Noisy: {r['model']} on {r['placement']} varies by more than CV {100 * threshold:g}% over its "
                f"repeats in {r['noisy_metrics']}."
            )
    if found.throughput_bases:
        notes.append(
            "Throughput is global training samples/s in steady state: " + "; ".join(found.throughput_bases) + "."
        )
    notes.append("Run wall time is end to end: Ray Train worker start-up and teardown, training, validation and test.")
    notes.append(
        "Speedup and efficiency compare each run with the median 1-worker run of the same model and device kind: "
        "S(N) = X(N)/X(1), E(N) = S(N)/N."
    )
    monitor = exp.monitor
    if monitor.enabled:
        notes.append(
            f"Monitors sampled every {monitor.interval_s:g}s. CPU utilisation is the worker process's CPU time as a "
            "percentage of the cores it was given."
        )
    else:
        notes.append("Monitors were off: no CPU, memory or GPU samples.")
    telemetry = tables.manifest.telemetry
    if telemetry is not None:
        notes.append(
            f"Telemetry as written: {telemetry.events_written} events stored from {telemetry.workers} workers, "
            f"{telemetry.gaps} sequence gaps, {telemetry.duplicates} resent events dropped by the aggregator."
        )
    if not tables.damage:
        gaps = int(runs["seq_gaps"].fillna(0).sum()) if "seq_gaps" in runs else 0
        notes.append(f"Read back: no damaged or repeated lines; {gaps} sequence gap(s).")
    for _, r in runs[runs["status"] != "ok"].iterrows():
        notes.append(f"Run {r['run_id']} {r['status']}: {r['reason']}")
    for _, r in runs[runs["placement_warning"].map(lambda w: isinstance(w, str) and w != "")].iterrows():
        notes.append(f"Placement warning for {r['run_id']}: {r['placement_warning']}")
    if "mfu" in runs and runs["mfu"].notna().any():
        bases = sorted(set(runs["peak_flops_basis"].dropna()))
        notes.append(
            "MFU = model FLOPs per sample (forward + backward, counted by torch's FlopCounterMode) x throughput / "
            "(peak FLOP/s per worker x workers); peak: " + "; ".join(bases) + "."
        )
    if "energy_per_sample_j" in runs and runs["energy_per_sample_j"].notna().any():
        notes.append("Energy per sample: the GPUs' mean NVML power in steady state divided by the throughput.")
    fsdp = runs["parallelism"] == "fsdp" if "parallelism" in runs else pd.Series(False, index=runs.index)
    unsplit = runs[runs["step_backward_unsplit_s"].notna() & ~fsdp]  # FSDP runs have a note of their own
    if not unsplit.empty:
        notes.append(
            "Step breakdown of "
            + (", ".join(unsplit["run_id"]) if len(unsplit) <= 6 else f"{len(unsplit)} runs")
            + ": the gradient all-reduce was not probed (the "
            "loop did not call session.measure_allreduce), so it is inside the backward bar."
        )
    if "state_mem_mb" in runs and runs["state_mem_mb"].notna().any():
        notes.append(
            "Memory per rank: 'peak memory' is the GPU allocator's peak (torch.cuda.max_memory_allocated) on GPU runs "
            "and the process's resident high-water mark (ru_maxrss) on CPU runs, which also counts memory the C "
            "allocator freed but kept; 'model state' is the parameters, gradients and optimizer state one rank held "
            "after its first optimizer step (its own shards under FSDP), summed tensor by tensor: what sharding "
            "divides. Activations and communication buffers are in the peak only."
        )
    if "parallelism" in runs and (runs["parallelism"] == "fsdp").any():
        notes.append(
            "FSDP runs have no all-reduce probe (there is no no_sync to compare against): their gradient "
            "reduce-scatter and parameter all-gathers are inside the forward and backward bars."
        )
    return notes


def _inference_notes(tables: StudyTables) -> list[str]:
    inference = tables.inference
    if inference.empty:
        return []
    spec = tables.manifest.experiment.evaluation.inference
    notes = []
    if spec is not None:  # always, where there are inference records
        notes.append(
            f"Inference: a Ray actor per model and device kind ({spec.cpus:g} CPU), {spec.warmup} warm-up and "
            f"{spec.iterations} timed iterations per batch size under torch.inference_mode(), the device "
            "synchronised before each clock read; the model is the seeded initial one (same weights everywhere)."
        )
    ok = inference[inference["status"] == RunStatus.OK]
    if not ok.empty:
        on = [o for o in ("channels_last", "amp", "compile") if o in ok and ok[o].any()]
        notes.append("Inference options on: " + (", ".join(on) if on else "none (eager, FP32, contiguous)") + ".")
    for _, r in inference[inference["status"] != "ok"].iterrows():
        batch = f" batch {int(r['batch_size'])}" if "batch_size" in r and pd.notna(r["batch_size"]) else ""
        notes.append(f"Inference {r['model']} on {r['device']}{batch} {r['status']}: {r['reason']}")
    return notes


def _fixed_cost_notes(med: FixedCost | None) -> list[str]:
    """The fixed cost every run pays around its training, as medians over finished runs."""
    if med is None:
        return []
    fixed, share = med.fixed_s, med.training_share
    return [
        f"Fixed cost per run (median over {med.runs} finished runs): launch {med.launch_s:.1f} s (Ray Train "
        f"controller, worker processes, torch.distributed, and any failed attempts), setup {med.setup_s:.1f} s "
        f"(data, model, DDP or FSDP wrap, optimizer, CPU peak probe), "
        + (f"compile {med.compile_phase_s:.1f} s (torch.compile, Dynamo's own count), " if med.compile_phase_s else "")
        + f"finish {med.finish_s:.1f} s "
        "(all-reduce probe, held-out "
        f"predictions), teardown {med.teardown_s:.1f} s: {fixed:.1f} s in all, beside {med.training_s:.1f} s "
        f"of training (epochs with their validation passes), so training is {100 * share:.0f}% of a run's wall "
        "time. End-to-end cost per sample includes all of it; steady-state throughput and cost exclude it."
    ]


def _gpu_activity_notes(idle: list[BusyButIdle]) -> list[str]:
    """The runs analysis found busy to NVML but idle to their SMs (analysis/findings.busy_but_idle)."""
    if not idle:
        return []
    listed = short_list([f"{r.placement} ({r.gpu_util_pct:.0f}% vs {r.gpu_sm_active_pct:.0f}%)" for r in idle])
    return [
        f"Busy but idle: NVML's GPU utilisation (a kernel was running) and the SMs' measured activity (GPM) "
        f"disagree widely in {len(idle)} run(s): {listed}. The GPU was mostly waiting (in NCCL collectives, or "
        "on kernels too small to fill it): utilisation overstates how much of it the run used."
    ]


def _trace_notes(traces: list[str]) -> list[str]:
    if not traces:
        return []
    return [
        f"Profiler traces (torch.profiler, a few steady-state steps per run, left out of throughput): "
        f"{short_list(traces, most=12)}, beside this report; gzipped Chrome trace JSON for Perfetto "
        "(ui.perfetto.dev opens the file locally) or Holistic Trace Analysis."
    ]


def _wait_notes(runs: pd.DataFrame) -> list[str]:
    """Runs that waited for their resources (on an autoscaling cluster: for nodes to be added)."""
    if "wait_s" not in runs:
        return []
    waited = runs[runs["wait_s"].fillna(0) >= 0.5]
    if waited.empty:
        return []
    each = ", ".join(
        f"{r.run_id} {r.wait_s:.0f} s" + (f" (then ran on {r.ray_node_types})" if r.ray_node_types else "")
        for r in waited.itertuples()
    )
    return [
        f"Waiting for resources, before each run's wall time and outside its cost: {each}. On an autoscaling "
        "cluster this is the time the autoscaler took to add nodes."
    ]


def _cost_notes(manifest: Manifest, found: Findings) -> list[str]:
    pricing = manifest.pricing
    if not pricing:
        return ["No node type was priced (set cost.node_type): no cost figures."]
    cost = manifest.experiment.cost
    billing = (
        "every node a run touched billed whole"
        if cost.billing == "node"
        else "each run billed its share of a node (CPUs or GPUs over the node's, the larger)"
    )
    notes = [f"Cost: {billing}; steady-state cost bills samples/throughput, end-to-end cost bills the run's wall time."]
    for name, p in pricing.items():
        if p.price_per_hour_usd is None:
            notes.append(f"Not priced: {name} ({p.provider} {p.instance}): {p.source}; its runs show no cost.")
            continue
        notes.append(
            f"Priced as {name}: {p.provider} {p.instance} in {p.region}, ${p.price_per_hour_usd:g}/h "
            f"({p.vcpus:g} vCPU, {p.gpus:g} GPU), source {p.source}, retrieved {p.retrieved}."
        )
    cheap, fast = found.cheapest, found.fastest
    if cheap is not None and fast is not None:
        notes.append(
            f"Cheapest: {cheap.model} on {cheap.placement} ({per_million(cheap.cost_per_sample_usd)}); "
            f"fastest: {fast.model} on {fast.placement} ({fast.throughput:,.0f} samples/s)."
        )
    if cost.target_accuracy:
        notes.append(
            f"Cost to target: start-up plus training until validation accuracy first reached {cost.target_accuracy:g}."
        )
    return notes


def environment_lines(manifest: Manifest) -> list[str]:
    resources = manifest.ray.cluster_resources  # by Ray's resource names
    lines = [
        f"CPU: {manifest.driver_host.cpu_model}",
        f"Ray cluster: {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
        f"{resources.get('memory', 0) / 2**30:.1f} GiB memory on {len(manifest.ray.nodes)} node(s)",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in manifest.packages.items() if v),
        f"Experiment sha256: {(manifest.experiment_sha256 or '')[:16]}; split sha256: "
        + ", ".join(f"{k} {v}" for k, v in manifest.data.split_sha256.items()),
    ]
    gpu = manifest.gpu
    if gpu is not None and gpu.gpus:
        lines.append("GPUs: " + ", ".join(g.name for g in gpu.gpus) + f" (driver {gpu.driver}, CUDA {gpu.cuda_torch})")
    return lines


def node_facts(workers: pd.DataFrame) -> list[tuple[str, str]]:
    """Per GPU node: its driver, NCCL settings and `nvidia-smi topo -m` matrix (what explains multi-GPU
    scaling), once per node however many runs read it."""
    if workers.empty or "gpu_topology" not in workers:
        return []
    out = []
    for node, rows in workers.dropna(subset=["gpu_topology"]).groupby("node_id", sort=True):
        first = rows.iloc[0]
        nccl = first.get("nccl_env")
        head = f"GPU interconnect of node {node} ({first.get('hostname')}): driver {first.get('gpu_driver')}"
        head += f"; NCCL settings {nccl}" if isinstance(nccl, str) else "; no NCCL_* settings"
        out.append((head, str(first["gpu_topology"])))
    return out
