"""What the benchmark measures: its options (`BenchConfig`), the per-device defaults, the fast precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

FRAME_SIZE = (640, 480)
# The notebook's rows: every ratio in the table is taken against the one of its kind.
NOTEBOOK = "notebook: PIL + torchvision transforms, DataLoader workers=0, fp32"
NOTEBOOK_PREDICT = "notebook predict: PIL + val_transform, bs16, fp32"
NOTEBOOK_DECODE = "notebook decode + Resize: PIL, 1 core"
VAL_FRACTION = 0.2

# Defaults per device type: a GPU gets the reference figures' setting; 2 CPU cores get a run of
# about two minutes, ResNet50 at 112 px for the notebook and the engine alike (more, shorter rounds:
# a shared CPU's load comes in bursts, and the median of five resists two bad rounds).
DEFAULTS = {
    "cuda": dict(
        images=4096,
        image_size=224,
        arch="resnet50",
        large_batch=256,
        compile=True,
        test_images=2048,
        predict_batch=512,
        rounds=3,
        round_seconds=2.0,
        e2e_images=1024,
        e2e_epochs=3,
    ),
    "cpu": dict(
        images=256,
        image_size=112,
        arch="resnet50",
        large_batch=64,
        compile=False,
        test_images=128,
        predict_batch=128,
        rounds=5,
        round_seconds=1.0,
        e2e_images=160,
        e2e_epochs=2,
    ),
}


@dataclass
class BenchConfig:
    """What to measure; fields left None take the device's defaults from DEFAULTS."""

    device: str = "auto"
    images: int | None = None  # generated 640x480 JPEG frames, the training data of every configuration
    image_size: int | None = None
    arch: str | None = None
    batch_size: int = 16  # the notebook's
    large_batch: int | None = None  # the throughput preset's
    precision: str = "auto"  # of the fast configurations; auto: bf16 on CUDA and on CPUs with native bf16
    compile: bool | None = None
    test_images: int | None = None
    predict_batch: int | None = None
    rounds: int | None = None
    round_seconds: float | None = None
    job_images: int = 10_000
    job_epochs: int = 20
    e2e_images: int | None = None
    e2e_epochs: int | None = None  # 0 skips the end-to-end job
    data_dir: str | None = None  # keep (and reuse) the generated frames here


def resolve_config(config: BenchConfig, device: torch.device) -> BenchConfig:
    """Fill the device defaults in and check that the sizes fit together."""
    for key, value in DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    config.test_images = min(config.test_images, config.images)
    config.e2e_images = min(config.e2e_images, config.images)
    if config.images < max(config.batch_size, config.large_batch):
        raise ValueError(
            f"images ({config.images}) must hold at least one batch of {max(config.batch_size, config.large_batch)}"
        )
    if config.precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {config.precision!r}")
    if config.e2e_epochs and config.e2e_images < 40:
        raise ValueError("e2e_images must be at least 40 (5 subjects with both classes)")
    return config


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where oneDNN's bf16 kernels beat fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_precision(requested: str, device: torch.device) -> str:
    """The precision of the fast configurations."""
    if requested != "auto":
        return requested
    return "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"
