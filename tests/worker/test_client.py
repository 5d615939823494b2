"""Submitting, cancelling and listing jobs against a real Redis and a real MLflow server (no worker)."""

import json

import pytest
import redis
from mlflow import MlflowClient

from mlcore.errors import ParamsError
from worker.client import QueueUnavailable


def _queued(url: str) -> list[dict]:
    """Every message waiting in the test's queue (all priority lists)."""
    r = redis.Redis.from_url(url)
    out = []
    for key in r.keys("dataslayer*"):
        if r.type(key) == b"list" and not key.startswith(b"dataslayer:log"):
            out += [json.loads(m) for m in r.lrange(key, 0, -1)]
    return out


def _runs(experiment: str) -> list:
    exp = MlflowClient().get_experiment_by_name(experiment)
    return MlflowClient().search_runs([exp.experiment_id]) if exp else []


def test_submit_creates_a_scheduled_run_and_one_json_message(job_client, tiny_train_values, redis_server):
    run_id = job_client.submit_train(
        {**tiny_train_values, "experiment_name": "submit"}, priority="high", submitted_by="ana"
    )
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "SCHEDULED"
    assert run.data.tags["dataslayer.job_type"] == "train" and run.data.tags["dataslayer.priority"] == "high"
    assert run.data.tags["dataslayer.submitted_by"] == "ana" and run.data.params["batch_size"] == "8"
    messages = _queued(redis_server.url)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == "dataslayer.train" and messages[0]["content-type"] == "application/json"
    assert messages[0]["properties"]["priority"] == 0
    job = job_client.job(run_id)
    assert job.status == "SCHEDULED" and not job.done and job.submitted_by == "ana"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"epochs": "many"}, "epochs"),
        ({"arch": "vgg16"}, "arch"),
        ({"data_dir": "/no/such/data"}, "data_dir"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field_and_nothing_is_created(
    job_client, tiny_train_values, redis_server, change, field
):
    with pytest.raises(ParamsError) as info:
        job_client.submit_train({**tiny_train_values, "experiment_name": "refused", **change})
    assert info.value.field == field
    assert _runs("refused") == [] and _queued(redis_server.url) == []


def test_unknown_priority_is_refused(job_client, tiny_train_values):
    with pytest.raises(ParamsError) as info:
        job_client.submit_train(tiny_train_values, priority="urgent")
    assert info.value.field == "priority"


def test_with_redis_down_nothing_is_created(job_client, tiny_train_values, redis_server):
    redis_server.stop()
    with pytest.raises(QueueUnavailable, match="unavailable"):
        job_client.submit_train({**tiny_train_values, "experiment_name": "redis-down"})
    assert _runs("redis-down") == []


def test_the_same_idempotency_key_queues_one_job(job_client, tiny_train_values, redis_server):
    values = {**tiny_train_values, "experiment_name": "same-key"}
    first = job_client.submit_train(values, idempotency_key="form-123")
    second = job_client.submit_train(values, idempotency_key="form-123")
    assert first == second and len(_runs("same-key")) == 1 and len(_queued(redis_server.url)) == 1


def test_cancelling_a_queued_job_ends_it_before_it_starts(job_client, tiny_train_values):
    run_id = job_client.submit_train({**tiny_train_values, "experiment_name": "cancel-queued"})
    result = job_client.cancel(run_id)
    assert result["cancelled"] and result["status"] == "KILLED"
    assert job_client.job(run_id).failure == "cancelled before it started"
    assert job_client.cancel(run_id)["cancelled"] is False  # already ended


def test_a_sweep_creates_a_parent_and_children_and_queues_only_the_scheduler(
    job_client, tiny_train_values, redis_server
):
    parent = job_client.submit_sweep(
        {
            "base": {**tiny_train_values, "experiment_name": "sweep-submit"},
            "grid": {"learning_rate": [1e-3, 1e-2], "batch_size": [8, 16]},
            "max_concurrent": 2,
        }
    )
    children = job_client.list_jobs(sweep=parent)
    assert len(children) == 4 and all(c.status == "SCHEDULED" for c in children)
    assert sorted((c.params["learning_rate"], c.params["batch_size"]) for c in children) == [
        ("0.001", "16"),
        ("0.001", "8"),
        ("0.01", "16"),
        ("0.01", "8"),
    ]
    assert [m["headers"]["task"] for m in _queued(redis_server.url)] == ["dataslayer.sweep"]
    assert job_client.job(parent).job_type == "sweep"


def test_list_jobs_filters_by_status_and_type(job_client, tiny_train_values, demo_root):
    a = job_client.submit_train({**tiny_train_values, "experiment_name": "listing"})
    b = job_client.submit_predict(
        {"data_dir": str(demo_root), "model_uri": "models:/x@champion", "experiment_name": "listing"}
    )
    job_client.cancel(a)
    assert a in {j.run_id for j in job_client.list_jobs(status="KILLED")}
    predictions = job_client.list_jobs(job_type="predict")
    assert b in {j.run_id for j in predictions} and a not in {j.run_id for j in predictions}
    assert all(j.job_type == "predict" for j in predictions)
    assert {a, b} <= {j.run_id for j in job_client.list_jobs()}


def test_predictions_land_in_their_own_experiment(job_client, demo_root):
    from mlcore.names import PREDICTION_EXPERIMENT

    run_id = job_client.submit_predict({"data_dir": str(demo_root), "model_uri": "models:/x@champion"})
    experiment = job_client.mlflow.get_experiment(job_client.experiment_of(run_id))
    assert experiment.name == PREDICTION_EXPERIMENT  # not among the training runs being compared
    job_client.cancel(run_id)
