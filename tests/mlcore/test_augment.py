"""Tests for mlcore.augment: batched augmentation checked against torchvision's per-image ops."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from torchvision.transforms import InterpolationMode, Normalize, ToTensor

from mlcore.augment import AugmentSpec, BatchAugment, apply_augment, eval_preprocess, sample_params

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
    )
    out = apply_augment(images, params, AugmentSpec())
    expected = []
    for i in range(n):
        img = TF.hflip(images[i]) if params["flip"][i] else images[i]
        x = TF.rotate(img, float(params["angle"][i]), InterpolationMode.NEAREST).float() / 255.0
        x = TF2.adjust_brightness(x, float(params["brightness"][i]))
        x = TF2.adjust_contrast(x, float(params["contrast"][i]))
        x = TF2.adjust_saturation(x, float(params["saturation"][i]))
        expected.append(TF2.adjust_hue(x, float(params["hue"][i])) * 2.0 - 1.0)
    close = (out - torch.stack(expected)).abs() <= 1e-3
    assert close.float().mean() >= 0.97


def test_sampled_params_lie_in_notebook_ranges() -> None:
    n = 4000
    params = sample_params(AugmentSpec(), n, device="cpu", generator=torch.Generator().manual_seed(1))
    assert all(v.shape == (n,) for v in params.values())
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
