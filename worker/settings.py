"""Configuration from the environment, with the defaults a local stack uses: the one settings object.

The workers, the CLI, the local stack and the web UI all read their locations (state directory,
data root, ports, the Redis and MLflow addresses) from `get_settings()`, so one variable means the
same thing everywhere.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlcore.names import DEFAULT_STATE_DIR, QUEUE_NAME_RE


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _queue() -> str:
    value = os.environ.get("DATASLAYER_QUEUE") or "dataslayer"
    if not QUEUE_NAME_RE.match(value):
        raise ValueError(f"DATASLAYER_QUEUE={value!r}: expected letters, digits, '.', '_' or '-' (at most 100)")
    return value


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


@dataclass(frozen=True)
class Settings:
    """Where the queue, the tracking server and the data are, and how long jobs may run."""

    redis_url: str
    tracking_uri: str
    state_dir: Path
    data_root: Path  # the datasets jobs may read: the UI offers these, workers refuse anything else
    host: str  # where the local stack listens
    redis_port: int
    mlflow_port: int
    webui_port: int
    workers: int | None  # the local stack's workers; None: one per GPU, or one CPU worker
    train_time_limit: int  # hard limit of a training job, seconds
    predict_time_limit: int
    max_attempts: int  # starts of one job (crashes included) before it is failed
    lease_ttl: int  # seconds a job's lease lives without a heartbeat
    heartbeat_s: float
    reconcile_every_s: float
    queue: str
    job_memory_mb: int | None = None  # host memory a CPU job may add to its process (None: no cap)

    @property
    def visibility_timeout(self) -> int:
        """Above the longest hard time limit, so Redis never redelivers a job that still runs."""
        return max(self.train_time_limit, self.predict_time_limit) + 600

    @property
    def checkpoint_root(self) -> Path:
        """Per-run checkpoint folders."""
        return self.state_dir / "checkpoints"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from DATASLAYER_* variables, REDIS_URL and MLFLOW_TRACKING_URI."""
    env = os.environ.get
    state_dir = _path("DATASLAYER_STATE_DIR", Path(DEFAULT_STATE_DIR).resolve())
    host = env("DATASLAYER_HOST") or "127.0.0.1"
    redis_port, mlflow_port = _int("DATASLAYER_REDIS_PORT", 6379), _int("DATASLAYER_MLFLOW_PORT", 5001)
    return Settings(
        redis_url=env("REDIS_URL") or f"redis://{host}:{redis_port}/0",
        tracking_uri=env("MLFLOW_TRACKING_URI") or f"http://{host}:{mlflow_port}",
        state_dir=state_dir,
        data_root=_path("DATASLAYER_DATA_ROOT", state_dir / "data"),
        host=host,
        redis_port=redis_port,
        mlflow_port=mlflow_port,
        webui_port=_int("DATASLAYER_WEBUI_PORT", 5000),
        workers=int(env("DATASLAYER_WORKERS")) if env("DATASLAYER_WORKERS") else None,
        train_time_limit=_int("DATASLAYER_TRAIN_TIME_LIMIT", 6 * 3600),
        predict_time_limit=_int("DATASLAYER_PREDICT_TIME_LIMIT", 1800),
        max_attempts=_int("DATASLAYER_MAX_ATTEMPTS", 3),
        lease_ttl=_int("DATASLAYER_LEASE_TTL", 60),
        heartbeat_s=float(env("DATASLAYER_HEARTBEAT_S") or 5),
        reconcile_every_s=float(env("DATASLAYER_RECONCILE_S") or 30),
        queue=_queue(),
        job_memory_mb=int(env("DATASLAYER_JOB_MEMORY_MB")) if env("DATASLAYER_JOB_MEMORY_MB") else None,
    )


def worker_identity() -> str:
    """A name for this process in leases and logs: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def masked(url: str) -> str:
    """A URL with its password replaced by ***, for anything printed or logged."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
