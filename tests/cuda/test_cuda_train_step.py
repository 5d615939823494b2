"""The training step on a GPU: eager, compiled (bs 256) and CUDA graphs (bs 16) agree with eager fp32; no host sync.

Every setting starts from the same weights and trains 20 steps on the same 20 batches (the demo
images, preprocessed once), through the engine's own `train_one_epoch`, `compile_model`,
`make_optimizer` and `make_runtime`. Per-step losses are compared with eager fp32's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mlcore.augment import AugmentSpec, BatchAugment, eval_preprocess
from mlcore.cache import ImageCache, build_image_cache, iterate_batches
from mlcore.data import discover_dataset
from mlcore.engine import compile_model, make_optimizer, make_runtime, prepare_model, train_one_epoch
from mlcore.model import build_model

pytestmark = pytest.mark.cuda

STEPS = 20
SIZE = 64
# |loss - eager fp32 loss| at every one of the 20 steps, in nats (losses start near ln 2 = 0.69).
# fp32 settings differ only by kernel choice and TF32; bf16 rounds activations to 8 bits of mantissa.
TOLERANCE = {"fp32": 0.01, "bf16": 0.05}
MEAN_TOLERANCE = {"fp32": 0.003, "bf16": 0.02}  # the mean over the 20 steps


@pytest.fixture(scope="module")
def demo_cache(gpu_demo):
    dataset = discover_dataset(gpu_demo / "train")
    cache = build_image_cache(dataset.paths, SIZE, device="cuda")
    return cache, torch.as_tensor(dataset.labels, dtype=torch.long)


def _batches(demo_cache, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """20 fixed batches (drawn with replacement), preprocessed as evaluation does: identical for every setting."""
    cache, labels = demo_cache
    gen = torch.Generator().manual_seed(batch)
    out = []
    for _ in range(STEPS):
        idx = torch.randint(0, len(cache), (batch,), generator=gen)
        out.append((eval_preprocess(cache.images[idx.cuda()]), labels[idx].cuda()))
    return out


def _losses(weights, batches, *, precision: str, compiled: bool, lr: float) -> list[float]:
    runtime = make_runtime(torch.device("cuda"), precision)
    model = prepare_model(build_model("resnet18", "none"), runtime)
    model.load_state_dict(weights)
    optimizer = make_optimizer(model, lr, 0.0, runtime.device)
    step_model = compile_model(model, batches[0][0].shape[0]) if compiled else model
    losses = []
    for batch in batches:  # one step per call: train_loss is that step's loss
        out = train_one_epoch(step_model, [batch], optimizer, augment=lambda x: x, runtime=runtime, steps=1)
        losses.append(out["train_loss"])
    return losses


def _weights():
    torch.manual_seed(0)
    return copy.deepcopy(build_model("resnet18", "none").state_dict())


@pytest.mark.parametrize(
    ("batch", "lr", "settings"),
    [
        (256, 3.2e-4, [("bf16", False), ("bf16", True)]),  # eager, torch.compile (default mode)
        (16, 2e-5, [("bf16", False), ("bf16", True)]),  # bs 16 compiled = CUDA graphs (mode reduce-overhead)
    ],
    ids=["bs256-compiled", "bs16-cuda-graphs"],
)
def test_losses_agree_with_eager_fp32_over_20_steps(batch, lr, settings, demo_cache, record_figures):
    weights, batches = _weights(), _batches(demo_cache, batch)
    reference = _losses(weights, batches, precision="fp32", compiled=False, lr=lr)
    assert all(np.isfinite(reference))
    figures = {}
    for precision, compiled in settings:
        name = f"{'compiled' if compiled else 'eager'} {precision}"
        losses = _losses(weights, batches, precision=precision, compiled=compiled, lr=lr)
        diff = np.abs(np.array(losses) - np.array(reference))
        figures[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
        assert diff.max() <= TOLERANCE[precision], f"{name} at bs{batch}: {diff.round(4).tolist()}"
        assert diff.mean() <= MEAN_TOLERANCE[precision], f"{name} at bs{batch}: mean {diff.mean():.4f}"
    record_figures(batch=batch, reference_first_last=[reference[0], reference[-1]], **figures)


def _guarded(batches):
    """Yield the batches with CUDA's sync debug mode on: any synchronising call inside a step raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield from batches
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize(
    ("batch", "compiled"), [(64, False), (256, True), (16, True)], ids=["eager", "compiled", "cuda-graphs"]
)
def test_a_training_step_never_waits_for_the_host(batch, compiled, demo_cache):
    """The real data path (cache -> iterate_batches -> BatchAugment) and step, sync-checked after warm-up."""
    small, small_labels = demo_cache
    cache = ImageCache(torch.cat([small.images] * 4), {}, "cuda", "decoded", 0.0)  # 512 images: 2 batches of 256
    labels = torch.cat([small_labels] * 4)
    runtime = make_runtime(torch.device("cuda"), "auto")
    torch.manual_seed(0)
    model = prepare_model(build_model("resnet18", "none"), runtime)
    optimizer = make_optimizer(model, 1e-4, 0.0, runtime.device)
    step_model = compile_model(model, batch) if compiled else model
    augment = BatchAugment(AugmentSpec(), compile=compiled)
    gen = torch.Generator(device="cuda").manual_seed(0)
    order = torch.Generator().manual_seed(0)
    steps = len(cache) // batch

    def epoch(guard: bool) -> dict:
        batches = iterate_batches(
            cache,
            np.arange(len(cache)),
            labels,
            batch,
            device=runtime.device,
            shuffle=True,
            generator=order,
            drop_last=True,
        )
        return train_one_epoch(
            step_model,
            _guarded(batches) if guard else batches,
            optimizer,
            augment=lambda x: augment(x, gen),
            runtime=runtime,
            steps=steps,
        )

    for _ in range(3):  # compilation, autotuning and CUDA graph recording happen here, unchecked
        epoch(guard=False)
    out = epoch(guard=True)  # the steps themselves: cudaStreamSynchronize, .item() or a blocking copy raises
    assert np.isfinite(out["train_loss"]) and out["images"] == steps * batch
