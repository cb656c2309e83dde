"""Token data for the language-modeling task, with no download and no tokenizer to fetch.

`synthetic-tokens` is a seeded first-order Markov chain over `vocab_size` tokens, each token followed
by one of a few likely successors: learnable (the loss falls towards the chain's entropy, printed by
`chain_entropy`) and identical for a seed on every worker. `text-file` reads a local file's bytes as
tokens (a byte-level tokenizer: 256 tokens, nothing to train or download). Both are cut into
non-overlapping sequences of `seq_len + 1` tokens: the input is the first `seq_len`, the target the
last `seq_len` (the next token at every position).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaleprof.config import DataSpec
from scaleprof.workloads.imports import WorkloadError

BYTE_VOCAB = 256
MAX_TEXT_BYTES = 64 * 2**20  # shipped to every worker as arrays: keep it to what a smoke study needs
SUCCESSORS = 4  # likely next tokens per token in the synthetic chain


def _chain(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(successors [V, S], cumulative probabilities [V, S]) of the synthetic chain."""
    rng = np.random.default_rng(seed)
    branch = min(SUCCESSORS, vocab)
    successors = rng.integers(0, vocab, size=(vocab, branch))
    probs = rng.dirichlet(np.ones(branch), size=vocab)
    return successors, np.cumsum(probs, axis=1)


def chain_entropy(vocab: int, seed: int, seq_len: int) -> float:
    """The lowest mean next-token loss (nats) on synthetic-tokens sequences: each position's conditional
    entropy, weighted by the distribution of the token before it (uniform at the start, then carried
    forward by the chain), averaged over the seq_len positions. Duplicate successors are merged."""
    successors, cumulative = _chain(vocab, seed)
    probs = np.diff(cumulative, axis=1, prepend=0.0)
    same = successors[:, :, None] == successors[:, None, :]
    merged = (probs[:, None, :] * same).sum(axis=2)  # each successor's total probability
    entropy = -(probs * np.log(np.clip(merged, 1e-300, 1))).sum(axis=1)  # per previous token
    weights, total = np.full(vocab, 1.0 / vocab), 0.0
    for _ in range(seq_len):
        total += float(weights @ entropy)
        weights = np.bincount(successors.ravel(), weights=(weights[:, None] * probs).ravel(), minlength=vocab)
    return total / seq_len


def synthetic_tokens(spec: DataSpec, seed: int) -> np.ndarray:
    """`spec.size` sequences of `spec.seq_len + 1` tokens drawn from the seeded chain: int64 [N, T+1]."""
    successors, cumulative = _chain(spec.vocab_size, seed)
    rng = np.random.default_rng([seed, 1])
    out = np.empty((spec.size, spec.seq_len + 1), dtype=np.int64)
    out[:, 0] = rng.integers(0, spec.vocab_size, size=spec.size)
    for t in range(1, spec.seq_len + 1):
        previous = out[:, t - 1]
        choice = (rng.random(spec.size)[:, None] > cumulative[previous]).sum(axis=1)
        out[:, t] = successors[previous, np.minimum(choice, successors.shape[1] - 1)]
    return out


def text_tokens(spec: DataSpec) -> np.ndarray:
    """The file's bytes as tokens, cut into non-overlapping sequences of seq_len + 1: int64 [N, T+1]."""
    path = Path(str(spec.path))
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise WorkloadError("data.path", f"{path}: larger than {MAX_TEXT_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkloadError("data.path", f"{path}: no such file") from None
    except IsADirectoryError:
        raise WorkloadError("data.path", f"{path}: is a directory, not a text file") from None
    except PermissionError:
        raise WorkloadError("data.path", f"{path}: cannot read (permission denied)") from None
    window = spec.seq_len + 1
    count = len(raw) // window
    if count < 10:
        raise WorkloadError(
            "data.path",
            f"{path}: {len(raw)} bytes make {count} sequence(s) of {window} tokens; at least 10 are needed "
            "for a train/val/test split (a longer file or a shorter data.seq_len)",
        )
    return np.frombuffer(raw[: count * window], dtype=np.uint8).astype(np.int64).reshape(count, window)


def token_arrays(spec: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int64 [N, seq_len] each: the targets are the inputs shifted by one token."""
    windows = text_tokens(spec) if spec.name == "text-file" else synthetic_tokens(spec, seed)
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def vocab_size(spec: DataSpec) -> int:
    return BYTE_VOCAB if spec.name == "text-file" else spec.vocab_size
