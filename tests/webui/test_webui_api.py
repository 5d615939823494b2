"""The JSON API: Bearer tokens, the same validation as the forms, and its OpenAPI document."""

import json

import pytest
from ui_helpers import API_TOKEN, runs_in

TINY = {"arch": "resnet18", "pretrained": "none", "image_size": 32, "epochs": 1, "batch_size": 8, "device": "cpu"}


def auth(token: str = API_TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": "Bearer "},
    ],
)
def test_without_a_valid_token_the_api_refuses_and_creates_nothing(client, experiment, headers):
    response = client.post(
        "/api/runs", json={"dataset": "demo", "params": {**TINY, "experiment_name": experiment}}, headers=headers
    )
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/jobs", headers=headers).status_code == 401
    assert runs_in(experiment) == []


def test_a_configured_token_queues_a_run_as_its_user(client, experiment, job_client):
    response = client.post(
        "/api/runs",
        json={"dataset": "demo", "params": {**TINY, "experiment_name": experiment}, "name": "api"},
        headers=auth(),
    )
    assert response.status_code == 201
    job = job_client.job(response.json["run_id"])
    assert job.submitted_by == "ana" and job.status == "SCHEDULED" and job.name == "api"
    listed = client.get("/api/jobs?type=train", headers=auth()).json["jobs"]
    assert response.json["run_id"] in [j["run_id"] for j in listed]
    one = client.get(f"/api/jobs/{job.run_id}", headers=auth()).json
    assert (
        one["status"] == "SCHEDULED" and one["view"]["label"] == "queued" and one["params"]["epochs"] == 1
    )  # numbers as numbers (issue 17, item 14)
    unnamed = client.post(
        "/api/runs", json={"dataset": "demo", "params": {**TINY, "experiment_name": experiment}}, headers=auth()
    )
    assert job_client.job(unnamed.json["run_id"]).name == "r18 32px lr2e-5 bs8 1ep"  # from its settings


def test_an_issued_personal_token_works(client, experiment, admin_token):
    token = admin_token
    response = client.post(
        "/api/runs", json={"dataset": "demo", "params": {**TINY, "experiment_name": experiment}}, headers=auth(token)
    )
    assert response.status_code == 201 and runs_in(experiment)[0].data.tags["dataslayer.submitted_by"] == "admin"


def test_the_same_idempotency_key_queues_one_job(client, experiment):
    body = {"dataset": "demo", "params": {**TINY, "experiment_name": experiment}}
    first = client.post("/api/runs", json=body, headers={**auth(), "Idempotency-Key": "api-key-0001"})
    second = client.post("/api/runs", json=body, headers={**auth(), "Idempotency-Key": "api-key-0001"})
    assert first.json["run_id"] == second.json["run_id"] and len(runs_in(experiment)) == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"dataset": "demo", "params": {"learning_rate": float("nan")}}, "learning_rate"),
        ({"dataset": "demo", "params": {"epochs": "many"}}, "epochs"),
        ({"dataset": "demo", "params": {"arch": "vgg16"}}, "arch"),
        ({"dataset": "demo", "params": {"batch_size": 0}}, "batch_size"),
        ({"dataset": "demo", "params": {"data_dir": "/etc"}}, "data_dir"),
        ({"dataset": "demo", "params": {"pretrained": "/root/weights.pth"}}, "pretrained"),
        ({"dataset": "demo", "params": {"unknown": 1}}, "unknown"),
        ({"dataset": "demo", "params": [1, 2]}, "params"),
        ({"dataset": "demo", "priority": "asap"}, "priority"),
        ({"dataset": "demo", "idempotency_key": "../.."}, "idempotency_key"),
        ({"params": {}}, "dataset"),
    ],
)
def test_bad_input_is_400_naming_the_field(client, experiment, body, field):
    params = body.get("params", {})
    body = {**body, "params": {**params, "experiment_name": experiment} if isinstance(params, dict) else params}
    response = client.post(
        "/api/runs", data=json.dumps(body, allow_nan=True), content_type="application/json", headers=auth()
    )
    assert response.status_code == 400 and response.json["field"] == field, response.json
    assert runs_in(experiment) == []


@pytest.mark.parametrize("dataset", ["../demo", "/etc/passwd", "demo/../../x", "x\x00y", "escape"])
def test_path_like_datasets_are_400(client, experiment, dataset):
    response = client.post(
        "/api/runs", json={"dataset": dataset, "params": {"experiment_name": experiment}}, headers=auth()
    )
    assert response.status_code == 400 and runs_in(experiment) == []


def test_not_json_is_400(client):
    assert client.post("/api/runs", data="x", headers=auth()).status_code == 400


def test_sweeps_preview_and_queue(client, experiment, job_client):
    body = {
        "dataset": "demo",
        "base": {**TINY, "experiment_name": experiment},
        "grid": {"learning_rate": [1e-3, 3e-3]},
        "max_concurrent": 1,
    }
    assert client.post("/api/sweeps/preview", json=body, headers=auth()).json == {"runs": 2}
    assert runs_in(experiment) == []
    bad = client.post("/api/sweeps", json={**body, "grid": {"pretrained": ["/etc/passwd"]}}, headers=auth())
    assert bad.status_code == 400 and bad.json["field"] == "grid.pretrained"
    response = client.post("/api/sweeps", json=body, headers=auth())
    assert response.status_code == 201 and len(job_client.list_jobs(sweep=response.json["run_id"])) == 2
    assert job_client.job(response.json["run_id"]).name == "grid lr (2)"
    named = client.post("/api/sweeps", json={**body, "name": "lr pair"}, headers=auth())
    assert named.status_code == 201 and job_client.job(named.json["run_id"]).name == "lr pair"
    assert client.post("/api/sweeps", json={**body, "name": 7}, headers=auth()).json["field"] == "name"
    doc = client.get("/api/openapi.json", headers=auth()).json
    assert doc["components"]["schemas"]["SweepRequest"]["properties"]["name"]["maxLength"] == 100


def test_cancel_log_metrics_and_datasets(client, experiment, job_client):
    run_id = client.post(
        "/api/runs", json={"dataset": "demo", "params": {**TINY, "experiment_name": experiment}}, headers=auth()
    ).json["run_id"]
    assert client.get(f"/api/jobs/{run_id}/log", headers=auth()).json == {"lines": []}
    assert client.get(f"/api/jobs/{run_id}/metrics", headers=auth()).json["curves"]["val_f1"] == []
    assert client.post(f"/api/jobs/{run_id}/cancel", headers=auth()).json["status"] == "KILLED"
    assert job_client.job(run_id).cancelled[0] == "ana"  # the token's user is recorded as who cancelled
    again = client.post(f"/api/jobs/{run_id}/cancel", headers=auth())
    assert again.status_code == 409 and "ended already (KILLED)" in again.json["error"]
    finished = _finished_train_run(experiment)  # a job its worker finished: 409 too, and nothing recorded on it
    done = client.post(f"/api/jobs/{finished}/cancel", headers=auth())
    assert done.status_code == 409 and "ended already (FINISHED)" in done.json["error"] and not done.json["cancelled"]
    assert job_client.job(finished).status == "FINISHED" and job_client.job(finished).cancelled is None
    # Statuses as the UI shows them (lower case) filter too; parameters come back with their types.
    listed = client.get("/api/jobs?status=killed", headers=auth()).json["jobs"]
    assert run_id in {j["run_id"] for j in listed}
    params = client.get(f"/api/jobs/{run_id}", headers=auth()).json["params"]
    assert params["batch_size"] == TINY["batch_size"] and isinstance(params["learning_rate"], float)
    datasets = client.get("/api/datasets", headers=auth()).json["datasets"]
    assert (
        [d["name"] for d in datasets] == ["demo"]
        and datasets[0]["counts"]["images"] == 48
        and datasets[0]["test_images"] == 6
    )


def test_models_promote_and_submissions(client, model_name, experiment, admin_token):
    from test_webui_models import register

    register(model_name, experiment, 0.6)
    assert client.get("/api/models", headers=auth()).json["versions"][0]["val_f1"] == 0.6
    admin = auth(admin_token)  # promoting is an admin's
    assert client.post(f"/api/models/{model_name}/1/promote", headers=admin).json["model_version"] == "1"
    assert client.post(f"/api/models/{model_name}/7/promote", headers=admin).status_code == 404
    queued = client.post("/api/submissions", json={"dataset": "demo"}, headers=auth())
    assert queued.status_code == 201
    rows = client.get("/api/submissions", headers=auth()).json["submissions"]
    assert queued.json["run_id"] in [r["run_id"] for r in rows]


def test_the_openapi_document_describes_every_route(app, client):
    doc = client.get("/api/openapi.json", headers=auth()).json
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "data_dir" not in doc["components"]["schemas"]["TrainParams"]["properties"]
    assert doc["components"]["schemas"]["TrainParams"]["properties"]["epochs"]["default"] == 20
    rules = {
        r.rule.replace("<", "{").replace(">", "}").replace("int:", "")
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/")
    }
    assert rules - {"/api/openapi.json"} == set(doc["paths"])
    # what the API accepts and answers, as it does (test_cancel_log_metrics_and_datasets)
    status = next(p for p in doc["paths"]["/api/jobs"]["get"]["parameters"] if p["name"] == "status")
    assert {"finished", "FINISHED", "killed"} <= set(status["schema"]["enum"])
    assert "ended already" in doc["paths"]["/api/jobs/{run_id}/cancel"]["post"]["responses"]["409"]["description"]


def test_a_logged_in_browser_may_read_the_api_but_not_write(user_client, experiment):
    assert user_client.get("/api/openapi.json").status_code == 200
    response = user_client.post("/api/runs", json={"dataset": "demo", "params": {"experiment_name": experiment}})
    assert response.status_code == 401 and runs_in(experiment) == []


def _finished_train_run(experiment: str) -> str:
    """A training run as its worker leaves it at the end (FINISHED), submitted by the token's user."""
    from mlflow import MlflowClient

    from mlcore.names import Tag

    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.create_run(experiment_id, tags={Tag.JOB_TYPE: "train", Tag.SUBMITTED_BY: "ana"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
