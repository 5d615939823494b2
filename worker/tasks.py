"""The Celery tasks: thin, named, JSON in and out; each calls one job function.

Names are explicit so a refactor never orphans queued messages. Before a job starts, a missing
queue or tracking server is a reason to retry later, not to fail: the message stays safe.
"""

from __future__ import annotations

import logging

import redis
from mlflow.exceptions import MlflowException

from worker.broker import RETRY_S
from worker.celery_app import app, soft_limit
from worker.settings import get_settings

log = logging.getLogger(__name__)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, redis.RedisError):
        return True
    return isinstance(exc, MlflowException) and exc.error_code != "RESOURCE_DOES_NOT_EXIST"


def _run(task, job_type: str, run_id: str, params: dict) -> dict:
    from worker.broker import Broker
    from worker.celery_app import PRIORITY_STEPS
    from worker.client import JobClient
    from worker.jobs import run_job
    from worker.scheduler import advance_sweep

    step = (task.request.delivery_info or {}).get("priority")
    priority = next((name for name, s in PRIORITY_STEPS.items() if s == step), "normal")
    try:
        result = run_job(
            job_type,
            run_id,
            params,
            # Back at the front of its priority, as its one message (worker/broker.py).
            requeue=lambda: Broker().ensure_queued(job_type, run_id, params, priority, grace=0),
            worker=task.request.hostname or "worker",
        )
    except Exception as exc:
        if _transient(exc):
            log.warning("%s %s: services unavailable, retrying in %ss: %s", job_type, run_id, RETRY_S, exc)
            raise task.retry(countdown=RETRY_S, max_retries=None) from None
        if isinstance(exc, MlflowException):
            return {"run_id": run_id, "skipped": f"run not found: {exc.message}"}
        raise
    parent = JobClient().job(run_id, with_progress=False).parent_run_id
    if parent and not result.get("requeued") and "skipped" not in result:
        result["sweep"] = advance_sweep(JobClient(), parent)
    return result


@app.task(name="dataslayer.train", bind=True)
def train(self, run_id: str, params: dict) -> dict:
    """Train one model (a queued `dataslayer train`)."""
    return _run(self, "train", run_id, params)


@app.task(
    name="dataslayer.predict",
    bind=True,
    soft_time_limit=soft_limit(get_settings().predict_time_limit),
    time_limit=get_settings().predict_time_limit,
)
def predict(self, run_id: str, params: dict) -> dict:
    """Predict a test folder with a registered model and write the submission."""
    return _run(self, "predict", run_id, params)


@app.task(name="dataslayer.sweep", bind=True)
def sweep(self, parent_run_id: str) -> dict:
    """Start a sweep's next children up to its cap, or end it when all children have ended."""
    from worker.client import JobClient
    from worker.scheduler import advance_sweep

    try:
        return advance_sweep(JobClient(), parent_run_id)
    except Exception as exc:
        if _transient(exc):
            raise self.retry(countdown=RETRY_S, max_retries=None) from None
        raise
