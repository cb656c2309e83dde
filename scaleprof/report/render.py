"""Render a study: report.html (self-contained, inline JS, works offline), PNG/SVG charts, summary.md.

Everything comes from `StudyTables` (built from the store alone). Every string from the study is
escaped, and chart data is embedded as JSON with '<' escaped, so nothing in a name can run.
"""

from __future__ import annotations

import html
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.findings import LAW_REACH, Findings
from scaleprof.analysis.language import perplexity
from scaleprof.analysis.quality import RUN_METRICS
from scaleprof.analysis.recommend import describe
from scaleprof.analysis.steady import INTERVAL_COLUMNS, relative_half_width
from scaleprof.analysis.summarize import StudyTables
from scaleprof.records import RunStatus
from scaleprof.report.charts import all_charts
from scaleprof.telemetry.store import atomic_write_bytes, atomic_write_text

SETTINGS = {  # shown in the runs table when they differ between runs (a sweep), else in the notes
    "train_precision": "precision",
    "parallelism": "parallelism",
    "compile": "compile",
    "grad_accumulation": "grad. accumulation",
    "optimizer": "optimizer",
    "per_worker_batch": "batch / worker",
}
HEADLINE = {
    "placement": "placement",
    "model": "model",
    **SETTINGS,
    "device": "device",
    "workers": "workers",
    "nodes_realized": "nodes",
    "status": "status",
    "eval_split": "evaluated on",
    "throughput": "throughput (samples/s)",
    "tokens_per_s": "tokens/s",
    "speedup": "speedup",
    "scaling_efficiency": "efficiency",
    "epoch_time_s": "epoch time (s)",
    "step_time_p50_s": "step p50 (ms)",
    "step_time_p95_s": "step p95 (ms)",
    "peak_rss_mb": "peak RSS (MiB)",
    "cpu_util_pct": "CPU util (%)",
    "gpu_util_pct": "GPU util (%)",
    "gpu_sm_active_pct": "SM active (%)",
    "gpu_mem_peak_mb": "GPU peak (MiB)",
    "mem_peak_mb": "peak memory / rank (MiB)",
    "state_mem_mb": "model state / rank (MiB)",
    "compile_phase_s": "compile (s)",
    "mfu": "MFU",
    "mfu_6n": "MFU (6·N·tokens)",
    "energy_per_sample_j": "J per sample",
    "accuracy": "accuracy",
    "f1": "F1 (macro)",
    "perplexity": "test perplexity",
    "wall_s": "run wall time (s)",
    "cost_per_sample_usd": "USD per 1M samples",
    "cost_per_sample_e2e_usd": "USD per 1M samples (end to end)",
    "cost_to_target_usd": "USD to target accuracy",
    "steady_steps": "steady steps / worker",
    "caveats": "caveats",
    "reason": "reason",
    "placement_warning": "placement warning",
}


# The runs, split by topic so no table is 25 columns wide; each repeats who the run is.
IDENTITY = ("placement", "model", *SETTINGS, "device", "workers", "nodes_realized")
TOPICS = {
    "Speed": (*IDENTITY, "status", "throughput", "tokens_per_s", "speedup", "scaling_efficiency", "epoch_time_s",
              "step_time_p50_s", "step_time_p95_s", "mfu", "mfu_6n", "compile_phase_s", "wall_s", "steady_steps",
              "caveats"),
    "Resources": (*IDENTITY, "peak_rss_mb", "cpu_util_pct", "gpu_util_pct", "gpu_sm_active_pct", "gpu_mem_peak_mb",
                  "mem_peak_mb", "state_mem_mb", "energy_per_sample_j"),
    "Quality": (*IDENTITY, "eval_split", "accuracy", "f1", "perplexity"),
    "Cost": (*IDENTITY, "cost_per_sample_usd", "cost_per_sample_e2e_usd", "cost_to_target_usd"),
}  # fmt: skip


# What a column means, shown when the pointer rests on its heading (the notes say it at length).
COLUMN_HELP = {
    "nodes": "distinct nodes the run's workers ran on",
    "throughput (samples/s)": "global training samples per second in steady state (all ranks, slowest rank's "
    "time), ± the half width of its 95% interval (batch means over the run's steady steps)",
    "steady steps / worker": "steps each worker trained after the warm-up: what the figures rest on",
    "caveats": "too few steady steps for a firm figure, or something outside the run competing for the hardware",
    "rests on": "the worker counts and runs the law is fitted to, whether the fit is exact (then it has no band), "
    "and which placements had a contended or low-confidence run; 'not used' with the reason for a law outside "
    "its meaning",
    "speedup": "throughput over the median 1-worker run of the same model and device kind",
    "efficiency": "speedup / workers (100% = linear scaling), with its 95% interval",
    "epoch time (s)": "mean steady-state epoch time of the slowest rank",
    "step p50 (ms)": "median steady-state step time (batch wait + compute)",
    "step p95 (ms)": "95th percentile steady-state step time",
    "MFU": "model FLOPs per sample x throughput / (peak FLOP/s per worker x workers)",
    "peak RSS (MiB)": "the worker process's resident memory high-water mark",
    "CPU util (%)": "the worker process's CPU time as a percentage of the cores it was given",
    "GPU util (%)": "NVML utilization.gpu: the share of time a kernel was running (a rank waiting in NCCL counts)",
    "SM active (%)": "share of SM cycles busy (NVML GPM, Hopper and newer): waiting in NCCL does not fill it",
    "peak memory / rank (MiB)": "GPU allocator peak on GPU runs, resident high-water mark on CPU runs",
    "model state / rank (MiB)": "parameters, gradients and optimizer state one rank held",
    "run wall time (s)": "end to end: worker start-up and teardown, training, validation and test",
    "evaluated on": "the split the quality metrics come from",
    "USD per 1M samples": "steady-state cost: price per second / throughput",
    "USD per 1M samples (end to end)": "the run's wall time billed over every sample it trained",
    "USD to target accuracy": "start-up plus training until validation accuracy first reached the target",
}


def _with_help(table_html: str) -> str:
    for label, text in COLUMN_HELP.items():
        table_html = table_html.replace(f"<th>{html.escape(label)}</th>", f'<th title="{html.escape(text)}">'
                                        f"{html.escape(label)}</th>")  # fmt: skip
    return table_html


def topic_tables(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs table by topic (speed, resources, quality, cost); a topic with nothing measured is left out.
    Why a run was skipped or failed is said in the findings and notes, not in a column."""
    shown = []
    identity = {HEADLINE[c] for c in IDENTITY}
    for title, columns in TOPICS.items():
        table = headline_table(runs, columns)
        if set(table.columns) - identity - {"status"}:
            shown.append((title, table))
    return shown


def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column in ("step_time_p50_s", "step_time_p95_s"):
        return f"{1000 * value:.1f}"
    if column == "scaling_efficiency":
        return f"{100 * value:.0f}%"
    if column in RUN_METRICS or column in ("test_loss", "token_accuracy"):
        return f"{value:.4f}"
    if column == "perplexity":
        return f"{value:.3f}"
    if column in ("cost_per_sample_usd", "cost_per_sample_e2e_usd"):
        return f"{value * 1e6:.4f}"
    if column == "cost_to_target_usd":
        return f"{value:.5f}"
    if column in ("mfu", "mfu_6n"):
        return f"{100 * value:.1f}%"
    if column == "energy_per_sample_j":
        return f"{value:.4g}"
    if column in ("nodes_realized", "steady_steps"):
        return f"{value:.0f}"
    if column.endswith("_pct"):
        return f"{value:.0f}"
    if column == "speedup":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


TERMINAL = (
    "model", "placement", "workers", "nodes_realized", "status", "throughput", "scaling_efficiency", "epoch_time_s",
    "tokens_per_s", "accuracy", "perplexity", "cost_per_sample_usd", "wall_s",
)  # fmt: skip
QUALITY = {
    "model": "model",
    "placement": "placement",
    "runs_ok": "runs",
    "test_loss": "loss (nats/token)",
    "perplexity": "perplexity",
    "token_accuracy": "next-token accuracy",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "f1_weighted": "F1 (weighted)",
    "specificity": "specificity",
    "roc_auc": "ROC AUC",
}


def headline_table(runs: pd.DataFrame, columns: tuple[str, ...] = tuple(HEADLINE)) -> pd.DataFrame:
    """The table a reader looks at first, formatted; columns with no value anywhere are dropped."""

    def informative(c: str) -> bool:
        if c in SETTINGS:  # the same for every run: said once in the notes, not in every row
            return runs[c].nunique(dropna=True) > 1
        if c == "compile_phase_s":
            return bool((runs[c].fillna(0) > 0).any())
        return bool(runs[c].replace("", None).notna().any())

    runs = runs.assign(caveats=[caveats(r) for _, r in runs.iterrows()]) if "caveats" in columns else runs
    shown = [c for c in columns if c in runs and informative(c)]
    table = pd.DataFrame({HEADLINE[c]: [_cell(c, r) for _, r in runs.iterrows()] for c in shown})
    return table


def _cell(column: str, run: pd.Series) -> str:
    """A formatted value; a figure with an interval gets it: '8,240 ±1.2%', or '75% (71–79%)' for efficiency."""
    text = _fmt(column, run[column])
    low, high = (run.get(c, np.nan) for c in INTERVAL_COLUMNS.get(column, ("", "")))
    value = run[column]
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (low, high, value)) or not value:
        return text
    if low == high == value:  # exact by definition (the 1-worker baseline's efficiency)
        return text
    if column == "scaling_efficiency":
        return f"{text} ({100 * low:.0f}–{100 * high:.0f}%)"
    return f"{text} ±{100 * relative_half_width(value, low, high):.1f}%"


def _flag(value: Any) -> bool:
    """A flag column's value: True only when set (a run without the figure, e.g. skipped, has NaN or None)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and bool(value)


def caveats(run: pd.Series) -> str:
    """What makes a run's figures less firm than they look, in a few words (empty when nothing does)."""
    out = []
    if _flag(run.get("low_confidence")) and pd.notna(run.get("steady_steps")):
        out.append(f"low confidence: {int(run['steady_steps'])} steady steps")
    if _flag(run.get("contended")):
        share = run.get("outside_cpu_share", np.nan)
        out.append(f"contended: {share:.0%} of the node's CPU used outside Ray" if pd.notna(share) else "contended")
    return "; ".join(out)


def quality_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Model x placement quality medians (analysis.findings.quality_summary), formatted."""
    if summary.empty:
        return pd.DataFrame()
    return pd.DataFrame({QUALITY[c]: [_fmt(c, v) for v in summary[c]] for c in QUALITY if c in summary})


def spread_display(placements: pd.DataFrame) -> pd.DataFrame:
    """Repeats: median [min–max] and CV of throughput and accuracy, with the noisy flag."""
    if placements.empty or placements["runs_ok"].max() < 2:
        return pd.DataFrame()

    def span(row: pd.Series, metric: str, fmt: str) -> str:
        if not np.isfinite(row.get(f"{metric}_median", np.nan)):
            return "–"
        med, lo, hi = (row[f"{metric}_{k}"] for k in ("median", "min", "max"))
        cv = row[f"{metric}_cv"]
        cv_text = f", CV {100 * cv:.1f}%" if np.isfinite(cv) else ""
        return f"{med:{fmt}} [{lo:{fmt}}–{hi:{fmt}}]{cv_text}"

    return pd.DataFrame(
        {
            "model": placements["model"],
            "placement": placements["placement"],
            "runs ok": placements["runs_ok"].astype(str) + "/" + placements["runs"].astype(str),
            "throughput median [min–max]": [span(r, "throughput", ",.0f") for _, r in placements.iterrows()],
            "accuracy median [min–max]": [span(r, "accuracy", ".4f") for _, r in placements.iterrows()],
            "noisy": [r["noisy_metrics"] or "no" for _, r in placements.iterrows()],
        }
    )


def cv_display(cv: pd.DataFrame) -> pd.DataFrame:
    """k-fold mean ± std of each metric beside the fixed-split result."""
    if cv.empty:
        return pd.DataFrame()
    out = {"model": cv["model"], "placement": cv["placement"], "folds": cv["folds"]}
    for metric in ("accuracy", "f1", "roc_auc"):
        name = QUALITY[metric]
        out[f"{name} (k-fold mean ± std)"] = [
            f"{m:.4f} ± {s:.4f}" if np.isfinite(s) else f"{m:.4f}"
            for m, s in zip(cv[f"{metric}_mean"], cv[f"{metric}_std"])
        ]
        out[f"{name} (fixed split)"] = [_fmt(metric, v) for v in cv[f"{metric}_fixed_split"]]
    return pd.DataFrame(out)


def fits_display(fits: pd.DataFrame) -> pd.DataFrame:
    if fits.empty:
        return pd.DataFrame()

    def pm(value: float, se: float, fmt: str) -> str:
        return f"{value:{fmt}} ± {se:{fmt}}" if se > 0 else f"{value:{fmt}}"

    out = pd.DataFrame(
        {
            "model": fits["model"],
            "device": fits["device"],
            "law": fits["law"].map({"usl": "USL", "amdahl": "Amdahl (β fixed at 0: 2 worker counts)"}),
            "points": fits["points"],
            "α (contention)": [pm(a, s, ".4f") for a, s in zip(fits["alpha"], fits["alpha_se"])],
            "β (coherency)": [pm(b, s, ".2e") for b, s in zip(fits["beta"], fits["beta_se"])],
            "γ (1-worker samples/s)": [pm(g, s, ",.0f") for g, s in zip(fits["gamma"], fits["gamma_se"])],
            "peak at N*": [
                "–" if not valid else "never (β = 0)" if not np.isfinite(p) else f"{p:.1f}"
                for p, valid in zip(fits["peak_workers"], fits["valid"])
            ],
            "rests on": fits["caveats"],
        }
    )
    if "holdout_error_pct" in fits:
        out["hold-out check"] = [
            f"N={int(w)}: predicted {p:,.0f}, measured {m:,.0f} ({e:+.1f}%)" if np.isfinite(e) else "–"
            for w, p, m, e in zip(
                fits["holdout_workers"].fillna(0), fits["holdout_predicted"], fits["holdout_measured"],
                fits["holdout_error_pct"],
            )
        ]  # fmt: skip
    return out


def markdown_table(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# What to try when one part dominates the largest run's step time.
SUGGESTIONS = {
    "loading data": "the input pipeline is the limit: more data-loader workers, pinned memory or a faster source",
    "gradient all-reduce": "communication is the limit: larger per-worker batches, gradient accumulation, or fewer "
    "nodes with a faster interconnect",
    "compute": "the workers are busy computing: more or faster devices are what helps",
    "other": "the time goes outside the measured phases (the loop's own work between steps)",
}
# Why adding workers did not help (analysis.findings.step_bottleneck's `cause`).
CAUSES = {
    "contended": "something outside the study competed for the hardware during that run (see Contended); "
    "rerun it on a quiet machine before reading its scaling",
    "communication": "exchanging gradients costs more than splitting the work saves; larger per-worker batches or "
    "gradient accumulation exchange them less often",
    "shared hardware": "the workers likely compete for the same cores, memory bandwidth or device; give each "
    "worker cores (or a device) of its own",
}


def _bottleneck_sentence(b: dict[str, Any]) -> str:
    """Where the largest run's step goes, and advice that agrees with what adding workers did."""
    head = f"Where the time goes: at {b['workers']} workers ({b['placement']}) {100 * b['share']:.0f}% of a step is "
    verdict = b.get("verdict", "unknown")
    if verdict == "slower":
        advice = (
            f"{b['part']}, but {b['workers']} workers ran slower than one (speedup {b['speedup']:.2f}), so more "
            f"devices of this kind will not help: {CAUSES[b['cause']]}"
        )
    elif verdict == "poor" and b["part"] == "compute":
        advice = (
            f"compute, but scaling efficiency is only {b['scaling_efficiency']:.0%}: each worker computes more "
            f"slowly beside the others, so more devices of this kind help little: {CAUSES[b['cause']]}"
        )
    else:
        advice = f"{b['part']}; {SUGGESTIONS[b['part']]}"
    return f"{head}{advice} (step time breakdown chart)."


def findings_sentences(tables: StudyTables) -> list[str]:
    """The report's opening: the answer in words and numbers, each backed by a table or chart below."""
    found, out = tables.findings, []
    out += _damage_notes(tables)
    if found.top_throughput:
        t = found.top_throughput
        out.append(
            f"Fastest: {t['model']} on {t['placement']} ({int(t['workers'])} worker(s)) at "
            f"{t['throughput']:,.0f} samples/s in steady state{_between(t, 'throughput', '{:,.0f}')}"
            f"{_caveat(t)} (Runs table, throughput chart)."
        )
    if found.largest_scale:
        s = found.largest_scale
        out.append(
            f"Scaling: at {int(s['workers'])} workers ({s['placement']}) {s['model']} runs {s['speedup']:.2f}x as fast "
            f"as on one worker: scaling efficiency {100 * s['scaling_efficiency']:.0f}%"
            f"{_between(s, 'scaling_efficiency', '{:.0%}')} (scaling efficiency chart)."
        )
    if found.law_peak:
        out.append(_law_peak_sentence(found.law_peak))
    for bad in found.invalid_laws:
        out.append(
            f"No scaling law for {bad['model']} ({bad['device']}), so nothing is extrapolated from one: the fitted "
            f"{bad['reason']} (Scaling law table)."
        )
    out += _ledger_sentences(tables.ledger)
    tolerance = float(tables.manifest["experiment"].get("evaluation", {}).get("quality_tolerance", 0.02))
    out += [_quality_shift_sentence(shift, tolerance) for shift in found.quality_shifts]
    out += [_straggler_sentence(late) for late in found.stragglers]
    out += _stall_sentences(found.stalls)
    if found.bottleneck:
        out.append(_bottleneck_sentence(found.bottleneck))
    if found.cheapest:
        out.append(_cheapest_sentence(found.cheapest))
    advice = describe(found.recommendation, tables.manifest["experiment"].get("goal"))
    if advice:
        out.append(advice)
    return out + _warning_sentences(tables)


def _law_peak_sentence(p: dict[str, Any]) -> str:
    """Where the fitted law puts the peak, or that it places none within the curves' reach."""
    peak, reach = float(p["peak_workers"]), LAW_REACH * int(p["max_measured_workers"])
    if not np.isfinite(peak):
        where = f"has no peak for {p['model']} ({p['device']}): throughput keeps rising with workers"
    elif p.get("within_reach", True):
        where = f"puts {p['model']}'s ({p['device']}) peak throughput at about {peak:,.0f} workers"
    else:
        where = (
            f"places no peak for {p['model']} ({p['device']}) within {reach} workers ({LAW_REACH}x the largest "
            "measured count); further out than that the curve is arithmetic, not a measurement"
        )
    return (
        f"The fitted scaling law {where}; measured up to {int(p['max_measured_workers'])} workers "
        f"[{p['caveats']}] (Scaling law table)."
    )


def _cheapest_sentence(c: dict[str, Any]) -> str:
    """The cheapest placement whose quality held, and a cheaper one whose quality fell beside it."""
    fell = c.get("cheaper_but_fell")
    also = (
        f"; {fell['model']} on {fell['placement']} costs less (${1e6 * fell['cost_per_sample_usd']:.4f}) but its "
        "quality fell (see Quality above)"
        if fell
        else ""
    )
    return (
        f"Cheapest per sample: {c['model']} on {c['placement']} at ${1e6 * c['cost_per_sample_usd']:.4f} per "
        f"1M samples{_caveat(c)}{also} (cost chart)."
    )


def _warning_sentences(tables: StudyTables) -> list[str]:
    """What went wrong or is less firm than it looks: slower than one worker, noise, too few steps,
    contention, skipped runs."""
    found, out = tables.findings, []
    for slow in found.negative_scaling:
        out.append(
            f"Warning: {slow['model']} on {slow['placement']} ({slow['workers']} workers) is slower than on one "
            f"worker (speedup {slow['speedup']:.2f})."
        )
    if found.noisy:
        listed = ", ".join(f"{n['model']} on {n['placement']}" for n in found.noisy)
        out.append(f"Warning: repeats disagree beyond the noise threshold for {listed} (Repeats table).")
    if found.low_confidence:
        floor = tables.manifest["experiment"]["evaluation"].get("min_steady_steps", 30)
        listed = _listed([f"{r['placement']} ({r['steady_steps']})" for r in found.low_confidence])
        out.append(
            f"Low confidence: {len(found.low_confidence)} run(s) measured fewer than {floor} steady steps per worker: "
            f"{listed}. Their figures rest on too few steps; set train.steps_per_epoch or more epochs "
            "(step-time chart)."
        )
    if found.contended:
        listed = _listed([_contention_text(c) for c in found.contended])
        out.append(
            f"Contended: something outside the study competed for the hardware during {len(found.contended)} "
            f"run(s): {listed}. Their speed is not the hardware's alone; rerun them on a quiet machine."
        )
    for reason, count in list(found.skipped.items())[:3]:
        out.append(f"Skipped: {count} run(s): {reason}.")
    if len(found.skipped) > 3:
        out.append(f"Skipped for {len(found.skipped) - 3} other reason(s): see the notes.")
    return out


def _between(values: dict[str, Any], name: str, spec: str) -> str:
    """' (95% interval LOW–HIGH)' when the figure has one, else nothing."""
    low, high = values.get(f"{name}_low"), values.get(f"{name}_high")
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f" (95% interval {spec.format(low)}–{spec.format(high)})"


def _caveat(values: dict[str, Any]) -> str:
    """' [low confidence: 10 steady steps]' after a headline figure whose run has a caveat, else nothing."""
    text = caveats(pd.Series(values))
    return f" [{text}]" if text else ""


def _listed(items: list[str], most: int = 6) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def _contention_text(c: dict[str, Any]) -> str:
    parts = []
    if np.isfinite(c.get("outside_cpu_pct", np.nan)):
        share = c["outside_cpu_share"]
        parts.append(f"{c['outside_cpu_pct'] / 100:.1f} cores, {share:.0%} of the node, busy outside Ray")
    if (c.get("gpu_other_processes") or 0) > 0:
        parts.append(f"{c['gpu_other_processes']:.0f} other process(es) on its GPU")
    return f"{c['placement']} ({'; '.join(parts)})"


def study_notes(tables: StudyTables) -> list[str]:
    """Plain sentences that say how the numbers were obtained (shown in HTML and markdown); the goal's
    recommendation first when the experiment sets one."""
    exp, found = tables.manifest["experiment"], tables.findings
    advice = describe(found.recommendation, exp.get("goal"))
    return (
        ([advice] if advice else [])
        + _training_notes(exp, found, tables.manifest.get("data", {}))
        + _measurement_notes(tables)
        + _fixed_cost_notes(found.fixed_cost)
        + _wait_notes(tables.runs)
        + _gpu_activity_notes(found.busy_but_idle)
        + _trace_notes(tables.traces)
        + _cost_notes(tables.manifest, found)
        + _inference_notes(tables)
    )


def _damage_notes(tables: StudyTables) -> list[str]:
    """First of all: what reading the study left out (damaged lines, repeated events, unreadable files)."""
    if not tables.damage:
        return []
    runs = tables.runs
    gaps = int(runs["seq_gaps"].fillna(0).sum()) if "seq_gaps" in runs else 0
    return [
        "DAMAGED STUDY: its files were damaged or copied over; every figure here is computed without what was left "
        f"out ({'; '.join(tables.damage)}; {gaps} sequence gap(s) in what was read)."
    ]


def _training_notes(exp: dict[str, Any], found: Findings, manifest_data: dict[str, Any]) -> list[str]:
    """How the runs trained: scaling rule, loop and learning rate, restarts, quality, curve divergence."""
    train = exp["train"]
    notes = []
    swept_batch = "train.batch_size" in (exp.get("sweep") or {})
    batch = "the swept batch sizes" if swept_batch else f"batches of {train['batch_size']}"
    if train["scaling"] == "weak":
        notes.append(f"Weak scaling: each worker trains on {batch}, so the global batch grows with the workers.")
    else:
        notes.append(
            f"Strong scaling: the global batch is fixed at {train['batch_size']} and split evenly over the workers."
        )
    if train.get("loop"):
        notes.append(
            f"Training loop: {train['loop']}, the user's own (its optimizer, learning rate and loss are its own), "
            "measured through scaleprof.session."
        )
    else:
        if train["lr_scaling"] == "linear":
            rule = f"the linear scaling rule (lr {train['lr']:g} x global batch / {train['batch_size']})"
        else:
            rule = f"a fixed learning rate {train['lr']:g} on every placement (no scaling rule)"
        warm = f", ramped up over {train['lr_warmup_epochs']:g} epoch(s)" if train["lr_warmup_epochs"] else ""
        optimizer = train.get("optimizer", {"name": "sgd"})
        how = (
            f"SGD, momentum {train['momentum']:g}"
            if optimizer["name"] == "sgd"
            else f"AdamW, betas {optimizer['betas']}"
        )
        task = "language-modeling" if exp.get("task") == "language-modeling" else "classification"
        swept = [k for k in exp.get("sweep") or {} if k in ("train.lr", "train.optimizer")]
        where = f" (where not swept: {', '.join(swept)} vary, see the sweep note)" if swept else ""
        notes.append(f"Learning rate: {rule}{warm}; {how}; the built-in {task} loop{where}.")
    notes += _settings_notes(exp)
    if found.restarted:
        listed = ", ".join(f"{r['run_id']} ({r['attempts']} attempts)" for r in found.restarted)
        notes.append(
            f"Restarted after a worker or node failure (train.max_failures): {listed}. Their figures come from the "
            "last attempt, which trained from scratch; wall time and end-to-end cost include the failed attempts."
        )
    if exp.get("task") == "language-modeling":
        quality = (
            "Quality is the mean next-token cross-entropy (nats per token) on the held-out test split, perplexity its "
            "exp, and top-1 next-token accuracy, evaluated in fp32 whatever the training precision; validation "
            "perplexity after each epoch is in the learning curves. Throughput in tokens/s is samples/s x "
            f"{exp['data']['seq_len']} tokens per sequence."
        )
        floor = manifest_data.get("loss_floor_nats")
        if floor is not None:
            quality += (
                f" The synthetic chain's own entropy, the loss a model that knew it exactly would have, is "
                f"{floor:.3f} nats (perplexity {perplexity(floor):.3f})."
            )
    else:
        quality = (
            "Quality metrics are computed with sklearn.metrics from each run's stored predictions on the held-out "
            "test split (macro averages over classes; specificity is the true-negative rate; ROC AUC is one-vs-rest)."
        )
    notes.append(quality + (" Deterministic algorithms were on." if train.get("deterministic") else ""))
    if found.largest_divergence:
        worst = found.largest_divergence
        notes.append(
            "Across worker counts the learning curves legitimately differ; the largest mean train-loss distance from "
            f"the 1-worker curve is {worst['loss_divergence']:.4f} ({worst['run_id']})."
        )
    return notes


def _settings_notes(exp: dict[str, Any]) -> list[str]:
    """The training settings every run shared, and the sweep's axes."""
    train = exp["train"]
    compiled, precision = train.get("compile"), train.get("precision", "fp32")
    how = {"fp16": " (autocast, GradScaler)", "bf16": " (autocast)"}.get(precision, "")
    fsdp = train.get("parallelism") == "fsdp"
    parts = [
        f"precision {precision}{how}",
        "parallelism " + ("FSDP (PyTorch FSDP2 fully_shard per block)" if fsdp else "DDP"),
        "torch.compile " + (json.dumps(compiled) if compiled else "off"),
        f"gradient accumulation over {train.get('grad_accumulation', 1)} micro-batch(es)",
    ]
    notes = ["Training settings: " + ", ".join(parts) + "."]
    sweep = exp.get("sweep") or {}
    if sweep:
        axes = "; ".join(f"{key} in {values}" for key, values in sweep.items())
        notes[0] = "Training settings (where not swept): " + notes[0].removeprefix("Training settings: ")
        notes.append(
            f"Sweep: {axes}. Every placement ran every point; a model's name in the tables carries its point, and "
            "speedup, efficiency and the scaling law compare each point only with itself (never across batch sizes "
            "or precisions)."
        )
    if any(key != "train.batch_size" for key in sweep) or train.get("grad_accumulation", 1) > 1:
        notes.append(
            "The global batch is batch per worker x workers x gradient accumulation; throughput counts every sample "
            "of every micro-batch."
        )
    return notes


def _measurement_notes(tables: StudyTables) -> list[str]:
    """How the numbers were measured, and what went wrong in which run."""
    exp, found, runs = tables.manifest["experiment"], tables.findings, tables.runs
    notes = []
    placements = tables.placements
    if not placements.empty and placements["noisy"].any():
        noisy = placements[placements["noisy"]]
        threshold = exp["evaluation"]["noisy_cv"]
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
    monitor = exp["monitor"]
    if monitor["enabled"]:
        notes.append(
            f"Monitors sampled every {monitor['interval_s']:g}s. CPU utilisation is the worker process's CPU time as a "
            "percentage of the cores it was given."
        )
    else:
        notes.append("Monitors were off: no CPU, memory or GPU samples.")
    telemetry = tables.manifest.get("telemetry")
    if telemetry:
        notes.append(
            f"Telemetry as written: {telemetry['events_written']} events stored from {telemetry['workers']} workers, "
            f"{telemetry['gaps']} sequence gaps, {telemetry['duplicates']} resent events dropped by the aggregator."
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
    spec = tables.manifest["experiment"]["evaluation"]["inference"]
    notes = [
        f"Inference: a Ray actor per model and device kind ({spec['cpus']:g} CPU), {spec['warmup']} warm-up and "
        f"{spec['iterations']} timed iterations per batch size under torch.inference_mode(), the device synchronised "
        "before each clock read; the model is the seeded initial one (same weights everywhere)."
    ]
    ok = inference[inference["status"] == RunStatus.OK]
    if not ok.empty:
        on = [o for o in ("channels_last", "amp", "compile") if o in ok and ok[o].any()]
        notes.append("Inference options on: " + (", ".join(on) if on else "none (eager, FP32, contiguous)") + ".")
    for _, r in inference[inference["status"] != "ok"].iterrows():
        batch = f" batch {int(r['batch_size'])}" if "batch_size" in r and pd.notna(r["batch_size"]) else ""
        notes.append(f"Inference {r['model']} on {r['device']}{batch} {r['status']}: {r['reason']}")
    return notes


def _fixed_cost_notes(med: dict[str, float] | None) -> list[str]:
    """The fixed cost every run pays around its training, as medians over finished runs."""
    if med is None:
        return []
    fixed, share = med["fixed_s"], med["training_share"]
    return [
        f"Fixed cost per run (median over {int(med['runs'])} finished runs): launch {med['launch_s']:.1f} s (Ray Train "
        f"controller, worker processes, torch.distributed, and any failed attempts), setup {med['setup_s']:.1f} s "
        f"(data, model, DDP or FSDP wrap, optimizer, CPU peak probe), "
        + (
            f"compile {med['compile_phase_s']:.1f} s (torch.compile, Dynamo's own count), "
            if med["compile_phase_s"]
            else ""
        )
        + f"finish {med['finish_s']:.1f} s "
        "(all-reduce probe, held-out "
        f"predictions), teardown {med['teardown_s']:.1f} s: {fixed:.1f} s in all, beside {med['training_s']:.1f} s "
        f"of training (epochs with their validation passes), so training is {100 * share:.0f}% of a run's wall "
        "time. End-to-end cost per sample includes all of it; steady-state throughput and cost exclude it."
    ]


def _gpu_activity_notes(idle: list[dict[str, Any]]) -> list[str]:
    """The runs analysis found busy to NVML but idle to their SMs (analysis/findings.busy_but_idle)."""
    if not idle:
        return []
    listed = _listed([f"{r['placement']} ({r['gpu_util_pct']:.0f}% vs {r['gpu_sm_active_pct']:.0f}%)" for r in idle])
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
        f"{_listed(traces, most=12)}, beside this report; gzipped Chrome trace JSON for Perfetto "
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


def _cost_notes(manifest: dict[str, Any], found: Findings) -> list[str]:
    pricing = manifest.get("pricing") or {}
    if not pricing:
        return ["No node type was priced (set cost.node_type): no cost figures."]
    cost = manifest["experiment"]["cost"]
    billing = (
        "every node a run touched billed whole"
        if cost["billing"] == "node"
        else "each run billed its share of a node (CPUs or GPUs over the node's, the larger)"
    )
    notes = [f"Cost: {billing}; steady-state cost bills samples/throughput, end-to-end cost bills the run's wall time."]
    for name, p in pricing.items():
        if p["price_per_hour_usd"] is None:
            notes.append(f"Not priced: {name} ({p['provider']} {p['instance']}): {p['source']}; its runs show no cost.")
            continue
        notes.append(
            f"Priced as {name}: {p['provider']} {p['instance']} in {p['region']}, ${p['price_per_hour_usd']:g}/h "
            f"({p['vcpus']:g} vCPU, {p['gpus']:g} GPU), source {p['source']}, retrieved {p['retrieved']}."
        )
    cheap, fast = found.cheapest, found.fastest
    if cheap and fast:
        notes.append(
            f"Cheapest: {cheap['model']} on {cheap['placement']} (${cheap['cost_per_sample_usd'] * 1e6:.4f} per 1M "
            f"samples); fastest: {fast['model']} on {fast['placement']} ({fast['throughput']:,.0f} samples/s)."
        )
    if cost.get("target_accuracy"):
        notes.append(
            "Cost to target: start-up plus training until validation accuracy first reached "
            f"{cost['target_accuracy']:g}."
        )
    return notes


def _environment(manifest: dict[str, Any]) -> list[str]:
    host = manifest.get("driver_host", {})
    pkgs = manifest.get("packages", {})
    resources = manifest.get("ray", {}).get("cluster_resources", {})
    lines = [
        f"CPU: {host.get('cpu_model')}",
        f"Ray cluster: {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
        f"{resources.get('memory', 0) / 2**30:.1f} GiB memory "
        f"on {len(manifest.get('ray', {}).get('nodes', []))} node(s)",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in pkgs.items() if v),
        f"Experiment sha256: {manifest.get('experiment_sha256', '')[:16]}; split sha256: "
        + ", ".join(f"{k} {v}" for k, v in manifest.get("data", {}).get("split_sha256", {}).items()),
    ]
    gpu = manifest.get("gpu")
    if gpu and gpu.get("gpus"):
        lines.append(
            "GPUs: "
            + ", ".join(g["name"] for g in gpu["gpus"])
            + f" (driver {gpu.get('driver')}, CUDA {gpu.get('cuda_torch')})"
        )
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


def _safe_json(value: Any) -> str:
    # '<' escaped so no string in the data can close the <script> element.
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _vl_version() -> str:
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_version_for_vl_convert()


def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (so the report works offline). vl-convert
    takes about 2 s to bundle them, so the bundle is kept in the user's cache, keyed by both versions."""
    import vl_convert as vlc

    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache_root / "scaleprof" / f"vega-bundle-{vlc.__version__}-{_vl_version()}.js"  # type: ignore[attr-defined]
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vlc.javascript_bundle(vl_version=_vl_version())  # type: ignore[call-arg]  # snippet defaults to None
    try:
        atomic_write_text(cached, bundle)
    except OSError:
        pass  # no writable cache: bundle again next time
    return bundle


def _models(manifest: dict[str, Any]) -> str:
    from scaleprof.config import Experiment

    models = Experiment.model_validate(manifest["experiment"]).model_list
    return ", ".join(m.label if not m.factory else f"{m.label} ({m.factory})" for m in models)


def _splits(manifest: dict[str, Any]) -> str:
    sizes = manifest["data"].get("split_sizes", {})
    if not sizes:
        return "split by the training loop"
    return ", ".join(f"{name} {n}" for name, n in sizes.items()) + " samples"


# Click a column heading of a `table.sortable` to sort by it: numbers as numbers, "–" last; again to reverse.
SORT_JS = """// Click a column heading to sort a table by it (numbers as numbers, "–" last); click again to reverse.
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("thead th").forEach((th, col) => th.addEventListener("click", () => {
    const body = table.tBodies[0], up = th.dataset.dir !== "up";
    const key = row => {
      const text = row.cells[col].textContent.trim(), num = parseFloat(text.replace(/[,%$]/g, ""));
      return text === "–" || text === "" ? null : (isNaN(num) ? text : num);
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null) return 1; if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    });
    th.dataset.dir = up ? "up" : "down";
    rows.forEach(row => body.appendChild(row));
  }));
});"""


def render_html(tables: StudyTables, charts: dict[str, dict[str, Any]]) -> str:
    """The report page; `charts` are Vega-Lite specs (chart.to_dict()) in reading order."""
    m = tables.manifest
    esc = html.escape
    title = f"scaleprof study {m['study_id']}"
    found = "".join(f"<li>{esc(n)}</li>" for n in findings_sentences(tables))
    notes = "".join(f"<li>{esc(n)}</li>" for n in study_notes(tables))
    env = "".join(f"<li>{esc(line)}</li>" for line in _environment(m))
    env += "".join(
        f"<li>{esc(head)}<pre>{esc(body)}</pre></li>" for head, body in node_facts(tables.workers)
    )  # fmt: skip
    table = "".join(
        f'<h3 id="runs-{title.lower()}">{esc(title)}</h3>'
        + _with_help(frame.to_html(index=False, escape=True, border=0, classes="runs sortable"))
        for title, frame in topic_tables(tables.runs)
    )
    sections = [("findings", "Findings"), ("runs", "Runs")]
    extra = ""
    for i, (heading, frame) in enumerate(_extra_tables(tables)):
        sections.append((f"table-{i}", heading))
        extra += f'<h2 id="table-{i}">{esc(heading)}</h2>\n' + frame.to_html(
            index=False, escape=True, border=0, classes="runs sortable"
        )
    sections += [("notes", "How to read this"), ("charts", "Charts"), ("environment", "Environment")]
    toc = " · ".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label in sections)
    divs = "".join(f'<section><div class="chart" id="chart-{i}"></div></section>' for i in range(len(charts)))
    specs = _safe_json(list(charts.values()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1320px; }}
table.runs {{ border-collapse: collapse; font-size: 0.9em; }}
table.runs th, table.runs td {{ padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
section {{ margin: 1.5em 0; }}
nav {{ font-size: 0.9em; margin: 1em 0; }}
div.charts {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(580px, 1fr)); gap: 0 1.5em; }}
div.charts section {{ overflow-x: auto; }}
#findings li {{ margin: 0.3em 0; }}
table.sortable th {{ cursor: pointer; }}
table.sortable th:hover {{ text-decoration: underline; }}
</style>
<script type="text/javascript">{_vega_bundle()}</script>
</head><body>
<h1>{esc(title)}</h1>
<p>Experiment <b>{esc(m["experiment"]["name"])}</b>, seed {esc(str(m["seed"]))}, model(s) {esc(_models(m))},
data {esc(m["data"]["name"])} ({esc(_splits(m))}).</p>
<nav>{toc}</nav>
<h2 id="findings">Findings</h2><ul id="findings-list">{found}</ul>
<h2 id="runs">Runs</h2>
{table}
{extra}
<h2 id="notes">How to read this</h2><ul>{notes}</ul>
<h2 id="charts">Charts</h2>
<div class="charts">{divs}</div>
<h2 id="environment">Environment</h2><ul>{env}</ul>
<script type="text/javascript">
const specs = {specs};
specs.forEach((spec, i) => vegaEmbed('#chart-' + i, spec, {{"actions": false}}).catch(console.error));
{SORT_JS}
</script>
</body></html>
"""


def hardware_display(hardware: pd.DataFrame) -> pd.DataFrame:
    """The hardware comparison table, formatted; it only shows when there is more than training to compare."""
    if hardware.empty or "inference_throughput" not in hardware:
        return pd.DataFrame()

    def fmt(value: object, spec: str) -> str:
        return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)

    h = hardware
    col = lambda name: h[name] if name in h else pd.Series(np.nan, index=h.index)
    return pd.DataFrame(
        {
            "model": h["model"],
            "device": h["device"],
            "memory at largest batch (GB)": [
                f"{fmt(m, '.3f')} (batch {fmt(b, '.0f')}, {k})" if isinstance(k, str) else "–"
                for m, b, k in zip(col("memory_gb_largest_batch"), col("largest_batch"), col("memory_kind"))
            ],
            "inference (samples/s)": [
                f"{fmt(t, ',.0f')} (batch {fmt(b, '.0f')})"
                for t, b in zip(col("inference_throughput"), col("inference_best_batch"))
            ],
            "p50 latency, batch 1 (ms)": [fmt(1000 * v, ".3f") for v in col("inference_latency_p50_s_batch1")],
            "training epoch (s)": [fmt(v, ".2f") for v in col("train_epoch_time_s")],
            "peak utilisation (%)": [fmt(v, ".0f") for v in col("peak_util_pct")],
            "USD per 1M training samples": [fmt(1e6 * v, ".4f") for v in col("cost_per_sample_usd")],
            "J per training sample": [fmt(v, ".4g") for v in col("energy_per_sample_j")],
        }
    )


def workers_display(workers: pd.DataFrame) -> pd.DataFrame:
    """Where every worker of every attempt ran, and which GPU it had (or why GPU metrics are missing)."""
    if workers.empty:
        return pd.DataFrame()
    w = workers
    col = lambda name: w[name] if name in w else pd.Series(None, index=w.index, dtype=object)

    def gpu(name: Any, uuid: Any, why: Any) -> str:
        if isinstance(uuid, str):
            return f"{name} ({uuid[:12]}…)" + (f"; {why}" if isinstance(why, str) else "")
        return f"none: {why}" if isinstance(why, str) else "–"

    return pd.DataFrame(
        {
            "run": w["run_id"],
            "attempt": w["attempt"],
            "rank": w["rank"],
            "host": col("hostname"),
            "node": [n[:12] if isinstance(n, str) else "–" for n in col("node_id")],
            "device": col("device"),
            "torch threads": col("torch_threads"),
            "GPU": [gpu(n, u, r) for n, u, r in zip(col("gpu_name"), col("gpu_uuid"), col("gpu_unavailable"))],
        }
    )


def _rank_where(rank: int, node: str, host: str) -> str:
    where = ", ".join(part for part in (f"node {node}" if node else "", f"host {host}" if host else "") if part)
    return f"rank {rank}" + (f" ({where})" if where else "")


def _straggler_sentence(late: Any) -> str:
    """A rank that kept the others waiting (analysis/stragglers.Straggler)."""
    return (
        f"Slow rank: in {late.run_id} ({late.placement}) {_rank_where(late.rank, late.node, late.host)} arrived last "
        f"at the gradient exchange in {late.last_share:.0%} of {late.steps} steps, {1e3 * late.late_s:.2f} ms late on "
        f"average, from {late.cause} ({1e3 * late.cause_s:.2f} ms more than the other ranks); the other ranks lost "
        f"{late.others_lost_share:.0%} of their step time waiting for it (clocks aligned to within "
        f"{1e3 * late.clock_error_s:.2f} ms; rank lateness chart)."
    )


def _stall_sentences(stalls: list[Any], most: int = 5) -> list[str]:
    """Steps in which a rank was far later than usual (analysis/stragglers.Stall), the first `most` listed."""
    if not stalls:
        return []
    listed = []
    for stall in stalls[:most]:
        when = f", {stall.at_s:.1f} s into its steps" if np.isfinite(stall.at_s) else ""
        listed.append(
            f"{_rank_where(stall.rank, stall.node, stall.host)} of {stall.run_id} for {stall.lasted_s:.2f} s at step "
            f"{stall.step} of epoch {stall.epoch + 1}{when}"
        )
    more = f" and {len(stalls) - most} more" if len(stalls) > most else ""
    return [
        f"Stalls: {len(stalls)} step(s) in which a rank was far later than its usual step (paused, swapping or "
        f"descheduled?): {'; '.join(listed)}{more}. The others waited for it; those steps are in the run's figures."
    ]


def _quality_shift_sentence(shift: Any, tolerance: float) -> str:
    """A placement whose held-out quality is not one worker's (analysis/quality_shift.QualityShift)."""
    what = "test accuracy" if shift.metric == "accuracy" else "test perplexity"
    verdict = (
        "scaling changed what was learned, so its throughput is not a like-for-like gain, and no goal recommends it"
        if shift.worse
        else "scaling changed what was learned (here for the better)"
    )
    return (
        f"Quality: {shift.model} on {shift.placement} ({shift.workers} workers) reached {what} {shift.value:.4g} "
        f"against {shift.base:.4g} on one worker ({shift.change:+.0%}; beyond its repeats' spread and the "
        f"{tolerance:.0%} tolerance), with a global batch of {shift.global_batch:g} against "
        f"{shift.base_global_batch:g} and a learning rate of {shift.lr:.3g} against {shift.base_lr:.3g}: {verdict}. "
        "train.scaling: strong keeps the global batch, train.lr_scaling: linear scales the learning rate with it, "
        "and the time-to-target figures compare placements at equal quality (Quality table)."
    )


def _ledger_sentences(ledger: pd.DataFrame) -> list[str]:
    """The study's check of its own predictions: each multi-worker run the physics model predicted from
    the smaller placements' runs and the fabric alone, against what was measured."""
    if ledger.empty:
        return []
    made = ledger[(ledger["method"] == "physics") & ledger["predicted"].notna()]
    out = []
    for _, r in made.iterrows():
        said = (
            f"Self-check: from {r['base']} and the measured fabric alone, the physics model predicted {r['model']} on "
            f"{r['placement']} ({int(r['workers'])} workers) at {r['predicted']:,.0f} samples/s "
            f"({r['low']:,.0f}–{r['high']:,.0f}); measured {r['measured']:,.0f}, {r['error_pct']:+.0f}%"
        )
        if _known(r["covered"]) and not r["covered"] and r.get("caveat"):
            said += f", outside the interval: {r['caveat']} (Prediction ledger table).{_miss(r)}"
        elif _known(r["covered"]) and not r["covered"]:
            said += (
                ", outside the interval: something the model does not see slowed or sped this run (contention on "
                f"the node, NUMA, a slow link, a straggler) (Prediction ledger table).{_miss(r)}"
            )
        else:
            said += ", inside the interval (Prediction ledger table)."
        out.append(said)
    return out


def _miss(r: pd.Series) -> str:
    """Where a ledger row's miss came from: per step, compute and sync measured against predicted."""
    pairs = [("compute", "compute"), ("sync", "the all-reduce with the wait for the slowest rank")]
    said = []
    for part, what in pairs:
        measured, predicted = r.get(f"{part}_measured_s", np.nan), r.get(f"{part}_predicted_s", np.nan)
        if not (np.isfinite(measured) and np.isfinite(predicted) and predicted > 0):
            continue
        ratio = measured / predicted
        off = f"{ratio:.3g}x" if ratio >= 2 else f"{100 * (ratio - 1):+.0f}%"
        said.append(f"{what} {measured * 1e3:.3g} ms measured against {predicted * 1e3:.3g} ms predicted ({off})")
    return f" Per step: {'; '.join(said)}." if said else ""


def _known(value: Any) -> bool:
    """A ledger cell that holds a verdict (True or False), not None or NaN (no interval to be inside)."""
    return value is not None and value == value


def ledger_display(ledger: pd.DataFrame) -> pd.DataFrame:
    """The prediction ledger as shown: predicted with its interval, measured, error, or why none."""
    if ledger.empty:
        return pd.DataFrame()

    def figure(r: pd.Series) -> str:
        if not np.isfinite(r["predicted"]):
            return "–"
        interval = f" ({r['low']:,.0f}–{r['high']:,.0f})" if np.isfinite(r["low"]) else " (no interval)"
        return f"{r['predicted']:,.0f}{interval}"

    return pd.DataFrame({
        "model": ledger["model"], "placement": ledger["placement"], "workers": ledger["workers"],
        "method": ledger["method"], "predicted samples/s (95%)": [figure(r) for _, r in ledger.iterrows()],
        "measured": [f"{m:,.0f}" for m in ledger["measured"]],
        "error": [f"{e:+.1f}%" if np.isfinite(e) else "–" for e in ledger["error_pct"]],
        "inside": [("yes" if c else "no") if _known(c) else "–" for c in ledger["covered"]],
        "from": [b or w for b, w in zip(ledger["base"], ledger["reason"])],
        "caveat": ledger["caveat"].fillna(""),
    })  # fmt: skip


def ranks_display(ranks: pd.DataFrame) -> pd.DataFrame:
    """Each multi-worker run's ranks at the gradient exchange (analysis/stragglers.py), as shown."""
    if ranks.empty:
        return pd.DataFrame()
    ms = lambda values: [f"{1e3 * v:,.2f}" if np.isfinite(v) else "–" for v in values]
    return pd.DataFrame({
        "run": ranks["run_id"], "rank": ranks["rank"], "node": ranks["node"], "host": ranks["host"],
        "arrived last": [f"{v:.0%}" for v in ranks["last_share"]], "late when last (ms)": ms(ranks["late_s"]),
        "kept others waiting (s)": [f"{v:,.2f}" for v in ranks["kept_waiting_s"]],
        "waited (s)": [f"{v:,.2f}" for v in ranks["waited_s"]],
        "others' step time lost": [f"{v:.1%}" if np.isfinite(v) else "–" for v in ranks["others_lost_share"]],
        "late from": [f"{c} (+{1e3 * v:,.2f} ms)" if c else "–" for c, v in zip(ranks["cause"], ranks["cause_s"])],
        "clock ± (ms)": ms(ranks["error_s"]) if "error_s" in ranks else "–",
    })  # fmt: skip


def _extra_tables(tables: StudyTables) -> list[tuple[str, pd.DataFrame]]:
    candidates = [
        (
            "Prediction ledger: each multi-worker run predicted from the smaller runs only",
            ledger_display(tables.ledger),
        ),  # fmt: skip
        ("Ranks at the gradient exchange: who arrived last, and from what", ranks_display(tables.ranks)),
        ("Hardware comparison", hardware_display(tables.hardware)),
        ("Quality on the held-out test split (median over repeats)", quality_table(tables.quality_summary)),
        ("Repeats: spread and noise", spread_display(tables.placements)),
        ("k-fold cross-validation beside the fixed split", cv_display(tables.cv)),
        ("Scaling law: X(N) = γN / (1 + α(N−1) + βN(N−1))", fits_display(tables.fits)),
        ("Where each worker ran", workers_display(tables.workers)),
    ]
    return [(heading, frame) for heading, frame in candidates if not frame.empty]


def render_summary_md(tables: StudyTables) -> str:
    m = tables.manifest
    lines = [
        f"# scaleprof study {m['study_id']}",
        "",
        "## Findings",
        "",
        *[f"- {n}" for n in findings_sentences(tables)],
        "",
    ]
    for title, frame in topic_tables(tables.runs):
        lines += [f"## Runs: {title.lower()}", "", markdown_table(frame), ""]
    for heading, frame in _extra_tables(tables):
        lines += [f"## {heading}", "", markdown_table(frame), ""]
    lines += [
        *[f"- {n}" for n in study_notes(tables)],
        "",
        "## Environment",
        "",
        *[f"- {line}" for line in _environment(m)],
        "",
    ]
    # Free text (reasons, node types, pricing sources) is the user's: never raw HTML in a rendered markdown file.
    return "\n".join(lines).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cost_marks(found: Findings) -> dict[str, str]:
    """The cost chart's labels by run id: the findings' cheapest (quality held) and fastest."""
    marks: dict[str, str] = {}
    for name, run in (("cheapest", found.cheapest), ("fastest", found.fastest)):
        if run:
            marks[run["run_id"]] = " + ".join(filter(None, [marks.get(run["run_id"]), name]))
    return marks


def render_report(study_dir: Path, tables: StudyTables, image_format: str = "png") -> Path:
    """Write report.html, charts/<name>.<png|svg> and summary.md; return the report's path."""
    charts = all_charts(
        tables.runs,
        tables.epochs,
        tables.timeline,
        tables.quality,
        tables.findings.best_run_id,
        tables.law_curves,
        tables.inference,
        tables.steps,
        tables.ledger,
        _cost_marks(tables.findings),
        tables.lateness,
        tables.ranks,
    )
    specs = {name: chart.to_dict() for name, chart in charts.items()}  # validated once, used twice
    chart_dir = study_dir / "charts"
    chart_dir.mkdir(exist_ok=True)
    import vl_convert as vlc

    def image(item: tuple[str, dict[str, Any]]) -> None:
        name, spec = item
        if image_format == "svg":
            atomic_write_text(chart_dir / f"{name}.svg", vlc.vegalite_to_svg(spec, vl_version=_vl_version()))
        else:
            atomic_write_bytes(chart_dir / f"{name}.png", vlc.vegalite_to_png(spec, vl_version=_vl_version(), scale=2))

    # vl-convert renders outside the GIL: charts render side by side on every core.
    with ThreadPoolExecutor(max_workers=min(len(specs), os.cpu_count() or 1) or 1) as pool:
        list(pool.map(image, specs.items()))
    atomic_write_text(study_dir / "summary.md", render_summary_md(tables))
    report = study_dir / "report.html"
    atomic_write_text(report, render_html(tables, specs))
    return report
