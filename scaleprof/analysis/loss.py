"""What a study's tables made again from its store would lose against the tables already in place.

A re-render reads the store as it is now: a segment cut short or deleted, a damaged predictions file
or run log leaves less to read than the tables in place were made from. Those tables are the better
record, so the caller keeps them unless told otherwise; this module only says what would be lost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Figures a run had that a re-render must not silently drop (each is read from the store afresh).
KEPT_FIGURES = ("throughput", "accuracy", "f1", "roc_auc", "test_loss", "perplexity")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and bool(np.isfinite(value))


def measurement_loss(previous: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """One line per run the current runs table knows less about than the previous one: a run left out,
    fewer events than before, or a figure the previous table had and the current one lacks."""
    if previous.empty or "run_id" not in previous:
        return []
    now = current.set_index("run_id") if "run_id" in current else pd.DataFrame()
    lines = []
    for _, before in previous.iterrows():
        run_id = before["run_id"]
        if run_id not in now.index:
            lines.append(f"{run_id}: left out (its run record cannot be read)")
            continue
        after = now.loc[run_id]
        if isinstance(after, pd.DataFrame):  # a run id twice: compare with the first
            after = after.iloc[0]
        had, has = before.get("events"), after.get("events")
        if _finite(had) and _finite(has) and has < had:
            lines.append(f"{run_id}: {int(has):,} events readable, {int(had):,} when its tables were made")
        if before.get("status") != "ok":  # a failed run's partial figures are not shown any more: no loss
            continue
        gone = [name for name in KEPT_FIGURES if _finite(before.get(name)) and not _finite(after.get(name))]
        if gone:
            lines.append(f"{run_id}: {', '.join(gone)} no longer computable")
    return lines
