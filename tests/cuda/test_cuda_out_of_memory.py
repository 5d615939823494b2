"""A real CUDA out-of-memory error becomes the one-line OutOfMemory, and the next job in the process trains."""

from __future__ import annotations

import gc

import pytest
import torch

from mlcore.errors import OutOfMemory

pytestmark = pytest.mark.cuda
pytest.importorskip("pydantic", reason="the training job's parameters need pydantic (docs/GPU.md)")

from mlcore.hooks import NullTracker  # noqa: E402
from mlcore.params import train_params  # noqa: E402
from mlcore.train import run_training  # noqa: E402

LIMIT = 512 * 2**20  # the caching allocator refuses past this: ResNet50 at 224 px, batch 64, needs several GiB


def test_a_batch_far_too_big_fails_in_one_line_and_the_next_job_trains(train_values, cuda):
    total = torch.cuda.get_device_properties(cuda).total_memory
    too_big = {**train_values, "arch": "resnet50", "image_size": 224, "batch_size": 64, "epochs": 1}
    torch.cuda.set_per_process_memory_fraction(LIMIT / total, cuda)
    try:
        with pytest.raises(OutOfMemory) as caught:
            run_training(train_params(**too_big), tracker=NullTracker())
        message, cause = str(caught.value), caught.value.__cause__
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda)
    assert message == (
        f"out of memory on cuda:{cuda.index} at batch_size=64, image_size=224 (bf16): lower batch_size or image_size"
    )
    assert "\n" not in message
    assert isinstance(cause, torch.OutOfMemoryError)
    del caught, cause
    gc.collect()
    torch.cuda.empty_cache()
    summary = run_training(train_params(**{**train_values, "epochs": 1}), tracker=NullTracker())
    assert summary["epochs_run"] == 1 and summary["cache"].startswith("cuda")
