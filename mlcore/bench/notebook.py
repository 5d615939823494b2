"""The notebook's pipeline, reproduced as written, for the benchmark's baseline rows.

PIL decode + torchvision transforms in a map-style Dataset, a DataLoader with num_workers=0,
the `CNN` wrapper around a torchvision ResNet with a 2-class head, fp32, Adam at 2e-5, and the
training step of its `train_model` (including the per-step `loss.item()`). Weights are random:
throughput does not depend on them, and the benchmark machine may be offline. Imports only torch,
torchvision and pillow.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.optim as optim
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models
from torchvision.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomRotation,
    Resize,
    ToTensor,
)

BATCH_SIZE = 16
LEARNING_RATE = 2e-5


def train_transform(size: int) -> Compose:
    """The notebook's `train_transform` at size x size."""
    return Compose(
        [
            Resize((size, size)),
            RandomHorizontalFlip(),
            RandomRotation(10),
            ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
            ToTensor(),
            Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )


def val_transform(size: int) -> Compose:
    """The notebook's `val_transform` at size x size."""
    return Compose([Resize((size, size)), ToTensor(), Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])


class ImageDataset(Dataset):
    """The notebook's dataset (its step-8 version: a blank image for a file that fails to open)."""

    def __init__(self, image_paths: Sequence[str | os.PathLike], labels=None, transform=None, size: int = 224):
        self.image_paths, self.labels, self.transform, self.size = list(image_paths), labels, transform, size

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, idx: int) -> dict:
        try:
            image = Image.open(self.image_paths[idx]).convert("RGB")
        except Exception:
            image = Image.new("RGB", (self.size, self.size))
        image = self.transform(image) if self.transform else image
        data = {"image": image, "path": str(self.image_paths[idx])}
        if self.labels is not None:
            data["label"] = torch.tensor(self.labels[idx], dtype=torch.long)
        return data


class CNN(nn.Module):
    """The notebook's wrapper: a torchvision ResNet whose fc is replaced by a 2-class head."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 2):
        super().__init__()
        self.model = getattr(models, arch)(weights=None)
        self.model.fc = nn.Linear(self.model.fc.in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@contextmanager
def as_written():
    """PyTorch's default backend flags while the notebook runs (the engine's runtime sets cuDNN autotuning and TF32)."""
    saved = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = False, False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = saved


def decode_resize(paths, size: int) -> int:
    """The notebook's per-image decode and Resize on one core (what every epoch repeats); returns images."""
    resize = Resize((size, size))
    for path in paths:
        resize(Image.open(path).convert("RGB"))
    return len(paths)


def _forever(loader: DataLoader) -> Iterator[dict]:
    """Batches of a DataLoader, epoch after epoch (a new shuffle each epoch, as the notebook's loop)."""
    while True:
        yield from loader


class NotebookTrainer:
    """The notebook's training step fed by its DataLoader; `run(k)` does k steps."""

    def __init__(self, paths, labels, *, arch: str, size: int, device: torch.device, batch_size: int = BATCH_SIZE):
        self.device, self.batch_size = device, batch_size
        dataset = ImageDataset(paths, labels, transform=train_transform(size), size=size)
        # drop_last only keeps every timed step at the full batch; the notebook's loader keeps the remainder.
        self.batches = _forever(DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True))
        self.model = CNN(arch).to(device)
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = optim.Adam(self.model.parameters(), lr=LEARNING_RATE)

        self.fixed: dict | None = None

    def _step(self, batch: dict) -> float:
        """The body of the notebook's training loop."""
        images = batch["image"].to(self.device)
        labels = batch["label"].to(self.device)
        self.optimizer.zero_grad()
        outputs = self.model(images)
        loss = self.criterion(outputs, labels)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def run(self, steps: int) -> int:
        """Do `steps` training steps exactly as the notebook's loop; return images seen."""
        with as_written():
            self.model.train()
            running_loss = 0.0
            for _ in range(steps):
                running_loss += self._step(next(self.batches))
        return steps * self.batch_size

    def run_ceiling(self, steps: int) -> int:
        """The same steps on one batch already on the device: the notebook's compute-only ceiling."""
        if self.fixed is None:
            batch = next(self.batches)
            self.fixed = {"image": batch["image"].to(self.device), "label": batch["label"].to(self.device)}
        with as_written():
            self.model.train()
            for _ in range(steps):
                self._step(self.fixed)
        return steps * self.batch_size


def notebook_predict(
    model: nn.Module, paths, *, size: int, device: torch.device, threshold: float = 0.5
) -> list[tuple[str, int]]:
    """The notebook's test loop (val_transform, batch 16, softmax, strict threshold); returns (id, label) rows."""
    loader = DataLoader(ImageDataset(paths, transform=val_transform(size), size=size), batch_size=BATCH_SIZE)
    model.eval()
    test_probs, test_ids = [], []
    with as_written(), torch.no_grad():
        for batch in loader:
            outputs = model(batch["image"].to(device))
            test_probs.extend(torch.softmax(outputs, dim=1)[:, 1].cpu().numpy())
            test_ids.extend(os.path.basename(p) for p in batch["path"])
    return [(i, int(p > threshold)) for i, p in zip(test_ids, test_probs)]
