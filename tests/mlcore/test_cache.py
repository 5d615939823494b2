"""Tests for mlcore.cache: the decoded-image cache, the batched decode path and batch iteration."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.cache import (
    CACHE_VERSION,
    ImageCache,
    _gpu_decode_into,
    build_image_cache,
    cache_stem,
    content_identity,
    decoder_for,
    iterate_batches,
)
from mlcore.data import discover_dataset
from mlcore.images import decode_resized

SIZE = 24


@pytest.fixture
def demo_paths(demo_root) -> list[Path]:
    return discover_dataset(demo_root / "train").paths[:10]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_cache_decodes_then_reuses_the_disk_copy(demo_paths, tmp_path):
    first = build_image_cache(demo_paths, SIZE, key="abc123", cache_dir=tmp_path)
    assert first.images.shape == (len(demo_paths), 3, SIZE, SIZE) and first.images.dtype == torch.uint8
    assert first.source == "decoded" and first.bad == {} and len(first) == len(demo_paths)
    assert first.image_size == SIZE and first.images.any()
    written = _files(tmp_path)
    assert written and not [n for n in written if "tmp" in n]  # no half-written leftovers
    second = build_image_cache(demo_paths, SIZE, key="abc123", cache_dir=tmp_path)
    assert second.source == "disk cache"
    assert torch.equal(first.images, second.images)
    assert _files(tmp_path) == written
    expected = decode_resized(demo_paths[3], SIZE)
    assert np.array_equal(second.images[3].permute(1, 2, 0).numpy(), expected)


def test_another_size_is_another_cache_entry(demo_paths, tmp_path):
    build_image_cache(demo_paths, SIZE, key="abc123", cache_dir=tmp_path)
    before = _files(tmp_path)
    other = build_image_cache(demo_paths, SIZE * 2, key="abc123", cache_dir=tmp_path)
    assert other.source == "decoded" and other.images.shape[-1] == SIZE * 2
    assert set(before) < set(_files(tmp_path))
    again = build_image_cache(demo_paths, SIZE, key="abc123", cache_dir=tmp_path)
    assert again.source == "disk cache" and again.images.shape[-1] == SIZE


def test_another_key_is_another_cache_entry(demo_paths, tmp_path):
    build_image_cache(demo_paths, SIZE, key="abc123", cache_dir=tmp_path)
    assert build_image_cache(demo_paths, SIZE, key="def456", cache_dir=tmp_path).source == "decoded"


def test_without_key_nothing_is_written(demo_paths, tmp_path):
    cache = build_image_cache(demo_paths, SIZE, cache_dir=tmp_path)
    again = build_image_cache(demo_paths, SIZE, cache_dir=tmp_path)
    assert cache.source == again.source == "decoded"
    assert torch.equal(cache.images, again.images)
    assert _files(tmp_path) == []
    assert _files(Path(os.environ["DATASLAYER_CACHE_DIR"])) == []


def test_bad_file_is_listed_by_index_and_zeroed(demo_paths, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    paths = demo_paths[:3] + [broken] + demo_paths[3:5]
    for attempt in ("decoded", "disk cache"):
        cache = build_image_cache(paths, SIZE, key="withbad", cache_dir=tmp_path / "c")
        assert cache.source == attempt
        assert list(cache.bad) == [3] and cache.bad[3]
        assert not cache.images[3].any()
        assert all(cache.images[i].any() for i in (0, 1, 2, 4, 5))


def test_batched_jpeg_decode_is_close_to_pil_and_routes_png_to_pil(demo_paths, tmp_path):
    png = tmp_path / "frame.png"
    Image.open(demo_paths[0]).save(png)
    cmyk = tmp_path / "cmyk.jpg"
    Image.open(demo_paths[1]).convert("CMYK").save(cmyk)
    paths = list(demo_paths[:6]) + [png, cmyk]
    out = np.full((len(paths), SIZE, SIZE, 3), 255, dtype=np.uint8)
    assert _gpu_decode_into(paths, SIZE, out, torch.device("cpu"), None) == {}
    diffs = [np.abs(out[i].astype(float) - decode_resized(paths[i], SIZE)).mean() for i in range(6)]
    assert max(diffs) < 3
    for i in (6, 7):  # PNG and CMYK JPEG take the PIL path: exactly its result
        assert np.array_equal(out[i], decode_resized(paths[i], SIZE))


def test_batched_decode_lists_broken_files(demo_paths, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    head_only = tmp_path / "head_only.jpg"
    head_only.write_bytes(demo_paths[2].read_bytes()[:300])
    half = tmp_path / "half.jpg"
    half.write_bytes(demo_paths[3].read_bytes()[: demo_paths[3].stat().st_size // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    paths = list(demo_paths[:2]) + [broken, head_only, half, empty]
    out = np.full((len(paths), SIZE, SIZE, 3), 255, dtype=np.uint8)
    bad = _gpu_decode_into(paths, SIZE, out, torch.device("cpu"), None)
    assert set(bad) == {2, 3, 4, 5} and all(bad.values())
    assert not out[2:].any()
    for i in (0, 1):
        assert np.abs(out[i].astype(float) - decode_resized(paths[i], SIZE)).mean() < 3


def test_batched_decode_at_the_native_size_skips_the_resize(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    path = tmp_path / "native.jpg"
    Image.fromarray(img).save(path, quality=95)
    out = np.zeros((1, SIZE, SIZE, 3), dtype=np.uint8)
    assert _gpu_decode_into([path], SIZE, out, torch.device("cpu"), None) == {}
    assert np.abs(out[0].astype(float) - np.asarray(Image.open(path), dtype=float)).mean() < 3


def _value_cache(n: int) -> ImageCache:
    """A cache whose image i is filled with the value i."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return ImageCache(images, {}, "memory", "decoded", 0.0)


def _run(cache, indices, batch_size, **kw):
    labels = torch.arange(len(cache)) * 10  # label i*10 for image i, to check they travel together
    batches = list(iterate_batches(cache, np.asarray(indices), labels, batch_size, device=torch.device("cpu"), **kw))
    for images, lab in batches:
        ids = images[:, 0, 0, 0].long()
        assert torch.equal(lab, ids * 10)
        assert torch.equal(images, ids.view(-1, 1, 1, 1).expand_as(images).to(torch.uint8))
    return batches


def _order(batches) -> list[int]:
    return [int(v) for images, _ in batches for v in images[:, 0, 0, 0]]


def test_batches_cover_every_index_once_in_order():
    indices = [5, 2, 9, 0, 7, 3, 11]
    batches = _run(_value_cache(12), indices, 3)
    assert [len(b[0]) for b in batches] == [3, 3, 1]
    assert _order(batches) == indices


def test_shuffle_is_a_reproducible_permutation():
    cache, indices = _value_cache(40), list(range(0, 40, 2))
    a = _order(_run(cache, indices, 6, shuffle=True, generator=torch.Generator().manual_seed(1)))
    b = _order(_run(cache, indices, 6, shuffle=True, generator=torch.Generator().manual_seed(1)))
    c = _order(_run(cache, indices, 6, shuffle=True, generator=torch.Generator().manual_seed(2)))
    assert sorted(a) == indices and a == b and a != c and a != indices


def test_shuffle_changes_between_epochs_with_one_generator():
    cache, gen = _value_cache(30), torch.Generator().manual_seed(0)
    epochs = [_order(_run(cache, range(30), 8, shuffle=True, generator=gen)) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(30)) and epochs[0] != epochs[1]


@pytest.mark.parametrize(("n", "batch", "expected"), [(10, 4, [4, 4]), (8, 4, [4, 4]), (3, 4, [])])
def test_drop_last_drops_the_remainder(n, batch, expected):
    batches = _run(
        _value_cache(n), range(n), batch, drop_last=True, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert [len(b[0]) for b in batches] == expected
    assert len(set(_order(batches))) == sum(expected)


def test_only_whole_rgb_jpeg_streams_are_handed_to_the_batched_decoder(demo_paths, tmp_path):
    from mlcore.cache import _read_plain_jpeg

    whole = _read_plain_jpeg(demo_paths[0])
    assert whole is not None and whole.numel() == demo_paths[0].stat().st_size
    data = demo_paths[1].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) - 200])  # the header parses, the end-of-image marker is gone
    gray = tmp_path / "gray.jpg"
    Image.open(demo_paths[2]).convert("L").save(gray)
    assert _read_plain_jpeg(truncated) is None and _read_plain_jpeg(gray) is None


def test_labels_reach_the_device_with_their_images_from_every_cache_location():
    """iterate_batches indexes labels where the images are and moves both the same way (CPU: as they are)."""
    for cache in (_value_cache(20), ImageCache(_value_cache(20).images, {}, "disk", "decoded", 0.0)):
        labels = (torch.arange(20) * 10).to(torch.int64)
        batches = list(iterate_batches(cache, np.arange(20), labels, 6, device=torch.device("cpu")))
        assert [len(y) for _, y in batches] == [6, 6, 6, 2]
        for images, y in batches:
            assert y.device == images.device and torch.equal(y, images[:, 0, 0, 0].long() * 10)


def test_a_changed_file_of_the_same_name_and_size_is_decoded_again(tmp_path):
    files = []
    for i, colour in enumerate(((200, 30, 30), (30, 200, 30))):
        files.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (20, 20), colour).save(files[-1])
    cache_dir = tmp_path / "cache"
    first = build_image_cache(files, 8, key="k", cache_dir=cache_dir)
    assert build_image_cache(files, 8, key="k", cache_dir=cache_dir).source == "disk cache"
    # Same name and byte size, new content (a solid colour of another hue encodes to the same PNG
    # length; the size is checked), and the mtime moves on.
    size_before = files[0].stat().st_size
    Image.new("RGB", (20, 20), (30, 30, 200)).save(files[0])
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    assert files[0].stat().st_size == size_before
    second = build_image_cache(files, 8, key="k", cache_dir=cache_dir)
    assert second.source == "decoded"
    assert second.images[0, 2].float().mean() > 150 and first.images[0, 0].float().mean() > 150


def test_the_cache_name_names_decoder_format_version_and_content(demo_paths):
    paths = [Path(p) for p in demo_paths]
    cpu = cache_stem("k", paths, SIZE, torch.device("cpu"))
    assert cpu != cache_stem("k", paths, SIZE, torch.device("cuda"))  # pil vs nvjpeg: never shared
    assert f"-pil-v{CACHE_VERSION}-" in cpu and content_identity(paths) in cpu
    assert decoder_for(torch.device("cuda")) == "nvjpeg" and decoder_for(torch.device("cpu")) == "pil"


def _build_in_a_process(args) -> str:
    paths, cache_dir, start = args
    start.wait()  # all at once, as slots taking a sweep's first trials do
    return build_image_cache(paths, 48, key="shared-by-slots", cache_dir=Path(cache_dir)).source


def test_jobs_starting_together_decode_a_dataset_once_and_share_its_cache(demo_root, tmp_path):
    """Several job slots on one GPU (or workers on one disk) start on the same data: one decodes, the others wait."""
    import multiprocessing

    paths = [str(p) for p in discover_dataset(demo_root / "train").paths]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        start = manager.Barrier(3)
        sources = pool.map(_build_in_a_process, [(paths, str(tmp_path), start)] * 3)
    assert sorted(sources) == ["decoded", "disk cache", "disk cache"]
    assert [p.suffix for p in tmp_path.iterdir()].count(".npy") == 1  # one cache, no temporary files left
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
