"""Tests for mlcore.data: discovery in the competition layout, fingerprints and the test folder."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mlcore.data import DataError, discover_dataset, list_test_images


def _img(path: Path, size=(4, 3), color=(10, 20, 30)) -> Path:
    """Write a tiny real image; the format follows the (case-insensitive) extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def _tree(root: Path, files: list[str]) -> Path:
    """Create image files at the given relative paths under root/train and return the train folder."""
    train = root / "train"
    for rel in files:
        _img(train / rel)
    return train


BASIC = ["s1/fall/a.jpg", "s1/non_fall/b.png", "s2/fall/c.jpeg", "s2/non_fall/d.jpg"]


def _notebook_preprocess_dataset(directory):
    """The notebook's STEP 2 loop, verbatim (lower-case extensions, os.listdir order)."""
    images, labels = [], []
    for subject in os.listdir(directory):
        subject_path = os.path.join(directory, subject)
        if not os.path.isdir(subject_path):
            continue
        for category in ["fall", "non_fall"]:
            category_path = os.path.join(subject_path, category)
            label = 1 if category == "fall" else 0
            if os.path.isdir(category_path):
                for root, _, files in os.walk(category_path):
                    for file in files:
                        if file.endswith((".jpg", ".png", ".jpeg")):
                            img_path = os.path.join(root, file)
                            images.append(img_path)
                            labels.append(label)
    return images, labels


def test_same_files_and_labels_as_the_notebook(demo_root):
    train = demo_root / "train"
    ds = discover_dataset(train)
    images, labels = _notebook_preprocess_dataset(str(train))
    ours = {(str(p), l) for p, l in zip(ds.paths, ds.labels)}
    theirs = {(str(Path(p).resolve()), l) for p, l in zip(images, labels)}
    assert len(ds.samples) == len(images) == 48
    assert ours == theirs


def test_extensions_in_any_case_are_found(tmp_path):
    train = _tree(tmp_path, ["s1/fall/a.JPG", "s1/fall/b.Jpeg", "s1/non_fall/c.png", "s1/non_fall/d.PNG"])
    assert sorted(Path(s.rel).name for s in discover_dataset(train).samples) == ["a.JPG", "b.Jpeg", "c.png", "d.PNG"]


def test_nested_clip_folders_are_found(tmp_path):
    train = _tree(tmp_path, ["s1/fall/clip-1/deeper/a.jpg", "s1/fall/clip-2/b.jpg", "s1/non_fall/c.jpg"])
    assert {s.rel for s in discover_dataset(train).samples} == {
        "s1/fall/clip-1/deeper/a.jpg",
        "s1/fall/clip-2/b.jpg",
        "s1/non_fall/c.jpg",
    }


def test_non_images_hidden_files_and_stray_folders_are_ignored(tmp_path):
    train = _tree(tmp_path, BASIC + [".hidden_subject/fall/x.jpg", "s1/other_class/y.jpg"])
    (train / "s1" / "fall" / "notes.txt").write_text("x")
    (train / "s1" / "fall" / "a.jpg.bak").write_text("x")
    _img(train / "s1" / "fall" / "._a.jpg")  # macOS resource fork
    (train / "README.md").write_text("top-level file, not a subject")
    ds = discover_dataset(train)
    assert sorted(s.rel for s in ds.samples) == sorted(BASIC)
    assert set(ds.subjects) == {"s1", "s2"}


def test_labels_fall_is_one_and_non_fall_zero(tmp_path):
    ds = discover_dataset(_tree(tmp_path, BASIC))
    for s in ds.samples:
        assert s.label == (1 if "/fall/" in f"/{s.rel}" else 0)
        assert s.subject == s.rel.split("/")[0]
    assert ds.paths[0] == ds.root / ds.samples[0].rel and ds.paths[0].is_file()


def test_order_is_sorted_and_independent_of_creation_order(tmp_path):
    files = [
        f"s{s}/{c}/clip{k}/f{i}.jpg" for s in (3, 1, 2) for c in ("non_fall", "fall") for k in (1, 0) for i in (2, 0, 1)
    ]
    a = discover_dataset(_tree(tmp_path / "a", files))
    b = discover_dataset(_tree(tmp_path / "b", list(reversed(files))))
    assert [s.rel for s in a.samples] == [s.rel for s in b.samples]
    assert [s.rel for s in a.samples] == [s.rel for s in discover_dataset(a.root).samples]
    subjects = [s.subject for s in a.samples]
    assert subjects == sorted(subjects)  # grouped by subject, in name order
    for folder in {str(Path(s.rel).parent) for s in a.samples}:
        names = [Path(s.rel).name for s in a.samples if str(Path(s.rel).parent) == folder]
        assert names == sorted(names)


def test_counts_per_class_and_subject(tmp_path):
    ds = discover_dataset(_tree(tmp_path, BASIC + ["s1/fall/e.jpg", "s3/non_fall/f.jpg"]))
    counts = ds.counts()
    assert counts["images"] == 6
    assert counts["per_class"] == {"non_fall": 3, "fall": 3}
    assert counts["per_subject"] == {
        "s1": {"non_fall": 1, "fall": 2},
        "s2": {"non_fall": 1, "fall": 1},
        "s3": {"non_fall": 1, "fall": 0},
    }


def test_missing_train_dir_names_the_path(tmp_path):
    missing = tmp_path / "no" / "train"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        discover_dataset(missing)


def test_no_subject_folders_names_the_path(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    (train / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError) as info:
        discover_dataset(train)
    assert str(train.resolve()) in str(info.value)


def test_subjects_without_images_name_the_path(tmp_path):
    train = tmp_path / "train"
    (train / "s1" / "fall").mkdir(parents=True)
    (train / "s2" / "non_fall").mkdir(parents=True)
    (train / "s2" / "non_fall" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as info:
        discover_dataset(train)
    assert str(train.resolve()) in str(info.value)


@pytest.mark.parametrize("missing_class", ["fall", "non_fall"])
def test_empty_class_names_the_class_and_path(tmp_path, missing_class):
    kept = "non_fall" if missing_class == "fall" else "fall"
    train = _tree(tmp_path, [f"s1/{kept}/a.jpg", f"s2/{kept}/b.jpg"])
    (train / "s1" / missing_class).mkdir()
    with pytest.raises(DataError) as info:
        discover_dataset(train)
    assert missing_class in str(info.value) and str(train.resolve()) in str(info.value)


def _fp(train: Path) -> str:
    return discover_dataset(train).fingerprint


def test_fingerprint_is_stable(tmp_path):
    train = _tree(tmp_path, BASIC)
    assert _fp(train) == _fp(train)
    copy = tmp_path / "copy"
    shutil.copytree(train, copy)
    assert _fp(copy) == _fp(train)  # depends on relative paths, not where the dataset lives


@pytest.mark.parametrize("change", ["add", "rename", "resize", "relabel"])
def test_fingerprint_changes_with_the_file_list(tmp_path, change):
    train = _tree(tmp_path, BASIC)
    before = _fp(train)
    a = train / "s1" / "fall" / "a.jpg"
    if change == "add":
        _img(train / "s1" / "fall" / "z.jpg")
    elif change == "rename":
        a.rename(a.with_name("a2.jpg"))
    elif change == "resize":
        with open(a, "ab") as f:
            f.write(b"\0")
    elif change == "relabel":
        a.rename(train / "s1" / "non_fall" / "a.jpg")
    assert _fp(train) != before


def test_list_test_images_flat_sorted_filtered(tmp_path):
    test = tmp_path / "test"
    for name in ["b.jpg", "A.PNG", "c.jpeg", "sub/d.jpg", ".hidden.jpg"]:
        _img(test / name)
    (test / "notes.txt").write_text("x")
    (test / "folder.jpg").mkdir()  # a directory with an image-like name
    assert [p.name for p in list_test_images(test)] == ["A.PNG", "b.jpg", "c.jpeg"]
    assert all(p.parent == test for p in list_test_images(test))


def test_list_test_images_empty_or_missing_names_the_path(tmp_path):
    empty = tmp_path / "test"
    (empty / "sub").mkdir(parents=True)
    _img(empty / "sub" / "x.jpg")
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=re.escape(str(empty))):
        list_test_images(empty)
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        list_test_images(missing)
