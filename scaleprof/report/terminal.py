"""What the command line prints, formatted: its tables (rich) and the legends under them, one function per
command's rows. The figures come from analysis; cli.py parses, calls these and maps exit codes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from scaleprof.analysis.compare import METRICS
from scaleprof.analysis.scaling import law_reach

PREDICT_LEGEND = (
    "physics: step = data + forward + backward + optimizer + other, as measured, + DDP's own cost (from a "
    "1-worker run's wrapper probe) + the all-reduce not hidden under backward (ring model over the fabric) + the "
    "wait for the slowest rank; the scaling law knows only the measured worker counts' throughput."
)
FABRIC_LEGEND = (
    "alpha: latency of one ring step; bus bandwidth: nccl-tests' (all-reduce bytes x 2(n-1)/n / time), the "
    "inverse of the fitted time per byte; worst error: the fitted model against the worst timed call."
)


def table(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right" if column != "run_id" else "left", no_wrap=column == "run_id")
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    return table


def print_plan(rows: list[dict[str, object]], title: str, console: Console) -> None:
    """The runs as a table whose headers are never cut short: a setting every run shares is one line above
    it, a header may wrap between its words; where even that is wider than the terminal, one line per run."""
    same = {k: rows[0][k] for k in rows[0] if k not in ("run", "run_id") and all(r[k] == rows[0][k] for r in rows)}
    if len(rows) > 1 and same:
        console.print("every run: " + ", ".join(f"{k} {v}" for k, v in same.items()), markup=False, highlight=False)
    rows = [{k: v for k, v in r.items() if k not in same} for r in rows] if len(rows) > 1 else rows
    table = Table(title=title)
    for column in rows[0]:
        words = max(len(word) for word in str(column).split())
        cells = max(len(str(r[column])) for r in rows)
        table.add_column(str(column), justify="left" if column == "run_id" else "right", min_width=max(words, cells))
    needed = sum((c.min_width or 0) + 3 for c in table.columns) + 1  # a column's padding and rule: 3 characters
    if needed > console.width:
        console.print(title, markup=False, highlight=False)
        for r in rows:
            console.print("  " + ", ".join(f"{k}: {v}" for k, v in r.items()), markup=False, highlight=False)
        return
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    console.print(table)


def prediction_row(r: Any) -> dict[str, object]:
    """One row of `predict`'s table, its caveats beside its figures; a law outside its meaning gives
    no figure, only its reason."""
    predicted = band = efficiency = "–"
    if r["valid"]:
        predicted = f"{r['throughput']:,.0f}"
        band = f"{r['low']:,.0f} – {r['high']:,.0f}" if math.isfinite(r["low"]) else "exact fit: none"
        efficiency = f"{100 * r['efficiency']:.0f}%" if math.isfinite(r["efficiency"]) else "– (no 1-worker run)"
    return {
        "model": r["model"],
        "device": r["device"],
        "workers": r["workers"],
        "predicted samples/s": predicted,
        "95% band": band,
        "efficiency": efficiency,
        "law": r["law"],
        "extrapolated": "yes" if r["extrapolated"] else "no",
        "caveats": r["caveats"],
    }


def law_lines(fits: pd.DataFrame) -> list[str]:
    """Under `predict`'s scaling-law table: each fitted law's figures and its peak (or why it is not used)."""
    lines = []
    for _, f in fits.iterrows():
        peak = (
            f"not used: {f['invalid_reason']}"
            if not f["valid"]
            else f"throughput peaks at N* = {f['peak_workers']:.1f}"
            if f.get("peak_placed", True)
            else f"no peak within {law_reach(int(f['max_measured_workers']))} workers"
        )
        lines.append(
            f"{f['model']} / {f['device']}: alpha {f['alpha']:.4f}, beta {f['beta']:.2e}, gamma {f['gamma']:,.0f} "
            f"samples/s from {f['points']} runs; {peak}"
        )
    return lines


def physics_row(r: Any) -> dict[str, object]:
    """One row of `predict`'s physics table: the figure and its interval, or why there is none."""
    row: dict[str, object] = {"model": r["model"], "device": r["device"], "workers": r["workers"], "nodes": r["nodes"]}
    if not math.isfinite(r["throughput"]):
        return row | {
            "predicted samples/s": "–",
            "95% interval": "–",
            "efficiency": "–",
            "step (ms)": "–",
            "exposed all-reduce (ms)": "–",
            "link": "–",
            "from": r["reason"],
        }
    efficiency = f"{100 * r['efficiency']:.0f}%" if math.isfinite(r["efficiency"]) else "– (no 1-worker run)"
    link = r["link_class"] or "none (1 worker)"
    if r["crosses_node_boundary"]:
        link += " (crosses nodes)"
    return row | {
        "predicted samples/s": f"{r['throughput']:,.0f}",
        "95% interval": f"{r['low']:,.0f} – {r['high']:,.0f}",
        "efficiency": efficiency,
        "step (ms)": f"{1e3 * r['step_s']:.3g}",
        "exposed all-reduce (ms)": f"{1e3 * r['term_exposed_comm_s']:.3g}",
        "link": link,
        "from": f"run {r['base']}" + (f"; {r['caveat']}" if r.get("caveat") else ""),
    }


def compare_rows(changes: pd.DataFrame) -> list[dict[str, object]]:
    """`compare`'s table: per (model, placement) each metric's change with its noise and basis, what is beyond
    noise, and the caveats where any side has one; a metric neither study has is left out."""
    rows = []
    for _, r in changes.iterrows():
        row = {"model": r["model"], "placement": r["placement"], "runs": f"{r['runs_a']} / {r['runs_b']}"}
        for metric, label in METRICS.items():
            if f"{metric}_change" in r and math.isfinite(r[f"{metric}_change"]):
                basis = {"measured": "", "interval": "†"}.get(r[f"{metric}_noise_basis"], "*")
                row[label] = f"{100 * r[metric + '_change']:+.1f}% (noise {100 * r[metric + '_noise']:.1f}%{basis})"
            else:
                row[label] = "–"
        row["beyond noise"] = r["significant"] or "none"
        if changes["caveats"].astype(bool).any():  # other settings, or a contended or low-confidence side:
            # its change is not the code's alone
            row["caveats"] = r["caveats"]
        rows.append(row)
    # a metric neither study has (a classifier's perplexity, a language model's accuracy) is left out
    empty = {label for label in METRICS.values() if all(row[label] == "–" for row in rows)}
    return [{k: v for k, v in row.items() if k not in empty} for row in rows]


def compare_note(noise: float, differences: list[str]) -> str:
    """What `compare`'s figures mean, and whether the studies ran different experiments."""
    note = (
        f"Change = (B - A) / A of medians over repeats; noise = 2 x the larger coefficient of variation over repeats, "
        "or † with single runs the runs' own 95% intervals (relative half widths added in quadrature), "
        f"or * the {100 * noise:.0f}% floor where neither was measured. 'Beyond noise' is that rule "
        "(|change| > noise), not a statistical test: with 2-3 repeats no test would have the power to say more."
    )
    if differences:
        note += (
            f" The studies ran different experiments ({'; '.join(differences)}): their changes measure those "
            "settings too, not the code alone."
        )
    return note


def ls_rows(rows: list[dict[str, Any]]) -> list[dict[str, object]]:
    """`ls`'s table: one row per study (analysis/catalog.list_studies), its runs by outcome, its fastest
    placement and its efficiency at the most workers."""
    return [
        {
            "study": r["study"],
            "experiment": r.get("experiment", "–"),
            "created": r.get("created", "–"),
            "ok/skipped/failed": f"{r.get('ok', 0)}/{r.get('skipped', 0)}/{r.get('failed', 0)}"
            + (f" (+{r['unmeasured']} unmeasured)" if r.get("unmeasured") else "")
            + (f" (+{r['unfinished']} unfinished)" if r.get("unfinished") else ""),
            "fastest (samples/s)": f"{r['best_throughput']:,.0f} ({r['best_placement']})"
            if "best_throughput" in r
            else "–",
            "efficiency at most workers": f"{100 * r['efficiency']:.0f}% at {r['efficiency_workers']}"
            if "efficiency" in r
            else "–",
            "note": r.get("problem", "") or ("" if r.get("report") else "no report yet (scaleprof report DIR)"),
        }
        for r in rows
    ]


def fabric_row(fit: Any) -> dict[str, object]:
    """One link's fit for `fabric`'s table: α in µs, 1/β as nccl-tests' bus bandwidth in GB/s (10⁹ B/s)."""

    def shown(value: float, low: float, high: float, digits: int) -> str:
        if not math.isfinite(value):
            return "–"
        top = f"{high:.{digits}f}" if math.isfinite(high) else "∞"
        return f"{value:.{digits}f} ({low:.{digits}f} – {top})"

    gb = 1e-9
    bandwidth_low = 1 / fit.beta_high if fit.beta_high > 0 else math.nan
    bandwidth_high = 1 / fit.beta_low if fit.beta_low > 0 else math.inf
    return {
        "backend": fit.backend,
        "link": fit.link_class,
        "alpha µs (95%)": shown(fit.alpha_s * 1e6, fit.alpha_low * 1e6, fit.alpha_high * 1e6, 1),
        "bus bandwidth GB/s (95%)": shown(fit.bandwidth_bytes_per_s * gb, bandwidth_low * gb, bandwidth_high * gb, 3),
        "points": fit.points,
        "worlds": ", ".join(map(str, fit.worlds)) or "–",
        "worst error": f"{100 * fit.max_relative_error:.0f}%" if math.isfinite(fit.max_relative_error) else "–",
    }


def fabric_json(fit: Any, out: Path) -> dict[str, object]:
    """One link's fit for `fabric --json`, in the table's units; a figure that is not finite is null."""

    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return {
        "backend": fit.backend,
        "link_class": fit.link_class,
        "alpha_us": number(fit.alpha_s * 1e6),
        "alpha_low_us": number(fit.alpha_low * 1e6),
        "alpha_high_us": number(fit.alpha_high * 1e6),
        "bus_bandwidth_gb_s": number(fit.bandwidth_bytes_per_s / 1e9),
        "bus_bandwidth_low_gb_s": number(1e-9 / fit.beta_high) if fit.beta_high > 0 else None,
        "bus_bandwidth_high_gb_s": number(1e-9 / fit.beta_low) if fit.beta_low > 0 else None,
        "points": fit.points,
        "worlds": list(fit.worlds),
        "max_relative_error": number(fit.max_relative_error),
        "valid": fit.valid,
        "invalid_reason": fit.invalid_reason,
        "sweep": str(out),
    }
