"""The runs table's columns (runs.parquet, one row per run), declared once, in the table's order.

Each column says what it is about (`topic`) and whether an MLflow export logs it as a run's param or metric
(export/mlflow.py takes its lists from here). A column list owned by the step that fills it (RUN_METRICS,
BREAKDOWN_COLUMNS, ...) is spread in as that step defines it. Beyond these, a runs table carries one column per
sweep axis that has none of its own (`train.lr`, `model.kwargs.width`: SETTING_PREFIXES) and, when written, the
study's id first. The report picks and orders the columns it shows (report/tables.py); they must be declared here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scaleprof.analysis.breakdown import BREAKDOWN_COLUMNS
from scaleprof.analysis.cost import COST_COLUMNS
from scaleprof.analysis.model_inputs import INPUT_COLUMNS
from scaleprof.analysis.phases import WALL_PHASES
from scaleprof.analysis.quality import RUN_METRICS
from scaleprof.analysis.scaling import EFFICIENCY_INTERVAL


class Topic(StrEnum):
    RUN = "run"  # what the run is: its run record
    OUTCOME = "outcome"  # what happened to it: its final state, times and attempts
    PLACEMENT = "placement"  # where its workers ran
    SPEED = "speed"  # steady-state throughput, step and epoch times
    STEP = "step"  # where a step's time goes, and where the run's wall time goes
    RESOURCES = "resources"  # memory, utilisation, power and energy
    UTILISATION = "utilisation"  # model FLOPs against the hardware's peak
    QUALITY = "quality"  # training curves and the held-out evaluation
    TELEMETRY = "telemetry"  # what was recorded, and the loader that fed the steps
    CONTENTION = "contention"  # what outside the run competed for its hardware
    MODEL_INPUTS = "model inputs"  # what the scaling prediction is built from (analysis/model_inputs.py)
    SCALING = "scaling"  # against the 1-worker runs of the same model and device (across runs)
    COST = "cost"  # priced by the study's pricing rows (across runs)


class Mlflow(StrEnum):
    """How an MLflow export logs a column for each run."""

    PARAM = "param"
    METRIC = "metric"


@dataclass(frozen=True)
class Column:
    name: str
    topic: Topic
    mlflow: Mlflow | None = None


P, M = Mlflow.PARAM, Mlflow.METRIC
T = Topic

# What summarize_run makes of one run (its row; a figure it cannot measure is left NaN), in the table's order.
RUN_ROW: tuple[Column, ...] = (
    Column("run_id", T.RUN), Column("index", T.RUN), Column("model", T.RUN, P), Column("model_name", T.RUN),
    Column("placement", T.RUN, P), Column("device", T.RUN, P), Column("workers", T.RUN, P), Column("gpus", T.RUN, P),
    Column("cpus", T.RUN, P), Column("kind", T.RUN, P), Column("fold", T.RUN, P), Column("per_worker_batch", T.RUN, P),
    Column("global_batch", T.RUN, P), Column("repeat", T.RUN, P), Column("status", T.OUTCOME),
    Column("reason", T.OUTCOME, P), Column("throughput", T.SPEED, M), Column("throughput_basis", T.SPEED),
    Column("speedup", T.SCALING, M), Column("scaling_efficiency", T.SCALING, M), Column("epoch_time_s", T.SPEED, M),
    Column("first_epoch_time_s", T.SPEED, M), Column("step_time_p50_s", T.SPEED, M),
    Column("step_time_p95_s", T.SPEED, M), Column("data_wait_frac", T.SPEED, M), Column("peak_rss_mb", T.RESOURCES, M),
    Column("cpu_util_pct", T.RESOURCES, M), Column("gpu_util_pct", T.RESOURCES, M),
    Column("gpu_mem_peak_mb", T.RESOURCES, M), Column("nodes_realized", T.PLACEMENT, P),
    Column("node_ids", T.PLACEMENT), Column("gpu_uuids", T.PLACEMENT), Column("wall_s", T.OUTCOME, M),
    Column("train_time_s", T.SPEED, M), Column("startup_s", T.SPEED, M), Column("samples_total", T.SPEED, M),
    Column("final_lr", T.QUALITY), Column("final_train_loss", T.QUALITY, M), Column("final_val_accuracy", T.QUALITY, M),
    Column("eval_split", T.QUALITY), Column("eval_samples", T.QUALITY),
    *(Column(name, T.QUALITY, None if name == "f1_weighted" else M) for name in RUN_METRICS),
    Column("precision_weighted", T.QUALITY), Column("recall_weighted", T.QUALITY),
    Column("balanced_accuracy", T.QUALITY), Column("loss_divergence", T.QUALITY), Column("strategy", T.RUN, P),
    Column("nodes_requested", T.RUN), Column("placement_warning", T.PLACEMENT), Column("node_type", T.RUN, P),
    *(Column(name, T.STEP) for name in BREAKDOWN_COLUMNS),
    Column("flops_per_sample", T.UTILISATION), Column("parameters", T.UTILISATION),
    Column("peak_flops_per_worker", T.UTILISATION), Column("peak_flops_basis", T.UTILISATION),
    Column("math_mode", T.UTILISATION), Column("mfu", T.UTILISATION, M), Column("gpu_power_w", T.RESOURCES, M),
    Column("energy_basis", T.RESOURCES), Column("energy_run_j", T.RESOURCES),
    Column("energy_per_sample_j", T.RESOURCES, M), Column("cpu_util_peak_pct", T.RESOURCES),
    Column("gpu_util_peak_pct", T.RESOURCES), Column("events", T.TELEMETRY), Column("seq_gaps", T.TELEMETRY, M),
    Column("attempts", T.OUTCOME, M), Column("loader_num_workers", T.TELEMETRY),
    Column("loader_pin_memory", T.TELEMETRY), *(Column(name, T.STEP) for name in WALL_PHASES),
    Column("model_label", T.RUN, P), Column("batch_series", T.RUN), Column("task", T.RUN, P),
    Column("train_precision", T.RUN, P), Column("parallelism", T.RUN, P), Column("compile", T.RUN, P),
    Column("grad_accumulation", T.RUN, P), Column("optimizer", T.RUN, P), Column("tokens_per_sample", T.RUN),
    Column("tokens_per_s", T.SPEED, M), Column("test_loss", T.QUALITY, M), Column("perplexity", T.QUALITY, M),
    Column("token_accuracy", T.QUALITY, M), Column("final_val_loss", T.QUALITY),
    Column("host_mem_peak_mb", T.RESOURCES), Column("mem_peak_mb", T.RESOURCES, M),
    Column("state_mem_mb", T.RESOURCES, M), Column("flops_6n_per_sample", T.UTILISATION),
    Column("mfu_6n", T.UTILISATION, M), Column("wait_s", T.OUTCOME, M), Column("ray_node_types", T.PLACEMENT, P),
    Column("throughput_low", T.SPEED, M), Column("throughput_high", T.SPEED, M), Column("warmup_steps", T.SPEED, M),
    Column("steady_steps", T.SPEED, M), Column("first_steady_epoch", T.SPEED), Column("low_confidence", T.SPEED, M),
    Column("contended", T.CONTENTION, M), Column("outside_cpu_pct", T.CONTENTION),
    Column("outside_cpu_share", T.CONTENTION, M), Column("gpu_other_processes", T.CONTENTION, M),
    Column("gpu_sm_active_pct", T.RESOURCES), *(Column(name, T.MODEL_INPUTS) for name in INPUT_COLUMNS),
)  # fmt: skip

# Added across runs once every row is made (analysis/scaling.py, analysis/cost.py), after the sweep axes.
ACROSS_RUNS: tuple[Column, ...] = (
    Column("baseline_throughput", T.SCALING), *(Column(name, T.SCALING, M) for name in EFFICIENCY_INTERVAL),
    *(Column(name, T.COST, M if name in ("cost_per_sample_usd", "cost_per_sample_e2e_usd", "cost_run_usd") else None)
      for name in COST_COLUMNS if name != "node_type"),  # node_type is the run record's, in the row
)  # fmt: skip

RUNS_TABLE_COLUMNS = RUN_ROW + ACROSS_RUNS
RUN_COLUMNS = [column.name for column in RUN_ROW]
SETTING_PREFIXES = ("train.", "model.")  # a sweep axis without a column of its own: the runs table's middle
DECLARED = {column.name: column for column in RUNS_TABLE_COLUMNS}


def logged_as(role: Mlflow) -> list[str]:
    """The columns an MLflow export logs for each run as `role`, in the table's order."""
    return [column.name for column in RUNS_TABLE_COLUMNS if column.mlflow == role]


def declared(*names: str) -> tuple[str, ...]:
    """`names` as given, each a declared column (a ValueError names any that is not): for the lists that
    pick and order columns of the runs table elsewhere (the report's)."""
    unknown = [name for name in names if name not in DECLARED]
    if unknown:
        raise ValueError(f"not columns of the runs table (scaleprof/analysis/run_row.py): {', '.join(unknown)}")
    return names
