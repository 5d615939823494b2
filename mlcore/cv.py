"""Cross-validation by subject: K folds trained one after another, one fold-ensemble model registered.

`run_cv` (what `run_training` calls for `cv_folds` K without `cv_fold`) cuts the subjects into K
folds (`mlcore.split.subject_folds`: whole subjects, balanced by size and fall rate), decodes the
images once, and trains each fold as a child run of the job's run: a normal training run whose
validation set is its fold (`cv_fold` i), logging its epochs, evaluation and tuned threshold, but
registering no model. The parent then logs the mean and standard deviation (ddof 0) over the folds
of each fold's final validation metrics, the out-of-fold predictions (every image predicted by the
model that did not train on it), and registers ONE model version: the `FoldEnsemble` of the K
best-epoch models (the mean of their fall probabilities), with its threshold tuned on the
out-of-fold probabilities for the job's `threshold_metric`. Its version tags carry the out-of-fold
F1 figures in place of a single validation set's.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from mlcore.data import discover_dataset
from mlcore.engine import make_runtime, out_of_memory, precision_of, select_device
from mlcore.hooks import JobHooks, NullTracker, Tracker
from mlcore.metrics import at_threshold, epoch_metrics, tune_threshold
from mlcore.model import FoldEnsemble, build_model
from mlcore.names import BEST_SELECTION_METRIC, SELECTION_METRIC, Tag
from mlcore.params import TrainParams, build
from mlcore.split import subject_folds
from mlcore.train import build as build_setup
from mlcore.train import decode, evaluate_best, fit, load_data

log = logging.getLogger(__name__)
# Each fold's final validation figures (its best epoch's, and at its own tuned threshold) the parent summarises.
FOLD_METRICS = (
    BEST_SELECTION_METRIC,
    "best_val_f1",
    "val_loss",
    "val_accuracy",
    "val_roc_auc",
    "val_f1_at_threshold",
    "val_accuracy_at_threshold",
    "threshold",
)


def fold_params(params: TrainParams, fold: int) -> TrainParams:
    """The validated parameters of one fold's child run: the parent's plus `cv_fold`."""
    return build(TrainParams, {**params.model_dump(), "cv_fold": fold})


def _fold_hooks(hooks: JobHooks, fold: int, folds: int) -> JobHooks:
    """The job's hooks for one fold: progress events carry the fold; a fold is never pruned."""
    return JobHooks(
        progress=lambda event: hooks.progress({**event, "fold": fold, "folds": folds}), should_stop=hooks.should_stop
    )


def run_cv(
    params: TrainParams,
    *,
    tracker: Tracker | None = None,
    hooks: JobHooks | None = None,
    checkpoint_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Train the `cv_folds` folds as child runs of `tracker`'s run; log their summary, register the ensemble."""
    if params.cv_folds is None or params.cv_fold is not None:
        raise ValueError("run_cv needs cv_folds and no cv_fold")
    tracker, hooks = tracker or NullTracker(), hooks or JobHooks()
    t_start = time.perf_counter()
    k = params.cv_folds
    runtime = make_runtime(select_device(params.device), params.precision)
    dataset = discover_dataset(params.data_dir)
    folds = subject_folds(dataset.labels, dataset.subjects, k, params.seed)  # refuses a bad K naming cv_folds
    tracker.log_params(params.to_log())
    tracker.set_tags({Tag.CV_FOLDS: str(k), Tag.DATASET_FINGERPRINT: dataset.fingerprint})
    with out_of_memory(runtime, batch_size=params.batch_size, image_size=params.image_size):
        cache = decode(params, dataset, runtime, hooks, cache_dir)
    n = len(dataset.samples)
    oof = np.full(n, np.nan)
    members, rows = [], []
    for fold in range(k):
        child_params = fold_params(params, fold)
        child_hooks = _fold_hooks(hooks, fold, k)
        tags = {Tag.JOB_TYPE: "train", Tag.CV_FOLD: str(fold), Tag.CV_FOLDS: str(k)}
        with tracker.child(f"fold-{fold}", tags) as child:
            with out_of_memory(runtime, batch_size=params.batch_size, image_size=params.image_size):
                data = load_data(child_params, runtime, child, child_hooks, cache_dir, loaded=(dataset, cache))
                setup = build_setup(child_params, runtime, data, child)
                fold_dir = Path(checkpoint_dir) / f"fold-{fold}" if checkpoint_dir is not None else None
                state, _ = fit(child_params, runtime, data, setup, child, child_hooks, fold_dir, time.perf_counter())
            child_hooks.progress({"phase": "logging", "epoch": state.epoch, "epochs": params.epochs})
            evaluation = evaluate_best(child_params, data, state)
            child.log_evaluation(evaluation)
        oof[data.val_idx] = state.best_probs
        model = build_model(params.arch, "none")
        model.load_state_dict(state.best_model)
        members.append(model)
        best = state.history[state.best_epoch - 1]
        figures = {
            BEST_SELECTION_METRIC: state.best_score,
            "best_val_f1": best["val_f1"],
            "val_loss": best["val_loss"],
            "val_accuracy": best["val_accuracy"],
            "val_roc_auc": best.get("val_roc_auc", float("nan")),
            "val_f1_at_threshold": evaluation["threshold_f1"],
            "val_accuracy_at_threshold": evaluation["threshold_accuracy"],
            "threshold": evaluation["threshold"],
        }
        subjects = sorted({dataset.subjects[i] for i in data.val_idx})
        rows.append(
            {
                "fold": fold,
                "run_id": child.run_id,
                "subjects": subjects,
                "train_images": len(data.train_idx),
                "val_images": len(data.val_idx),
                "best_epoch": state.best_epoch,
                "skipped_files": len(data.skipped),
                **{m: float(v) for m, v in figures.items()},
            }
        )
        log.info("fold %d/%d (%s): val F1 %.4f", fold + 1, k, ", ".join(subjects), best["val_f1"])

    hooks.progress({"phase": "logging", "epoch": params.epochs, "epochs": params.epochs})
    predicted = np.flatnonzero(~np.isnan(oof))
    labels = np.asarray(dataset.labels)[predicted]
    probs = oof[predicted]
    threshold, _ = tune_threshold(labels, probs, params.threshold_metric)
    at = at_threshold(labels, probs, threshold)
    oof_argmax = epoch_metrics(labels, probs)
    metrics: dict[str, float] = {}
    for m in FOLD_METRICS:
        values = np.array([r[m] for r in rows], dtype=float)
        if np.isfinite(values).all():
            metrics[f"cv_mean_{m}"] = float(values.mean())
            metrics[f"cv_std_{m}"] = float(values.std())
    # The run-level names every training run has, with the out-of-fold figures (what the ensemble is judged by).
    metrics.update(
        {
            BEST_SELECTION_METRIC: oof_argmax[SELECTION_METRIC],
            "best_val_f1": oof_argmax["val_f1"],
            "threshold": threshold,
            "val_f1_at_threshold": at["f1"],
            "val_accuracy_at_threshold": at["accuracy"],
            "oof_images": float(len(predicted)),
            "skipped_files": float(n - len(predicted)),
        }
    )
    tracker.log_cv(
        {
            "oof_csv": oof_table(dataset, folds, oof),
            "metrics": metrics,
            "threshold": threshold,
            "report": {
                "folds": rows,
                "threshold_metric": params.threshold_metric,
                "threshold": threshold,
                "out_of_fold": {**oof_argmax, "f1_at_threshold": at["f1"], "accuracy_at_threshold": at["accuracy"]},
            },
        }
    )
    ensemble = FoldEnsemble(members).eval()
    registered = tracker.log_model(
        ensemble,
        {
            "arch": params.arch,
            "image_size": params.image_size,
            "threshold": threshold,
            "val_f1": oof_argmax["val_f1"],
            "val_f1_weighted": oof_argmax[SELECTION_METRIC],
            "threshold_f1": at["f1"],
            "precision": precision_of(runtime),
            "registered_model_name": params.registered_model_name,
            "cv_folds": k,
        },
    )
    return {
        "run_id": tracker.run_id,
        **registered,
        "cv_folds": k,
        "folds": [{k_: r[k_] for k_ in ("fold", "run_id", "subjects", "val_images", "best_epoch")} for r in rows],
        **{name: round(v, 6) for name, v in metrics.items() if name.startswith("cv_")},
        "val_f1_weighted": round(oof_argmax[SELECTION_METRIC], 6),
        "val_f1": round(oof_argmax["val_f1"], 6),
        "threshold": threshold,
        "threshold_f1": round(at["f1"], 6),
        "threshold_accuracy": round(at["accuracy"], 6),
        "oof_images": int(len(predicted)),
        "skipped_files": int(n - len(predicted)),
        "decode_s": round(cache.seconds, 3),
        "wall_s": round(time.perf_counter() - t_start, 3),
    }


def oof_table(dataset, folds: np.ndarray, oof: np.ndarray) -> str:
    """The out-of-fold predictions as CSV: image id (path under the dataset), subject, fold, label, probability.

    An image that could not be decoded has an empty probability. Probabilities are exact (the float's repr).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "subject", "fold", "label", "probability"])
    for i, s in enumerate(dataset.samples):
        writer.writerow([s.rel, s.subject, int(folds[i]), s.label, "" if np.isnan(oof[i]) else repr(float(oof[i]))])
    return out.getvalue()
