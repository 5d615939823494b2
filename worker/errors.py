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

from mlcore.tracking import unreachable
from worker.settings import masked


class QueueUnavailable(ConnectionError):
    """Redis cannot be reached; nothing was queued or cancelled."""


class TrackingUnavailable(ConnectionError):
    """The MLflow server cannot be reached; nothing was queued."""


@contextmanager
def tracking_calls(uri: str) -> Iterator[None]:
    """Calls to the MLflow server at `uri`: an unreachable server becomes TrackingUnavailable."""
    try:
        yield
    except (MlflowException, requests.exceptions.RequestException) as exc:
        if not unreachable(exc):
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
