"""The report's tables: the column catalogue, each column's formatting and help, and the display tables built
from the study's tables (runs by topic, quality, repeats, cross-validation, scaling law, ledger, ranks, hardware,
workers)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.cost import usd_per_million
from scaleprof.analysis.findings import RunCaveats
from scaleprof.analysis.prediction import NO_SMALLER_RUN
from scaleprof.analysis.quality import RUN_METRICS
from scaleprof.analysis.run_row import declared
from scaleprof.analysis.scaling import law_reach
from scaleprof.analysis.steady import INTERVAL_COLUMNS, relative_half_width
from scaleprof.analysis.summarize import StudyTables

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


# The runs, split by topic so no table is 25 columns wide; each repeats who the run is. Columns of the runs table
# (declared in analysis/run_row.py, in the order shown here), and the report's own `caveats` (caveats()).
IDENTITY = declared("placement", "model", *SETTINGS, "device", "workers", "nodes_realized")
CAVEATS = "caveats"


TOPICS = {
    "Speed": (*IDENTITY, *declared("status", "throughput", "tokens_per_s", "speedup", "scaling_efficiency",
              "epoch_time_s", "step_time_p50_s", "step_time_p95_s", "mfu", "mfu_6n", "compile_phase_s", "wall_s",
              "steady_steps"), CAVEATS),
    "Resources": (*IDENTITY, *declared("peak_rss_mb", "cpu_util_pct", "gpu_util_pct", "gpu_sm_active_pct",
                  "gpu_mem_peak_mb", "mem_peak_mb", "state_mem_mb", "energy_per_sample_j")),
    "Quality": (*IDENTITY, *declared("eval_split", "accuracy", "f1", "perplexity")),
    "Cost": (*IDENTITY, *declared("cost_per_sample_usd", "cost_per_sample_e2e_usd", "cost_to_target_usd")),
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
        return f"{usd_per_million(value):.4f}"
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


TERMINAL = declared(
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

    runs = runs.assign(caveats=[caveats(r) for _, r in runs.iterrows()]) if CAVEATS in columns else runs
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


def caveats(run: pd.Series) -> str:
    """What makes a run's figures less firm than they look, in a few words (empty when nothing does)."""
    return caveat_words(RunCaveats.of(run))


def caveat_words(run: RunCaveats) -> str:
    """A run's caveats in a few words (empty when it has none)."""
    out = []
    if run.low_confidence and pd.notna(run.steady_steps):
        out.append(f"low confidence: {int(run.steady_steps)} steady steps")
    if run.contended:
        share = run.outside_cpu_share
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
                "–"
                if not valid
                else "never (β = 0)"
                if not np.isfinite(p)
                else f"{p:.1f}"
                if placed
                else f"beyond {law_reach(int(top))}"
                for p, valid, placed, top in zip(
                    fits["peak_workers"],
                    fits["valid"],
                    fits.get("peak_placed", fits["valid"]),
                    fits["max_measured_workers"],
                )
            ],
            "rests on": fits["caveats"],
        }
    )
    if "holdout_error_pct" in fits:
        out["hold-out check"] = [
            f"N={int(w)}: predicted {p:,.0f}, measured {m:,.0f} ({e:+.1f}%)" if np.isfinite(e) else "–"
            for w, p, m, e in zip(
                fits["holdout_workers"].fillna(0),
                fits["holdout_predicted"],
                fits["holdout_measured"],
                fits["holdout_error_pct"],
            )
        ]
    return out


def per_million(cost_per_sample_usd: float) -> str:
    """'$0.0123 per 1M samples': a cost per sample as the report quotes it (analysis/cost.usd_per_million)."""
    return f"${usd_per_million(cost_per_sample_usd):.4f} per 1M samples"


def markdown_table(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def short_list(items: list[str], most: int = 6) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


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
            "USD per 1M training samples": [fmt(usd_per_million(v), ".4f") for v in col("cost_per_sample_usd")],
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


def known_verdict(value: Any) -> bool:
    """A ledger cell that holds a verdict (True or False), not None or NaN (no interval to be inside)."""
    return value is not None and value == value


def ledger_display(ledger: pd.DataFrame) -> pd.DataFrame:
    """The prediction ledger as shown: predicted with its interval, measured, error, or why none. A run with no
    smaller run of its model to be predicted from (the smallest placement of a study without 1-worker runs)
    is left out: each of its rows would only say so."""
    smallest = ledger.loc[ledger["reason"] == NO_SMALLER_RUN, "run_id"] if not ledger.empty else []
    ledger = ledger[~ledger["run_id"].isin(smallest)] if len(smallest) else ledger
    if ledger.empty:
        return pd.DataFrame()

    def figure(r: pd.Series) -> str:
        if not np.isfinite(r["predicted"]):
            return "–"
        interval = f" ({r['low']:,.0f}–{r['high']:,.0f})" if np.isfinite(r["low"]) else " (no interval)"
        return f"{r['predicted']:,.0f}{interval}"

    return pd.DataFrame(
        {
            "model": ledger["model"],
            "placement": ledger["placement"],
            "workers": ledger["workers"],
            "method": ledger["method"],
            "predicted samples/s (95%)": [figure(r) for _, r in ledger.iterrows()],
            "measured": [f"{m:,.0f}" for m in ledger["measured"]],
            "error": [f"{e:+.1f}%" if np.isfinite(e) else "–" for e in ledger["error_pct"]],
            "inside": [("yes" if c else "no") if known_verdict(c) else "–" for c in ledger["covered"]],
            "from": [b or w for b, w in zip(ledger["base"], ledger["reason"])],
            "caveat": ledger["caveat"].fillna(""),
        }
    )


def ranks_display(ranks: pd.DataFrame) -> pd.DataFrame:
    """Each multi-worker run's ranks at the gradient exchange (analysis/stragglers.py), as shown."""
    if ranks.empty:
        return pd.DataFrame()
    ms = lambda values: [f"{1e3 * v:,.2f}" if np.isfinite(v) else "–" for v in values]
    return pd.DataFrame(
        {
            "run": ranks["run_id"],
            "rank": ranks["rank"],
            "node": ranks["node"],
            "host": ranks["host"],
            "arrived last": [f"{v:.0%}" for v in ranks["last_share"]],
            "late when last (ms)": ms(ranks["late_s"]),
            "kept others waiting (s)": [f"{v:,.2f}" for v in ranks["kept_waiting_s"]],
            "waited (s)": [f"{v:,.2f}" for v in ranks["waited_s"]],
            "others' step time lost": [f"{v:.1%}" if np.isfinite(v) else "–" for v in ranks["others_lost_share"]],
            "late from": [f"{c} ({1e3 * v:+,.2f} ms)" if c else "–" for c, v in zip(ranks["cause"], ranks["cause_s"])],
            "ranks meet at": ranks.get("exchange", "–"),
            "clock ± (ms)": ms(ranks["error_s"]) if "error_s" in ranks else "–",
        }
    )


def extra_tables(tables: StudyTables) -> list[tuple[str, pd.DataFrame]]:
    candidates = [
        (
            "Prediction ledger: each multi-worker run predicted from the smaller runs only",
            ledger_display(tables.ledger),
        ),
        ("Ranks at the gradient exchange: who arrived last, and from what", ranks_display(tables.ranks)),
        ("Hardware comparison", hardware_display(tables.hardware)),
        ("Quality on the held-out test split (median over repeats)", quality_table(tables.quality_summary)),
        ("Repeats: spread and noise", spread_display(tables.placements)),
        ("k-fold cross-validation beside the fixed split", cv_display(tables.cv)),
        ("Scaling law: X(N) = γN / (1 + α(N−1) + βN(N−1))", fits_display(tables.fits)),
        ("Where each worker ran", workers_display(tables.workers)),
    ]
    return [(heading, frame) for heading, frame in candidates if not frame.empty]
