"""Tests for the synthetic fall / non-fall dataset generator."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlcore.demo_data import CLASSES, _subject_style, generate_demo_dataset, render_scene, write_jpeg_frames

TINY = dict(subjects=2, images_per_class=4, test_images=4, image_size=(96, 72), frames_per_clip=2)


def _tree(root: Path) -> dict[str, bytes]:
    """Map every file under root (relative POSIX path) to its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Generate one tiny dataset shared by the read-only tests."""
    out = tmp_path_factory.mktemp("demo")
    return out, generate_demo_dataset(out, seed=0, **TINY)


def test_layout_matches_the_competition(dataset: tuple[Path, dict]) -> None:
    out, summary = dataset
    assert sorted(p.name for p in out.iterdir()) == ["test", "test_labels.csv", "train"]
    subjects = sorted(p.name for p in (out / "train").iterdir())
    assert subjects == ["subject-01", "subject-02"] == summary["subjects"]
    for subject in subjects:
        assert sorted(p.name for p in (out / "train" / subject).iterdir()) == ["fall", "non_fall"]
        for label in CLASSES:
            clips = sorted((out / "train" / subject / label).iterdir())
            assert [c.name for c in clips] == ["clip-00", "clip-01"]
            for clip in clips:
                assert sorted(f.name for f in clip.iterdir()) == ["frame-000.jpg", "frame-001.jpg"]
    tests = sorted((out / "test").iterdir())
    assert [p.name for p in tests] == [f"img_{i:04d}.jpg" for i in range(1, 5)]
    assert all(p.is_file() for p in tests)  # flat: no sub-folders
    with open(out / "test_labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "label"]
    assert [r[0] for r in rows[1:]] == [p.name for p in tests]  # ids are file names, as predict writes them
    labels = [int(r[1]) for r in rows[1:]]
    assert set(labels) == {0, 1}
    assert summary == {
        "train": 16,
        "test": 4,
        "subjects": subjects,
        "per_class": {"fall": 8, "non_fall": 8},
        "path": str(out),
    }


def test_every_file_is_an_rgb_jpeg_of_the_requested_size(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    files = sorted(out.rglob("*.jpg"))
    assert len(files) == 20
    for path in files:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (96, 72))
            im.load()  # decodes the whole file, so a truncated JPEG fails here


def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = dataset
    generate_demo_dataset(tmp_path / "again", seed=0, **TINY)
    generate_demo_dataset(tmp_path / "other", seed=1, **TINY)
    assert _tree(tmp_path / "again") == _tree(out)
    other = _tree(tmp_path / "other")
    assert other.keys() == _tree(out).keys()
    assert all(other[k] != v for k, v in _tree(out).items() if k.endswith(".jpg"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("subjects", 1),
        ("subjects", "3"),
        ("images_per_class", 0),
        ("test_images", -1),
        ("frames_per_clip", 0),
        ("seed", -1),
        ("seed", 1.5),
        ("image_size", (0, 72)),
        ("image_size", (96,)),
        ("images_per_class", True),
    ],
)
def test_bad_arguments_are_refused_by_name(tmp_path: Path, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        generate_demo_dataset(tmp_path, **{**TINY, name: value})
    assert not (tmp_path / "train").exists()


def test_non_empty_target_is_refused_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "stale.txt").write_text("old")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "train"))):
        generate_demo_dataset(tmp_path, **TINY)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "img_9999.jpg").write_bytes(b"old")
    summary = generate_demo_dataset(tmp_path, overwrite=True, **TINY)
    assert not (tmp_path / "train" / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == [f"img_{i:04d}.jpg" for i in range(1, 5)]
    assert summary["train"] == len(list((tmp_path / "train").rglob("*.jpg")))


def test_progress_counts_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_demo_dataset(tmp_path, progress=lambda done, total: calls.append((done, total)), **TINY)
    assert calls == [(i, 20) for i in range(1, 21)]


def test_fallen_figures_are_wide_and_upright_figures_tall() -> None:
    # The figure alone (background=False) is the only non-black content, so its bounding box
    # shows the class signal a model must find: lying bodies are wider than tall.
    aspects: dict[str, list[float]] = {}
    for label in CLASSES:
        for i in range(30):
            img = render_scene(label, _subject_style(0, i), [0, 9, i], [0, 9, i], i % 8, (96, 72), background=False)
            ys, xs = np.nonzero(np.asarray(img).max(axis=2))
            aspects.setdefault(label, []).append((np.ptp(xs) + 1) / (np.ptp(ys) + 1))
    fall, upright = np.array(aspects["fall"]), np.array(aspects["non_fall"])
    assert np.median(fall) > 1.3 and np.median(upright) < 0.8
    assert np.mean(fall > 0.9) >= 0.9 and np.mean(upright < 0.9) >= 0.9


def test_write_jpeg_frames_is_flat_and_deterministic(tmp_path: Path) -> None:
    paths = write_jpeg_frames(tmp_path / "a", 3, image_size=(80, 60), seed=2)
    assert [p.name for p in paths] == ["frame-00000.jpg", "frame-00001.jpg", "frame-00002.jpg"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in paths]
    for path in paths:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (80, 60))
    again = write_jpeg_frames(tmp_path / "b", 3, image_size=(80, 60), seed=2)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]
    with pytest.raises(ValueError, match="n must"):
        write_jpeg_frames(tmp_path / "c", -1)
