"""Train/validation splits.

`image` is the notebook's split: `train_test_split(stratify=y, random_state=seed)` over images.
`subject` (the default) keeps every frame of a person on one side: frames of one subject are nearly
identical, so with an image split validation F1 (and the tuned threshold) is measured on people the
model has already seen. Whole subjects go to validation, chosen so that the validation share and
its fall rate come as close as the subjects allow to `val_fraction` and the overall fall rate.
`subject_folds` cuts the subjects into K such groups for cross-validation (K = number of subjects
is leave-one-subject-out), each fold as close as the subjects allow to 1/K of the images and the
overall fall rate.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from mlcore.data import DataError, Dataset, discover_dataset
from mlcore.errors import ParamsError

SUBJECT_SPLIT_TRIALS = 2000


def split_by_image(labels: list[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's stratified random split over images; returns (train, val) indices."""
    idx = np.arange(len(labels))
    train, val = train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    return np.asarray(train), np.asarray(val)


def _subject_tallies(labels, subjects) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(sorted subject names, subject index per sample, images per subject, falls per subject)."""
    names = sorted(set(subjects))
    subj_idx = np.searchsorted(names, subjects)
    totals = np.bincount(subj_idx, minlength=len(names))
    falls = np.bincount(subj_idx, weights=np.asarray(labels, dtype=float), minlength=len(names))
    return names, subj_idx, totals, falls


def _held_out_score(v: float, vf: float, n: float, n_fall: float, target: float) -> float:
    """How far a held-out group of v images (vf falls) is from `target` images at the overall fall rate.

    10 is added when the group or the rest lacks one class (no F1 can be measured, no model trained).
    """
    both_sides = 0 < vf < v and 0 < n_fall - vf < n - v
    return abs(v - target) / n + abs(vf / v - n_fall / n) + (0 if both_sides else 10)


def split_by_subject(
    labels: list[int], subjects: list[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Send whole subjects to validation, matching size and class balance as well as possible."""
    names, subj_idx, totals, falls = _subject_tallies(labels, subjects)
    if len(names) < 2:
        raise ValueError(f"split 'subject' needs at least 2 subjects, found {len(names)}")
    n, n_fall = len(subj_idx), falls.sum()
    target = val_fraction * n
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
            score = _held_out_score(totals[chosen].sum(), falls[chosen].sum(), n, n_fall, target)
            if score < best_score:
                best, best_score = np.sort(chosen), score
    val_mask = np.isin(subj_idx, best)
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def subject_folds(labels: list[int], subjects: list[str], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every sample: whole subjects per fold, folds balanced by size and fall rate.

    The subject split's search with k groups: subjects in a random order are cut where the running
    image count is nearest each multiple of n/k (every fold keeps at least one subject), and the
    order whose folds are, on average, nearest 1/k of the images and the overall fall rate wins
    (each fold scored as the subject split scores its validation side). k = number of subjects is
    leave-one-subject-out. The same seed gives the same folds. A k below 2 or above the number of
    subjects is refused naming `cv_folds`.
    """
    names, subj_idx, totals, falls = _subject_tallies(labels, subjects)
    if k < 2 or k > len(names):
        raise ParamsError(
            "cv_folds",
            f"{k} folds need between 2 and the number of subjects ({len(names)}: {', '.join(names)[:200]})",
        )
    n, n_fall = len(subj_idx), falls.sum()
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(SUBJECT_SPLIT_TRIALS if k < len(names) else 1):
        order = rng.permutation(len(names))
        cum = np.cumsum(totals[order])
        cuts = [0]
        for j in range(1, k):
            # The cut nearest j*n/k that leaves a subject for this fold and for each fold after it.
            lo, hi = cuts[-1] + 1, len(names) - (k - j)
            c = int(np.clip(np.argmin(np.abs(cum - j * n / k)) + 1, lo, hi))
            cuts.append(c)
        cuts.append(len(names))
        fold_of = np.empty(len(names), dtype=np.int64)
        score = 0.0
        for f in range(k):
            members = order[cuts[f] : cuts[f + 1]]
            fold_of[members] = f
            score += _held_out_score(totals[members].sum(), falls[members].sum(), n, n_fall, n / k) / k
        if score < best_score:
            best, best_score = fold_of, score
    # Folds numbered by their first subject's name, so the numbering does not depend on the search order.
    renumber = {old: new for new, old in enumerate(dict.fromkeys(best.tolist()))}
    return np.array([renumber[f] for f in best], dtype=np.int64)[subj_idx]


def fold_split(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of one fold: the fold's samples are validation, the others training."""
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


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


def check_folds(params) -> None:
    """At an entrance, before a run exists: refuse TrainParams whose `cv_folds` the subjects cannot fill, naming it.

    Cheap (the dataset's file list only); the job checks again when it cuts the folds.
    """
    if params.cv_folds is None:
        return
    found = sorted(set(discover_dataset(params.data_dir).subjects))
    if params.cv_folds > len(found):
        raise ParamsError(
            "cv_folds",
            f"{params.cv_folds} folds need between 2 and the number of subjects ({len(found)}: "
            f"{', '.join(found)[:200]}) in {params.data_dir}",
        )
