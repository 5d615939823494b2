"""BatchAugment on a GPU: the CPU suite's ranges and per-sample independence, and the same result as on CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mlcore.augment import AugmentSpec, BatchAugment, apply_augment, eval_preprocess, sample_params

pytestmark = pytest.mark.cuda

SPEC = AugmentSpec()  # the notebook's strengths
OFF = AugmentSpec(flip=False, rotation=0, brightness=0, contrast=0, saturation=0, hue=0)


def _images(n: int, device, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen).to(device)


def test_parameters_drawn_on_the_gpu_stay_in_the_notebook_ranges_and_are_reproducible(cuda):
    gen = torch.Generator(device=cuda).manual_seed(3)
    params = sample_params(SPEC, 4096, device=cuda, generator=gen)
    assert all(v.device.type == "cuda" and v.shape == (4096,) for v in params.values())
    assert 0.45 < params["flip"].float().mean().item() < 0.55
    assert params["angle"].abs().max().item() <= 10.0 and params["angle"].min().item() < -9.0
    for name in ("brightness", "contrast", "saturation"):
        assert 0.8 <= params[name].min().item() < 0.81 and 1.19 < params[name].max().item() <= 1.2
    assert params["hue"].abs().max().item() <= 0.1
    again = sample_params(SPEC, 4096, device=cuda, generator=torch.Generator(device=cuda).manual_seed(3))
    assert all(torch.equal(params[k], again[k]) for k in params)


def test_the_output_is_normalised_float32_channels_last_on_the_gpu(cuda):
    out = BatchAugment(SPEC)(_images(64, cuda), torch.Generator(device=cuda).manual_seed(0))
    assert out.device.type == "cuda" and out.dtype == torch.float32 and out.shape == (64, 3, 32, 32)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.min().item() >= -1.0 and out.max().item() <= 1.0
    assert torch.isfinite(out).all()


def test_all_ops_off_is_the_evaluation_preprocessing(cuda):
    images = _images(8, cuda)
    torch.testing.assert_close(BatchAugment(OFF)(images), eval_preprocess(images), atol=1e-6, rtol=0)


def test_each_sample_gets_its_own_parameters_whatever_the_batch_holds(cuda):
    one = _images(1, cuda, seed=4)
    batch = one.expand(64, -1, -1, -1).contiguous()
    gen = torch.Generator(device=cuda).manual_seed(5)
    params = sample_params(SPEC, 64, device=cuda, generator=gen)
    out = apply_augment(batch, params, SPEC)
    flat = out.flatten(1)
    distinct = (flat.unsqueeze(0) - flat.unsqueeze(1)).abs().amax(-1) > 1e-3
    assert distinct.sum().item() == 64 * 63  # every pair of samples differs
    for i in (0, 17, 63):  # a sample augmented alone with its parameters is the same sample
        alone = apply_augment(batch[i : i + 1], {k: v[i : i + 1] for k, v in params.items()}, SPEC)
        torch.testing.assert_close(alone[0], out[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", [dataclasses.replace(SPEC, rotation=0), SPEC], ids=["colour+flip", "all"])
def test_the_gpu_computes_what_the_cpu_computes_for_the_same_parameters(spec, cuda):
    images = _images(32, "cpu", seed=6)
    params = sample_params(spec, 32, device="cpu", generator=torch.Generator().manual_seed(7))
    cpu = apply_augment(images, params, spec)
    gpu = apply_augment(images.to(cuda), {k: v.to(cuda) for k, v in params.items()}, spec).cpu()
    if spec.rotation == 0:
        torch.testing.assert_close(gpu, cpu, atol=2e-4, rtol=0)
    else:
        # Nearest-neighbour sampling may pick the neighbouring pixel where a coordinate lands on .5.
        off = ((gpu - cpu).abs() > 2e-4).float().mean().item()
        assert off < 0.005, f"{off:.2%} of values differ"


def test_the_compiled_augmentation_matches_the_eager_one(cuda):
    images = _images(64, cuda, size=64, seed=8)
    eager = BatchAugment(SPEC)(images, torch.Generator(device=cuda).manual_seed(9))
    compiled = BatchAugment(SPEC, compile=True)(images, torch.Generator(device=cuda).manual_seed(9))
    off = ((compiled - eager).abs() > 1e-3).float().mean().item()
    assert off < 0.005, f"{off:.2%} of values differ between compiled and eager"
