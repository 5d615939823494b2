"""The training job: the notebook's recipe end to end, on the fast data path.

discover -> split -> decode once into the image cache -> train/evaluate per epoch (keep the best
epoch by val_f1_weighted) -> tune the threshold on the best model's validation probabilities ->
log the evaluation and register the model. A checkpoint is written every epoch, and a job started
again with the same checkpoint directory continues from it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from mlcore.augment import AugmentSpec, BatchAugment
from mlcore.cache import build_image_cache, default_cache_dir, iterate_batches
from mlcore.checkpoint import cpu_state, load_checkpoint, save_checkpoint
from mlcore.data import DataError, discover_dataset
from mlcore.engine import (
    Runtime,
    compile_model,
    evaluate,
    make_optimizer,
    make_runtime,
    make_scheduler,
    out_of_memory,
    prepare_model,
    select_device,
    train_one_epoch,
)
from mlcore.hooks import JobHooks, NullTracker, Progress, Tracker
from mlcore.metrics import THRESHOLDS, epoch_metrics, f1_curve, report, tune_threshold
from mlcore.model import build_model
from mlcore.params import TrainParams
from mlcore.split import split_dataset

log = logging.getLogger(__name__)
# torch.compile pays for itself (~45 s on an H200) only when the job runs long enough.
COMPILE_MIN_STEPS = 2000
# Below this many optimizer steps per epoch a batch above 16 loses validation F1 at equal epochs
# (docs/PERFORMANCE.md, "Large batches and model quality": -0.13 at 3 steps, none at 10).
MIN_STEPS_PER_EPOCH = 8


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
    cache_dir: str | Path | None = "default",
) -> dict:
    """Train, select, tune and register one model; return the job's summary."""
    runtime = make_runtime(select_device(params.device), params.precision)
    with out_of_memory(runtime, batch_size=params.batch_size, image_size=params.image_size):
        return _train(params, runtime, tracker or NullTracker(), hooks or JobHooks(), checkpoint_dir, cache_dir)


def _train(params: TrainParams, runtime: Runtime, tracker: Tracker, hooks: JobHooks, checkpoint_dir, cache_dir) -> dict:
    """The job itself, on `runtime`."""
    t_start = time.perf_counter()
    device = runtime.device
    dataset = discover_dataset(params.data_dir)
    train_idx, val_idx = split_dataset(dataset, params.split, params.val_fraction, params.seed)
    tracker.log_params(params.to_log())
    tracker.log_dataset(dataset, train_idx, val_idx)

    hooks.progress({"phase": "decoding", "done": 0, "total": len(dataset.samples)})
    cache = build_image_cache(
        dataset.paths,
        params.image_size,
        device=device,
        key=dataset.fingerprint,
        cache_dir=default_cache_dir() if cache_dir == "default" else cache_dir,
        progress=lambda done, total: hooks.progress({"phase": "decoding", "done": done, "total": total}),
    )
    skipped = [{"file": dataset.samples[i].rel, "reason": reason} for i, reason in sorted(cache.bad.items())]
    train_idx, val_idx = _drop_bad(train_idx, cache.bad), _drop_bad(val_idx, cache.bad)
    labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    for name, idx in (("training", train_idx), ("validation", val_idx)):
        if len(idx) == 0 or len(set(labels[idx].tolist())) < 2:
            raise DataError(
                f"the {name} split of {dataset.root} lacks images of both classes "
                f"after skipping {len(skipped)} bad files"
            )

    torch.manual_seed(params.seed)
    model = prepare_model(build_model(params.arch, params.pretrained), runtime)
    steps_per_epoch = math.ceil(len(train_idx) / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    if params.batch_size > 16 and steps_per_epoch < MIN_STEPS_PER_EPOCH:
        note = (
            f"batch_size {params.batch_size} gives {steps_per_epoch} optimizer step{'s' * (steps_per_epoch != 1)} "
            f"per epoch on {len(train_idx)} "
            f"training images; large batches lose quality below {MIN_STEPS_PER_EPOCH}: lower batch_size or raise epochs"
        )
        log.warning(note)
        tracker.set_tags({"dataslayer.warning": note})
    optimizer = make_optimizer(model, params.learning_rate, params.weight_decay, device)
    scheduler = make_scheduler(
        optimizer, params.lr_schedule, round(params.warmup_epochs * steps_per_epoch), total_steps
    )
    compiled = _use_compile(params, device, total_steps)
    step_model = compile_model(model, params.batch_size) if compiled else model
    spec = AugmentSpec(
        flip=params.aug_flip,
        rotation=params.aug_rotation,
        brightness=params.aug_brightness,
        contrast=params.aug_contrast,
        saturation=params.aug_saturation,
        hue=params.aug_hue,
    )
    augment = BatchAugment(spec, compile=compiled)
    aug_gen = torch.Generator(device=device)

    best = {"score": -1.0, "epoch": 0, "state": None, "probs": None}
    history: list[dict[str, float]] = []
    start_epoch = 1
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        best = {
            "score": ckpt["best_score"],
            "epoch": ckpt["best_epoch"],
            "state": ckpt["best_model"],
            "probs": ckpt["best_probs"].numpy(),
        }
        history = list(ckpt["history"])
        start_epoch = ckpt["epoch"] + 1
        for epoch, metrics in enumerate(history, 1):
            tracker.log_epoch(epoch, metrics)  # the tracker skips epochs it already has
        tracker.set_tags({"dataslayer.resumed_from_epoch": str(ckpt["epoch"])})

    progress = Progress(hooks, epochs=params.epochs, steps_per_epoch=steps_per_epoch, batch_size=params.batch_size)
    stale = len(history) - best["epoch"]  # epochs since the best one
    first_step_s = None

    def on_step(event: dict) -> None:
        nonlocal first_step_s
        if first_step_s is None:  # the engine reports the first step of every epoch
            first_step_s = time.perf_counter() - t_start
        progress.step(event)

    for epoch in range(start_epoch, params.epochs + 1):
        progress.epoch = epoch
        if params.early_stopping_patience and stale >= params.early_stopping_patience:
            break
        # Seeded per epoch, so a resumed job sees the same order and augmentation as an unbroken one.
        order_gen = torch.Generator().manual_seed(params.seed * 100_003 + epoch)
        aug_gen.manual_seed(params.seed * 100_019 + epoch)
        batches = iterate_batches(
            cache, train_idx, labels, params.batch_size, device=device, shuffle=True, generator=order_gen
        )
        train = train_one_epoch(
            step_model,
            batches,
            optimizer,
            augment=lambda x: augment(x, aug_gen),
            runtime=runtime,
            steps=steps_per_epoch,
            scheduler=scheduler,
            on_step=on_step,
            should_stop=hooks.should_stop,
        )
        progress.phase("evaluating")
        with out_of_memory(runtime, eval_batch_size=params.eval_batch_size, image_size=params.image_size):
            val = evaluate(
                model,
                iterate_batches(cache, val_idx, labels, params.eval_batch_size, device=device),
                runtime=runtime,
                should_stop=hooks.should_stop,
            )
        metrics = {
            "train_loss": train["train_loss"],
            "val_loss": val["val_loss"],
            **epoch_metrics(val["labels"], val["probs"]),
            "train_img_per_s": train["img_per_s"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(metrics)
        if metrics["val_f1_weighted"] > best["score"]:  # strict, like the notebook: the first best epoch wins
            best = {
                "score": metrics["val_f1_weighted"],
                "epoch": epoch,
                "state": cpu_state(model),
                "probs": val["probs"],
            }
            stale = 0
        else:
            stale += 1
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir,
                {
                    "model": cpu_state(model),
                    "optimizer": cpu_state(optimizer),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "epoch": epoch,
                    "best_score": best["score"],
                    "best_epoch": best["epoch"],
                    "best_model": best["state"],
                    "best_probs": torch.as_tensor(best["probs"]),
                    "history": history,
                    "rng": torch.get_rng_state(),
                },
            )
        tracker.log_epoch(epoch, metrics)
        progress.metrics = {
            k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "val_loss", "val_f1_weighted", "val_f1")
        }
        progress.phase("epoch_end", metrics=progress.metrics)

    progress.phase("logging")
    model.load_state_dict(best["state"])
    val_labels = labels[val_idx].numpy()
    threshold, threshold_f1 = tune_threshold(val_labels, best["probs"])
    evaluation = {
        "history": history,
        "best_epoch": best["epoch"],
        "threshold": threshold,
        "threshold_f1": threshold_f1,
        "thresholds": THRESHOLDS.tolist(),
        "f1_curve": f1_curve(val_labels, best["probs"]).tolist(),
        "labels": val_labels.tolist(),
        "probs": best["probs"].tolist(),
        "files": [dataset.samples[i].rel for i in val_idx],
        "report": report(val_labels, best["probs"]),
        "report_at_threshold": report(val_labels, best["probs"], threshold),
        "skipped": skipped,
        "dataset": dataset.counts(),
    }
    tracker.log_evaluation(evaluation)
    best_metrics = history[best["epoch"] - 1]
    registered = tracker.log_model(
        model.to("cpu").eval(),
        {
            "arch": params.arch,
            "image_size": params.image_size,
            "threshold": threshold,
            "val_f1": best_metrics["val_f1"],
            "val_f1_weighted": best["score"],
            "threshold_f1": threshold_f1,
            "registered_model_name": params.registered_model_name,
        },
    )
    return {
        "run_id": tracker.run_id,
        **registered,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "val_f1_weighted": round(best["score"], 6),
        "val_f1": round(best_metrics["val_f1"], 6),
        "threshold": round(threshold, 6),
        "threshold_f1": round(threshold_f1, 6),
        "skipped_files": len(skipped),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "decode_s": round(cache.seconds, 3),
        "cache": f"{cache.location} ({cache.source})",
        "compiled": compiled,
        "first_step_s": round(first_step_s, 3) if first_step_s is not None else None,
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
