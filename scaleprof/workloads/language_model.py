"""scaleprof's built-in language-modeling loop: next-token cross-entropy (see workloads/loop.py).

A batch is (token ids [B, T], next tokens [B, T]); the model returns logits [B, T, vocab]. Quality is
the mean next-token loss in nats on the validation split after each epoch and on the held-out split at
the end (perplexity is its exp, computed in analysis), with top-1 token accuracy beside it. Evaluation
runs in fp32 whatever the training precision, so quality compares across precisions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from scaleprof import session
from scaleprof.worker.training import unwrap
from scaleprof.workloads.loop import set_up, train_epochs

EVAL_BATCH = 64  # sequences


def next_token_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    ids, targets = batch
    logits = model(ids)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, dataset: Any, device: torch.device, loader_kwargs: dict[str, Any]
) -> dict[str, float]:
    """Mean next-token loss (nats) and top-1 accuracy over every token of the data set."""
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    for ids, targets in DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, **loader_kwargs):
        ids, targets = ids.to(device), targets.to(device)
        logits = model(ids).float()
        loss_sum += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
        tokens += targets.numel()
    model.train()
    return {"loss": loss_sum / max(tokens, 1), "accuracy": correct / max(tokens, 1), "tokens": tokens}


def train_language_model(config: dict[str, Any]) -> None:
    run = set_up(config, drop_last=True)  # equal-shaped batches: a compiled model is not recompiled at the end
    device = session.device()

    def validate() -> dict[str, float]:
        val = evaluate(unwrap(run.model), run.val_set, device, run.load)
        return {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}

    train_epochs(run, next_token_loss, validate)
    if session.evaluates_here():
        held = evaluate(unwrap(run.model), run.held_set, device, run.load)
        session.report_heldout(held["loss"], held["accuracy"], samples=len(run.held_set))
    session.barrier()
