"""From the study store to tidy tables: one row per run, one per run x epoch, and timelines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.breakdown import step_breakdown
from scaleprof.analysis.contention import contention
from scaleprof.analysis.cost import add_cost_columns
from scaleprof.analysis.energy import energy
from scaleprof.analysis.findings import Findings, findings, law_curves, quality_summary
from scaleprof.analysis.frames import column, max_of, of_kind, weighted_mean
from scaleprof.analysis.hardware import hardware_table, inference_table
from scaleprof.analysis.language import language_columns, perplexity
from scaleprof.analysis.mfu import utilisation_of_peak
from scaleprof.analysis.model_inputs import core_demand, model_input_columns
from scaleprof.analysis.phases import wall_phases
from scaleprof.analysis.placement import placement_warning, workers_table
from scaleprof.analysis.prediction import fabric_of, prediction_ledger, study_sweep
from scaleprof.analysis.quality import quality_tables
from scaleprof.analysis.repeats import add_loss_divergence, cv_table, spread_table
from scaleprof.analysis.run_row import RUN_COLUMNS, SETTING_PREFIXES
from scaleprof.analysis.scaling import add_scaling_columns, scaling_fits
from scaleprof.analysis.steady import time_span
from scaleprof.analysis.stragglers import rank_tables
from scaleprof.analysis.throughput import global_epochs, percentile, steady_state_throughput
from scaleprof.config import Experiment
from scaleprof.manifest import Manifest
from scaleprof.records import NO_STEPS, EventKind, FinalRun, Lifecycle, RunKind, RunRecord, RunStatus
from scaleprof.telemetry.store import EPOCHS_TABLE, RUNS_TABLE, StudyStore

QUALITY_TABLE = "quality.parquet"
PLACEMENTS_TABLE = "placements.parquet"
CV_TABLE = "cv.parquet"
WORKERS_TABLE = "workers.parquet"
FITS_TABLE = "scaling_fits.parquet"
INFERENCE_TABLE = "inference.parquet"
HARDWARE_TABLE = "hardware.parquet"
LEDGER_TABLE = "predictions.parquet"  # the prediction ledger (held-out samples' predictions are under predictions/)
RANKS_TABLE = "ranks.parquet"  # per run x rank: arrival at the gradient exchange (analysis/stragglers.py)

STEP_CHART_COLUMNS = ["run_id", "placement", "step", "step_ms", "steady"]


@dataclass(frozen=True)
class Protocol:
    """The study's measurement settings the analysis reads (from the stored experiment)."""

    warmup_steps: int = 5
    min_steady_steps: int = 30
    contention_share: float = 0.10

    @classmethod
    def of(cls, experiment: Experiment) -> Protocol:
        return cls(
            experiment.train.warmup_steps,
            experiment.evaluation.min_steady_steps,
            experiment.monitor.contention_share,
        )


@dataclass
class StudyTables:
    runs: pd.DataFrame
    epochs: pd.DataFrame
    timeline: pd.DataFrame  # system samples: run_id, placement, rank, t_s, cpu_pct, rss_mb, gpu_*
    steps: pd.DataFrame  # per run, its step times in at most 200 means of consecutive steps, warm-up or steady
    manifest: Manifest
    quality: pd.DataFrame  # one row per run x class: precision, recall, f1, specificity, roc_auc, confusion row
    placements: pd.DataFrame  # one row per model x placement: spread over repeats, noisy flags
    cv: pd.DataFrame  # one row per model: k-fold mean and std beside the fixed split
    workers: pd.DataFrame  # one row per run x attempt x rank: where it ran (node, host, pid, GPU UUID)
    fits: pd.DataFrame  # one scaling-law fit per (model, device), with its hold-out check
    inference: pd.DataFrame  # one row per model x device x batch size: latency percentiles, throughput, memory
    hardware: pd.DataFrame  # one row per model x device kind: the hardware comparison table
    quality_summary: pd.DataFrame  # one row per model x placement: quality medians over fixed-split repeats
    law_curves: pd.DataFrame  # the fitted scaling laws on a grid of worker counts, with their bands
    findings: Findings  # what the report points out (best, cheapest, fastest, fixed cost, goal)
    damage: list[str] = field(default_factory=list)  # what reading the store skipped or dropped, by file
    traces: list[str] = field(default_factory=list)  # torch.profiler traces in the study, relative paths
    ledger: pd.DataFrame = field(default_factory=pd.DataFrame)  # each multi-worker run predicted from smaller ones
    fabric: pd.DataFrame | None = None  # the study's fabric sweep (fabric.parquet, else its runs' own sweeps)
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run x rank: arrival at the exchange
    lateness: pd.DataFrame = field(default_factory=pd.DataFrame)  # per run x rank x step bin: lateness (ms)


def _seq_gaps(events: pd.DataFrame) -> int:
    """Missing or repeated sequence numbers over this run's workers (0 when nothing was lost)."""
    problems = 0
    for _, seq in events.groupby(["attempt", "rank"])["seq"]:
        problems += int(seq.max() + 1 - seq.nunique()) + int(len(seq) - seq.nunique())
    return problems


def _last_attempt(events: pd.DataFrame) -> pd.DataFrame:
    return events[events["attempt"] == events["attempt"].max()] if not events.empty else events


# Sweep axes that already have a column of their own in the runs table.
OWN_COLUMNS = ("train.batch_size", "train.precision", "train.parallelism", "train.compile", "train.grad_accumulation")


def summarize_run(
    final: FinalRun,
    events: pd.DataFrame,
    protocol: Protocol | None = None,
    step_charts: list[pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """One run's row of the runs table; its step-time series for the chart goes to `step_charts`."""
    protocol = protocol or Protocol()
    record, outcome = final.record, final.outcome
    row = _record_columns(final)
    row["events"] = len(events)
    if events.empty:
        return _measured_or_not(row, events)
    row["seq_gaps"] = _seq_gaps(events)
    row["attempts"] = int(events["attempt"].nunique())
    events = _last_attempt(events)
    steps, epochs = of_kind(events, EventKind.STEP), of_kind(events, EventKind.EPOCH)
    system, lifecycle = of_kind(events, EventKind.SYSTEM), of_kind(events, EventKind.LIFECYCLE)
    tp = steady_state_throughput(steps, protocol.warmup_steps)
    _add_steady(row, final, tp, protocol, step_charts)
    span = time_span(tp.steady) if tp.steady is not None else None
    if not epochs.empty:
        _add_epochs(row, epochs, tp.window)
    probe, breakdown = of_kind(events, EventKind.PROBE), {}
    if tp.steady is not None and not tp.steady.empty:
        steady = tp.steady
        row["step_time_p50_s"] = percentile(steady["step_s"], 50)
        row["step_time_p95_s"] = percentile(steady["step_s"], 95)
        row["data_wait_frac"] = float(steady["data_s"].sum() / steady["step_s"].sum())
        breakdown = step_breakdown(steady, probe, record.workers)
        row.update(breakdown)
    if not system.empty:
        _add_system(row, record, system)
    starts = lifecycle[lifecycle["event"] == Lifecycle.WORKER_START] if "event" in lifecycle else lifecycle
    if not starts.empty:
        row["nodes_realized"] = int(starts["node_id"].nunique())
        row["node_ids"] = ",".join(sorted(starts["node_id"].unique()))
        uuids = column(starts, "gpu_uuid").dropna()
        row["gpu_uuids"] = ",".join(sorted(uuids.unique()))
        row["placement_warning"] = placement_warning(record.nodes_requested, record.gpus_per_worker, starts)
        row.update(utilisation_of_peak(row, lifecycle, starts))
    loaders = lifecycle[lifecycle["event"] == Lifecycle.LOADER_INFO] if "event" in lifecycle else lifecycle
    if not loaders.empty:  # the training loader as rank 0 built it (every rank builds the same)
        first = loaders.sort_values("rank").iloc[0]
        row["loader_num_workers"] = int(first["num_workers"])
        row["loader_pin_memory"] = bool(first["pin_memory"])
    if not system.empty and ("gpu_power_w" in system or "gpu_energy_mj" in system):
        row.update(energy(row, system, span))
    row.update(contention(system, starts, span, protocol.contention_share))
    row.update(language_columns(row, of_kind(events, EventKind.EVAL)))
    row.update(wall_phases(outcome.started_at, outcome.ended_at, lifecycle, epochs))
    if tp.steady is not None and not tp.steady.empty:  # after utilisation_of_peak: it reads the parameters
        parameters = row.get("parameters")
        row.update(model_input_columns(tp.steady, probe, breakdown, record.workers, parameters or 0))
        row.update(core_demand(row, starts))
    return _measured_or_not(row, steps)


def _record_columns(final: FinalRun) -> dict[str, Any]:
    """What a run's row takes from its final run record: what the run is, then what happened to it."""
    record, outcome = final.record, final.outcome
    row: dict[str, Any] = {k: v for k, v in record.to_dict().items() if k in RUN_COLUMNS}
    row["gpus"] = record.workers * record.gpus_per_worker
    row["cpus"] = record.workers * record.cpus_per_worker
    row["status"], row["reason"] = outcome.status, outcome.reason
    row["wall_s"], row["wait_s"] = outcome.wall_s, outcome.wait_s
    if outcome.attempts is not None:  # from the events where there are any (summarize_run)
        row["attempts"] = outcome.attempts
    row["ray_node_types"] = ", ".join(f"{kind} x{n}" for kind, n in sorted(outcome.ray_node_types.items()))
    for key, value in record.settings.items():
        if key not in OWN_COLUMNS:  # e.g. train.lr, train.optimizer, model.kwargs.width
            row[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value, sort_keys=True)
    return row


def _add_steady(
    row: dict[str, Any], final: FinalRun, tp: Any, protocol: Protocol, step_charts: list[pd.DataFrame] | None
) -> None:
    """Steady-state throughput with its interval, the window it came from and whether it rests on too few steps."""
    row["throughput"], row["throughput_basis"] = tp.samples_per_s, tp.basis
    row["throughput_low"], row["throughput_high"] = tp.low, tp.high
    window = tp.window
    row["warmup_steps"] = window.start if window else np.nan
    row["steady_steps"] = window.steps if window else 0
    row["first_steady_epoch"] = window.first_epoch + 1 if window and window.steps else np.nan
    if step_charts is not None and tp.series is not None and window is not None:
        step_charts.append(step_chart_series(final.record, tp.series, window.start))
    few = row["steady_steps"] < protocol.min_steady_steps
    row["low_confidence"] = bool(final.outcome.status == RunStatus.OK and few)


def _add_epochs(row: dict[str, Any], epochs: pd.DataFrame, window: Any) -> None:
    """Epoch times (steady epochs where there are any), totals, the last epoch's figures, memory peaks."""
    per_epoch = global_epochs(epochs)
    steady = window.epochs(per_epoch) if window else per_epoch.iloc[0:0]
    row["epoch_time_s"] = float((steady if not steady.empty else per_epoch)["epoch_time_s"].mean())
    row["first_epoch_time_s"] = float(per_epoch.loc[per_epoch["epoch"] == 0, "epoch_time_s"].max())
    row["train_time_s"] = float(per_epoch["epoch_time_s"].sum())
    row["samples_total"] = int(per_epoch["samples"].sum())
    last = epochs[epochs["epoch"] == epochs["epoch"].max()]
    row["final_train_loss"] = weighted_mean(last, "train_loss", "samples")
    row["final_val_accuracy"] = max_of(last, "val_accuracy")
    row["final_lr"] = max_of(last, "lr")
    row["final_val_loss"] = max_of(last, "val_loss")
    row["gpu_mem_peak_mb"] = max_of(epochs, "gpu_mem_peak_mb")
    row["host_mem_peak_mb"] = max_of(epochs, "host_mem_peak_mb")
    row["state_mem_mb"] = max_of(epochs, "state_mem_mb")
    row["mem_peak_mb"] = rank_memory_peak(row)
    row["startup_s"] = row["wall_s"] - row["train_time_s"]


def _add_system(row: dict[str, Any], record: RunRecord, system: pd.DataFrame) -> None:
    """Memory and utilisation from the system samples."""
    row["peak_rss_mb"] = max_of(system, "rss_mb")
    row["cpu_util_pct"] = float(cpu_util_pct(column(system, "cpu_pct"), record).mean())
    row["gpu_util_pct"] = float(column(system, "gpu_util_pct").mean()) if "gpu_util_pct" in system else float("nan")
    row["cpu_util_peak_pct"] = float(cpu_util_pct(column(system, "cpu_pct"), record).max())
    row["gpu_util_peak_pct"] = max_of(system, "gpu_util_pct")
    row["gpu_sm_active_pct"] = (
        float(column(system, "gpu_sm_active_pct").mean()) if "gpu_sm_active_pct" in system else float("nan")
    )


# A run's steady-state figures: shown only for a run that finished and recorded steps.
STEADY_FIGURES = ("throughput", "throughput_low", "throughput_high", "step_time_p50_s", "step_time_p95_s", "mfu",
                  "mfu_6n", "tokens_per_s")  # fmt: skip


def _measured_or_not(row: dict[str, Any], steps: pd.DataFrame) -> dict[str, Any]:
    """A run that did not finish gives no steady-state figure: what it measured before it stopped is
    mostly warm-up (the README excludes it), and a partial figure would read as the placement's
    speed. A run that finished without recording a step is `unmeasured`, not ok."""
    if row.get("status") == RunStatus.OK and steps.empty:
        row["status"], row["reason"] = RunStatus.UNMEASURED, NO_STEPS
    if row.get("status") != RunStatus.OK:
        for name in STEADY_FIGURES:
            if name in row:
                row[name] = np.nan
        row["throughput_basis"] = ""
        row["low_confidence"] = False
    return row


def step_chart_series(record: RunRecord, series: pd.DataFrame, warmup: int, points: int = 200) -> pd.DataFrame:
    """A run's step times for the step-time chart: the slowest rank's, in at most `points` means of
    consecutive steps, each marked warm-up or steady."""
    index = np.arange(len(series))
    bins = index * min(points, len(series)) // max(len(series), 1)
    frame = pd.DataFrame(
        {"bin": bins, "step": index + 1, "step_s": series["step_s"].to_numpy(), "steady": index >= warmup}
    )
    out = frame.groupby(["bin", "steady"], sort=True).agg(step=("step", "max"), step_s=("step_s", "mean")).reset_index()
    return out.drop(columns="bin").assign(
        run_id=record.run_id, placement=record.placement, step_ms=lambda f: f["step_s"] * 1000
    )


def rank_memory_peak(row: dict[str, Any]) -> float:
    """The most memory one rank held: the GPU allocator's peak on GPU runs, the process's resident peak
    on CPU runs (what FSDP's sharding saves, set beside what it costs in throughput)."""
    value = row.get("gpu_mem_peak_mb") if row.get("gpus") else row.get("host_mem_peak_mb")
    return float("nan") if value is None else float(value)


def epochs_table(records: dict[str, FinalRun], events: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    first_steady = runs.set_index("run_id")["first_steady_epoch"].to_dict() if not runs.empty else {}
    rows = []
    for run_id, group in events.groupby("run_id") if not events.empty else []:
        epochs = of_kind(_last_attempt(group), EventKind.EPOCH)
        if epochs.empty:
            continue
        per_epoch = global_epochs(epochs)
        first = first_steady.get(run_id, np.nan)
        final = records.get(run_id)  # None: events of a run whose record is lost
        record = final.record if final is not None else None
        language = bool(record and record.tokens_per_sample)
        for _, e in per_epoch.iterrows():
            ranks = epochs[epochs["epoch"] == e["epoch"]]
            rows.append(
                {
                    "run_id": run_id,
                    "model": record.model if record else None,
                    "placement": record.placement if record else None,
                    "kind": record.kind if record else RunKind.FIXED_SPLIT,
                    "workers": record.workers if record else None,
                    "epoch": int(e["epoch"]) + 1,  # 1-based for people
                    "steady": bool(np.isfinite(first) and int(e["epoch"]) + 1 >= first),
                    "epoch_time_s": float(e["epoch_time_s"]),
                    "samples": int(e["samples"]),
                    "throughput": float(e["throughput"]),
                    "train_loss": weighted_mean(ranks, "train_loss", "samples"),
                    "val_loss": max_of(ranks, "val_loss"),
                    "val_perplexity": perplexity(max_of(ranks, "val_loss")) if language else float("nan"),
                    "val_accuracy": max_of(ranks, "val_accuracy"),
                    "gpu_mem_peak_mb": max_of(ranks, "gpu_mem_peak_mb"),
                }
            )
    return pd.DataFrame(rows)


def cpu_util_pct(cpu_pct: pd.Series, record: RunRecord) -> pd.Series:
    """CPU utilisation as the report means it: percent of the CPUs the worker was given (a process's CPU%
    counts 100 per busy core, so a 2-CPU worker at 150% is at 75%)."""
    return cpu_pct / float(record.cpus_per_worker or 1)


def timeline_table(records: dict[str, FinalRun], events: pd.DataFrame) -> pd.DataFrame:
    """System samples per run and rank over time; `cpu_util_pct` as in the runs table (cpu_util_pct)."""
    system = of_kind(events, EventKind.SYSTEM)
    if system.empty:
        return pd.DataFrame(columns=["run_id", "placement", "rank", "t_s", "cpu_pct", "cpu_util_pct", "rss_mb"])
    system = system.copy()
    system["t_s"] = system["time"] - system.groupby("run_id")["time"].transform("min")
    known = {run_id: final.record for run_id, final in records.items()}
    system["placement"] = system["run_id"].map(lambda r: known[r].placement if r in known else None)
    cpus = [float(known[r].cpus_per_worker or 1) if r in known else 1.0 for r in system["run_id"]]  # ids: categorical
    system["cpu_util_pct"] = column(system, "cpu_pct") / cpus
    keep = [
        "run_id",
        "placement",
        "rank",
        "attempt",
        "t_s",
        "cpu_pct",
        "cpu_util_pct",
        "rss_mb",
        "gpu_util_pct",
        "gpu_mem_used_mb",
        "gpu_power_w",
    ]
    return system[[c for c in keep if c in system]].reset_index(drop=True)


def summarize(store: StudyStore) -> StudyTables:
    """Build the runs, epochs and timeline tables from the store alone."""
    manifest = store.manifest()
    experiment = manifest.experiment
    protocol = Protocol.of(experiment)
    records = store.final_run_records()
    events = store.events()
    by_run = events.groupby("run_id").indices if not events.empty else {}  # positions: one run's copy at a time
    step_charts: list[pd.DataFrame] = []
    rows = [
        summarize_run(rec, events.iloc[by_run[run_id]] if run_id in by_run else pd.DataFrame(), protocol, step_charts)
        for run_id, rec in records.items()
    ]
    runs = pd.DataFrame(rows)
    silent = sum(1 for run_id, rec in records.items() if rec.outcome.status == RunStatus.OK and run_id not in by_run)
    label = store.events_label
    store.damage.set(label, "run(s) recorded ok have no events at all (their figures are missing)", silent)
    if store.damage.of(label) and not runs.empty:  # steps lost to damage, not a loop that records none
        lost = runs["status"] == RunStatus.UNMEASURED
        runs.loc[lost, "reason"] = f"none of its steps could be read ({'; '.join(store.damage.of(label))})"
    missing = [name for name in RUN_COLUMNS if name not in runs]  # added at once: column by column fragments
    runs = pd.concat([runs, pd.DataFrame(np.nan, index=runs.index, columns=missing)], axis=1)
    settings = [c for c in runs.columns if c.startswith(SETTING_PREFIXES)]  # the sweep's other axes
    runs = add_scaling_columns(runs[RUN_COLUMNS + settings]) if not runs.empty else runs
    predictions = {
        run_id: frame
        for run_id, rec in records.items()
        if rec.outcome.status == RunStatus.OK and (frame := store.predictions(run_id)) is not None
    }
    run_quality, per_class = quality_tables(predictions)
    if not run_quality.empty:
        runs = runs.drop(columns=[c for c in run_quality.columns if c != "run_id"]).merge(
            run_quality, on="run_id", how="left"
        )
    runs, epochs = add_loss_divergence(runs, epochs_table(records, events, runs))
    runs = add_cost_columns(runs, epochs, manifest.pricing, experiment.cost)
    runs = runs[RUN_COLUMNS + [c for c in runs.columns if c not in RUN_COLUMNS]]
    noisy_cv = experiment.evaluation.noisy_cv
    inference = inference_table(store.inference_records())
    fits = scaling_fits(runs)
    sweep = study_sweep(store.fabric(), of_kind(events, EventKind.FABRIC) if not events.empty else events)
    scaling = experiment.train.scaling
    fabric = fabric_of(sweep, "the study")
    ledger = prediction_ledger(runs, fabric, scaling)
    placements = spread_table(runs, noisy_cv)
    workers = workers_table(events)
    ranks = rank_tables(_rank_inputs(records, events, by_run), workers, protocol.warmup_steps)
    tolerance = experiment.evaluation.quality_tolerance
    found = findings(runs, experiment.goal, fits, placements, fabric, ledger, tolerance, manifest.data.loss_floor_nats)
    found.stragglers, found.stalls = ranks.stragglers, ranks.stalls
    return StudyTables(
        runs=runs,
        epochs=epochs,
        timeline=timeline_table(records, events),
        steps=pd.concat(step_charts, ignore_index=True) if step_charts else pd.DataFrame(columns=STEP_CHART_COLUMNS),
        manifest=manifest,
        quality=per_class,
        placements=placements,
        cv=cv_table(runs),
        workers=workers,
        fits=fits,
        inference=inference,
        hardware=hardware_table(runs, inference),
        quality_summary=quality_summary(runs),
        law_curves=law_curves(runs, fits),
        findings=found,
        damage=store.damage.lines(),
        traces=sorted(str(p.relative_to(store.root)) for p in store.root.glob("traces/*/*.json.gz")),
        ledger=ledger,
        fabric=sweep,
        ranks=ranks.ranks,
        lateness=ranks.lateness,
    )


def _rank_inputs(
    records: dict[str, FinalRun], events: pd.DataFrame, by_run: Any
) -> dict[str, tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Per finished run with events: (placement, its last attempt's steps, its last attempt's clock syncs)."""
    out = {}
    for run_id, final in records.items():
        if final.outcome.status != RunStatus.OK or run_id not in by_run:
            continue
        mine = _last_attempt(events.iloc[by_run[run_id]])
        lifecycle = of_kind(mine, EventKind.LIFECYCLE)
        clocks = (
            lifecycle[lifecycle["event"] == Lifecycle.CLOCK_SYNC]
            if not lifecycle.empty and "event" in lifecycle
            else pd.DataFrame()
        )
        out[run_id] = (final.record.placement, of_kind(mine, EventKind.STEP), clocks)
    return out


def write_tables(store: StudyStore, tables: StudyTables) -> None:
    """Every table with the study's id as its first column, so many studies' tables concatenate
    (`pd.concat`, or duckdb over `reports/*/runs.parquet`) and each row still says where it came from."""
    study_id = tables.manifest.study_id or store.root.name

    def write(name: str, frame: pd.DataFrame) -> None:
        store.write_table(
            name, frame if "study_id" in frame else frame.assign(study_id=study_id)[["study_id", *frame.columns]]
        )

    write(RUNS_TABLE, tables.runs)
    write(EPOCHS_TABLE, tables.epochs)
    write(QUALITY_TABLE, tables.quality)
    write(PLACEMENTS_TABLE, tables.placements)
    if not tables.cv.empty:
        write(CV_TABLE, tables.cv)
    write(WORKERS_TABLE, tables.workers)
    write(FITS_TABLE, tables.fits)
    if not tables.inference.empty:
        write(INFERENCE_TABLE, tables.inference)
    write(HARDWARE_TABLE, tables.hardware)
    write(LEDGER_TABLE, tables.ledger)
    write(RANKS_TABLE, tables.ranks)  # empty too: a re-render must not leave an older study's rows behind
