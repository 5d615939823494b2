"""The training engine: device set-up, one training epoch, one evaluation pass.

Loop functions take explicit objects and return dicts of numbers; they print nothing. Batches
arrive as uint8 tensors already on the device (see `cache.iterate_batches`); augmentation and
normalisation run there. On CUDA: bf16 autocast, channels_last, fused AdamW, cudnn.benchmark and
optional torch.compile. Losses are summed on the device and read once per epoch, so the step
never waits for the host.
"""

from __future__ import annotations

import errno
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mlcore.augment import eval_preprocess
from mlcore.errors import Cancelled, OutOfMemory
from mlcore.names import GPU_FRACTION_ENV

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
# Progress events: {"step", "steps", "images"}; a stop check raises Cancelled when it returns True.
StepCallback = Callable[[dict], None]


@dataclass(frozen=True)
class Runtime:
    """How the model runs on this device."""

    device: torch.device
    amp_dtype: torch.dtype | None

    def autocast(self):
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


CONTEXT_RESERVE = 0.05  # of a shared GPU's memory, left outside the slots' allocator caps for their CUDA contexts


def gpu_fraction() -> float:
    """The share of its GPU's memory this process may use: $DATASLAYER_GPU_FRACTION (a slot's 1/slots), else 1."""
    value = os.environ.get(GPU_FRACTION_ENV)
    try:
        fraction = float(value) if value else 1.0
    except ValueError:
        fraction = 0.0
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{GPU_FRACTION_ENV}={value!r}: expected a number in (0, 1]")
    return fraction


def make_runtime(device: torch.device, precision: str = "auto") -> Runtime:
    """bf16 autocast on CUDA (precision auto), fp32 elsewhere; cuDNN autotuning and TF32 on CUDA.

    On a GPU shared by several job slots the caching allocator is capped at this process's share, so
    one slot's job cannot take the memory of the others: past it, its allocations fail as out of memory.
    """
    cuda = device.type == "cuda"
    if cuda and gpu_fraction() < 1.0:
        # Less a little: each slot's CUDA context (~0.5 GB) lives outside the allocator's cap.
        torch.cuda.set_per_process_memory_fraction(gpu_fraction() * (1 - CONTEXT_RESERVE), device)
    if precision == "bf16" or (precision == "auto" and cuda):
        amp = torch.bfloat16
    else:
        amp = None
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, amp)


def precision_of(runtime: Runtime) -> str:
    """The precision a runtime computes in, as recorded on a model version: bf16, fp16 or fp32."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(runtime.amp_dtype, "fp32")


def prediction_precision(requested: str, trained: str | None, device: torch.device) -> str:
    """The precision a prediction runs in: the job's own choice, else the model's training precision on CUDA.

    `trained` is the model version's precision tag (None for a version registered before the tag
    existed: then "auto" as before). On CPU "auto" stays fp32 (bf16 on CPU is slow and was never a
    CPU training precision here); a job that wants bf16 on CPU asks for it.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda" and trained in ("bf16", "fp32"):
        return trained
    return "auto"


def prepare_model(model: nn.Module, runtime: Runtime) -> nn.Module:
    """Move the model to the device in channels_last, the layout the image cache yields."""
    # channels_last is what cuDNN's fastest convolutions want. On CPU (oneDNN) it measured +4-19% for
    # ResNet50 at 64-112 px and ResNet18 at 112 px, -6-11% only for ResNet18 at 64 px (see
    # docs/PERFORMANCE.md): on everywhere.
    return model.to(runtime.device).to(memory_format=torch.channels_last)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, OSError):  # mmap of the image cache
        return exc.errno == errno.ENOMEM
    # The CPU allocator raises a plain RuntimeError: "DefaultCPUAllocator: can't allocate memory: ..."
    return (
        isinstance(exc, RuntimeError)
        and not isinstance(exc, OutOfMemory)
        and ("can't allocate memory" in str(exc) or "DefaultCPUAllocator" in str(exc))
    )


@contextmanager
def out_of_memory(runtime: Runtime, lower: tuple[str, ...] | None = None, **values: int) -> Iterator[None]:
    """Turn running out of memory inside the block into OutOfMemory naming the device, `values` and the fields to lower.

    `lower` defaults to every field in `values`. The original error stays the OutOfMemory's cause.
    """
    try:
        yield
    except (RuntimeError, MemoryError, OSError) as exc:
        if not _is_out_of_memory(exc):
            raise
        device = runtime.device
        if device.type == "cuda":
            if device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.empty_cache()  # the cached blocks go back to the driver (other processes, nvidia-smi)
        precision = "bf16" if runtime.amp_dtype == torch.bfloat16 else "fp32"
        at = ", ".join(f"{k}={v}" for k, v in values.items())
        fields = " or ".join(lower or values)
        share = ""
        if device.type == "cuda" and gpu_fraction() < 1.0:
            share = f", or give it a GPU of its own: this worker may use {gpu_fraction():.0%} of the GPU's memory "
            share += "(DATASLAYER_SLOTS_PER_GPU)"
        raise OutOfMemory(f"out of memory on {device} at {at} ({precision}): lower {fields}{share}") from exc


def compile_model(model: nn.Module, batch_size: int) -> nn.Module:
    """torch.compile for training; CUDA graphs (mode reduce-overhead) for small batches on CUDA."""
    # At batch <= 64 the GPU finishes a ResNet step faster than Python launches its kernels, so
    # replaying a captured graph is what removes the gaps; large batches keep the default mode.
    cuda = next(model.parameters()).is_cuda
    return torch.compile(model, mode="reduce-overhead" if cuda and batch_size <= 64 else None)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (with weight_decay 0 it is the notebook's Adam), fused wherever PyTorch has the kernel."""
    params = list(model.parameters())
    try:
        # Fused is one pass over all parameters; on CPU it takes a ResNet50 step's update from ~33 ms
        # (foreach) to ~12 ms, 5-10% of a batch-16 step at 64 px.
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # a device or torch release without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """Per-step learning-rate multiplier: linear warm-up, then constant or cosine decay; None when flat."""
    if schedule == "constant" and warmup_steps == 0:
        return None

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    *,
    augment: Callable[[torch.Tensor], torch.Tensor],
    runtime: Runtime,
    steps: int,
    scheduler=None,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    report_every: float = 1.0,
) -> dict[str, float]:
    """One pass over the training batches: train_loss (mean of batch losses, as the notebook), images, seconds."""
    model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    seen, step, last_report = 0, 0, 0.0
    t0 = time.perf_counter()
    for step, (images, labels) in enumerate(batches, 1):
        if should_stop is not None and should_stop():
            raise Cancelled()
        x = augment(images)
        with runtime.autocast():
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach()
        seen += labels.shape[0]
        now = time.perf_counter()
        if on_step is not None and (now - last_report >= report_every or step == steps):
            on_step({"step": step, "steps": steps, "images": seen, "seconds": now - t0})
            last_report = now
    train_loss = (loss_sum / max(step, 1)).item()  # the one host sync of the epoch
    seconds = time.perf_counter() - t0
    return {
        "train_loss": train_loss,
        "images": seen,
        "seconds": seconds,
        "img_per_s": seen / seconds if seconds else 0.0,
    }


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    *,
    runtime: Runtime,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (float32, on the device) for every batch, preprocessed like the notebook's val_transform."""
    model.eval()
    logits, labels = [], []
    for batch in batches:
        if should_stop is not None and should_stop():
            raise Cancelled()
        images, y = batch if isinstance(batch, tuple) else (batch, None)
        with runtime.autocast():
            logits.append(model(eval_preprocess(images)).float())
        if y is not None:
            labels.append(y)
    if not logits:
        return torch.empty(0, 2), None
    return torch.cat(logits), torch.cat(labels) if labels else None


def evaluate(
    model: nn.Module, batches: Batches, *, runtime: Runtime, should_stop: Callable[[], bool] | None = None
) -> dict:
    """Validation loss (mean over images), fall probabilities and labels."""
    t0 = time.perf_counter()
    logits, labels = predict_logits(model, batches, runtime=runtime, should_stop=should_stop)
    loss = F.cross_entropy(logits, labels).item() if labels is not None else float("nan")
    probs = torch.softmax(logits, dim=1)[:, 1].cpu().numpy().astype(np.float64)
    return {
        "val_loss": loss,
        "probs": probs,
        "labels": labels.cpu().numpy() if labels is not None else None,
        "seconds": time.perf_counter() - t0,
    }
