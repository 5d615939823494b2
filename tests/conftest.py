"""Shared fixtures: a tiny generated dataset, a temporary MLflow store, real MLflow and Redis servers, real workers."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from services import MlflowServer, RedisServer, WorkerProcess


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own image cache; system-metrics sampling threads stay off in tests."""
    monkeypatch.setenv("DATASLAYER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DATASLAYER_SYSTEM_METRICS", "0")
    monkeypatch.setenv("DATASLAYER_TRACKING_OUTAGE_S", "30")
    # Settings are read once per process: a test that changes the environment sees its own.
    from worker.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A tiny dataset in the competition layout: 3 subjects x 2 classes x 8 images, 6 test images (96x72)."""
    from mlcore.demo_data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(
        root, subjects=3, images_per_class=8, test_images=6, seed=1, image_size=(96, 72), frames_per_clip=4
    )
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
    return dict(
        data_dir=str(demo_root),
        arch="resnet18",
        pretrained="none",
        image_size=32,
        epochs=2,
        batch_size=8,
        learning_rate=1e-3,
        device="cpu",
        eval_batch_size=32,
    )


# -- the queue: a real Redis server and real worker processes ------------------------------------
@pytest.fixture
def redis_server(tmp_path):
    """A fresh Redis server for one test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue_env(redis_server, tracking_server, tmp_path, tmp_path_factory, monkeypatch) -> dict[str, str]:
    """Environment of the workers and the client in this test: fast heartbeats, short leases, 2 attempts."""
    from worker.settings import get_settings

    env = {
        # Workers read datasets only under the data root: the tests' datasets all live under pytest's base folder.
        "DATASLAYER_DATA_ROOT": str(tmp_path_factory.getbasetemp()),
        # One queue per test: the session's tracking server holds every test's runs, and a worker reconciles only its
        # own queue's, so no test's reconciler adopts what another test left RUNNING.
        "DATASLAYER_QUEUE": f"dataslayer-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_server.url,
        "MLFLOW_TRACKING_URI": tracking_server.url,
        "DATASLAYER_STATE_DIR": str(tmp_path / "state"),
        "DATASLAYER_CACHE_DIR": str(tmp_path / "cache"),
        "DATASLAYER_LEASE_TTL": "4",
        "DATASLAYER_HEARTBEAT_S": "1",
        "DATASLAYER_RECONCILE_S": "2",
        "DATASLAYER_MAX_ATTEMPTS": "2",
        "DATASLAYER_SYSTEM_METRICS": "0",
        "DATASLAYER_TRACKING_OUTAGE_S": "120",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


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


# -- a small file system that fills up ---------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """Factory: small_disk(mb) mounts a tmpfs of that size (a real file system that fills up) and returns it."""
    import subprocess

    mounted: list[Path] = []

    def mount(mb: int) -> Path:
        point = tmp_path / f"disk-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a {mb} MB tmpfs needs root (CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
