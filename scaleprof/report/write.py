"""Writing a study's tables and report into its directory, never over better ones.

`scaleprof report` re-renders from the store alone. When the store now holds less than the tables in
place were made from (a damaged or deleted event segment, a damaged predictions file), replacing them
would lose good figures: they are kept, and the re-render from what is left goes beside them, into
`partial-render/`, unless the caller accepts the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from scaleprof.analysis.loss import measurement_loss
from scaleprof.analysis.summarize import StudyTables, write_tables
from scaleprof.report.render import render_report
from scaleprof.telemetry.store import RUNS_TABLE, StudyStore

PARTIAL_DIR = "partial-render"


@dataclass(frozen=True)
class Written:
    report: Path  # the report written now
    loss: list[str] = field(default_factory=list)  # what the new tables lack against those in place
    kept_previous: bool = False  # the tables in place were kept; the new ones went to `report`'s directory


def previous_runs(store: StudyStore) -> pd.DataFrame:
    """The runs table in place; empty when there is none or it cannot be read (nothing to keep)."""
    try:
        return store.table(RUNS_TABLE)
    except Exception:  # missing, or damaged itself (pyarrow raises its own types)
        return pd.DataFrame()


def write_study(store: StudyStore, tables: StudyTables, accept_loss: bool = False, report: bool = True) -> Written:
    """Write the tables and (with `report`) the report in place, or beside them when that would lose
    measurements."""
    loss = measurement_loss(previous_runs(store), tables.runs)
    kept = bool(loss) and not accept_loss
    target = StudyStore(store.root / PARTIAL_DIR) if kept else store
    target.root.mkdir(exist_ok=True)
    write_tables(target, tables)
    page = render_report(target.root, tables) if report else target.root / "report.html"
    return Written(page, loss, kept_previous=kept)
