"""Small helpers over the events frame that every analysis module reads."""

from __future__ import annotations

import pandas as pd


def of_kind(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The events of one kind, without the columns only other kinds fill."""
    if events.empty or "kind" not in events:
        return pd.DataFrame()
    rows = (events["kind"] == kind).to_numpy()
    if not rows.any():
        return pd.DataFrame()
    # The columns first, then one copy of only those (a study's events are wide: every kind's fields).
    filled = events.notna().to_numpy()[rows].any(axis=0)
    return events.loc[rows, events.columns[filled]]


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or an empty one when no event had the field."""
    return frame[name] if name in frame else pd.Series(dtype=float)


def weighted_mean(frame: pd.DataFrame, name: str, weights: str) -> float:
    """The `weights`-weighted mean of a column over the rows that have it (NaN when none do, or their
    weights sum to zero): e.g. an epoch's training loss over ranks, weighted by samples."""
    if name not in frame or weights not in frame:
        return float("nan")
    rows = frame[frame[name].notna()]
    total = float(rows[weights].sum())
    return float((rows[name] * rows[weights]).sum() / total) if total > 0 else float("nan")


def max_of(frame: pd.DataFrame, name: str) -> float:
    """The largest value of a column (NaN when none)."""
    values = column(frame, name).dropna()
    return float(values.max()) if len(values) else float("nan")
