"""The Celery application, configured for long, expensive GPU jobs (README, "The queue"; docs/RELIABILITY.md)."""

from __future__ import annotations

import importlib

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutting_down

from worker.settings import get_settings
from worker.state import connect, drain_key, ready_key

# What a job imports, loaded once by the worker's main process (see `_preload`).
JOB_MODULES = ("mlflow.pytorch", "mlcore.train", "mlcore.predict", "worker.jobs", "worker.client", "worker.scheduler")

# Redis priorities: 0 is served first. Kombu keeps one list per step.
PRIORITY_STEPS = {"high": 0, "normal": 3, "low": 6}


def soft_limit(hard: int) -> int:
    """The soft time limit: the job gets a clean failure (and its run a reason) before the hard kill."""
    return hard - max(5, min(60, hard // 10))


def make_app() -> Celery:
    """A Celery app whose every setting is chosen for at-least-once delivery of hour-long jobs."""
    s = get_settings()
    app = Celery("dataslayer", include=["worker.tasks"])
    app.conf.update(
        broker_url=s.redis_url,
        result_backend=s.redis_url,
        # JSON only: a pickled message pushed into Redis must not run code.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A worker that dies mid-job must not lose it: ack after the job, requeue when the child is lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job per GPU, no hoarding, a fresh process (and CUDA context) per job.
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        # Redis redelivers unacked messages after the visibility timeout even if they still run.
        broker_transport_options={
            "visibility_timeout": s.visibility_timeout,
            "priority_steps": sorted(PRIORITY_STEPS.values()),
            "sep": ":",
            "queue_order_strategy": "priority",
        },
        result_backend_transport_options={"visibility_timeout": s.visibility_timeout},
        task_default_queue=s.queue,
        task_default_priority=PRIORITY_STEPS["normal"],
        task_soft_time_limit=soft_limit(s.train_time_limit),
        task_time_limit=s.train_time_limit,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # The job's state of record is its MLflow run; results are a short-lived cache.
        result_expires=3600,
        task_ignore_result=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_send_sent_event=False,
        worker_send_task_events=False,
    )
    return app


app = make_app()


@worker_init.connect
def _preload(**_):
    """Import the job code before the pool starts: every job's fresh child is forked with it loaded.

    That saves each job the ~10 s of importing torch, torchvision and MLflow on 2 cores. Importing
    touches no CUDA (nothing here calls into the driver), so each child still makes its own context.
    """
    for name in JOB_MODULES:
        importlib.import_module(name)


@worker_ready.connect
def _ready(sender=None, **_):
    """A (re)started worker is not draining, whatever its previous life set."""
    r = connect(get_settings().redis_url)
    r.delete(drain_key(sender.hostname))
    r.set(ready_key(sender.hostname), "1")


@worker_shutting_down.connect
def _draining(sender=None, **_):
    """On shutdown (SIGTERM, a deploy) the running job checkpoints out and goes back to the queue."""
    try:
        r = connect(get_settings().redis_url)
        r.set(drain_key(sender), "1", ex=3600)
        r.delete(ready_key(sender))
    except Exception:  # noqa: BLE001 - Redis down: the job's SIGTERM handler and the reconciler cover it
        pass
