"""What scaling did to the result: each multi-worker placement's held-out quality against its model's
1-worker runs on the same device kind.

The metric is test accuracy for classifiers and test perplexity for language models (lower is better).
A placement's quality has shifted when the relative difference of the medians over repeats is larger than
both the noise (the larger relative range, max − min, of the two sides' repeats; none with one run
each) and `tolerance` (`evaluation.quality_tolerance`, relative, 2% by default). Weak scaling grows the
global batch with the workers: at an unchanged learning rate and epoch count the model takes fewer,
larger steps and can learn less, which is what this finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaleprof.records import RunKind, RunStatus

DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class QualityShift:
    """A placement whose quality differs from one worker's beyond the noise and the tolerance."""

    model: str
    device: str
    placement: str
    workers: int
    metric: str  # "accuracy" or "perplexity"
    value: float  # the placement's median
    base: float  # the 1-worker runs' median
    global_batch: float
    base_global_batch: float
    lr: float  # the learning rate at the end of training (final_lr), median
    base_lr: float
    worse: bool  # lower accuracy, higher perplexity

    @property
    def change(self) -> float:
        """Relative change against one worker (signed: + is a higher figure)."""
        return self.value / self.base - 1


def quality_shifts(runs: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> list[QualityShift]:
    ok = runs[(runs["status"] == RunStatus.OK) & (runs["kind"] == RunKind.FIXED_SPLIT)]
    out = []
    for (model, device), group in ok.groupby(["model", "device"], sort=False):
        metric = _metric(group)
        if metric is None:
            continue
        quality = group.dropna(subset=[metric])
        one = quality[quality["workers"] == 1]
        if one.empty:
            continue
        for placement, many in quality[quality["workers"] > 1].groupby("placement", sort=False):
            value, base = float(many[metric].median()), float(one[metric].median())
            if base <= 0:
                continue
            if abs(value / base - 1) <= max(_noise(many[metric]), _noise(one[metric]), tolerance):
                continue
            out.append(
                QualityShift(
                    model=str(model),
                    device=str(device),
                    placement=str(placement),
                    workers=int(many["workers"].iloc[0]),
                    metric=metric,
                    value=value,
                    base=base,
                    global_batch=_median(many, "global_batch"),
                    base_global_batch=_median(one, "global_batch"),
                    lr=_median(many, "final_lr"),
                    base_lr=_median(one, "final_lr"),
                    worse=value < base if metric == "accuracy" else value > base,
                )
            )
    return out


def _metric(group: pd.DataFrame) -> str | None:
    for metric in ("accuracy", "perplexity"):
        if metric in group and group[metric].notna().any():
            return metric
    return None


def _noise(values: pd.Series) -> float:
    """The relative range of repeats (0 for one run)."""
    if len(values) < 2 or values.median() <= 0:
        return 0.0
    return float((values.max() - values.min()) / values.median())


def _median(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].median()) if column in frame and frame[column].notna().any() else np.nan
