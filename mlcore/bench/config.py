"""What the benchmark measures: its options (`BenchConfig`), the per-device defaults, the fast precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlcore.bench.options import option

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


ARCHS = ("resnet18", "resnet34", "resnet50")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class BenchConfig:
    """What to measure, one command-line option per field; fields left None take the device's DEFAULTS."""

    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    images: int | None = option(None, "640x480 JPEG frames to generate, the training data of every configuration")
    image_size: int | None = option(None, "training size in pixels")
    arch: str | None = option(None, "model", choices=ARCHS)
    batch_size: int = option(16, "the notebook's batch size")
    large_batch: int | None = option(None, "the throughput preset's batch")
    precision: str = option(
        "auto",
        "precision of the fast configurations; auto: bf16 on CUDA and on CPUs with native bf16",
        choices=PRECISIONS,
    )
    compile: bool | None = option(None, "also measure torch.compile")
    test_images: int | None = option(None, "images predicted per prediction job, at most --images")
    predict_batch: int | None = option(None, "inference batch")
    rounds: int | None = option(None, "interleaved timed rounds per configuration, median reported")
    round_seconds: float | None = option(None, "target seconds per configuration per round")
    job_images: int = option(10_000, "images of the projected full job")
    job_epochs: int = option(20, "epochs of the projected full job")
    e2e_images: int | None = option(None, "images of the job measured end to end, at most --images")
    e2e_epochs: int | None = option(None, "epochs of the job measured end to end, 0 skips it")
    data_dir: str | None = option(None, "keep the generated frames here and reuse them next time")


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
    if config.precision not in PRECISIONS:
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
