"""Figures logged with every training run (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on workers; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from mlcore.data import CLASSES  # noqa: E402


def learning_curve(history: list[dict[str, float]]):
    """Training and validation loss per epoch, with validation F1 on a second axis (the notebook's Step 6)."""
    epochs = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(10, 6))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="Training Loss")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="Validation Loss")
    ax.set(title="Learning Curve", xlabel="Epochs", ylabel="Loss")
    ax2 = ax.twinx()
    ax2.plot(
        epochs, [h["val_f1_weighted"] for h in history], color="tab:green", linestyle="--", label="Val F1 (weighted)"
    )
    ax2.set(ylabel="F1", ylim=(0, 1.02))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")
    fig.tight_layout()
    return fig


def confusion_matrix_figure(matrix: list[list[int]], title: str = "Confusion Matrix"):
    """The notebook's seaborn heatmap with labels non_fall/fall."""
    fig, ax = plt.subplots(figsize=(10, 8))
    sns.heatmap(np.asarray(matrix), annot=True, fmt="d", cmap="Blues", xticklabels=CLASSES, yticklabels=CLASSES, ax=ax)
    ax.set(title=title, xlabel="Predicted", ylabel="True")
    fig.tight_layout()
    return fig


def f1_threshold_figure(thresholds: list[float], f1s: list[float], best: float):
    """Binary F1 on validation against the decision threshold, with the chosen one marked."""
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(thresholds, f1s, marker=".")
    ax.axvline(best, color="tab:red", linestyle="--", label=f"chosen threshold {best:.2f}")
    ax.set(title="F1 vs threshold (validation)", xlabel="threshold", ylabel="F1 (fall)", ylim=(0, 1.02))
    ax.legend()
    fig.tight_layout()
    return fig


def close(fig) -> None:
    """Free a figure's memory."""
    plt.close(fig)
