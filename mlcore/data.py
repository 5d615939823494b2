"""Dataset discovery in the competition's layout, and the dataset fingerprint.

Training images live in `train/<subject>/{fall,non_fall}/**/*.{jpg,jpeg,png}` (any case), as the
notebook's `preprocess_dataset` walks them; `fall` is label 1. The test folder is flat. Paths are
sorted so the order, and therefore the split, does not depend on the file system.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mlcore.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CLASSES = ("non_fall", "fall")  # index = label


@dataclass(frozen=True)
class Sample:
    """One training image: its path relative to the train folder, label and subject."""

    rel: str
    label: int
    subject: str


@dataclass
class Dataset:
    """The training images found under `root`, in a stable order."""

    root: Path
    samples: list[Sample]
    sizes: list[int] = field(repr=False)

    @property
    def paths(self) -> list[Path]:
        """Absolute paths of all samples."""
        return [self.root / s.rel for s in self.samples]

    @property
    def labels(self) -> list[int]:
        """Labels of all samples (1 = fall)."""
        return [s.label for s in self.samples]

    @property
    def subjects(self) -> list[str]:
        """Subject of every sample."""
        return [s.subject for s in self.samples]

    def counts(self) -> dict:
        """Counts per class and per subject, for reports and the UI."""
        per_class = Counter(CLASSES[s.label] for s in self.samples)
        per_subject: dict[str, dict[str, int]] = {}
        for s in self.samples:
            per_subject.setdefault(s.subject, {c: 0 for c in CLASSES})[CLASSES[s.label]] += 1
        return {
            "images": len(self.samples),
            "per_class": {c: per_class.get(c, 0) for c in CLASSES},
            "per_subject": per_subject,
        }

    @property
    def fingerprint(self) -> str:
        """Digest of relative paths, sizes and labels: changes whenever the file list does."""
        h = hashlib.sha256()
        for s, size in zip(self.samples, self.sizes):
            h.update(f"{s.rel}\t{size}\t{s.label}\n".encode())
        return h.hexdigest()[:16]


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (any case)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def discover_dataset(train_dir: str | os.PathLike) -> Dataset:
    """Find the training images under a train folder, refusing layouts that cannot be trained on."""
    root = Path(train_dir)
    if not root.is_dir():
        raise DataError(f"training folder not found: {root}")
    root = root.resolve()
    samples: list[Sample] = []
    sizes: list[int] = []
    subjects = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for subject in subjects:
        for label, category in enumerate(CLASSES):
            category_dir = root / subject / category
            if not category_dir.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(category_dir):
                dirnames.sort()
                for name in sorted(filenames):
                    if is_image_name(name) and not name.startswith("."):
                        full = Path(dirpath) / name
                        samples.append(Sample(full.relative_to(root).as_posix(), label, subject))
                        sizes.append(full.stat().st_size)
    if not subjects:
        raise DataError(f"no subject folders in {root}: expected {root}/<subject>/{{fall,non_fall}}/...")
    if not samples:
        raise DataError(f"no images in {root}: expected {root}/<subject>/{{fall,non_fall}}/**/*.jpg")
    found = {s.label for s in samples}
    for label, category in enumerate(CLASSES):
        if label not in found:
            raise DataError(f"class {category!r} has no images under {root}/<subject>/{category}")
    return Dataset(root, samples, sizes)


def list_test_images(test_dir: str | os.PathLike) -> list[Path]:
    """The images of a flat test folder, sorted by file name."""
    root = Path(test_dir)
    if not root.is_dir():
        raise DataError(f"test folder not found: {root}")
    images = sorted(p for p in root.iterdir() if p.is_file() and is_image_name(p.name) and not p.name.startswith("."))
    if not images:
        raise DataError(f"no test images (*.jpg, *.jpeg, *.png) in {root}")
    return images
