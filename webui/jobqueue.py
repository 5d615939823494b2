"""The app's one JobClient (the worker's client: every submit, cancel and listing goes through it)."""

from __future__ import annotations

import os
import threading

from flask import Flask, abort, current_app

from mlcore.names import RUN_ID_RE
from worker.client import JobClient
from worker.errors import QueueUnavailable
from worker.settings import get_settings

EXTENSION = "dataslayer_queue"


class JobQueue:
    """Creates the JobClient on first use, once per process (gunicorn forks before requests)."""

    def __init__(self, app: Flask | None = None):
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set MLflow's client timeouts for pages and make the client reachable from views."""
        # A page must fail within seconds when the tracking server is down, not after MLflow's
        # default of 7 retries with exponential back-off (minutes, past gunicorn's 60 s timeout).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars in the server log, per plot
        settings = get_settings()  # the same variables the workers read, so submit and enqueue agree
        app.config["REDIS_URL"] = settings.redis_url
        app.config["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        app.config["MLFLOW_PUBLIC_URL"] = (app.config.get("MLFLOW_PUBLIC_URL") or settings.tracking_uri).rstrip("/")
        app.extensions[EXTENSION] = {"queue": self, "client": None}

    def client(self) -> JobClient:
        """The JobClient of the current app."""
        state = current_app.extensions[EXTENSION]
        if state["client"] is None:
            with self._lock:
                if state["client"] is None:
                    state["client"] = JobClient(get_settings())
        return state["client"]


queue = JobQueue()


def jobs() -> JobClient:
    """Shorthand for the current app's JobClient."""
    return queue.client()


def checked_run_id(run_id: str) -> str:
    """A run id from a URL or form: 32 hex digits, else 404 (it also goes into MLflow filter strings)."""
    if not RUN_ID_RE.match(run_id or ""):
        abort(404)
    return run_id


def queue_available() -> bool:
    """Whether Redis answers right now."""
    try:
        jobs().check_queue()
        return True
    except QueueUnavailable:
        return False
