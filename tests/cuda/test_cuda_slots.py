"""Several job slots on one GPU (DATASLAYER_SLOTS_PER_GPU): each job's allocator and image cache stay in its share."""

from __future__ import annotations

import pytest
import torch

from mlcore.errors import OutOfMemory

pytestmark = pytest.mark.cuda
pytest.importorskip("pydantic", reason="the training job's parameters need pydantic (docs/GPU.md)")

from mlcore.cache import gpu_budget_bytes  # noqa: E402
from mlcore.engine import CONTEXT_RESERVE  # noqa: E402
from mlcore.hooks import NullTracker  # noqa: E402
from mlcore.names import GPU_FRACTION_ENV  # noqa: E402
from mlcore.params import train_params  # noqa: E402
from mlcore.train import run_training  # noqa: E402

SHARE = 512 * 2**20  # a slot this small: ResNet50 at 224 px, batch 64, needs several GiB


def test_a_job_past_its_slots_share_fails_naming_the_slots(train_values, cuda, monkeypatch):
    total = torch.cuda.get_device_properties(cuda).total_memory
    monkeypatch.setenv(GPU_FRACTION_ENV, repr(SHARE / total))
    too_big = {**train_values, "arch": "resnet50", "image_size": 224, "batch_size": 64, "epochs": 1}
    try:
        with pytest.raises(OutOfMemory) as caught:
            run_training(train_params(**too_big), tracker=NullTracker())
        assert torch.cuda.max_memory_reserved(cuda) <= SHARE * (1 - CONTEXT_RESERVE) + 2**21  # the cap held
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda)
    message = str(caught.value)
    assert "lower batch_size or image_size, or give it a GPU of its own" in message
    assert "DATASLAYER_SLOTS_PER_GPU" in message and "\n" not in message


def test_the_image_cache_budget_is_divided_between_slots(cuda, monkeypatch):
    free, total = torch.cuda.mem_get_info(cuda)
    whole = gpu_budget_bytes(cuda)
    monkeypatch.setenv(GPU_FRACTION_ENV, "0.25")
    assert gpu_budget_bytes(cuda) <= 0.4 * 0.25 * total and gpu_budget_bytes(cuda) <= whole
    monkeypatch.setenv("DATASLAYER_CACHE_GPU_GB", "8")
    assert gpu_budget_bytes(cuda) == 0.25 * 8 * 2**30  # the GPU's configured budget, shared
