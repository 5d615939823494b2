"""Train/validation splits.

`image` is the notebook's split: `train_test_split(stratify=y, random_state=seed)` over images.
`subject` (the default) keeps every frame of a person on one side: frames of one subject are nearly
identical, so with an image split validation F1 (and the tuned threshold) is measured on people the
model has already seen. Whole subjects go to validation, chosen so that the validation share and
its fall rate come as close as the subjects allow to `val_fraction` and the overall fall rate.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from mlcore.data import DataError, Dataset

SUBJECT_SPLIT_TRIALS = 2000


def split_by_image(labels: list[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's stratified random split over images; returns (train, val) indices."""
    idx = np.arange(len(labels))
    train, val = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    return np.asarray(train), np.asarray(val)


def split_by_subject(
    labels: list[int], subjects: list[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Send whole subjects to validation, matching size and class balance as well as possible."""
    names = sorted(set(subjects))
    if len(names) < 2:
        raise ValueError(f"split 'subject' needs at least 2 subjects, found {len(names)}")
    labels_a = np.asarray(labels)
    subj_idx = np.searchsorted(names, subjects)
    totals = np.bincount(subj_idx, minlength=len(names))
    falls = np.bincount(subj_idx, weights=labels_a, minlength=len(names))
    n, n_fall = len(labels_a), labels_a.sum()
    target, rate = val_fraction * n, n_fall / n
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(SUBJECT_SPLIT_TRIALS):
        order = rng.permutation(len(names))
        cum = np.cumsum(totals[order])
        # Take subjects in this order until the validation share reaches its target.
        k = int(np.searchsorted(cum, target)) + 1
        k = min(max(k, 1), len(names) - 1)
        for kk in {k - 1, k} - {0}:
            chosen = order[:kk]
            v, vf = totals[chosen].sum(), falls[chosen].sum()
            both_sides = 0 < vf < v and 0 < n_fall - vf < n - v
            score = abs(v - target) / n + abs(vf / v - rate) + (0 if both_sides else 10)
            if score < best_score:
                best, best_score = np.sort(chosen), score
    val_mask = np.isin(subj_idx, best)
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def split_dataset(dataset: Dataset, strategy: str, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a dataset by `strategy` ('subject' or 'image'); returns (train, val) indices."""
    labels = dataset.labels
    if strategy == "image":
        return split_by_image(labels, val_fraction, seed)
    if strategy == "subject":
        found = sorted(set(dataset.subjects))
        if len(found) < 2:
            raise DataError(
                f"split 'subject' needs at least 2 subject folders in {dataset.root}, found {len(found)} "
                f"({', '.join(found)}); add subjects or use split 'image'"
            )
        return split_by_subject(labels, dataset.subjects, val_fraction, seed)
    raise ValueError(f"unknown split {strategy!r}; choose 'subject' or 'image'")
