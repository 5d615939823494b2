"""Tests for mlcore.metrics against the notebook's own computations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from mlcore.metrics import THRESHOLDS, at_threshold, epoch_metrics, report, tune_threshold

KINDS = ["uniform", "ties", "on_grid", "all_negative", "below_grid", "all_positive", "separable"]


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and fall probabilities of one of several shapes, chosen by the seed."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    probs = rng.random(n)
    kind = KINDS[seed % len(KINDS)]
    if kind == "ties":
        probs = np.round(probs, 1)
    elif kind == "on_grid":  # probabilities exactly on thresholds: strict `>` matters
        probs = rng.choice(np.linspace(0.1, 0.9, 50), n)
    elif kind == "all_negative":
        labels[:] = 0
    elif kind == "below_grid":
        probs = probs * 0.1
    elif kind == "all_positive":
        labels[:] = 1
    elif kind == "separable":
        probs = np.clip(labels * 0.5 + rng.random(n) * 0.5, 0, 1)
    return labels, probs


def _notebook_threshold(val_labels, val_probs):
    """STEP 8 of the notebook, verbatim."""
    best_threshold, best_f1 = 0, 0
    thresholds = np.linspace(0.1, 0.9, 50)
    for threshold in thresholds:
        val_preds_threshold = (np.array(val_probs) > threshold).astype(int)
        f1 = f1_score(val_labels, val_preds_threshold)
        if f1 > best_f1:
            best_f1, best_threshold = f1, threshold
    return best_threshold, best_f1


@pytest.mark.parametrize("seed", range(50))
def test_tune_threshold_equals_the_notebook_loop(seed):
    labels, probs = _case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when F1 is undefined (no positives)
        expected = _notebook_threshold(list(labels), list(probs))
    got = tune_threshold(labels, probs)
    assert isinstance(got[0], float) and isinstance(got[1], float)
    assert got == (float(expected[0]), float(expected[1]))


def test_tune_threshold_without_any_positive_prediction_gives_zero():
    assert tune_threshold(np.array([0, 1, 1]), np.array([0.01, 0.05, 0.09])) == (0.0, 0.0)
    assert tune_threshold(np.zeros(5, int), np.linspace(0, 1, 5)) == (0.0, 0.0)


def _notebook_argmax(probs: np.ndarray) -> np.ndarray:
    """The notebook's predictions: torch.argmax over the two class outputs."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    return torch.argmax(torch.stack([1 - p, p], dim=1), dim=1).numpy()


@pytest.mark.parametrize("seed", range(12))
def test_epoch_metrics_match_the_notebook(seed):
    labels, probs = _case(seed)
    probs = probs.copy()
    probs[: len(probs) // 4] = 0.5  # exact ties between the two outputs: argmax picks non_fall
    preds = _notebook_argmax(probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = f1_score(list(labels), list(preds), average="weighted")
        binary = f1_score(labels, preds)
    m = epoch_metrics(labels, probs)
    assert m["val_f1_weighted"] == pytest.approx(weighted, abs=1e-12)
    assert m["val_f1"] == pytest.approx(binary, abs=1e-12)
    assert m["val_accuracy"] == pytest.approx(np.mean(preds == labels), abs=1e-12)
    assert all(isinstance(v, float) for v in m.values())
    if len(set(labels)) == 2:
        assert m["val_roc_auc"] == pytest.approx(roc_auc_score(labels, probs))
    else:
        assert "val_roc_auc" not in m


def test_epoch_metrics_precision_and_recall_are_for_the_fall_class():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1])  # TP=3, FN=1, FP=1, TN=3
    m = epoch_metrics(labels, probs)
    assert m["val_precision"] == pytest.approx(3 / 4) and m["val_recall"] == pytest.approx(3 / 4)
    assert m["val_f1"] == pytest.approx(3 / 4) and m["val_accuracy"] == pytest.approx(6 / 8)


LABELS = np.array([0, 0, 0, 0, 1, 1, 1])
PROBS = np.array([0.1, 0.3, 0.45, 0.7, 0.4, 0.6, 0.95])


def test_report_at_argmax_rows_are_true_labels():
    r = report(LABELS, PROBS)
    # true non_fall: 0.1, 0.3, 0.45 -> non_fall, 0.7 -> fall; true fall: 0.4 -> non_fall, 0.6 and 0.95 -> fall
    assert r["confusion_matrix"] == [[3, 1], [1, 2]]
    assert r["labels"] == ["non_fall", "fall"] and r["threshold"] is None
    assert r["report"]["fall"]["support"] == 3 and r["report"]["non_fall"]["support"] == 4
    assert "non_fall" in r["text"] and "fall" in r["text"]


def test_report_at_a_threshold():
    r = report(LABELS, PROBS, threshold=0.35)
    # > 0.35: 0.45 and 0.7 become fall among true non_fall; 0.4, 0.6, 0.95 among true fall
    assert r["confusion_matrix"] == [[2, 2], [0, 3]]
    assert r["threshold"] == 0.35
    assert r["report"]["fall"]["recall"] == pytest.approx(1.0)
    strict = report(LABELS, PROBS, threshold=0.45)  # strict `>`: 0.45 itself stays non_fall
    assert strict["confusion_matrix"] == [[3, 1], [1, 2]]


def test_report_keeps_both_rows_when_one_class_is_missing():
    r = report(np.zeros(4, int), np.array([0.2, 0.7, 0.1, 0.9]))
    assert r["confusion_matrix"] == [[2, 2], [0, 0]]


def test_the_threshold_is_tuned_for_the_chosen_metric() -> None:
    # 3 falls among 20: F1 wants all caught with 3 false alarms (a low threshold, F1 0.67, accuracy
    # 0.85), accuracy one fall caught and none raised (a threshold above 0.3, F1 0.5, accuracy 0.9).
    labels = np.array([1, 1, 1] + [0] * 17)
    probs = np.array([0.2, 0.2, 0.95] + [0.3] * 3 + [0.1] * 14)
    t_f1, f1 = tune_threshold(labels, probs, "f1")
    t_acc, acc = tune_threshold(labels, probs, "accuracy")
    assert t_f1 < 0.2 and t_acc >= 0.3 and f1 == pytest.approx(at_threshold(labels, probs, t_f1)["f1"])
    assert acc == at_threshold(labels, probs, t_acc)["accuracy"] == 0.9
    assert acc > at_threshold(labels, probs, t_f1)["accuracy"] and f1 > at_threshold(labels, probs, t_acc)["f1"]
    brute = max(float(((probs > t) == labels).mean()) for t in THRESHOLDS)
    assert acc == brute
