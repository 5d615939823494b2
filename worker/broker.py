"""Sending job messages to the queue (Celery over Redis), by task name: no task code is imported here."""

from __future__ import annotations

from functools import lru_cache

from worker.settings import Settings, get_settings


def enqueue(
    job_type: str, run_id: str, params: dict, priority: str = "normal", settings: Settings | None = None
) -> None:
    """Send the task of a job to the queue of `settings`."""
    from worker.celery_app import PRIORITY_STEPS

    settings = settings or get_settings()
    args = [run_id] if job_type == "sweep" else [run_id, params]
    _producer(settings.redis_url).send_task(
        f"dataslayer.{job_type}", args=args, priority=PRIORITY_STEPS[priority], queue=settings.queue
    )


@lru_cache(maxsize=8)
def _producer(redis_url: str):
    """A Celery app for sending, per broker URL (settings may change between tests, or per tenant)."""
    from worker.celery_app import make_app

    app = make_app()
    app.conf.broker_url = app.conf.result_backend = redis_url
    return app
