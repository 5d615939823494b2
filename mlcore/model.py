"""The classifier: a torchvision ResNet with a 2-class head, and its initial weights.

`imagenet` weights come through torchvision's weights API (`IMAGENET1K_V1`, what the notebook's
`pretrained=True` meant) from the torch hub cache, downloading them when possible; offline without
them the error says where the file goes. Local files are loaded with `weights_only=True`; a
notebook checkpoint (`CNN` wrapper, keys prefixed `model.`) and an ImageNet file both work.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from mlcore.errors import WeightsUnavailable

NUM_CLASSES = 2
ARCHS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
}


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision looks for (and downloads) the ImageNet weights of `arch`."""
    weights = ARCHS[arch][1]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    weights = ARCHS[arch][1]
    target = imagenet_weights_path(arch)
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # URLError, socket errors, a half-downloaded file
        raise WeightsUnavailable(
            f"ImageNet weights for {arch} are not in the torch cache and cannot be downloaded ({exc}). "
            f"Put {target.name} (from {weights.url}) at {target}, or choose pretrained 'none' (train from scratch)."
        ) from None


def _local_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(f"cannot load weights from {path}: {exc}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # one of our training checkpoints
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} holds no state dict")
    return {k.removeprefix("model."): v for k, v in state.items()}


def build_model(arch: str = "resnet50", pretrained: str = "none") -> nn.Module:
    """A ResNet with a 2-class head, initialised from `pretrained` (imagenet, none or a file)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    model = ARCHS[arch][0](weights=None)
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    if pretrained != "none":
        state = _imagenet_state(arch) if pretrained == "imagenet" else _local_state(pretrained)
        head = state.get("fc.weight")
        if head is not None and head.shape[0] != NUM_CLASSES:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # keep our fresh 2-class head
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensors of the wrong shape: another architecture's weights
            raise WeightsUnavailable(
                f"weights {pretrained} do not fit {arch}: {str(exc).splitlines()[-1].strip()}"
            ) from None
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise WeightsUnavailable(
                f"weights {pretrained} do not fit {arch}: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    return model


class FoldEnsemble(nn.Module):
    """The mean of K models' class probabilities, as log-probabilities: `softmax(output)` is that mean.

    A cross-validation's registered model: its K fold models (`members.0.`, `members.1.`, ... in the
    state dict) see the same batch, and the output's softmax is the average of their softmaxes, so
    prediction code treats it as one model with 2-class logits.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def build_ensemble(arch: str, folds: int) -> FoldEnsemble:
    """An untrained FoldEnsemble of `folds` ResNets of `arch` (weights come from a state dict)."""
    return FoldEnsemble([build_model(arch, "none") for _ in range(folds)])
