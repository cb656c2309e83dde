"""Small helpers over the events frame that every analysis module reads."""

from __future__ import annotations

import pandas as pd


def of_kind(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The events of one kind, without the columns only other kinds fill."""
    if events.empty or "kind" not in events:
        return pd.DataFrame()
    return events[events["kind"] == kind].dropna(axis=1, how="all")


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or an empty one when no event had the field."""
    return frame[name] if name in frame else pd.Series(dtype=float)


def max_of(frame: pd.DataFrame, name: str) -> float:
    """The largest value of a column (NaN when none)."""
    values = column(frame, name).dropna()
    return float(values.max()) if len(values) else float("nan")
