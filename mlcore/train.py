"""The training job: the notebook's recipe end to end, on the fast data path, in four stages.

`load_data` (discover, split, decode once into the image cache) -> `build` (model, optimizer,
schedule, augmentation) -> `fit` (train and evaluate per epoch, keep the best epoch by
val_f1_weighted, checkpoint every epoch) -> `finish` (tune the threshold on the best model's
validation probabilities, log the evaluation, register the model). `TrainState` is what one epoch
hands the next and what a checkpoint holds, so a job started again with the same checkpoint
directory continues where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlcore.augment import AugmentSpec, BatchAugment
from mlcore.cache import ImageCache, build_image_cache, iterate_batches
from mlcore.checkpoint import cpu_state, load_checkpoint, save_checkpoint
from mlcore.data import DataError, Dataset, discover_dataset
from mlcore.engine import (
    Runtime,
    compile_model,
    evaluate,
    make_optimizer,
    make_runtime,
    make_scheduler,
    out_of_memory,
    precision_of,
    prepare_model,
    select_device,
    train_one_epoch,
)
from mlcore.hooks import JobHooks, NullTracker, Progress, Tracker
from mlcore.metrics import THRESHOLDS, at_threshold, epoch_metrics, f1_curve, report, tune_threshold
from mlcore.model import build_model
from mlcore.names import SELECTION_METRIC, Tag
from mlcore.params import TrainParams
from mlcore.split import fold_split, split_dataset, subject_folds

log = logging.getLogger(__name__)
# torch.compile pays for itself (~45 s on an H200) only when the job runs long enough.
COMPILE_MIN_STEPS = 2000
# Below this many optimizer steps per epoch a batch above 16 loses validation F1 at equal epochs
# (docs/PERFORMANCE.md, "Large batches and model quality": -0.13 at 3 steps, none at 10).
MIN_STEPS_PER_EPOCH = 8
SHOWN_METRICS = ("train_loss", "val_loss", SELECTION_METRIC, "val_f1")


@dataclass
class TrainData:
    """The dataset, its split (bad files dropped) and the decoded images."""

    dataset: Dataset
    train_idx: np.ndarray
    val_idx: np.ndarray
    labels: torch.Tensor
    cache: ImageCache
    skipped: list[dict[str, str]]


@dataclass
class TrainSetup:
    """What trains: the model (and its compiled step), optimizer, schedule and augmentation."""

    model: nn.Module
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    augment: BatchAugment
    compiled: bool
    steps_per_epoch: int


@dataclass
class TrainState:
    """What one epoch hands the next: the history and the best epoch so far; a checkpoint holds it."""

    epoch: int = 0  # the last epoch completed
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    pruned_at: int | None = None  # the epoch a sweep's pruner stopped the training at (not checkpointed)
    best_score: float = -1.0
    best_model: dict | None = None
    best_probs: np.ndarray | None = None

    @property
    def stale(self) -> int:
        """Epochs since the best one."""
        return len(self.history) - self.best_epoch

    def record(self, epoch: int, metrics: dict[str, float], model: nn.Module, probs: np.ndarray) -> None:
        """Add an epoch; it becomes the best if it beats the best score strictly (the notebook's rule)."""
        self.epoch = epoch
        self.history.append(metrics)
        if metrics[SELECTION_METRIC] > self.best_score:  # the first best epoch wins a tie
            self.best_epoch, self.best_score = epoch, metrics[SELECTION_METRIC]
            self.best_model, self.best_probs = cpu_state(model), probs

    def to_checkpoint(self, setup: TrainSetup) -> dict[str, Any]:
        """The checkpoint: this state plus model, optimizer, scheduler and the RNG (tensors and containers only)."""
        return {
            "model": cpu_state(setup.model),
            "optimizer": cpu_state(setup.optimizer),
            "scheduler": setup.scheduler.state_dict() if setup.scheduler is not None else {},
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_model": self.best_model,
            "best_probs": torch.as_tensor(self.best_probs),
            "history": self.history,
            "rng": torch.get_rng_state(),
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], setup: TrainSetup) -> TrainState:
        """Restore model, optimizer, scheduler and RNG from a checkpoint; return the state it held."""
        setup.model.load_state_dict(ckpt["model"])
        setup.optimizer.load_state_dict(ckpt["optimizer"])
        if setup.scheduler is not None and ckpt.get("scheduler"):
            setup.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        return cls(
            epoch=ckpt["epoch"],
            history=list(ckpt["history"]),
            best_epoch=ckpt["best_epoch"],
            best_score=ckpt["best_score"],
            best_model=ckpt["best_model"],
            best_probs=ckpt["best_probs"].numpy(),
        )


# One independent random stream per purpose, per epoch (numpy SeedSequence spawn keys), so two
# purposes never share a seed: with `seed * a + epoch` formulas seed 0 gave shuffle and augmentation
# the same seed, hence correlated draws, every epoch.
STREAMS = ("shuffle", "augment")


def epoch_seed(seed: int, epoch: int, purpose: str) -> int:
    """The 63-bit seed of one purpose's generator ("shuffle" or "augment") in one epoch of a job seeded `seed`."""
    ss = np.random.SeedSequence(seed, spawn_key=(epoch, STREAMS.index(purpose)))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _use_compile(params: TrainParams, device: torch.device, total_steps: int) -> bool:
    if params.compile == "auto":
        return device.type == "cuda" and total_steps >= COMPILE_MIN_STEPS
    return params.compile == "on"


def _drop_bad(indices: np.ndarray, bad: dict[int, str]) -> np.ndarray:
    return np.array([i for i in indices if i not in bad], dtype=np.int64)


def run_training(
    params: TrainParams,
    *,
    tracker: Tracker | None = None,
    hooks: JobHooks | None = None,
    checkpoint_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Train, select, tune and register one model; return the job's summary.

    `cache_dir` keeps the decoded images on disk for the next job (None: decode in memory only).
    With `cv_folds` (and no `cv_fold`) this is a cross-validation: `mlcore.cv.run_cv` trains the
    folds as child runs of `tracker`'s run and registers their ensemble.
    """
    if params.cv_folds is not None and params.cv_fold is None:
        from mlcore.cv import run_cv

        return run_cv(params, tracker=tracker, hooks=hooks, checkpoint_dir=checkpoint_dir, cache_dir=cache_dir)
    runtime = make_runtime(select_device(params.device), params.precision)
    tracker, hooks = tracker or NullTracker(), hooks or JobHooks()
    t_start = time.perf_counter()
    with out_of_memory(runtime, batch_size=params.batch_size, image_size=params.image_size):
        data = load_data(params, runtime, tracker, hooks, cache_dir)
        setup = build(params, runtime, data, tracker)
        state, first_step_s = fit(params, runtime, data, setup, tracker, hooks, checkpoint_dir, t_start)
        if state.pruned_at is not None:
            # Pruned: the run completed what was asked of it (the metrics of its epochs are valid), registers no model.
            tracker.set_tags({Tag.PRUNED: str(state.pruned_at)})
            return {
                "run_id": tracker.run_id,
                "pruned": state.pruned_at,
                "best_epoch": state.best_epoch,
                "epochs_run": len(state.history),
                "val_f1_weighted": round(state.best_score, 6),
                "wall_s": round(time.perf_counter() - t_start, 3),
            }
        tuned = finish(params, data, setup, state, tracker, hooks, precision=precision_of(runtime))
    best = state.history[state.best_epoch - 1]
    threshold, threshold_f1 = tuned.pop("threshold"), tuned.pop("threshold_f1")
    return {
        "run_id": tracker.run_id,
        **tuned,
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        "val_f1_weighted": round(state.best_score, 6),
        "val_f1": round(best["val_f1"], 6),
        "threshold": round(threshold, 6),
        "threshold_f1": round(threshold_f1, 6),
        "skipped_files": len(data.skipped),
        "train_images": len(data.train_idx),
        "val_images": len(data.val_idx),
        "decode_s": round(data.cache.seconds, 3),
        "cache": f"{data.cache.location} ({data.cache.source})",
        "compiled": setup.compiled,
        "first_step_s": round(first_step_s, 3) if first_step_s is not None else None,
        "wall_s": round(time.perf_counter() - t_start, 3),
    }


def split_indices(params: TrainParams, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: fold `cv_fold` of the `cv_folds` subject folds, or the `split` strategy's split."""
    if params.cv_fold is not None:
        folds = subject_folds(dataset.labels, dataset.subjects, params.cv_folds, params.seed)
        return fold_split(folds, params.cv_fold)
    return split_dataset(dataset, params.split, params.val_fraction, params.seed)


def decode(params: TrainParams, dataset: Dataset, runtime: Runtime, hooks: JobHooks, cache_dir) -> ImageCache:
    """The dataset's images decoded at the job's image size (from the on-disk cache when it has them)."""
    hooks.progress({"phase": "decoding", "done": 0, "total": len(dataset.samples)})
    return build_image_cache(
        dataset.paths,
        params.image_size,
        device=runtime.device,
        key=dataset.fingerprint,
        cache_dir=cache_dir,
        progress=lambda done, total: hooks.progress({"phase": "decoding", "done": done, "total": total}),
    )


def load_data(
    params: TrainParams,
    runtime: Runtime,
    tracker: Tracker,
    hooks: JobHooks,
    cache_dir,
    loaded: tuple[Dataset, ImageCache] | None = None,
) -> TrainData:
    """Discover and split the dataset, log it, decode it into the image cache and drop the bad files.

    `loaded`: the dataset and its decoded images already at hand (a cross-validation's folds share them).
    """
    dataset = loaded[0] if loaded is not None else discover_dataset(params.data_dir)
    train_idx, val_idx = split_indices(params, dataset)
    tracker.log_params(params.to_log())
    tracker.log_dataset(dataset, train_idx, val_idx)
    cache = loaded[1] if loaded is not None else decode(params, dataset, runtime, hooks, cache_dir)
    skipped = [{"file": dataset.samples[i].rel, "reason": reason} for i, reason in sorted(cache.bad.items())]
    train_idx, val_idx = _drop_bad(train_idx, cache.bad), _drop_bad(val_idx, cache.bad)
    labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    for name, idx in (("training", train_idx), ("validation", val_idx)):
        if len(idx) == 0 or len(set(labels[idx].tolist())) < 2:
            raise DataError(
                f"the {name} split of {dataset.root} lacks images of both classes "
                f"after skipping {len(skipped)} bad files"
            )
    return TrainData(dataset, train_idx, val_idx, labels, cache, skipped)


def build(params: TrainParams, runtime: Runtime, data: TrainData, tracker: Tracker) -> TrainSetup:
    """The model on the device, the optimizer, the learning-rate schedule and the batched augmentation."""
    torch.manual_seed(params.seed)
    model = prepare_model(build_model(params.arch, params.pretrained), runtime)
    steps_per_epoch = math.ceil(len(data.train_idx) / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    if params.batch_size > 16 and steps_per_epoch < MIN_STEPS_PER_EPOCH:
        note = (
            f"batch_size {params.batch_size} gives {steps_per_epoch} optimizer step{'s' * (steps_per_epoch != 1)} "
            f"per epoch on {len(data.train_idx)} training images; large batches lose quality below "
            f"{MIN_STEPS_PER_EPOCH}: lower batch_size or raise epochs"
        )
        log.warning(note)
        tracker.set_tags({Tag.WARNING: note})
    optimizer = make_optimizer(model, params.learning_rate, params.weight_decay, runtime.device)
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    scheduler = make_scheduler(optimizer, params.lr_schedule, warmup_steps, total_steps)
    compiled = _use_compile(params, runtime.device, total_steps)
    spec = AugmentSpec(
        flip=params.aug_flip,
        rotation=params.aug_rotation,
        brightness=params.aug_brightness,
        contrast=params.aug_contrast,
        saturation=params.aug_saturation,
        hue=params.aug_hue,
    )
    return TrainSetup(
        model=model,
        step_model=compile_model(model, params.batch_size) if compiled else model,
        optimizer=optimizer,
        scheduler=scheduler,
        augment=BatchAugment(spec, compile=compiled),
        compiled=compiled,
        steps_per_epoch=steps_per_epoch,
    )


def resume(checkpoint_dir, setup: TrainSetup, tracker: Tracker) -> TrainState:
    """The state to start from: the checkpoint's (its epochs re-sent to the tracker, which skips known ones) or new."""
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is None:
        return TrainState()
    state = TrainState.from_checkpoint(ckpt, setup)
    for epoch, metrics in enumerate(state.history, 1):
        tracker.log_epoch(epoch, metrics)
    tracker.set_tags({Tag.RESUMED_FROM_EPOCH: str(state.epoch)})
    return state


def fit(
    params: TrainParams,
    runtime: Runtime,
    data: TrainData,
    setup: TrainSetup,
    tracker: Tracker,
    hooks: JobHooks,
    checkpoint_dir,
    t_start: float,
) -> tuple[TrainState, float | None]:
    """The epoch loop from the checkpoint (or the start): train, evaluate, keep the best, checkpoint, log."""
    device = runtime.device
    state = resume(checkpoint_dir, setup, tracker)
    progress = Progress(
        hooks, epochs=params.epochs, steps_per_epoch=setup.steps_per_epoch, batch_size=params.batch_size
    )
    aug_gen = torch.Generator(device=device)
    first_step_s = None

    def on_step(event: dict) -> None:
        nonlocal first_step_s
        if first_step_s is None:  # the engine reports the first step of every epoch
            first_step_s = time.perf_counter() - t_start
        progress.step(event)

    for epoch in range(state.epoch + 1, params.epochs + 1):
        progress.epoch = epoch
        if params.early_stopping_patience and state.stale >= params.early_stopping_patience:
            break
        # Seeded per epoch, so a resumed job sees the same order and augmentation as an unbroken one.
        order_gen = torch.Generator().manual_seed(epoch_seed(params.seed, epoch, "shuffle"))
        aug_gen.manual_seed(epoch_seed(params.seed, epoch, "augment"))
        batches = iterate_batches(
            data.cache, data.train_idx, data.labels, params.batch_size, device=device, shuffle=True, generator=order_gen
        )
        train = train_one_epoch(
            setup.step_model,
            batches,
            setup.optimizer,
            augment=lambda x: setup.augment(x, aug_gen),
            runtime=runtime,
            steps=setup.steps_per_epoch,
            scheduler=setup.scheduler,
            on_step=on_step,
            should_stop=hooks.should_stop,
        )
        progress.phase("evaluating")
        with out_of_memory(runtime, eval_batch_size=params.eval_batch_size, image_size=params.image_size):
            val_batches = iterate_batches(data.cache, data.val_idx, data.labels, params.eval_batch_size, device=device)
            val = evaluate(setup.model, val_batches, runtime=runtime, should_stop=hooks.should_stop)
        metrics = {
            "train_loss": train["train_loss"],
            "val_loss": val["val_loss"],
            **epoch_metrics(val["labels"], val["probs"]),
            "train_img_per_s": train["img_per_s"],
            "lr": setup.optimizer.param_groups[0]["lr"],
        }
        state.record(epoch, metrics, setup.model, val["probs"])
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, state.to_checkpoint(setup))
        tracker.log_epoch(epoch, metrics)
        progress.metrics = {k: round(v, 4) for k, v in metrics.items() if k in SHOWN_METRICS}
        progress.phase("epoch_end", metrics=progress.metrics)
        if epoch < params.epochs and hooks.should_prune(epoch, metrics):
            state.pruned_at = epoch
            break
    return state, first_step_s


def finish(
    params: TrainParams,
    data: TrainData,
    setup: TrainSetup,
    state: TrainState,
    tracker: Tracker,
    hooks: JobHooks,
    *,
    precision: str,
) -> dict:
    """Tune the threshold on the best epoch's validation probabilities, log the evaluation, register the model.

    `precision` (bf16, fp16 or fp32, as trained) is recorded on the model version: prediction follows it.

    Returns what registration returned plus the tuned threshold and its F1.
    """
    hooks.progress({"phase": "logging", "epoch": state.epoch, "epochs": params.epochs})
    model = setup.model
    model.load_state_dict(state.best_model)
    evaluation = evaluate_best(params, data, state)
    tracker.log_evaluation(evaluation)
    best = state.history[state.best_epoch - 1]
    registered = tracker.log_model(
        model.to("cpu").eval(),
        {
            "arch": params.arch,
            "image_size": params.image_size,
            "threshold": evaluation["threshold"],
            "val_f1": best["val_f1"],
            "val_f1_weighted": state.best_score,
            "threshold_f1": evaluation["threshold_f1"],
            "precision": precision,
            "registered_model_name": params.registered_model_name,
        },
    )
    return {**registered, "threshold": evaluation["threshold"], "threshold_f1": evaluation["threshold_f1"]}


def evaluate_best(params: TrainParams, data: TrainData, state: TrainState) -> dict:
    """The best epoch's evaluation: the threshold tuned on its validation probabilities, curves and reports."""
    val_labels = data.labels[data.val_idx].numpy()
    probs = state.best_probs
    threshold, _ = tune_threshold(val_labels, probs, params.threshold_metric)
    scores = at_threshold(val_labels, probs, threshold)
    threshold_f1, threshold_accuracy = scores["f1"], scores["accuracy"]
    evaluation = {
        "history": state.history,
        "best_epoch": state.best_epoch,
        "threshold": threshold,
        "threshold_f1": threshold_f1,
        "threshold_accuracy": threshold_accuracy,
        "threshold_metric": params.threshold_metric,
        "thresholds": THRESHOLDS.tolist(),
        "f1_curve": f1_curve(val_labels, probs).tolist(),
        "labels": val_labels.tolist(),
        "probs": probs.tolist(),
        "files": [data.dataset.samples[i].rel for i in data.val_idx],
        "report": report(val_labels, probs),
        "report_at_threshold": report(val_labels, probs, threshold),
        "skipped": data.skipped,
        "dataset": data.dataset.counts(),
    }
    return evaluation
