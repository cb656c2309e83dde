"""Language-model figures: tokens per second, perplexity, the loss floor, and the 6·N·tokens FLOPs estimate.

Throughput is counted in samples (sequences) everywhere; a language-modeling run also knows its tokens
per sample (the sequence length), so tokens/s is that product, never measured apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scaleprof.analysis.frames import max_of
from scaleprof.records import EventKind


def perplexity(loss_nats: float) -> float:
    """exp(mean next-token cross-entropy in nats); NaN for a missing loss."""
    if loss_nats is None or not np.isfinite(loss_nats):
        return float("nan")
    return math.exp(min(loss_nats, 700.0))  # past e^700 a float overflows: the model has diverged anyway


@dataclass(frozen=True)
class LossFloor:
    """A synthetic chain's own entropy: the loss (and perplexity) of a model that knew the chain exactly."""

    nats: float  # per token
    perplexity: float


def loss_floor(entropy_nats: float | None) -> LossFloor | None:
    """The study's loss floor from its chain's entropy (the manifest's `loss_floor_nats`, synthetic tokens
    only); None for data with no known floor."""
    if entropy_nats is None:
        return None
    return LossFloor(nats=float(entropy_nats), perplexity=perplexity(entropy_nats))


def tokens_per_s(samples_per_s: float, tokens_per_sample: float | None) -> float:
    if tokens_per_sample is None or not np.isfinite(tokens_per_sample or np.nan):
        return float("nan")
    return samples_per_s * tokens_per_sample


def six_n_flops(parameters: float, tokens_per_sample: float) -> float:
    """The 6·N·D rule: forward and backward FLOPs of one sample of D tokens through N parameters
    (every parameter, embeddings included; attention's own FLOPs are left out, as in the rule)."""
    return 6.0 * parameters * tokens_per_sample


def language_columns(row: dict[str, Any], evals: pd.DataFrame) -> dict[str, float]:
    """The held-out loss, perplexity and token accuracy of a run (rank 0's evaluation event), and
    tokens/s; empty for a run that is not a language model."""
    tokens = row.get("tokens_per_sample")
    if tokens is None or not np.isfinite(tokens):
        return {}
    out = {"tokens_per_s": tokens_per_s(row.get("throughput", float("nan")), tokens)}
    evals = evals[evals["kind"] == EventKind.EVAL] if not evals.empty else evals
    if not evals.empty:
        out["test_loss"] = max_of(evals, "test_loss")
        out["perplexity"] = perplexity(out["test_loss"])
        out["token_accuracy"] = max_of(evals, "test_accuracy")
        last = evals.iloc[-1]
        out["eval_split"], out["eval_samples"] = last["split"], int(last["samples"])
    return out
