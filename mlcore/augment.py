"""Batched, on-device training augmentation equivalent to the notebook's torchvision pipeline.

The notebook augments one PIL image at a time (flip, RandomRotation(10), ColorJitter, ToTensor,
Normalize(0.5, 0.5)). Here a whole uint8 batch (N, 3, H, W) is augmented at once on its device, with
independent random parameters per sample and no Python loop over samples. The work is split in two:
``sample_params`` draws every random number (one ``torch.rand`` call, so a seeded generator gives
reproducible batches), and ``apply_augment`` is pure tensor code without host syncs or data-dependent
branches, so it can be wrapped in ``torch.compile``. Flip and rotation are folded into one
``affine_grid``/``grid_sample`` (nearest, zero fill, positive angle = counter-clockwise like
``TF.rotate``). The colour ops follow torchvision's tensor kernels (``adjust_brightness``,
``adjust_contrast``, ``adjust_saturation``, ``adjust_hue``), in float32 throughout (so without the
PIL path's uint8 rounding between ops), and, like torchvision's ColorJitter, in a random order
drawn per image: ``params["order"]`` holds a permutation of (brightness, contrast, saturation, hue)
per sample. The three linear ops share one masked pass per position; the hue shift runs once on
the whole batch, between the linear ops each sample has before its hue and those after it. Output is float32 in [-1, 1],
channels_last-contiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["COLOR_OPS", "AugmentSpec", "BatchAugment", "apply_augment", "eval_preprocess", "sample_params"]

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_GRAY = (0.2989, 0.587, 0.114)
# The colour ops, in the index order used by params["order"] (torchvision's ColorJitter's fn_idx).
COLOR_OPS = ("brightness", "contrast", "saturation", "hue")


def eval_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 (N, 3, H, W) or (3, H, W) to float32 exactly like the notebook's val_transform after Resize."""
    _check_uint8(images, batched=False)
    # x / 255 then (x - 0.5) / 0.5 is x * 2/255 - 1; converting the layout on uint8 is the cheap end.
    return _channels_last(images).to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


@dataclass(frozen=True, kw_only=True)
class AugmentSpec:
    """Augmentation strengths; defaults match the notebook, and 0 (or flip=False) switches an op off."""

    flip: bool = True
    rotation: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rotation", "brightness", "contrast", "saturation", "hue"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"AugmentSpec.{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"AugmentSpec.{name} must be >= 0, got {value!r}")
        if self.hue > 0.5:
            raise ValueError(f"AugmentSpec.hue must be <= 0.5, got {self.hue!r}")
        if self.rotation > 180:
            raise ValueError(f"AugmentSpec.rotation must be <= 180, got {self.rotation!r}")


def sample_params(
    spec: AugmentSpec, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Draw per-sample parameters: flip, angle in degrees, brightness, contrast, saturation, hue of shape (n,),
    and order (n, 4): a permutation of the colour ops (indices into ``COLOR_OPS``) per sample, as
    torchvision's ColorJitter draws one per image."""
    # Always draw all ten rows so the random stream does not depend on which ops are switched on;
    # a switched-off op gets its identity value (no flip, angle 0, factor 1, hue 0).
    u = torch.rand(10, n, device=device, generator=generator, dtype=torch.float32)
    params = {
        # argsort of 4 iid uniforms is a uniformly random permutation (torch.randperm per sample).
        "order": u[6:10].t().argsort(dim=1),
        "flip": (u[0] < 0.5) if spec.flip else torch.zeros(n, dtype=torch.bool, device=device),
        "angle": (u[1] * 2.0 - 1.0) * spec.rotation,
        "hue": (u[5] * 2.0 - 1.0) * spec.hue,
    }
    for row, name in ((2, "brightness"), (3, "contrast"), (4, "saturation")):
        # torchvision's ColorJitter range for a strength v is [max(0, 1 - v), 1 + v].
        low, high = max(0.0, 1.0 - getattr(spec, name)), 1.0 + getattr(spec, name)
        params[name] = low + u[row] * (high - low)
    return params


def apply_augment(images: torch.Tensor, params: dict[str, torch.Tensor], spec: AugmentSpec) -> torch.Tensor:
    """Augment uint8 (N, 3, H, W) with per-sample params into a float32 batch normalised to [-1, 1]."""
    _check_uint8(images, batched=True)
    n = images.shape[0]

    def per_sample(name: str) -> torch.Tensor:
        return params[name].to(torch.float32).view(n, 1, 1, 1)

    # Geometry on the uint8 / [0, 255] values. Every later step works in place on the one fresh
    # float buffer `x`: on CPU, allocating a new full-size tensor costs more than the op itself.
    if spec.rotation > 0:
        x = _flip_rotate(images.to(torch.float32), params["flip"], params["angle"])
    elif spec.flip:
        x = torch.where(params["flip"].view(n, 1, 1, 1), images.flip(-1), images).to(torch.float32)
    else:
        x = images.to(torch.float32)
    x.mul_(1.0 / 255.0)
    order = params["order"]
    factors = {name: per_sample(name) for name in COLOR_OPS[:3] if getattr(spec, name) > 0}
    if spec.hue > 0:
        # Each sample's order is (linear ops before its hue) + hue + (linear ops after it), so the
        # costly hue shift runs once on the whole batch between a "before" and an "after" round of
        # linear passes: no per-position gather, no host sync, no graph break under torch.compile.
        hue_at = (order == COLOR_OPS.index("hue")).to(torch.int64).argmax(dim=1)
        for position in range(3):  # the last position is never before the hue
            _linear_pass(x, order[:, position], position < hue_at, factors)
        base, scale = _shift_hue(x, params["hue"].to(torch.float32))
        x.mul_(scale).add_(base)
        for position in range(1, 4):  # the first position is never after it
            _linear_pass(x, order[:, position], position > hue_at, factors)
    else:
        for position in range(4):
            _linear_pass(x, order[:, position], None, factors)
    x.mul_(2.0).sub_(1.0)
    # One layout copy at the end (the model runs channels_last); writing the last op into a
    # channels_last out= buffer costs the same in eager mode but is not preserved by torch.compile.
    return x.contiguous(memory_format=torch.channels_last)


def _linear_pass(
    x: torch.Tensor, op: torch.Tensor, active: torch.Tensor | None, factors: dict[str, torch.Tensor]
) -> None:
    """In place, per sample: the linear colour op `op` (an index into COLOR_OPS) where `active`, identity elsewhere.

    Brightness, contrast and saturation are each x * f + (1 - f) * g with g = 0, the grey mean or the
    grey image: one pass, with f = 1 for the samples whose op here is another (or inactive).
    """
    if not factors:
        return
    n = x.shape[0]
    op = op.view(n, 1, 1, 1)
    if active is not None:
        op = torch.where(active.view(n, 1, 1, 1), op, -1)
    factor = torch.ones_like(op, dtype=torch.float32)
    for name, value in factors.items():
        factor = torch.where(op == COLOR_OPS.index(name), value, factor)
    target = None
    if "saturation" in factors:
        r, g, b = x.unbind(dim=1)
        gray = r.mul(_GRAY[0]).add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2]).unsqueeze(1)
        target = torch.where(op == COLOR_OPS.index("saturation"), gray, 0.0)
    if "contrast" in factors:
        # Mean of the grayscale image equals the luma-weighted sum of the per-channel means.
        ch = x.mean(dim=(-2, -1))
        mean = (ch[:, 0] * _GRAY[0] + ch[:, 1] * _GRAY[1] + ch[:, 2] * _GRAY[2]).view(n, 1, 1, 1)
        target = torch.where(op == COLOR_OPS.index("contrast"), mean, 0.0 if target is None else target)
    x.mul_(factor)
    if target is not None:
        x.add_(target.mul_(1.0 - factor))
    x.clamp_(0.0, 1.0)  # a no-op for the identity samples (their values are already in [0, 1])


def _check_uint8(images: torch.Tensor, *, batched: bool) -> None:
    """Reject anything but uint8 RGB images; dtype and shape are static, so this is compile-safe."""
    bad_dim = images.dim() != 4 if batched else images.dim() < 3
    if images.dtype != torch.uint8 or bad_dim or images.shape[-3] != 3:
        raise TypeError(f"expected uint8 (N, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Return x in channels_last layout when it is 4-D (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _flip_rotate(x: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Flip then rotate each sample of a float batch with one nearest-neighbour grid_sample, zero fill."""
    n, c, h, w = x.shape
    rad = angle.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Inverse map (output -> input) of torchvision's rotate in pixel coordinates about the centre is
    # [[cos, -sin], [sin, cos]]; affine_grid works in [-1, 1] per axis, hence the aspect terms.
    # The flip is applied to the input, so it negates the input x coordinate: the first row.
    sign = 1.0 - 2.0 * flip.to(torch.float32)
    zero = torch.zeros_like(cos)
    theta = torch.stack(
        (
            torch.stack((sign * cos, sign * -sin * (h / w), zero), dim=1),
            torch.stack((sin * (w / h), cos, zero), dim=1),
        ),
        dim=1,
    )
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _shift_hue(x: torch.Tensor, hue: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the HSV hue of a [0, 1] batch per sample like torchvision's adjust_hue; result = base + x * scale.

    Overwrites x with the per-channel weight in [0, 1]; base (min channel) and scale (max - min) are
    single-channel, so the caller can fold its final affine map into the same last pass.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    # Hue in sextants [0, 6) in torchvision's case order (max is r, else g, else b); grey pixels
    # (chroma 0) get hue 0 like torchvision, and the divisor swap only avoids 0/0.
    sextant = torch.where(
        maxc == r, g - b, torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0))
    )
    sextant.div_(torch.where(chroma == 0, 1.0, chroma)).add_(hue.view(-1, 1, 1) * 6.0).remainder_(6.0)
    # HSV -> RGB without torchvision's sector lookup table (same values): with H the sextant, the
    # weights are clamp(|H - 3| - 1), clamp(2 - |H - 2|), clamp(2 - |H - 4|) on [0, 1], and
    # channel = min + chroma * weight. The loop is over the 3 channels, with scalar constants.
    for channel, (centre, sign, offset) in enumerate(((3.0, 1.0, -1.0), (2.0, -1.0, 2.0), (4.0, -1.0, 2.0))):
        x[:, channel].copy_(sextant).sub_(centre).abs_().mul_(sign).add_(offset)
    x.clamp_(0.0, 1.0)
    return minc.unsqueeze(1), chroma.unsqueeze(1)


class BatchAugment:
    """Callable that samples per-sample parameters and augments a uint8 batch on its own device."""

    def __init__(self, spec: AugmentSpec, *, compile: bool = False) -> None:
        self.spec = spec

        def run(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
            return apply_augment(images, params, spec)

        # Only the pure part is compiled: sampling uses a Generator, which graphs poorly.
        self._apply: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor] = (
            torch.compile(run, dynamic=False) if compile else run
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 (N, 3, H, W) batch into a normalised float32 batch."""
        params = sample_params(self.spec, images.shape[0], device=images.device, generator=generator)
        return self._apply(images, params)
