"""Configuration from the environment, with the defaults a local stack uses."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """Where the queue and the tracking server are, and how long jobs may run."""

    redis_url: str
    tracking_uri: str
    state_dir: Path
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
    return Settings(
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001"),
        state_dir=Path(os.environ.get("DATASLAYER_STATE_DIR", ".state")).resolve(),
        train_time_limit=_int("DATASLAYER_TRAIN_TIME_LIMIT", 6 * 3600),
        predict_time_limit=_int("DATASLAYER_PREDICT_TIME_LIMIT", 1800),
        max_attempts=_int("DATASLAYER_MAX_ATTEMPTS", 3),
        lease_ttl=_int("DATASLAYER_LEASE_TTL", 60),
        heartbeat_s=float(os.environ.get("DATASLAYER_HEARTBEAT_S", 5)),
        reconcile_every_s=float(os.environ.get("DATASLAYER_RECONCILE_S", 30)),
        queue=os.environ.get("DATASLAYER_QUEUE", "dataslayer"),
        job_memory_mb=int(os.environ["DATASLAYER_JOB_MEMORY_MB"])
        if os.environ.get("DATASLAYER_JOB_MEMORY_MB")
        else None,
    )


def worker_identity() -> str:
    """A name for this process in leases and logs: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"
