"""nvjpeg batch decoding into the image cache against the PIL path, on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.cache import build_image_cache
from mlcore.images import decode_into

pytestmark = pytest.mark.cuda

# Bounds in uint8 levels between nvjpeg + the device resize and PIL decode + PIL resize. The resize
# alone differs by at most 1 level (the CPU suite checks it); the rest is nvjpeg's IDCT and chroma
# upsampling against libjpeg-turbo's.
MEAN_ABS_DIFF_MAX = 1.5
P99_ABS_DIFF_MAX = 8


def _pil(paths, size) -> tuple[np.ndarray, dict[int, str]]:
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    return out, decode_into(paths, size, out)


def _nhwc(cache) -> np.ndarray:
    return cache.images.permute(0, 2, 3, 1).cpu().numpy()


@pytest.mark.parametrize("size", [224, 64])
def test_nvjpeg_decode_and_device_resize_match_pil_within_bounds(frames, size, cuda, record_figures):
    cache = build_image_cache(frames, size, device=cuda)
    assert cache.location == "cuda" and cache.images.is_cuda and cache.bad == {}
    expected, bad = _pil(frames, size)
    assert bad == {}
    diff = np.abs(_nhwc(cache).astype(np.int16) - expected.astype(np.int16))
    mean, p99 = float(diff.mean()), float(np.percentile(diff, 99))
    record_figures(size=size, mean_abs_diff=mean, p99_abs_diff=p99, max_abs_diff=int(diff.max()))
    assert mean <= MEAN_ABS_DIFF_MAX, f"mean |nvjpeg - PIL| {mean:.3f} levels > {MEAN_ABS_DIFF_MAX}"
    assert p99 <= P99_ABS_DIFF_MAX, f"p99 |nvjpeg - PIL| {p99:.1f} levels > {P99_ABS_DIFF_MAX}"


def _odd_files(folder: Path, frames: list[Path]) -> list[Path]:
    """Every kind of file the GPU path must hand to PIL (or report), mixed between plain JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    src = Image.open(frames[0])
    made = {
        "gray.jpg": lambda p: src.convert("L").save(p, quality=90),
        "cmyk.jpg": lambda p: src.convert("CMYK").save(p, quality=90),
        "frame.png": lambda p: src.save(p),
        "rgba.png": lambda p: src.convert("RGBA").save(p),
        "small.jpg": lambda p: src.resize((97, 61)).save(p, quality=90),  # another size in the same batch
        "garbage.jpg": lambda p: p.write_bytes(b"\xff\xd8\xff not a jpeg at all"),
        "truncated.jpg": lambda p: p.write_bytes(frames[1].read_bytes()[: frames[1].stat().st_size // 2]),
        "header_only.jpg": lambda p: p.write_bytes(frames[2].read_bytes()[:400]),
        "empty.jpg": lambda p: p.write_bytes(b""),
    }
    paths = []
    for name, make in made.items():
        make(folder / name)
        paths.append(folder / name)
    return [frames[3], *paths[:5], frames[4], *paths[5:], frames[5]]


def test_grayscale_cmyk_png_and_broken_files_fall_back_or_are_reported_exactly_as_on_cpu(frames, tmp_path, cuda):
    paths = _odd_files(tmp_path / "odd", frames)
    size = 64
    gpu = build_image_cache(paths, size, device=cuda)
    cpu = build_image_cache(paths, size, device="cpu")
    assert gpu.bad == cpu.bad  # the same files, the same reasons
    names = {paths[i].name for i in gpu.bad}
    assert names == {"garbage.jpg", "truncated.jpg", "header_only.jpg", "empty.jpg"}
    got, want = _nhwc(gpu), _nhwc(cpu)
    for i, p in enumerate(paths):
        if i in gpu.bad:
            assert not got[i].any(), f"{p.name}: a bad file is left black"
        elif p.suffix == ".png" or p.name in ("gray.jpg", "cmyk.jpg"):
            assert np.array_equal(got[i], want[i]), f"{p.name} should take the PIL path exactly"
        else:
            assert np.abs(got[i].astype(int) - want[i]).mean() <= MEAN_ABS_DIFF_MAX, p.name


def test_the_gpu_decoded_cache_is_persisted_and_reloaded_to_the_gpu(frames, tmp_path, cuda):
    first = build_image_cache(frames[:20], 64, device=cuda, key="gpu-key", cache_dir=tmp_path)
    again = build_image_cache(frames[:20], 64, device=cuda, key="gpu-key", cache_dir=tmp_path)
    assert (first.source, again.source) == ("decoded", "disk cache")
    assert again.location == "cuda" and torch.equal(first.images, again.images)
