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
