"""Tests for mlcore.augment: batched augmentation checked against torchvision's per-image ops."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import ColorJitter, InterpolationMode, Normalize, ToTensor

from mlcore.augment import COLOR_OPS, AugmentSpec, BatchAugment, apply_augment, eval_preprocess, sample_params

OFF = AugmentSpec(flip=False, rotation=0, brightness=0, contrast=0, saturation=0, hue=0)


def _images(n: int = 6, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Random uint8 RGB batch (N, 3, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen)


def _params(n: int, **overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    """Identity parameters for n samples, with some replaced."""
    params = {
        "flip": torch.zeros(n, dtype=torch.bool),
        "angle": torch.zeros(n),
        "brightness": torch.ones(n),
        "contrast": torch.ones(n),
        "saturation": torch.ones(n),
        "hue": torch.zeros(n),
        "order": torch.arange(4).expand(n, 4),
    }
    params.update(overrides)
    return params


def _to_uint8(normalised: torch.Tensor) -> torch.Tensor:
    """Undo the [-1, 1] normalisation of images whose values came straight from uint8."""
    return torch.round((normalised + 1.0) * 127.5).to(torch.uint8)


def test_eval_preprocess_matches_torchvision_val_transform() -> None:
    img = _images(1, 24, 40)[0]
    pil = TF.to_pil_image(img)
    expected = Normalize(mean=[0.5] * 3, std=[0.5] * 3)(ToTensor()(pil))
    out = eval_preprocess(img.unsqueeze(0))
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("name", "fn", "factors", "atol"),
    [
        ("brightness", TF2.adjust_brightness, (0.8, 0.9, 1.0, 1.1, 1.2, 1.15), 1e-4),
        ("contrast", TF2.adjust_contrast, (0.8, 0.9, 1.0, 1.1, 1.2, 0.85), 1e-4),
        ("saturation", TF2.adjust_saturation, (0.8, 0.9, 1.0, 1.1, 1.2, 0.95), 1e-4),
        ("hue", TF2.adjust_hue, (-0.1, -0.05, 0.0, 0.03, 0.1, 0.07), 1e-3),
    ],
)
def test_single_colour_op_matches_torchvision(name, fn, factors, atol) -> None:
    images = _images(len(factors))
    spec = dataclasses.replace(OFF, **{name: 0.1})
    values = torch.tensor(factors)
    out = apply_augment(images, _params(len(factors), **{name: values}), spec)
    floats = images.float() / 255.0
    expected = torch.stack([fn(floats[i], float(values[i])) for i in range(len(factors))]) * 2.0 - 1.0
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (32, 48)])
def test_rotation_matches_torchvision_rotate(h: int, w: int) -> None:
    angles = torch.tensor([10.0, -10.0, 3.7, -7.2, 25.0, 90.0])
    images = _images(len(angles), h, w)
    out = apply_augment(images, _params(len(angles), angle=angles), dataclasses.replace(OFF, rotation=90))
    expected = torch.stack(
        [TF.rotate(images[i], float(angles[i]), InterpolationMode.NEAREST) for i in range(len(angles))]
    )
    # Nearest sampling may round a few boundary pixels differently from torchvision's own grid.
    assert (_to_uint8(out) == expected).float().mean() >= 0.97
    # The corners fall outside the rotated source: black, i.e. -1 after normalisation.
    assert torch.all(out[:5, :, 0, 0] == -1.0) and torch.all(out[:5, :, -1, -1] == -1.0)


def test_flip_param_flips_only_selected_samples() -> None:
    images = _images(4)
    flip = torch.tensor([True, False, True, False])
    out = _to_uint8(apply_augment(images, _params(4, flip=flip), dataclasses.replace(OFF, flip=True)))
    assert torch.equal(out[flip], images[flip].flip(-1))
    assert torch.equal(out[~flip], images[~flip])


def test_all_ops_together_match_sequential_torchvision() -> None:
    n = 4
    images = _images(n, 40, 40)
    params = _params(
        n,
        flip=torch.tensor([True, False, True, False]),
        angle=torch.tensor([8.0, -9.5, 0.5, 4.0]),
        brightness=torch.tensor([0.85, 1.15, 1.0, 1.2]),
        contrast=torch.tensor([1.1, 0.8, 0.95, 1.2]),
        saturation=torch.tensor([0.9, 1.2, 1.05, 0.8]),
        hue=torch.tensor([0.05, -0.1, 0.02, -0.03]),
        # A different colour-op order per sample (indices into COLOR_OPS).
        order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]]),
    )
    out = apply_augment(images, params, AugmentSpec())
    ops = {
        "brightness": TF2.adjust_brightness,
        "contrast": TF2.adjust_contrast,
        "saturation": TF2.adjust_saturation,
        "hue": TF2.adjust_hue,
    }
    expected = []
    for i in range(n):
        img = TF.hflip(images[i]) if params["flip"][i] else images[i]
        x = TF.rotate(img, float(params["angle"][i]), InterpolationMode.NEAREST).float() / 255.0
        for k in params["order"][i].tolist():
            x = ops[COLOR_OPS[k]](x, float(params[COLOR_OPS[k]][i]))
        expected.append(x * 2.0 - 1.0)
    close = (out - torch.stack(expected)).abs() <= 1e-3
    assert close.float().mean() >= 0.97


def test_sampled_params_lie_in_notebook_ranges() -> None:
    n = 4000
    params = sample_params(AugmentSpec(), n, device="cpu", generator=torch.Generator().manual_seed(1))
    order = params.pop("order")
    assert all(v.shape == (n,) for v in params.values())
    # One permutation of the 4 colour ops per sample, each of the 24 orders about equally often.
    assert order.shape == (n, 4) and torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    counts = torch.unique(order, dim=0, return_counts=True)[1]
    assert counts.numel() == 24 and counts.min() > n / 24 * 0.7
    for name in ("brightness", "contrast", "saturation"):
        assert 0.8 <= params[name].min() and params[name].max() <= 1.2
        assert params[name].max() - params[name].min() > 0.35
    assert -0.1 <= params["hue"].min() and params["hue"].max() <= 0.1
    assert -10.0 <= params["angle"].min() and params["angle"].max() <= 10.0
    assert params["angle"].max() - params["angle"].min() > 19.0
    assert params["flip"].dtype == torch.bool
    assert abs(params["flip"].float().mean().item() - 0.5) < 0.05


def test_zero_strength_switches_ops_off() -> None:
    params = sample_params(OFF, 100, device="cpu", generator=torch.Generator().manual_seed(2))
    assert not params["flip"].any()
    assert torch.all(params["angle"] == 0) and torch.all(params["hue"] == 0)
    for name in ("brightness", "contrast", "saturation"):
        assert torch.all(params[name] == 1)
    images = _images()
    out = BatchAugment(OFF)(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, eval_preprocess(images), atol=1e-6, rtol=0)


def test_samples_are_augmented_independently() -> None:
    images = _images(1, 48, 48).expand(8, -1, -1, -1).contiguous()
    gen = torch.Generator().manual_seed(4)
    params = sample_params(AugmentSpec(), 8, device="cpu", generator=gen)
    for name in ("angle", "brightness", "contrast", "saturation", "hue"):
        assert params[name].unique().numel() == 8
    out = apply_augment(images, params, AugmentSpec())
    for i in range(1, 8):
        assert not torch.allclose(out[0], out[i])


def test_batch_augment_is_reproducible_with_a_seeded_generator() -> None:
    images = _images(8)
    augment = BatchAugment(AugmentSpec())
    a = augment(images, generator=torch.Generator().manual_seed(5))
    b = augment(images, generator=torch.Generator().manual_seed(5))
    c = augment(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.dtype == torch.float32 and a.shape == images.shape
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_apply_augment_leaves_input_untouched_and_rejects_float() -> None:
    images = _images(2)
    before = images.clone()
    apply_augment(images, _params(2), AugmentSpec())
    assert torch.equal(images, before)
    with pytest.raises(TypeError):
        apply_augment(images.float(), _params(2), AugmentSpec())


@pytest.mark.parametrize("field", ["rotation", "brightness", "contrast", "saturation", "hue"])
def test_spec_rejects_negative_values_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AugmentSpec(**{field: -0.1})


def test_spec_rejects_out_of_range_hue_and_rotation() -> None:
    with pytest.raises(ValueError, match="hue"):
        AugmentSpec(hue=0.6)
    with pytest.raises(ValueError, match="rotation"):
        AugmentSpec(rotation=181)
    with pytest.raises(TypeError):
        AugmentSpec(True, 10.0)  # type: ignore[misc]  # fields are keyword-only


def _jitter_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-draw fraction of channel values clipped high (> 0.99) and low (< 0.01): order-sensitive statistics."""
    flat = x.flatten(2)
    return torch.stack(((flat > 0.99).float().mean(2).sum(1), (flat < 0.01).float().mean(2).sum(1)), dim=1)


def _jitter_image() -> torch.Tensor:
    """A 32x32 image with near-saturated red and blue halves, where the colour-op order changes clipping."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    left = (xx < 0.5).float()
    rgb = (0.98 * left + 0.1 * (1 - left), 0.9 * yy * left + 0.05, 0.95 * (1 - left) + 0.02)
    return (torch.stack(rgb) * 255).round().to(torch.uint8)


@functools.cache
def _pil_jitter_stats(n: int) -> torch.Tensor:
    """Statistics of n draws of the notebook's ColorJitter on the PIL image."""
    pil = Image.fromarray(_jitter_image().permute(1, 2, 0).numpy())
    jitter = ColorJitter(0.2, 0.2, 0.2, 0.1)
    torch.manual_seed(0)
    return _jitter_stats(torch.stack([TF.pil_to_tensor(jitter(pil)) for _ in range(n)]).float() / 255.0)


def batch_jitter_distance(order_override: torch.Tensor | None = None) -> float:
    """Largest two-sample KS distance between our colour jitter and torchvision's PIL ColorJitter."""
    n = 3000
    img = _jitter_image()
    spec = AugmentSpec(flip=False, rotation=0)
    params = sample_params(spec, n, device="cpu", generator=torch.Generator().manual_seed(1))
    if order_override is not None:
        params["order"] = order_override.expand(n, 4)
    ours = (apply_augment(img.expand(n, -1, -1, -1).contiguous(), params, spec) + 1.0) / 2.0
    a, b = _pil_jitter_stats(n), _jitter_stats(ours)
    return max(ks_2samp(a[:, k].numpy(), b[:, k].numpy()).statistic for k in range(a.shape[1]))


def test_color_jitter_distribution_matches_torchvision_pil_color_jitter() -> None:
    # Critical KS distance for 3000 vs 3000 draws at alpha = 0.001 is 0.050; the random per-image
    # order gives about 0.04 (PIL's uint8 rounding is the rest), a fixed order about 0.10.
    assert batch_jitter_distance() < 0.06
    assert batch_jitter_distance(torch.arange(4)) > 0.08
