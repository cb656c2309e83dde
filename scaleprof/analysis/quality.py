"""Model quality from stored held-out predictions, with sklearn.metrics (never by hand).

Macro averages weigh every class equally; weighted averages weigh them by support, which is the
fairer single number when classes are unbalanced. Specificity (true-negative rate) per class comes
from sklearn's one-vs-rest confusion matrices.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn import metrics
from sklearn.exceptions import UndefinedMetricWarning

RUN_METRICS = ["accuracy", "precision", "recall", "f1", "f1_weighted", "specificity", "roc_auc"]


def _specificity(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]) -> np.ndarray:
    mcm = metrics.multilabel_confusion_matrix(y_true, y_pred, labels=labels)
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tn + fp > 0, tn / (tn + fp), np.nan)


def _roc_auc(y_true: np.ndarray, proba: np.ndarray, labels: list[int]) -> tuple[float, np.ndarray]:
    """Macro ROC AUC (one-vs-rest for multiclass, plain for binary) and per-class one-vs-rest AUC."""
    per_class = np.full(len(labels), np.nan)
    for i, label in enumerate(labels):
        positives = y_true == label
        if 0 < positives.sum() < len(y_true):  # AUC needs both classes present
            per_class[i] = metrics.roc_auc_score(positives, proba[:, i])
    try:
        if len(labels) == 2:
            macro = metrics.roc_auc_score(y_true, proba[:, 1])
        else:
            macro = metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
    except ValueError:  # a class missing from the held-out split: AUC is undefined, say so with NaN
        macro = float("nan")
    return float(macro), per_class


def quality_metrics(y_true: np.ndarray, proba: np.ndarray) -> tuple[dict[str, float], pd.DataFrame]:
    """Run-level metrics and a per-class table (with the confusion-matrix row of each true class)."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    labels = list(range(proba.shape[1]))
    y_pred = proba.argmax(axis=1)
    with warnings.catch_warnings():
        # Classes never predicted or absent from the split: the values are defined above (0 or NaN).
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        p, r, f, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        run = {
            "accuracy": metrics.accuracy_score(y_true, y_pred),
            "precision": metrics.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "recall": metrics.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "f1": metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "precision_weighted": metrics.precision_score(
                y_true, y_pred, labels=labels, average="weighted", zero_division=0
            ),
            "recall_weighted": metrics.recall_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
            "f1_weighted": metrics.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
            "balanced_accuracy": metrics.balanced_accuracy_score(y_true, y_pred),
        }
        specificity = _specificity(y_true, y_pred, labels)
        run["specificity"] = float(np.nanmean(specificity))
        run["roc_auc"], auc_per_class = _roc_auc(y_true, proba, labels)
    confusion = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    per_class = pd.DataFrame(
        {
            "class": labels,
            "support": support,
            "precision": p,
            "recall": r,
            "f1": f,
            "specificity": specificity,
            "roc_auc": auc_per_class,
            "confusion_row": list(confusion),
        }
    )
    return {k: float(v) for k, v in run.items()}, per_class


def quality_tables(predictions: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run of run-level metrics, one row per run x class) from each run's predictions."""
    rows, details = [], []
    for run_id, frame in predictions.items():
        run, per_class = quality_metrics(frame["y_true"].to_numpy(), np.stack(frame["proba"].to_numpy()))
        rows.append({"run_id": run_id, "eval_split": frame["split"].iloc[0], "eval_samples": len(frame), **run})
        details.append(per_class.assign(run_id=run_id))
    runs = pd.DataFrame(rows)
    per_class = pd.concat(details, ignore_index=True) if details else pd.DataFrame()
    if not per_class.empty:
        per_class = per_class[["run_id"] + [c for c in per_class.columns if c != "run_id"]]
    return runs, per_class
