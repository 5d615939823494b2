"""The prediction job: test images to `submission.csv` with the model's tuned threshold.

Test images go through the same cache and the same evaluation preprocessing as validation. A test
image that cannot be decoded gets the notebook's fallback, a blank (black) image, and is listed in
the report, so the submission still has one row per test file.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlcore.cache import build_image_cache
from mlcore.data import list_test_images
from mlcore.disk import disk_full
from mlcore.engine import (
    Runtime,
    make_runtime,
    out_of_memory,
    precision_of,
    predict_logits,
    prediction_precision,
    prepare_model,
    select_device,
)
from mlcore.hooks import JobHooks, NullTracker, Tracker
from mlcore.params import PredictParams

# The notebook writes with pandas' `to_csv(index=False)`: LF line ends, minimal quoting (csv's own default is CRLF).
LINE_END = "\n"


def write_submission(ids: list[str], labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write `id,label` rows sorted by id (atomically), byte for byte as the notebook's `to_csv(index=False)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator=LINE_END)
        writer.writerow(["id", "label"])
        for i in sorted(range(len(ids)), key=ids.__getitem__):
            writer.writerow([ids[i], int(labels[i])])
    os.replace(tmp, path)
    return path


def write_probabilities(ids: list[str], probs: np.ndarray, labels: np.ndarray, bad: dict[int, str], path: Path) -> Path:
    """Write `id,probability,label,error` rows sorted by id, for analysis and ensembling."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator=LINE_END)
        writer.writerow(["id", "probability", "label", "error"])
        for i in sorted(range(len(ids)), key=ids.__getitem__):
            # Exact (the float's repr): the label is probability > threshold, checkable from this file.
            writer.writerow([ids[i], repr(float(probs[i])), int(labels[i]), bad.get(i, "")])
    return path


def _files_key(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\t{f.stat().st_size}\n".encode())
    return "test-" + h.hexdigest()[:16]


def predict_probabilities(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, runtime, should_stop=None
) -> np.ndarray:
    """Fall probabilities for cached uint8 images, in large batches."""
    batches = (
        images[i : i + batch_size].to(runtime.device, non_blocking=True) for i in range(0, len(images), batch_size)
    )
    logits, _ = predict_logits(model, batches, runtime=runtime, should_stop=should_stop)
    return torch.softmax(logits, dim=1)[:, 1].cpu().numpy().astype(np.float64)


def run_prediction(
    params: PredictParams,
    model: nn.Module,
    info: dict,
    *,
    tracker: Tracker | None = None,
    hooks: JobHooks | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Predict every test image with `model` (built from `info`: image_size, threshold); write the submission.

    `cache_dir` keeps the decoded test images on disk for the next prediction (None: in memory only).
    """
    if params.threshold is None and info.get("threshold") is None:
        # A silent 0.5 would hide that the model's tuned threshold is unknown (a runs:/ URI without one).
        raise LookupError(f"{params.model_uri} carries no tuned threshold: give one with --threshold")
    device = select_device(params.device)
    # The model's training precision unless the job overrides it (a seed-preset fp32 model: fp32 on CUDA).
    runtime = make_runtime(device, prediction_precision(params.precision, info.get("precision"), device))
    size = int(info["image_size"])
    # The model fixes image_size: only batch_size is the user's to lower.
    with out_of_memory(runtime, lower=("batch_size",), batch_size=params.batch_size, image_size=size):
        return _predict(params, model, info, runtime, tracker or NullTracker(), hooks or JobHooks(), cache_dir)


def _predict(
    params: PredictParams, model: nn.Module, info: dict, runtime: Runtime, tracker: Tracker, hooks: JobHooks, cache_dir
) -> dict:
    """The job itself, on `runtime`."""
    t0 = time.perf_counter()
    files = list_test_images(params.data_dir)
    device = runtime.device
    size = int(info["image_size"])
    threshold = params.threshold if params.threshold is not None else float(info["threshold"])
    cache = build_image_cache(
        files,
        size,
        device=device,
        key=_files_key(files),
        cache_dir=cache_dir,
        progress=lambda done, total: hooks.progress({"phase": "decoding", "done": done, "total": total}),
    )
    hooks.progress({"phase": "predicting", "done": 0, "total": len(files)})
    model = prepare_model(model, runtime)
    t_pred = time.perf_counter()
    probs = predict_probabilities(
        model, cache.images, batch_size=params.batch_size, runtime=runtime, should_stop=hooks.should_stop
    )
    predict_s = time.perf_counter() - t_pred
    hooks.progress({"phase": "predicting", "done": len(files), "total": len(files)})
    labels = (probs > threshold).astype(int)  # strict, as the notebook
    ids = [f.name for f in files]
    try:
        submission = write_submission(ids, labels, params.output)
        probabilities = write_probabilities(
            ids, probs, labels, cache.bad, submission.with_name(f"{submission.stem}_probabilities.csv")
        )
    except OSError as exc:
        full = disk_full(exc, Path(params.output).parent)
        if full is None:
            raise
        raise full from exc
    bad = [{"file": ids[i], "reason": r} for i, r in sorted(cache.bad.items())]
    result = {
        "run_id": tracker.run_id,
        "submission": str(submission),
        "probabilities": str(probabilities),
        "rows": len(ids),
        "positives": int(labels.sum()),
        "threshold": threshold,
        "threshold_source": "override" if params.threshold is not None else "model",
        "precision": precision_of(runtime),
        "bad_files": len(bad),
        "model_uri": params.model_uri,
        "model_version": info.get("version"),
        "decode_s": round(cache.seconds, 3),
        "predict_img_per_s": round(len(ids) / predict_s, 1) if predict_s else None,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    tracker.log_prediction({**result, "bad": bad}, [str(submission), str(probabilities)])
    hooks.progress({"phase": "done", "done": len(files), "total": len(files)})
    return result
