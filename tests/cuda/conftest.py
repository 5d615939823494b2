"""The CUDA suite (`pytest -m cuda`): every test here runs the project's own code on a real NVIDIA GPU.

Without a CUDA device each test is skipped with the reason "no CUDA device", here and only here, so
the CPU suite stays green and says how many were skipped. The fixtures are self-contained (this
folder also runs alone, `--confcutdir tests/cuda`, on a GPU machine without the web or queue
packages): their own demo data, image cache folder and SQLite MLflow store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
NO_CUDA = "no CUDA device"
# Where each test may leave figures it measured (one JSON line per test); scripts/gpu_check.py reads them.
FIGURES_ENV = "DATASLAYER_CUDA_FIGURES"


def cuda_available() -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception:  # a broken driver install reads as no device
        return False


def pytest_collection_modifyitems(config, items):
    """The one skip of this folder: every test in it needs a CUDA device."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cuda_env(tmp_path_factory, monkeypatch):
    """A private image cache folder per test and no system-metrics thread unless a test turns it on."""
    monkeypatch.setenv("DATASLAYER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DATASLAYER_SYSTEM_METRICS", "0")
    monkeypatch.delenv("DATASLAYER_CACHE_GPU_GB", raising=False)
    monkeypatch.delenv("DATASLAYER_GPU_DECODE", raising=False)
    yield
    if cuda_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


@pytest.fixture
def record_figures(request):
    """record_figures(name=value, ...): figures this test measured, kept for the GPU check's report."""

    def record(**figures) -> None:
        path = os.environ.get(FIGURES_ENV)
        line = {"test": request.node.nodeid, **figures}
        print("figures:", json.dumps(line, default=float))
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(line, default=float) + "\n")

    return record


@pytest.fixture(scope="session")
def gpu_demo(tmp_path_factory) -> Path:
    """Demo data in the competition layout: 4 subjects x 2 classes x 16 images and 64 test images, 160x120."""
    from mlcore.demo_data import generate_demo_dataset

    root = tmp_path_factory.mktemp("gpu-demo")
    generate_demo_dataset(
        root, subjects=4, images_per_class=16, test_images=64, seed=3, image_size=(160, 120), frames_per_clip=4
    )
    return root


@pytest.fixture(scope="session")
def frames(tmp_path_factory) -> list[Path]:
    """48 synthetic 640x480 camera frames (the benchmark's kind of JPEG)."""
    from mlcore.demo_data import write_jpeg_frames

    return write_jpeg_frames(tmp_path_factory.mktemp("frames"), 48, seed=5)


@pytest.fixture
def train_values(gpu_demo) -> dict:
    """TrainParams values for a seconds-long CUDA job: ResNet18 from scratch at 64 px, 3 epochs."""
    return dict(
        data_dir=str(gpu_demo),
        arch="resnet18",
        pretrained="none",
        image_size=64,
        epochs=3,
        batch_size=16,
        learning_rate=1e-3,
        device="cuda",
        eval_batch_size=64,
        compile="off",
    )


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A temporary SQLite MLflow store as the tracking URI (skipped where MLflow is not installed)."""
    mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed (carry its wheels: docs/GPU.md)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
