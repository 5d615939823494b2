"""The two ways a backing service is unavailable, and the one place transport errors are translated into them.

Every call the client makes to Redis or to the MLflow server goes through `queue_calls` or
`tracking_calls`, so callers (the CLI, the web UI) handle two errors, never redis-py's or requests'
own, and never sniff error strings.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import redis
import requests
from mlflow.exceptions import MlflowException

from worker.settings import masked


class QueueUnavailable(ConnectionError):
    """Redis cannot be reached; nothing was queued or cancelled."""


class TrackingUnavailable(ConnectionError):
    """The MLflow server cannot be reached; nothing was queued."""


def tracking_unreachable(exc: BaseException) -> bool:
    """Whether an error from MLflow's client means the server could not be reached (rather than a refusal)."""
    if isinstance(exc, requests.exceptions.RequestException):
        return True
    if isinstance(exc.__context__, requests.exceptions.RequestException):
        return True
    if not isinstance(exc, MlflowException):
        return False
    # MLflow wraps connection failures after its retries in a plain MlflowException.
    text = str(exc)
    return "failed with exception" in text or any(f"error code {code}" in text for code in (500, 502, 503, 504))


@contextmanager
def tracking_calls(uri: str) -> Iterator[None]:
    """Calls to the MLflow server at `uri`: an unreachable server becomes TrackingUnavailable."""
    try:
        yield
    except (MlflowException, requests.exceptions.RequestException) as exc:
        if not tracking_unreachable(exc):
            raise
        raise TrackingUnavailable(f"the tracking server ({masked(uri)}) is unavailable: {_first_line(exc)}") from None


@contextmanager
def queue_calls(url: str) -> Iterator[None]:
    """Calls to Redis at `url`: any Redis error becomes QueueUnavailable (its password masked)."""
    try:
        yield
    except redis.RedisError as exc:
        raise QueueUnavailable(f"the queue (Redis at {masked(url)}) is unavailable: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
