"""Datasets under the data root: found by the server, chosen by name, never typed as a path.

A dataset is a folder directly under DATASLAYER_DATA_ROOT holding `train/` (for training) and/or
`test/` (for submissions). A name from a request is checked before anything is read: no
separators, no `..`, no NUL; then resolved with `resolve(strict=True)` and required to stay
inside the root, so a symlink pointing out of it is refused like `../`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import abort, current_app

from mlcore.data import discover_dataset, list_test_images
from mlcore.errors import DataError

KINDS = ("train", "test")
CACHE_S = 30.0  # counting walks every image file: reuse the counts for a while
_cache: dict[tuple[str, str], tuple[float, DatasetInfo]] = {}
_lock = threading.Lock()


class UnknownDataset(LookupError):
    """The name is well-formed but no such dataset exists under the data root."""


@dataclass
class DatasetInfo:
    """One dataset found under the data root, with its image counts."""

    name: str
    path: Path
    has_train: bool = False
    has_test: bool = False
    counts: dict = field(default_factory=dict)  # images, per_class, per_subject (training images)
    test_images: int = 0
    problems: list[str] = field(default_factory=list)

    def summary_for(self, kind: str | None) -> str:
        """The select box line when choosing data for `kind` (train, test or either)."""
        parts = []
        if self.counts and kind != "test":
            per = self.counts["per_class"]
            parts.append(
                f"{self.counts['images']} training images ({per.get('fall', 0)} fall, "
                f"{per.get('non_fall', 0)} non_fall, "
                f"{len(self.counts['per_subject'])} subjects)"
            )
        if self.has_test and kind != "train":
            parts.append(f"{self.test_images} test images")
        return f"{self.name}: " + ("; ".join(parts) or "unusable: " + "; ".join(self.problems))


def data_root() -> Path:
    """The configured data root, resolved (it may not exist yet)."""
    return Path(current_app.config["DATA_ROOT"]).resolve()


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _describe(path: Path, root: Path) -> DatasetInfo | None:
    info = DatasetInfo(path.name, path)
    for kind in KINDS:
        sub = path / kind
        if not sub.is_dir():
            continue
        if not _inside(sub.resolve(), root):
            return None  # a train/ or test/ symlinked out of the root is not offered
        try:
            if kind == "train":
                info.counts = discover_dataset(sub).counts()
                info.has_train = True
            else:
                info.test_images = len(list_test_images(sub))
                info.has_test = True
        except (DataError, OSError) as exc:
            info.problems.append(str(exc))
    return info if (info.has_train or info.has_test or info.problems) else None


def find_datasets(kind: str | None = None) -> list[DatasetInfo]:
    """Datasets under the data root (those with `kind`/ when given), sorted by name."""
    root = data_root()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.name.startswith(".") or not child.is_dir():
            continue
        resolved = child.resolve()
        if not _inside(resolved, root):
            continue  # a symlink out of the root
        info = _cached(str(resolved), lambda r=resolved: _describe(r, root))
        if info is not None and (kind is None or getattr(info, f"has_{kind}")):
            found.append(info)
    return found


def _cached(key: str, make):
    now = time.monotonic()
    with _lock:
        hit = _cache.get((str(current_app.config["DATA_ROOT"]), key))
        if hit and now - hit[0] < CACHE_S:
            return hit[1]
    value = make()
    with _lock:
        _cache[(str(current_app.config["DATA_ROOT"]), key)] = (now, value)
    return value


def check_name(name: object) -> str:
    """A dataset name as typed: 400 for anything path-like (nothing is read)."""
    if not isinstance(name, str) or not name or len(name) > 200:
        abort(400, "Choose a dataset from the list.")
    if "\x00" in name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("~") or ":" in name:
        abort(400, "A dataset is chosen by its name from the list, not given as a path.")
    return name


def resolve_dataset(name: object, kind: str) -> Path:
    """The folder of dataset `name` holding `kind`/; 400 if path-like or outside the root, UnknownDataset if absent."""
    name = check_name(name)
    root = data_root()
    try:
        path = (root / name).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise UnknownDataset(f"no dataset named {name!r} under the data root") from None
    except OSError:
        abort(400, "That dataset cannot be used.")
    if not _inside(path, root) or path == root:
        abort(400, "That dataset lies outside the data root.")
    try:
        sub = (path / kind).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise UnknownDataset(f"dataset {name!r} has no {kind}/ folder") from None
    if not _inside(sub, root) or not sub.is_dir():
        abort(400, "That dataset lies outside the data root.")
    return path


def name_of(path: str | None) -> str | None:
    """The dataset name of a logged data_dir, when it lies under the data root."""
    if not path:
        return None
    root = data_root()
    p = Path(path)
    if p.name in KINDS:
        p = p.parent
    try:
        return p.relative_to(root).parts[0] if p != root else None
    except (ValueError, IndexError):
        return None
