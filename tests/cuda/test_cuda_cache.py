"""The image cache on a GPU: resident when it fits, spilled to pinned memory past the budget, same batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcore.cache import ImageCache, build_image_cache, iterate_batches

pytestmark = pytest.mark.cuda


def test_the_cache_is_resident_on_the_gpu_when_it_fits(frames, cuda, monkeypatch):
    monkeypatch.setenv("DATASLAYER_GPU_DECODE", "0")  # PIL decodes: the placement alone is under test
    gpu = build_image_cache(frames, 64, device=cuda)
    cpu = build_image_cache(frames, 64, device="cpu")
    assert gpu.location == "cuda" and gpu.images.is_cuda
    assert gpu.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(gpu.images.cpu(), cpu.images)


def test_past_the_gpu_budget_the_cache_spills_to_pinned_memory(frames, cuda, monkeypatch):
    monkeypatch.setenv("DATASLAYER_CACHE_GPU_GB", "0.01")  # 10.7 MB; 48 frames at 320 px are 14.7 MB
    cache = build_image_cache(frames, 320, device=cuda)
    assert cache.location == "pinned"
    assert cache.images.device.type == "cpu" and cache.images.is_pinned()


def _caches(cuda) -> dict[str, ImageCache]:
    """One cache whose image i is filled with i, held on the host, in pinned memory and on the GPU."""
    n = 200
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    return {
        "memory": ImageCache(images, {}, "memory", "decoded", 0.0),
        "pinned": ImageCache(images.pin_memory(), {}, "pinned", "decoded", 0.0),
        "cuda": ImageCache(images.to(cuda), {}, "cuda", "decoded", 0.0),
    }


def test_iterate_batches_gives_the_same_batches_on_cuda_and_cpu_for_one_generator(cuda):
    caches = _caches(cuda)
    labels = torch.arange(200) % 7
    indices = np.arange(3, 200, 2)
    runs = {}
    for name, cache in caches.items():
        for device in (torch.device("cpu"), cuda) if name == "memory" else (cuda,):
            gen = torch.Generator().manual_seed(11)
            batches = list(
                iterate_batches(cache, indices, labels, 16, device=device, shuffle=True, generator=gen, drop_last=True)
            )
            for images, lab in batches:
                assert images.device.type == lab.device.type == device.type
                assert lab.dtype == torch.long
            runs[f"{name}->{device.type}"] = [(x.cpu(), y.cpu()) for x, y in batches]
    reference = runs.pop("memory->cpu")
    for name, batches in runs.items():
        assert len(batches) == len(reference) == len(indices) // 16, name
        for (x, y), (rx, ry) in zip(batches, reference):
            assert torch.equal(x, rx) and torch.equal(y, ry), name
            assert torch.equal(y, x[:, 0, 0, 0].long() % 7), name  # labels travel with their images


@pytest.mark.parametrize("where", ["pinned", "cuda"])
def test_iterating_batches_onto_the_gpu_never_waits_for_it(where, cuda):
    """Images and labels reach the GPU without a synchronising copy (pinned memory, non_blocking)."""
    cache = _caches(cuda)[where]
    labels = torch.arange(200) % 2
    gen = torch.Generator().manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(iterate_batches(cache, np.arange(200), labels, 32, device=cuda, shuffle=True, generator=gen))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert sum(len(y) for _, y in batches) == 200


def test_a_spilled_cache_trains_exactly_like_a_resident_one(train_values, monkeypatch):
    pytest.importorskip("pydantic", reason="the training job's parameters need pydantic (docs/GPU.md)")
    from mlcore.hooks import NullTracker
    from mlcore.params import train_params
    from mlcore.train import run_training

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # same kernels both times
    values = {**train_values, "image_size": 224, "epochs": 2}  # 128 images at 224 px: 19 MB
    runs = {}
    for budget in (None, "0.01"):
        if budget is None:
            monkeypatch.delenv("DATASLAYER_CACHE_GPU_GB", raising=False)
        else:
            monkeypatch.setenv("DATASLAYER_CACHE_GPU_GB", budget)
        tracker = NullTracker()
        summary = run_training(train_params(**values), tracker=tracker)
        runs[summary["cache"]] = tracker.epochs
    assert set(runs) == {"cuda (decoded)", "pinned (decoded)"}
    resident, spilled = runs["cuda (decoded)"], runs["pinned (decoded)"]
    for epoch in (1, 2):
        for key in ("train_loss", "val_loss", "val_f1_weighted"):
            assert spilled[epoch][key] == pytest.approx(resident[epoch][key], rel=1e-4, abs=1e-5), (epoch, key)
