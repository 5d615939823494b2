"""Tests for mlcore.split: the notebook's image split and the leakage-free subject split."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from mlcore.data import DataError, Dataset, Sample, discover_dataset
from mlcore.split import split_by_image, split_by_subject, split_dataset


def _layout(seed: int) -> tuple[list[int], list[str]]:
    """A synthetic dataset: 5-12 subjects of uneven size and fall rate, samples interleaved."""
    rng = np.random.default_rng(seed)
    labels, subjects = [], []
    for s in range(int(rng.integers(5, 13))):
        size = int(rng.integers(4, 31))
        falls = int(np.clip(round(size * rng.uniform(0.1, 0.9)), 1, size - 1))
        labels += [1] * falls + [0] * (size - falls)
        subjects += [f"subject-{s:02d}"] * size
    order = rng.permutation(len(labels))
    return [labels[i] for i in order], [subjects[i] for i in order]


def _dataset(labels: list[int], subjects: list[str], root: str = "/data/set/train") -> Dataset:
    samples = [
        Sample(f"{s}/{'fall' if l else 'non_fall'}/{i}.jpg", l, s) for i, (l, s) in enumerate(zip(labels, subjects))
    ]
    return Dataset(Path(root), samples, [1] * len(samples))


def test_image_split_equals_notebook_train_test_split(demo_root):
    ds = discover_dataset(demo_root / "train")
    X, y = [str(p) for p in ds.paths], ds.labels
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, stratify=y, random_state=42)
    train, val = split_by_image(y, 0.2, 42)
    assert {X[i] for i in train} == set(X_train)
    assert {X[i] for i in val} == set(X_val)
    assert sorted(y[i] for i in val) == sorted(y_val)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_split_equals_sklearn_on_synthetic_labels(seed):
    labels, _ = _layout(seed)
    X = [f"img{i}.jpg" for i in range(len(labels))]
    _, X_val, _, _ = train_test_split(X, labels, test_size=0.2, stratify=labels, random_state=seed)
    train, val = split_by_image(labels, 0.2, seed)
    assert {X[i] for i in val} == set(X_val)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))


def _best_share_deviation(labels, subjects, frac) -> float:
    """Brute force: the smallest |val share - frac| any subject subset with both classes on both sides reaches."""
    labels, subjects = np.asarray(labels), np.asarray(subjects)
    names = sorted(set(subjects))
    best = np.inf
    for k in range(1, len(names)):
        for chosen in itertools.combinations(names, k):
            m = np.isin(subjects, chosen)
            if 0 < labels[m].sum() < m.sum() and 0 < labels[~m].sum() < (~m).sum():
                best = min(best, abs(m.mean() - frac))
    return best


@pytest.mark.parametrize("layout_seed", range(6))
@pytest.mark.parametrize("frac", [0.2, 0.3])
def test_subject_split_keeps_subjects_on_one_side(layout_seed, frac):
    labels, subjects = _layout(layout_seed)
    for seed in (0, 42):
        train, val = split_by_subject(labels, subjects, frac, seed)
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
        train_subj, val_subj = {subjects[i] for i in train}, {subjects[i] for i in val}
        assert train_subj and val_subj and not (train_subj & val_subj)
        for side in (train, val):
            assert {labels[i] for i in side} == {0, 1}, "both classes on both sides"
        share = len(val) / len(labels)
        assert abs(share - frac) <= _best_share_deviation(labels, subjects, frac) + 0.1


def test_subject_split_is_deterministic_for_a_seed_and_varies_across_seeds():
    labels, subjects = _layout(3)
    a = split_by_subject(labels, subjects, 0.2, 7)
    b = split_by_subject(labels, subjects, 0.2, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # Ten interchangeable subjects: every pair is an equally good validation set, so the seed decides.
    twins = [f"s{k}" for k in range(10) for _ in range(10)]
    twin_labels = [i % 2 for i in range(100)]
    vals = {tuple(sorted({twins[i] for i in split_by_subject(twin_labels, twins, 0.2, s)[1]})) for s in range(6)}
    assert len(vals) > 1 and all(len(v) == 2 for v in vals)


def test_subject_split_does_not_depend_on_sample_order():
    """Shuffling the samples moves the indices but not which subjects go to validation."""
    labels, subjects = _layout(5)
    perm = np.random.default_rng(0).permutation(len(labels))
    _, val = split_by_subject(labels, subjects, 0.2, 1)
    _, val_p = split_by_subject([labels[i] for i in perm], [subjects[i] for i in perm], 0.2, 1)
    assert {subjects[i] for i in val} == {subjects[perm[i]] for i in val_p}


def test_subject_split_with_two_subjects_sends_one_to_validation():
    labels = [0, 1, 0, 1, 1, 0, 0, 1]
    subjects = ["a"] * 4 + ["b"] * 4
    train, val = split_by_subject(labels, subjects, 0.2, 0)
    assert len({subjects[i] for i in val}) == 1 and len({subjects[i] for i in train}) == 1


def test_split_dataset_dispatches(demo_root):
    ds = discover_dataset(demo_root / "train")
    t_img, v_img = split_dataset(ds, "image", 0.2, 42)
    assert np.array_equal(v_img, split_by_image(ds.labels, 0.2, 42)[1])
    t_sub, v_sub = split_dataset(ds, "subject", 0.3, 42)
    assert not ({ds.subjects[i] for i in t_sub} & {ds.subjects[i] for i in v_sub})


def test_subject_split_of_one_subject_names_the_dataset():
    ds = _dataset([0, 1, 0, 1], ["only"] * 4, root="/data/lonely/train")
    with pytest.raises(DataError) as info:
        split_dataset(ds, "subject", 0.2, 42)
    assert "/data/lonely/train" in str(info.value) and "image" in str(info.value)


def test_unknown_strategy_raises():
    labels, subjects = _layout(0)
    with pytest.raises(ValueError, match="random"):
        split_dataset(_dataset(labels, subjects), "random", 0.2, 42)
