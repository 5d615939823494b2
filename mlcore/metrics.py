"""Validation metrics and the notebook's decision-threshold search."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mlcore.data import CLASSES

# The notebook's grid: np.linspace(0.1, 0.9, 50), strict `>`, binary F1, first best wins.
THRESHOLDS = np.linspace(0.1, 0.9, 50)


def argmax_predictions(probs: np.ndarray) -> np.ndarray:
    """What `torch.argmax(outputs, dim=1)` gives for two classes: fall when p(fall) > 0.5."""
    return (np.asarray(probs) > 0.5).astype(int)


def epoch_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Per-epoch validation metrics from fall probabilities (argmax predictions, as the notebook)."""
    labels = np.asarray(labels)
    preds = argmax_predictions(probs)
    out = {
        "val_f1_weighted": f1_score(labels, preds, average="weighted", zero_division=0),
        "val_f1": f1_score(labels, preds, zero_division=0),
        "val_accuracy": accuracy_score(labels, preds),
        "val_precision": precision_score(labels, preds, zero_division=0),
        "val_recall": recall_score(labels, preds, zero_division=0),
    }
    if len(np.unique(labels)) == 2:
        out["val_roc_auc"] = roc_auc_score(labels, probs)
    return {k: float(v) for k, v in out.items()}


def f1_curve(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Binary F1 at each threshold with a strict `>`."""
    probs = np.asarray(probs)
    return np.array([f1_score(labels, (probs > t).astype(int), zero_division=0) for t in thresholds])


def accuracy_curve(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Accuracy of `probs > t` for each threshold t."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    return np.array([float(((probs > t).astype(int) == labels).mean()) if len(labels) else 0.0 for t in thresholds])


def at_threshold(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Binary F1 (fall) and accuracy of `probs > threshold`."""
    f1 = float(f1_curve(labels, probs, np.array([threshold]))[0])
    return {"f1": f1, "accuracy": float(accuracy_curve(labels, probs, np.array([threshold]))[0])}


def tune_threshold(labels: np.ndarray, probs: np.ndarray, metric: str = "f1") -> tuple[float, float]:
    """The notebook's search: the first threshold on its grid with the highest `metric` (f1, the notebook's,
    or accuracy); (0, 0) when none > 0. Returns the threshold and that metric's value there."""
    best_threshold, best_f1 = 0.0, 0.0
    curve = {"f1": f1_curve, "accuracy": accuracy_curve}[metric](labels, probs)
    for threshold, f1 in zip(THRESHOLDS, curve):
        if f1 > best_f1:
            best_f1, best_threshold = float(f1), float(threshold)
    return best_threshold, best_f1


def report(labels: np.ndarray, probs: np.ndarray, threshold: float | None = None) -> dict:
    """Confusion matrix and classification report at argmax, or at `threshold` when given."""
    probs = np.asarray(probs)
    preds = argmax_predictions(probs) if threshold is None else (probs > threshold).astype(int)
    return {
        "threshold": threshold,
        "confusion_matrix": confusion_matrix(labels, preds, labels=[0, 1]).tolist(),
        "labels": list(CLASSES),
        "report": classification_report(
            labels, preds, labels=[0, 1], target_names=list(CLASSES), output_dict=True, zero_division=0
        ),
        "text": classification_report(labels, preds, labels=[0, 1], target_names=list(CLASSES), zero_division=0),
    }
