"""The project's paths as benchmark configurations: training, its compute ceiling, prediction, the job.

Each class wraps the engine's own functions (`build_image_cache`, `iterate_batches`,
`BatchAugment`, `train_one_epoch`, `predict_logits`) with the settings under test, so the figures
are those of the code a training job runs. Imports only torch, torchvision, numpy, pillow and
scikit-learn; the end-to-end job (which needs pydantic for its parameters) is imported lazily.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from mlcore.augment import AugmentSpec, BatchAugment, eval_preprocess
from mlcore.cache import ImageCache, build_image_cache, iterate_batches
from mlcore.engine import compile_model, make_optimizer, make_runtime, predict_logits, prepare_model, train_one_epoch
from mlcore.model import build_model


@dataclass(frozen=True)
class TrainSpec:
    """One training setting: batch size, precision (fp32 or bf16), compiled or eager, learning rate."""

    label: str
    batch: int
    precision: str
    compiled: bool
    lr: float


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class EngineTrainer:
    """The engine's training step fed from the image cache; `run_ceiling` feeds it a fixed device batch."""

    def __init__(self, spec: TrainSpec, cache: ImageCache, labels: torch.Tensor, *, arch: str, device: torch.device):
        t0 = time.perf_counter()
        self.spec, self.runtime = spec, make_runtime(device, spec.precision)
        torch.manual_seed(0)
        model = prepare_model(build_model(arch, "none"), self.runtime)
        self.optimizer = make_optimizer(model, spec.lr, 0.0, device)
        self.model = compile_model(model, spec.batch) if spec.compiled else model
        augment = BatchAugment(AugmentSpec(), compile=spec.compiled)
        generator = torch.Generator(device=device).manual_seed(1)
        self.augment = lambda x: augment(x, generator)
        self.batches = self._stream(cache, labels, device)
        size = cache.image_size
        fixed = torch.randint(0, 256, (spec.batch, 3, size, size), dtype=torch.uint8, device=device)
        # The ceiling's input is what the augmentation hands the model: float32 in [-1, 1], same layout.
        self.fixed = (self.augment(fixed), torch.randint(0, 2, (spec.batch,), device=device))
        self.setup_s = time.perf_counter() - t0

    def _stream(self, cache: ImageCache, labels: torch.Tensor, device: torch.device) -> Iterator:
        """Shuffled full batches from the cache, epoch after epoch, as a training job draws them."""
        order = torch.Generator().manual_seed(0)
        indices = np.arange(len(cache))
        while True:
            yield from iterate_batches(
                cache, indices, labels, self.spec.batch, device=device, shuffle=True, generator=order, drop_last=True
            )

    def run(self, steps: int) -> int:
        """`steps` steps of the data path: cache -> augmentation -> train step; returns images."""
        batches = itertools.islice(self.batches, steps)
        out = train_one_epoch(
            self.model, batches, self.optimizer, augment=self.augment, runtime=self.runtime, steps=steps
        )
        return out["images"]

    def run_ceiling(self, steps: int) -> int:
        """`steps` identical train steps on one batch already on the device (no loading, no augmentation)."""
        batches = itertools.repeat(self.fixed, steps)
        out = train_one_epoch(self.model, batches, self.optimizer, augment=_identity, runtime=self.runtime, steps=steps)
        return out["images"]


class EnginePredictor:
    """JPEG files -> image cache -> `predict_logits` in large batches -> threshold -> sorted (id, label) rows."""

    def __init__(
        self, files: Sequence[Path], *, arch: str, size: int, device: torch.device, precision: str, batch: int
    ):
        self.files, self.size, self.device, self.batch = list(files), size, device, batch
        self.runtime = make_runtime(device, precision)
        torch.manual_seed(0)
        self.model = prepare_model(build_model(arch, "none"), self.runtime).eval()
        self.last: dict[str, float] = {}

    def predict_rows(self, threshold: float = 0.5) -> list[tuple[str, int]]:
        """One prediction job without tracking; records its decode and inference seconds in `last`."""
        t0 = time.perf_counter()
        cache = build_image_cache(self.files, self.size, device=self.device)
        t1 = time.perf_counter()
        images, b = cache.images, self.batch
        batches = (images[i : i + b].to(self.device, non_blocking=True) for i in range(0, len(images), b))
        logits, _ = predict_logits(self.model, batches, runtime=self.runtime)
        probs = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()  # the one host sync
        labels = (probs > threshold).astype(int)  # strict, as the notebook
        rows = sorted(zip((f.name for f in self.files), labels.tolist()))
        self.last = {"decode_s": t1 - t0, "infer_s": time.perf_counter() - t1}
        return rows

    def run(self, jobs: int) -> int:
        """`jobs` whole prediction jobs; returns images predicted."""
        for _ in range(jobs):
            self.predict_rows()
        return jobs * len(self.files)


class InferenceCeiling:
    """Forward passes only, on one large batch already on the device, in the predictor's runtime."""

    def __init__(self, predictor: EnginePredictor):
        self.model, self.runtime = predictor.model, predictor.runtime
        x = torch.randint(
            0, 256, (predictor.batch, 3, predictor.size, predictor.size), dtype=torch.uint8, device=predictor.device
        )
        self.x = eval_preprocess(x)

    @torch.inference_mode()
    def run(self, steps: int) -> int:
        """`steps` forward passes; returns images."""
        for _ in range(steps):
            with self.runtime.autocast():
                self.model(self.x)
        return steps * self.x.shape[0]


def metrics_seconds(n_val: int) -> dict[str, float]:
    """Seconds of the per-epoch validation metrics and of the final threshold search + reports on n_val images."""
    from mlcore.metrics import epoch_metrics, f1_curve, report, tune_threshold

    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 2, n_val), rng.random(n_val)
    t0 = time.perf_counter()
    epoch_metrics(labels, probs)
    t1 = time.perf_counter()
    threshold, _ = tune_threshold(labels, probs)
    f1_curve(labels, probs)
    report(labels, probs)
    report(labels, probs, threshold)
    return {"epoch_metrics_s": t1 - t0, "final_s": time.perf_counter() - t1}


def project_job(
    *,
    images: int,
    epochs: int,
    val_fraction: float,
    train_rate: float,
    eval_rate: float,
    decode_rate: float | None = None,
    start_s: float = 0.0,
    per_epoch_s: float = 0.0,
    final_s: float = 0.0,
) -> dict:
    """Wall time of a training job from its measured parts (decode, start-up, epochs of train + eval, threshold)."""
    n_val = round(images * val_fraction)
    n_train = images - n_val
    decode_s = images / decode_rate if decode_rate else 0.0
    epoch_s = n_train / train_rate + n_val / eval_rate + per_epoch_s
    total = decode_s + start_s + epochs * epoch_s + final_s
    return {
        "images": images,
        "epochs": epochs,
        "decode_s": decode_s,
        "start_s": start_s,
        "epoch_s": epoch_s,
        "final_s": final_s,
        "wall_s": total,
    }


def link_layout(frames: Sequence[Path], labels: Sequence[int], root: Path, subjects: int = 5) -> Path:
    """Arrange the benchmark frames in the competition layout (hard links, copies where links fail); returns train/."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)  # a kept data folder holds the previous run's layout
    train = root / "train"
    for i, (src, label) in enumerate(zip(frames, labels)):
        # Consecutive frames share a subject style in write_jpeg_frames, so subjects are runs of 8.
        folder = train / f"subject-{(i // 8) % subjects + 1:02d}" / ("fall" if label else "non_fall")
        folder.mkdir(parents=True, exist_ok=True)
        dst = folder / f"{i:05d}-{src.name}"
        try:
            dst.hardlink_to(src)
        except OSError:
            shutil.copyfile(src, dst)
    return train


def run_end_to_end(
    train_dir: Path,
    *,
    arch: str,
    size: int,
    epochs: int,
    batch: int,
    precision: str,
    compile_mode: str,
    device: torch.device,
) -> dict:
    """`run_training` with a NullTracker (MLflow excluded); skipped with a note when pydantic is missing."""
    try:
        from mlcore.hooks import NullTracker
        from mlcore.params import TrainParams
        from mlcore.train import run_training
    except ImportError as exc:
        return {
            "skipped": f"end-to-end job needs the project's parameter model ({exc}); the measured parts above do not"
        }
    params = TrainParams(
        data_dir=train_dir,
        epochs=epochs,
        batch_size=batch,
        learning_rate=2e-5,
        image_size=size,
        arch=arch,
        pretrained="none",
        precision=precision,
        compile=compile_mode,
        device=str(device),
        seed=0,
    )
    t0 = time.perf_counter()
    summary = run_training(params, tracker=NullTracker(), cache_dir=None)
    return {
        "wall_s": time.perf_counter() - t0,
        **{
            k: summary[k]
            for k in (
                "train_images",
                "val_images",
                "epochs_run",
                "decode_s",
                "first_step_s",
                "compiled",
                "val_f1_weighted",
            )
        },
    }
