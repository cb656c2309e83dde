"""scaleprof's built-in classification loop: cross-entropy over class logits (see workloads/loop.py).

Rank 0 stores its class probabilities on the held-out split; every quality metric is computed from
them later with scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from scaleprof import session
from scaleprof.worker.training import unwrap
from scaleprof.workloads.loop import set_up, train_epochs

EVAL_BATCH = 512


@torch.no_grad()
def predict(
    model: torch.nn.Module, dataset: Any, device: torch.device, loader_kwargs: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, class probabilities) for every item of the data set, in order (in fp32)."""
    model.eval()
    labels, out = [], []
    for xb, yb in DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, **loader_kwargs):
        logits = model(xb.to(device))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        labels.append(np.asarray(yb))
    model.train()
    return np.concatenate(labels), np.concatenate(out)


def _batch_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def train_classifier(config: dict[str, Any]) -> None:
    run = set_up(config)
    device = session.device()

    def validate() -> dict[str, float]:
        y_val, proba = predict(unwrap(run.model), run.val_set, device, run.load)
        val = session.loss_and_accuracy(proba, y_val)
        return {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}

    train_epochs(run, _batch_loss, validate)
    if session.evaluates_here():
        # Rank 0 holds the same weights as every rank: its predictions on the held-out split are stored
        # whole, and every quality metric is computed from them later with sklearn.
        y_held, proba = predict(unwrap(run.model), run.held_set, device, run.load)
        session.report_predictions(y_held, proba)
    session.barrier()
