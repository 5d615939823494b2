"""Configuration from the environment, with the defaults a local stack uses: the one settings object.

The workers, the CLI, the local stack and the web UI all read their locations (state directory,
data root, ports, the Redis and MLflow addresses) from `get_settings()`, so one variable means the
same thing everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit, urlunsplit

from mlcore.names import DEFAULT_STATE_DIR, QUEUE_NAME_RE

# The local stack's secrets, generated once by `dataslayer up` and kept (mode 600) in the state directory.
REDIS_PASSWORD_FILE = "redis_password"
MLFLOW_ADMIN_PASSWORD_FILE = "mlflow_admin_password"  # the MLflow UI's admin (people log in with it)
MLFLOW_WORKER_PASSWORD_FILE = "mlflow_worker_password"  # the stack's own MLflow user: workers, web UI, CLI
MLFLOW_ADMIN_USER = "admin"
MLFLOW_WORKER_USER = "worker"


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _queue() -> str:
    value = os.environ.get("DATASLAYER_QUEUE") or "dataslayer"
    if not QUEUE_NAME_RE.match(value):
        raise ValueError(f"DATASLAYER_QUEUE={value!r}: expected letters, digits, '.', '_' or '-' (at most 100)")
    return value


def _on(name: str) -> bool:
    value = (os.environ.get(name) or "1").strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"{name}={value!r}: expected 1 or 0")
    return value in ("1", "true", "yes", "on")


MAX_SLOTS_PER_GPU = 8


def _slots() -> int:
    value = os.environ.get("DATASLAYER_SLOTS_PER_GPU") or "1"
    if not value.isdigit() or not 1 <= int(value) <= MAX_SLOTS_PER_GPU:
        raise ValueError(f"DATASLAYER_SLOTS_PER_GPU={value!r}: expected a whole number from 1 to {MAX_SLOTS_PER_GPU}")
    return int(value)


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


@dataclass(frozen=True)
class Settings:
    """Where the queue, the tracking server and the data are, and how long jobs may run."""

    redis_url: str = field(repr=False)  # with its password, if any: print masked(redis_url)
    tracking_uri: str
    state_dir: Path
    data_root: Path  # the datasets jobs may read: the UI offers these, workers refuse anything else
    host: str  # where the local stack listens
    redis_port: int
    mlflow_port: int
    webui_port: int
    workers: int | None  # the local stack's workers; None: one per GPU job slot, or one CPU worker
    train_time_limit: int  # hard limit of a training job, seconds
    predict_time_limit: int
    max_attempts: int  # starts of one job (crashes included) before it is failed
    lease_ttl: int  # seconds a job's lease lives without a heartbeat
    heartbeat_s: float
    reconcile_every_s: float
    queue: str
    job_memory_mb: int | None = None  # host memory a CPU job may add to its process (None: no cap)
    slots_per_gpu: int = 1  # job slots (workers) per GPU, each with 1/slots of its memory (DATASLAYER_SLOTS_PER_GPU)
    redis_auth: bool = True  # the local stack's Redis asks for a password (DATASLAYER_REDIS_AUTH)
    tracking_username: str | None = None  # the MLflow log-in (MLFLOW_TRACKING_USERNAME), None: anonymous
    tracking_password: str | None = field(default=None, repr=False)

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
    """Settings read once per process from DATASLAYER_* variables, REDIS_URL and MLFLOW_TRACKING_URI.

    The Redis password: REDIS_PASSWORD goes into a REDIS_URL that has none; where REDIS_URL is unset
    the address is the local stack's and so is the password, the one `dataslayer up` keeps in the
    state directory. The MLflow log-in likewise: MLFLOW_TRACKING_USERNAME/_PASSWORD, else, where
    MLFLOW_TRACKING_URI is unset, the local stack's worker user and its kept password.
    """
    env = os.environ.get
    state_dir = _path("DATASLAYER_STATE_DIR", Path(DEFAULT_STATE_DIR).resolve())
    host = env("DATASLAYER_HOST") or "127.0.0.1"
    redis_port, mlflow_port = _int("DATASLAYER_REDIS_PORT", 6379), _int("DATASLAYER_MLFLOW_PORT", 5001)
    redis_password = env("REDIS_PASSWORD") or (
        None if env("REDIS_URL") else read_secret(state_dir / REDIS_PASSWORD_FILE)
    )
    tracking_username, tracking_password = env("MLFLOW_TRACKING_USERNAME"), env("MLFLOW_TRACKING_PASSWORD")
    if not tracking_username and not env("MLFLOW_TRACKING_URI"):
        kept = read_secret(state_dir / MLFLOW_WORKER_PASSWORD_FILE)
        if kept:
            tracking_username, tracking_password = MLFLOW_WORKER_USER, kept
    return Settings(
        redis_url=with_password(env("REDIS_URL") or f"redis://{host}:{redis_port}/0", redis_password),
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
        slots_per_gpu=_slots(),
        redis_auth=_on("DATASLAYER_REDIS_AUTH"),
        tracking_username=tracking_username,
        tracking_password=tracking_password,
    )


def tracking_env(username: str | None, password: str | None) -> dict[str, str]:
    """The variables MLflow's client reads its log-in from (empty without one): the one place they are named."""
    if not (username and password):
        return {}
    return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}


def use_tracking_credentials(settings: Settings) -> None:
    """Put the settings' MLflow log-in where MLflow's client reads it (this process's environment)."""
    os.environ.update(tracking_env(settings.tracking_username, settings.tracking_password))


def worker_identity() -> str:
    """A name for this process in leases and logs: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback name or address (127.0.0.0/8, ::1, localhost): reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` in it, unless it has one already (or there is none to add)."""
    parts = urlsplit(url)
    if not password or parts.password:
        return url
    netloc = f"{parts.username or ''}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def read_secret(path: Path) -> str | None:
    """A kept secret (stripped), or None when the file is missing or not ours to read."""
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (mode 700), created so: no window with wider rights."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)  # a folder made by an older version, or by hand
    return path


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, made by `make` and written the first time: mode 600 from creation, never rewritten.

    `O_CREAT | O_EXCL` with the mode in the same call: the file is never readable by others, not
    even between its creation and a chmod, and two processes racing here keep one secret.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # kept by an older version, which wrote it 644 first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(make())
    return path.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write `path` (a file holding secrets, e.g. a config file) mode 600 from creation, atomically replaced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: a file left by someone else is never reused with its mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def masked(url: str) -> str:
    """A URL with its password replaced by ***, for anything printed or logged (the one masking helper)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
