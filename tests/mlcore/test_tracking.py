"""MLflow tracking and the registry round trip against a real `mlflow server` process."""

import csv

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from services import MlflowServer

from mlcore.engine import Cancelled
from mlcore.params import PredictParams, build, train_params
from mlcore.predict import run_prediction
from mlcore.registry import Registry
from mlcore.tracking import MlflowTracker
from mlcore.train import run_training


def test_train_register_promote_predict_by_alias(tracking_server, tiny_train_values, demo_root, tmp_path):
    params = train_params(**tiny_train_values, registered_model_name="roundtrip", experiment_name="roundtrip")
    with MlflowTracker(experiment="roundtrip", tags={"dataslayer.job_type": "train"}) as tracker:
        summary = run_training(params, tracker=tracker)
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "8" and run.data.params["arch"] == "resnet18"
    history = client.get_metric_history(run.info.run_id, "val_f1_weighted")
    assert sorted(m.step for m in history) == [1, 2]
    for key in ("train_loss", "val_loss", "val_f1", "val_accuracy", "val_precision", "val_recall", "val_roc_auc"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2
    artifacts = {
        a.path for folder in ("plots", "reports", "tables") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "plots/learning_curve.png",
        "plots/confusion_matrix.png",
        "plots/f1_vs_threshold.png",
        "reports/classification_report.txt",
        "reports/classification_report.json",
        "reports/confusion_matrix.json",
        "reports/skipped_files.json",
        "tables/val_predictions.json",
    } <= artifacts
    cm = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/reports/confusion_matrix.json")
    assert cm["labels"] == ["non_fall", "fall"] and sum(map(sum, cm["matrix"])) == summary["val_images"]
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].tags[0].value == "training"

    mv = client.get_model_version("roundtrip", summary["model_version"])
    # Stored exactly (the float's repr): prediction applies the tuned value, not a rounded one.
    assert (
        float(mv.tags["threshold"]) == run.data.metrics["threshold"]
        and repr(float(mv.tags["threshold"])) == mv.tags["threshold"]
    )
    assert float(mv.tags["threshold"]) == pytest.approx(summary["threshold"], abs=1e-6)
    assert mv.tags["precision"] == "fp32"  # trained on CPU: prediction follows it
    # The threshold is tuned for F1 (the default threshold_metric); both scores at it are logged.
    assert {"val_f1_at_threshold", "val_accuracy_at_threshold"} <= set(run.data.metrics)
    assert 0.0 <= run.data.metrics["val_accuracy_at_threshold"] <= 1.0
    assert mv.tags["run_id"] == run.info.run_id and mv.tags["arch"] == "resnet18" and mv.tags["image_size"] == "32"
    assert float(mv.tags["val_f1_weighted"]) == pytest.approx(summary["val_f1_weighted"], abs=1e-5)

    registry = Registry()
    promoted = registry.promote("roundtrip", summary["model_version"])
    assert promoted["previous_version"] is None
    assert [r["aliases"] for r in registry.versions("roundtrip")] == [["champion"]]

    model, info = registry.load("models:/roundtrip@champion")
    assert (
        info["threshold"] == pytest.approx(summary["threshold"], abs=1e-6)
        and info["version"] == summary["model_version"]
        and info["precision"] == "fp32"
    )
    # The torch.export program logged beside the state dict (for MLflow's own tools, which the job no
    # longer has MLflow validate at every log) computes what the state-dict model computes.
    logged = mlflow.artifacts.download_artifacts(f"models:/roundtrip/{mv.version}", dst_path=str(tmp_path / "logged"))
    program = torch.export.load(f"{logged}/data/model.pt2")
    example = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(program.module()(example), model.eval()(example), atol=1e-5)
    pred = build(
        PredictParams,
        {
            "data_dir": str(demo_root),
            "model_uri": "models:/roundtrip@champion",
            "output": str(tmp_path / "submission.csv"),
            "device": "cpu",
        },
    )
    with MlflowTracker(experiment="roundtrip", tags={"dataslayer.model_version": info["version"]}) as tracker:
        result = run_prediction(pred, model, info, tracker=tracker)
    with open(result["submission"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and len(rows) == 1 + 6
    pred_artifacts = {a.path for a in client.list_artifacts(result["run_id"], "submission")}
    assert "submission/submission.csv" in pred_artifacts


def test_epochs_are_logged_once_across_a_resume(tracking_server):
    with MlflowTracker(experiment="resume") as tracker:
        tracker.log_epoch(1, {"val_f1_weighted": 0.5})
        run_id = tracker.run_id
    with MlflowTracker(experiment="resume", run_id=run_id) as tracker:
        tracker.log_epoch(1, {"val_f1_weighted": 0.5})  # replayed from the checkpoint
        tracker.log_epoch(2, {"val_f1_weighted": 0.6})
    steps = [m.step for m in MlflowClient().get_metric_history(run_id, "val_f1_weighted")]
    assert sorted(steps) == [1, 2]


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "FAILED"), (Cancelled(), "KILLED")])
def test_a_failed_or_cancelled_job_ends_its_run_with_the_reason(tracking_server, error, status):
    with pytest.raises(type(error)):
        with MlflowTracker(experiment="failures") as tracker:
            raise error
    run = MlflowClient().get_run(tracker.run_id)
    assert run.info.status == status
    assert run.data.tags["dataslayer.failure"] == ("cancelled" if status == "KILLED" else "ValueError: boom")
    if status == "FAILED":
        assert "ValueError: boom" in mlflow.artifacts.load_text(f"runs:/{tracker.run_id}/error/traceback.txt")


def test_metrics_logged_while_the_server_is_down_arrive_when_it_returns(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    server = MlflowServer(tmp_path / "outage")
    server.start()
    mlflow.set_tracking_uri(server.url)
    try:
        with MlflowTracker(experiment="outage") as tracker:
            tracker.log_epoch(1, {"val_f1_weighted": 0.1})
            server.stop()
            tracker.log_epoch(2, {"val_f1_weighted": 0.2})
            tracker.log_epoch(3, {"val_f1_weighted": 0.3})
            assert tracker.failures >= 1 and tracker.pending
            server.start()  # same port and store
            tracker.log_epoch(4, {"val_f1_weighted": 0.4})
            assert not tracker.pending
        client = MlflowClient()
        assert sorted(m.step for m in client.get_metric_history(tracker.run_id, "val_f1_weighted")) == [1, 2, 3, 4]
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and int(run.data.tags["dataslayer.tracking_failures"]) >= 1
    finally:
        server.stop()
        mlflow.set_tracking_uri(None)


def test_a_dataset_input_lost_to_a_server_race_is_retried_not_fatal(tracking_server, demo_root, monkeypatch):
    from mlflow.exceptions import MlflowException

    from mlcore.data import discover_dataset

    real, calls = mlflow.log_input, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # what two workers registering the same dataset at once get from SQLite
            raise MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    dataset = discover_dataset(demo_root / "train")
    with MlflowTracker(experiment="dataset-race") as tracker:
        tracker.log_dataset(dataset, [0, 1], [2])
    run = MlflowClient().get_run(tracker.run_id)
    assert len(calls) == 2 and run.info.status == "FINISHED" and len(run.inputs.dataset_inputs) == 1


def test_a_job_ending_twice_logs_its_end_once_and_registers_one_version(tracking_server, tiny_train_values, tmp_path):
    """A kill during the end of a job, then the resumed job ends again: the end is safe to repeat."""
    params = train_params(**tiny_train_values, registered_model_name="twice", experiment_name="twice")
    with MlflowTracker(experiment="twice") as tracker:
        first = run_training(params, tracker=tracker, checkpoint_dir=tmp_path / "ckpt")
    with MlflowTracker(experiment="twice", run_id=first["run_id"]) as tracker:  # the redelivered job
        second = run_training(params, tracker=tracker, checkpoint_dir=tmp_path / "ckpt")
    client = MlflowClient()
    assert second["model_version"] == first["model_version"]
    assert [v.run_id for v in client.search_model_versions("name='twice'")] == [first["run_id"]]
    for key in ("best_epoch", "best_val_f1_weighted", "best_val_f1", "threshold", "val_f1_at_threshold"):
        assert len(client.get_metric_history(first["run_id"], key)) == 1, key
    assert sorted(m.step for m in client.get_metric_history(first["run_id"], "val_f1_weighted")) == [1, 2]
    assert client.get_run(first["run_id"]).info.status == "FINISHED"


def test_the_end_of_a_job_waits_through_a_tracking_outage(tmp_path, monkeypatch, tiny_train_values):
    """The server is down when the job logs its evaluation and model; it comes back 8 s later; the job finishes."""
    import threading

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    server = MlflowServer(tmp_path / "outage-end")
    server.start()
    mlflow.set_tracking_uri(server.url)
    params = train_params(**tiny_train_values, registered_model_name="outage-end", experiment_name="outage-end")
    try:
        with MlflowTracker(experiment="outage-end") as tracker:
            from mlcore.hooks import JobHooks

            def on_progress(event):
                if event["phase"] == "logging" and server.proc is not None:
                    server.stop()
                    threading.Timer(8, server.start).start()

            summary = run_training(params, tracker=tracker, hooks=JobHooks(progress=on_progress))
        client = MlflowClient()
        assert client.get_run(summary["run_id"]).info.status == "FINISHED"
        assert [v.run_id for v in client.search_model_versions("name='outage-end'")] == [summary["run_id"]]
        assert len(client.get_metric_history(summary["run_id"], "best_epoch")) == 1
    finally:
        server.stop()
        mlflow.set_tracking_uri(None)
