"""`run_training` end to end on a GPU: registered in MLflow, resumed after an interruption, cancelled in seconds,
with the GPU's utilisation and memory in the run's system metrics."""

from __future__ import annotations

import threading
import time

import pytest
import torch

pytestmark = pytest.mark.cuda
pytest.importorskip("pydantic", reason="the training job's parameters need pydantic (docs/GPU.md)")

from mlcore.errors import Cancelled  # noqa: E402
from mlcore.hooks import JobHooks, NullTracker  # noqa: E402
from mlcore.params import train_params  # noqa: E402
from mlcore.train import run_training  # noqa: E402

CANCEL_WITHIN_S = 5.0
GPU_METRICS = ("system/gpu_0_utilization_percentage", "system/gpu_0_memory_usage_megabytes")


def _tracked_job(values: dict, experiment: str, *, system_metrics: bool = False) -> tuple[dict, str]:
    from mlcore.cache import default_cache_dir
    from mlcore.tracking import MlflowTracker

    params = train_params(**values, experiment_name=experiment, registered_model_name=experiment)
    with MlflowTracker(experiment=experiment, system_metrics=system_metrics) as tracker:
        summary = run_training(params, tracker=tracker, cache_dir=default_cache_dir())
    return summary, tracker.run_id


def test_a_cuda_job_trains_on_the_gpu_cache_and_registers_its_model(train_values, mlflow_store):
    from mlflow import MlflowClient

    summary, run_id = _tracked_job(train_values, "cuda-e2e")
    assert summary["cache"] == "cuda (decoded)" and summary["epochs_run"] == 3
    assert summary["model_version"] and summary["model_uri"] == f"models:/cuda-e2e/{summary['model_version']}"
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val_f1_weighted")] == [1, 2, 3]
    version = client.get_model_version("cuda-e2e", summary["model_version"])
    assert float(version.tags["threshold"]) == pytest.approx(summary["threshold"], abs=1e-6)
    again, _ = _tracked_job(train_values, "cuda-e2e-again")
    assert again["cache"] == "cuda (disk cache)"  # the second job on the same data skips decoding


def test_gpu_utilisation_and_memory_are_logged_as_system_metrics(train_values, mlflow_store, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    _, run_id = _tracked_job({**train_values, "epochs": 6}, "cuda-system-metrics", system_metrics=True)
    client = MlflowClient()
    for key in GPU_METRICS:
        history = client.get_metric_history(run_id, key)
        assert history, f"{key} was not logged (is nvidia-ml-py installed?)"
    memory = max(m.value for m in client.get_metric_history(run_id, GPU_METRICS[1]))
    assert memory > 0


class _Interrupted(Exception):
    """Stands in for a worker killed mid-job."""


def test_an_interrupted_cuda_job_resumes_from_its_checkpoint(train_values, tmp_path):
    def interrupt(event):
        if event.get("phase") == "training" and event.get("epoch") == 2:
            raise _Interrupted()

    with pytest.raises(_Interrupted):
        run_training(
            train_params(**train_values),
            tracker=NullTracker(),
            hooks=JobHooks(progress=interrupt),
            checkpoint_dir=tmp_path,
        )
    assert (tmp_path / "last.pt").exists()
    events, tracker = [], NullTracker()
    summary = run_training(
        train_params(**train_values), tracker=tracker, hooks=JobHooks(progress=events.append), checkpoint_dir=tmp_path
    )
    assert {e["epoch"] for e in events if e["phase"] == "training"} == {2, 3}
    assert sorted(tracker.epochs) == [1, 2, 3] and summary["epochs_run"] == 3


def test_a_cuda_job_stops_within_seconds_of_a_cancel(train_values, record_figures):
    cancel, asked = threading.Event(), []

    def progress(event):
        if event.get("phase") == "training" and event.get("epoch") == 2 and not asked:
            asked.append(time.perf_counter())
            cancel.set()

    values = {**train_values, "epochs": 50}
    with pytest.raises(Cancelled):
        run_training(train_params(**values), tracker=NullTracker(), hooks=JobHooks(progress, cancel.is_set))
    torch.cuda.synchronize()
    latency = time.perf_counter() - asked[0]
    record_figures(cancel_latency_s=latency)
    assert latency < CANCEL_WITHIN_S
