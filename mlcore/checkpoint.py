"""Per-epoch training checkpoints: written atomically, read back with `weights_only=True`.

A checkpoint holds everything a redelivered job needs to continue where the dead one stopped:
model, optimizer, scheduler, epoch, best score and weights, metric history and RNG state. It never
depends on the tracking server being up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mlcore.disk import disk_full, ensure_free
from mlcore.errors import CheckpointError

CHECKPOINT_NAME = "last.pt"


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to directory/last.pt via a temporary file and an atomic rename."""
    directory = Path(directory)
    final = directory / CHECKPOINT_NAME
    tmp = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    needed = _tensor_bytes(state)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ensure_free(directory, needed)
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as exc:
        full = disk_full(exc, final, needed)
        if full is None:
            raise
        raise full from exc
    finally:
        tmp.unlink(missing_ok=True)  # only left when saving failed; the previous checkpoint stays whole
    return final


def _tensor_bytes(value) -> int:
    """What the tensors in a (nested) state take on disk, about."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(directory: str | os.PathLike | None) -> dict[str, Any] | None:
    """The last checkpoint in `directory`, or None; anything but plain tensors and containers is refused."""
    if directory is None:
        return None
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"refusing checkpoint {path}: {exc}") from None


def cpu_state(module_or_optimizer) -> dict:
    """A state dict copied to host memory (so the best weights survive later steps)."""

    def to_cpu(v):
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu", copy=True)
        if isinstance(v, dict):
            return {k: to_cpu(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(to_cpu(x) for x in v)
        return v

    return to_cpu(module_or_optimizer.state_dict())
