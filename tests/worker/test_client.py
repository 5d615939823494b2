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
    # named after what they are: the sweep by strategy, fields and size, its children by number and what they try
    assert job_client.job(parent).name == "grid lr×bs (4)"
    by_index = sorted(children, key=lambda c: int(c.tags["dataslayer.sweep_index"]))
    assert [c.name for c in by_index] == ["#1 lr1e-3 bs8", "#2 lr1e-3 bs16", "#3 lr1e-2 bs8", "#4 lr1e-2 bs16"]


def test_runs_are_named_after_their_settings_unless_given_a_name(job_client, tiny_train_values, demo_root):
    values = {**tiny_train_values, "experiment_name": "naming"}
    assert job_client.job(job_client.submit_train(values)).name == "r18 32px lr1e-3 bs8 2ep"
    assert job_client.job(job_client.submit_train(values, run_name=" mine ")).name == "mine"
    with pytest.raises(ParamsError) as info:
        job_client.submit_train(values, run_name="x" * 101)
    assert info.value.field == "name"
    sweep = {"base": values, "strategy": "random", "ranges": {"learning_rate": {"low": 1e-4, "high": 1e-2}}}
    named = job_client.submit_sweep({**sweep, "samples": 2, "name": "lr search"})
    assert job_client.job(named).name == "lr search"
    assert all(c.name.startswith(("#1 lr", "#2 lr")) for c in job_client.list_jobs(sweep=named))
    predict = job_client.submit_predict({"data_dir": str(demo_root), "model_uri": "models:/x@champion"})
    assert job_client.job(predict).name == "predict x@champion"
    job_client.cancel(predict)


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


def test_proposed_extended_and_rerun_children_are_named_too(job_client, tiny_train_values):
    from worker.scheduler import advance_sweep

    base = {**tiny_train_values, "experiment_name": "naming-later"}
    tpe = job_client.submit_sweep(
        {"base": base, "strategy": "tpe", "grid": {"batch_size": [8, 16]}, "samples": 2, "max_concurrent": 1}
    )
    advance_sweep(job_client, tpe)  # the scheduler proposes the first trial
    assert job_client.job(tpe).name == "tpe bs (2)"
    assert [c.name for c in job_client.list_jobs(sweep=tpe)] in (["#1 bs8"], ["#1 bs16"])
    job_client.cancel(tpe)

    random = job_client.submit_sweep({"base": base, "strategy": "random", "grid": {"epochs": [1]}, "samples": 1})
    job_client.cancel(random)
    assert advance_sweep(job_client, random)["status"] == "KILLED"
    job_client.extend_sweep(random, 1)
    job_client.cancel(random)
    advance_sweep(job_client, random)
    job_client.rerun_sweep(random, ["killed"])
    names = sorted(c.name for c in job_client.list_jobs(sweep=random))
    assert names == ["#1 1ep", "#1 1ep (re-run)", "#2 1ep", "#2 1ep (re-run)"]
    job_client.cancel(random)


def test_the_cli_names_a_run_or_a_sweep_with_name(job_client, tiny_train_values):
    from click.testing import CliRunner

    from worker.cli import command_tree

    flags = ["--data", tiny_train_values["data_dir"], "--arch", "resnet18", "--experiment-name", "cli-naming"]
    ran = CliRunner().invoke(command_tree(), ["queue", "train", *flags, "--name", "cli run"])
    assert ran.exit_code == 0, ran.output
    assert job_client.job(json.loads(ran.stdout.splitlines()[-1])["run_id"]).name == "cli run"
    swept = CliRunner().invoke(
        command_tree(), ["queue", "train", *flags, "--learning-rate", "1e-3,1e-2", "--name", "lr pair"]
    )
    assert swept.exit_code == 0, swept.output
    assert job_client.job(json.loads(swept.stdout.splitlines()[-1])["run_id"]).name == "lr pair"
