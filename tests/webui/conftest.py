"""Web UI fixtures: the app through its factory, logged-in clients, a data root, and the real local stack.

Unit tests use the Flask test client against a real Redis and the session's real MLflow server.
Browser tests share one stack for the session: Redis, a dedicated MLflow server, one CPU worker
and the web UI under gunicorn with the command `dataslayer up` uses (worker.stack.service_commands).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from services import MlflowServer, RedisServer, WorkerProcess, free_port, wait_http
from ui_helpers import (
    ADMIN,
    API_TOKEN,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SECRET,
    log_in,
    ui_config,
)

from worker.state import ready_key


# -- a data root with the tiny dataset, and things that must never be read -----------------------
@pytest.fixture(scope="session")
def data_root(demo_root, tmp_path_factory) -> Path:
    """DATASLAYER_DATA_ROOT for the UI: `demo` (train/ and test/), plus a symlink pointing out of the root."""
    base = tmp_path_factory.mktemp("ui-data")
    root = base / "data"
    shutil.copytree(demo_root, root / "demo")
    outside = base / "outside"
    shutil.copytree(demo_root / "train", outside / "train")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root


# -- Redis: one server for the unit tests, emptied before each ------------------------------------
@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory):
    """A real Redis server kept for the session (starting one per test costs more than the test)."""
    server = RedisServer(tmp_path_factory.mktemp("ui-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(request, shared_redis, tmp_path):
    """The session's Redis, emptied; a test marked `stops_redis` gets a private server it may stop."""
    import redis

    if request.node.get_closest_marker("stops_redis"):
        server = RedisServer(tmp_path / "redis")
        server.start()
        yield server
        server.stop()
        return
    redis.Redis.from_url(shared_redis.url).flushall()
    yield shared_redis


def pytest_configure(config):
    config.addinivalue_line("markers", "stops_redis: the test stops its Redis server (it gets a private one)")


# -- the app through its factory -----------------------------------------------------------------


@pytest.fixture
def model_name(request) -> str:
    """A registered-model name unique to the test (the MLflow server is shared by the session)."""
    return "m-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:50] + "-" + uuid.uuid4().hex[:6]


@pytest.fixture
def app(queue_env, data_root, model_name):
    """The web UI app on this test's Redis and the session's MLflow server."""
    from webui import create_app

    return create_app(ui_config(data_root, MODEL_NAME=model_name))


@pytest.fixture
def client(app):
    """A test client with no session."""
    return app.test_client()


@pytest.fixture
def user_client(client):
    """A test client logged in as the admin."""
    assert log_in(client).status_code == 302
    return client


@pytest.fixture
def admin_token(app) -> str:
    """A freshly issued API token of the admin (stored in the app's users file, as the profile page does)."""
    return app.config["USERS"].store.issue_token(ADMIN, label="test")[0]


@pytest.fixture
def experiment(request) -> str:
    """An MLflow experiment name unique to the test, to count what a test created."""
    return "ui-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60] + "-" + uuid.uuid4().hex[:6]


# -- the real local stack for the browser tests --------------------------------------------------
class UiStack:
    """Redis, a dedicated MLflow server, one CPU worker and the web UI under gunicorn."""

    def __init__(self, root: Path, data: Path):
        self.root, self.data = root, data
        self.redis = RedisServer(root / "redis")
        self.mlflow = MlflowServer(root / "mlflow")
        self.worker = None
        self.webui: subprocess.Popen | None = None

    def start(self) -> None:
        """Start everything; MLflow (the slow one) starts while the worker and the UI do."""
        from worker.stack import StackConfig, service_commands

        self.redis.start()
        mlflow_thread = threading.Thread(target=self.mlflow.start, daemon=True)
        mlflow_thread.start()
        cfg = StackConfig(
            state_dir=self.root / "state",
            redis_port=self.redis.port,
            mlflow_port=self.mlflow.port,
            webui_port=free_port(),
            data_root=self.data,
            workers=1,
        )
        (cfg.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.url = cfg.webui_url
        secrets = {
            "SECRET_KEY": SECRET,
            "DATASLAYER_ADMIN_USER": ADMIN,
            "DATASLAYER_ADMIN_PASSWORD": PASSWORD,
            "DATASLAYER_API_TOKENS": f"ana:{API_TOKEN}",
            "DATASLAYER_SYSTEM_METRICS": "0",
        }
        webui = next(s for s in service_commands(cfg, webui_env=secrets) if s.name == "webui")
        self.env = {**os.environ, **webui.env}
        worker_env = {
            **webui.env,
            "DATASLAYER_LEASE_TTL": "10",
            "DATASLAYER_HEARTBEAT_S": "1",
            "DATASLAYER_RECONCILE_S": "5",
        }
        self.worker = WorkerProcess("ui", worker_env, self.root / "worker.log")
        self.worker.start(wait=False)
        self.webui_log = open(self.root / "webui.log", "ab")
        self.webui = subprocess.Popen(
            webui.cmd,
            env=self.env,
            cwd=cfg.state_dir,
            stdout=self.webui_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(self.url + "/health", timeout=60, proc=self.webui)
        mlflow_thread.join(120)
        if self.mlflow.proc is None or self.mlflow.proc.poll() is not None:
            raise RuntimeError(f"the MLflow server did not start; see {self.mlflow.root / 'server.log'}")
        self._wait_worker()

    def _wait_worker(self) -> None:
        import redis

        r = redis.Redis.from_url(self.redis.url)
        deadline = time.monotonic() + 90
        while not r.exists(ready_key(self.worker.name)):
            if self.worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: {(self.root / 'worker.log').read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the UI, the worker, MLflow and Redis."""
        if self.webui and self.webui.poll() is None:
            os.killpg(self.webui.pid, signal.SIGTERM)
            try:
                self.webui.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.webui.pid, signal.SIGKILL)
        if self.worker:
            self.worker.stop(timeout=20)
        self.mlflow.stop()
        self.redis.stop()


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory, demo_root):
    """The whole local stack with the tiny dataset as the data root's `demo`."""
    root = tmp_path_factory.mktemp("ui-stack")
    data = root / "data"
    shutil.copytree(demo_root, data / "demo")
    stack = UiStack(root, data)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
