"""Two studies side by side: per (model, placement), the change in throughput, efficiency, cost and
quality, flagged only when it exceeds the noise the studies measured.

The noise of a metric for one placement is the larger coefficient of variation of its repeats in
either study (times two, for a difference of two noisy medians); with single runs, the runs' own 95%
intervals (throughput, efficiency and cost carry one, from their steady steps: analysis/steady.py),
their relative half widths added in quadrature; where neither was measured, a floor (5% by default)
stands in. The table says which was used. This is a rule, not a statistical test.

Two studies of different experiments (4 epochs against 40) differ by more than their code: each row's
caveats name the settings that differ (config.setting_differences), so a change is never read bare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.steady import INTERVAL_COLUMNS, relative_half_width
from scaleprof.config import setting_differences
from scaleprof.records import RunKind, RunStatus

METRICS = {
    "throughput": "throughput",
    "scaling_efficiency": "efficiency",
    "cost_per_sample_usd": "cost/sample",
    "accuracy": "accuracy",
    "perplexity": "perplexity",  # language models (lower is better)
}


def _medians(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[(runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT)].copy()
    for metric, (low, high) in INTERVAL_COLUMNS.items():  # each run's relative half width (0.02 = ±2%)
        if {metric, low, high} <= set(ok):
            ok[f"{metric}_half"] = relative_half_width(ok[metric], ok[low], ok[high])
    grouped = ok.groupby(["model", "placement"])
    med = grouped[[m for m in METRICS if m in ok]].median()
    cv = grouped[[m for m in METRICS if m in ok]].agg(lambda v: v.std(ddof=1) / v.mean() if len(v) > 1 else np.nan)
    halves = grouped[[c for c in ok if c.endswith("_half")]].median()
    flags = grouped[[c for c in FLAGS if c in ok]].agg(lambda v: bool(v.eq(True).any()))
    return pd.concat([med, cv.add_suffix("_cv"), halves, flags, grouped.size().rename("runs")], axis=1)


FLAGS = {"contended": "contended", "low_confidence": "low-confidence"}  # a run's caveats, said beside its change


SHOWN_DIFFERENCES = 3  # a caveat names this many differing settings, then "and N more"


def settings_caveat(differences: list[str]) -> str:
    """The caveat that the studies measured different experiments, naming the first few fields."""
    if not differences:
        return ""
    shown = differences[:SHOWN_DIFFERENCES]
    if len(differences) > SHOWN_DIFFERENCES:
        shown.append(f"and {len(differences) - SHOWN_DIFFERENCES} more")
    return f"settings differ ({'; '.join(shown)})"


@dataclass(frozen=True)
class RowCaveats:
    """Why one row's change is not the code's alone: the settings its two studies ran differently, and the
    flags (keys of FLAGS) of either side's runs."""

    differences: tuple[str, ...]  # config.setting_differences of the row's settings, in the file's order
    flagged: tuple[tuple[str, str], ...]  # (side "a" or "b", flag), a's first

    def words(self) -> str:
        """The row's `caveats` column: the differing settings (the first few), then each side's flags."""
        parts = [settings_caveat(list(self.differences))] if self.differences else []
        parts += [f"{side.upper()} {FLAGS[flag]}" for side, flag in self.flagged]
        return "; ".join(parts)


def _row_settings(experiment: dict[str, Any], placement: str) -> dict[str, Any]:
    """The settings one row measured: the study's, with only its own placement (by name), so a placement
    added to one study, or another placement changed, is not this row's caveat."""
    mine = {p.get("name"): p for p in experiment.get("placements") or [] if p.get("name") == placement}
    return {**experiment, "placements": mine}


def compare_runs(
    a: pd.DataFrame,
    b: pd.DataFrame,
    noise_floor: float = 0.05,
    experiments: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per (model, placement) present in both studies. With `experiments` (the two studies'
    resolved experiments), a row whose settings differ says which in `caveats` (the first few) and
    `settings_differ` (all, `; `-separated): a change there is not the code's alone."""
    left, right = _medians(a), _medians(b)
    both = left.add_suffix("_a").join(right.add_suffix("_b"), how="inner")
    rows = []
    for (model, placement), r in both.iterrows():
        row = {"model": model, "placement": placement, "runs_a": int(r["runs_a"]), "runs_b": int(r["runs_b"])}
        flags = []
        for metric in METRICS:
            va, vb = r.get(f"{metric}_a", np.nan), r.get(f"{metric}_b", np.nan)
            if not (np.isfinite(va) and np.isfinite(vb)) or va == 0:
                continue
            change = (vb - va) / abs(va)
            cvs = [c for c in (r.get(f"{metric}_cv_a", np.nan), r.get(f"{metric}_cv_b", np.nan)) if np.isfinite(c)]
            measured = max(cvs) if cvs else np.nan
            halves = [r.get(f"{metric}_half_a", np.nan), r.get(f"{metric}_half_b", np.nan)]
            interval = float(np.hypot(*halves)) if all(np.isfinite(h) for h in halves) else np.nan
            if np.isfinite(measured):
                noise, basis = 2 * measured, "measured"
            elif np.isfinite(interval):
                noise, basis = interval, "interval"
            else:
                noise, basis = noise_floor, "floor"
            row.update({f"{metric}_a": va, f"{metric}_b": vb, f"{metric}_change": change, f"{metric}_noise": noise})
            row[f"{metric}_noise_basis"] = basis
            if abs(change) > noise:
                flags.append(METRICS[metric])
        row["significant"] = ", ".join(flags)
        differences = []
        if experiments is not None:
            ea, eb = experiments
            differences = setting_differences(_row_settings(ea, str(placement)), _row_settings(eb, str(placement)))
        flagged = tuple((side, flag) for side in ("a", "b") for flag in FLAGS if r.get(f"{flag}_{side}"))
        row["caveats"] = RowCaveats(tuple(differences), flagged).words()
        row["settings_differ"] = "; ".join(differences)
        rows.append(row)
    return pd.DataFrame(rows)
