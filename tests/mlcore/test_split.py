"""Tests for mlcore.split: the notebook's image split and the leakage-free subject split."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from mlcore.data import DataError, Dataset, Sample, discover_dataset
from mlcore.errors import ParamsError
from mlcore.split import fold_split, split_by_image, split_by_subject, split_dataset, subject_folds


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


# -- cross-validation folds by subject ------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_every_subject_lies_in_exactly_one_fold_and_every_fold_is_used(seed, k):
    labels, subjects = _layout(seed)
    folds = subject_folds(labels, subjects, k, seed)
    assert folds.shape == (len(labels),) and set(folds.tolist()) == set(range(k))
    fold_of_subject: dict[str, set[int]] = {}
    for s, f in zip(subjects, folds.tolist()):
        fold_of_subject.setdefault(s, set()).add(f)
    assert all(len(fs) == 1 for fs in fold_of_subject.values())
    for f in range(k):
        train, val = fold_split(folds, f)
        assert not {subjects[i] for i in train} & {subjects[i] for i in val}
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))


def _fold_imbalance(labels, subjects, fold_of_subject: dict[str, int], k: int) -> tuple[float, float]:
    """(largest |fold size - n/k|, mean |fold fall rate - overall rate|) of an assignment of subjects to folds."""
    labels = np.asarray(labels)
    folds = np.array([fold_of_subject[s] for s in subjects])
    sizes = np.array([(folds == f).sum() for f in range(k)])
    rates = np.array([labels[folds == f].mean() for f in range(k)])
    return float(np.abs(sizes - len(labels) / k).max()), float(np.abs(rates - labels.mean()).mean())


@pytest.mark.parametrize("seed", range(6))
def test_folds_are_balanced_by_size_and_fall_rate(seed):
    k = 3
    labels, subjects = _layout(seed)
    folds = subject_folds(labels, subjects, k, seed)
    ours = dict(zip(subjects, folds.tolist()))
    size_dev, rate_dev = _fold_imbalance(labels, subjects, ours, k)
    biggest = max(subjects.count(s) for s in set(subjects))
    assert size_dev <= biggest  # no fold is off 1/k by more than one subject's images
    # Better balanced than assigning the subjects to folds in random order, on average.
    rng = np.random.default_rng(100 + seed)
    names = sorted(set(subjects))
    random_scores = []
    for _ in range(200):
        order = rng.permutation(len(names))
        assignment = {names[j]: int(f) for f, part in enumerate(np.array_split(order, k)) for j in part}
        random_scores.append(
            sum(_fold_imbalance(labels, subjects, assignment, k)[i] / d for i, d in ((0, len(labels)), (1, 1)))
        )
    assert size_dev / len(labels) + rate_dev < np.median(random_scores)


def test_folds_are_the_same_for_the_same_seed_and_change_with_it():
    labels, subjects = _layout(3)
    a, b = subject_folds(labels, subjects, 3, 7), subject_folds(labels, subjects, 3, 7)
    assert np.array_equal(a, b)
    others = [subject_folds(labels, subjects, 3, s) for s in range(8, 14)]
    assert any(not np.array_equal(a, o) for o in others)


def test_k_equal_to_the_number_of_subjects_is_leave_one_subject_out():
    labels, subjects = _layout(4)
    names = sorted(set(subjects))
    folds = subject_folds(labels, subjects, len(names), 0)
    for f in range(len(names)):
        _, val = fold_split(folds, f)
        assert len({subjects[i] for i in val}) == 1


@pytest.mark.parametrize("k", [1, 0, 99])
def test_a_fold_count_below_two_or_above_the_subjects_is_refused_naming_cv_folds(k):
    labels, subjects = _layout(0)
    with pytest.raises(ParamsError) as err:
        subject_folds(labels, subjects, k, 0)
    assert err.value.field == "cv_folds" and "subjects" in err.value.message
