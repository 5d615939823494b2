"""What a job reports to its caller: progress events, a stop check, and a tracker.

Jobs call these and know nothing of who listens: the CLI draws tqdm bars, the Celery worker
publishes progress to Redis and reads the cancel flag, the benchmark listens to nothing. The
tracker protocol is implemented with MLflow in `mlcore.tracking`; `NullTracker` records nothing,
so the engine runs where MLflow is not installed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

Event = dict[str, Any]


def _never() -> bool:
    return False


def _ignore(event: Event) -> None:
    return None


def _keep(epoch: int, metrics: dict[str, float]) -> bool:
    return False


@dataclass
class JobHooks:
    """Callbacks a job calls: `progress(event)` with a `phase` key, `should_stop()`, and after each epoch
    `should_prune(epoch, metrics)` (a sweep's pruner, supplied by the worker: True ends the training there)."""

    progress: Callable[[Event], None] = _ignore
    should_stop: Callable[[], bool] = _never
    should_prune: Callable[[int, dict[str, float]], bool] = _keep


class Tracker(Protocol):
    """Where a training or prediction job records what it did."""

    run_id: str | None

    def log_params(self, params: dict[str, str]) -> None: ...
    def log_dataset(self, dataset, train_idx, val_idx, context: str = "training") -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def log_evaluation(self, evaluation: dict) -> None: ...
    def log_model(self, model, info: dict) -> dict: ...
    def log_prediction(self, result: dict, files: list[str]) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_cv(self, cv: dict) -> None: ...
    def child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        """A tracker of a child run (a cross-validation fold), used as a context manager."""
        ...


@dataclass
class NullTracker:
    """A tracker that keeps the epochs in memory and records nothing else."""

    run_id: str | None = None
    epochs: dict[int, dict[str, float]] = field(default_factory=dict)

    def log_params(self, params):
        pass

    def log_dataset(self, dataset, train_idx, val_idx, context="training"):
        pass

    def log_epoch(self, epoch, metrics):
        self.epochs[epoch] = dict(metrics)

    def log_evaluation(self, evaluation):
        pass

    def log_model(self, model, info):
        return {}

    def log_prediction(self, result, files):
        pass

    def set_tags(self, tags):
        pass

    def log_cv(self, cv):
        pass

    def child(self, run_name, tags):
        return NullTracker()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class Progress:
    """Turns step counts into the progress events a UI shows: rate, ETA and phase."""

    def __init__(self, hooks: JobHooks, *, epochs: int, steps_per_epoch: int, batch_size: int):
        self.hooks, self.epochs, self.steps, self.batch_size = hooks, epochs, max(1, steps_per_epoch), batch_size
        self.epoch = 0
        self.rate = 0.0  # training images per second, from the latest report
        self.metrics: dict[str, float] = {}
        self.started = time.time()

    def phase(self, phase: str, **extra: Any) -> None:
        """Report a phase change (decoding, training, evaluating, logging, done)."""
        self.hooks.progress({"phase": phase, "epoch": self.epoch, "epochs": self.epochs, **extra})

    def step(self, event: Event) -> None:
        """Report a training step within the current epoch, with images/s and ETA."""
        if event["seconds"] > 0:
            self.rate = event["images"] / event["seconds"]
        remaining_steps = (self.epochs - self.epoch) * self.steps + (event["steps"] - event["step"])
        eta = remaining_steps * self.batch_size / self.rate if self.rate else None
        self.hooks.progress(
            {
                "phase": "training",
                "epoch": self.epoch,
                "epochs": self.epochs,
                "step": event["step"],
                "steps": event["steps"],
                "img_per_s": round(self.rate, 1),
                "eta_s": None if eta is None else round(eta, 1),
                "metrics": self.metrics,
            }
        )
