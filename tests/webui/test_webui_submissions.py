"""Submissions: a prediction job from the champion or a chosen version, its CSVs downloaded through the app."""

import json

import pytest
from mlflow import MlflowClient
from ui_helpers import csrf_token, runs_in


def predict_form(client, **changes) -> dict:
    form = {
        "dataset": "demo",
        "model_version": "champion",
        "threshold": "",
        "priority": "high",
        "csrf_token": csrf_token(client, "/submissions"),
        "idempotency_key": "p" + "0" * 15,
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}


def predictions(job_client) -> list:
    return job_client.list_jobs(job_type="predict")


def test_the_page_offers_test_datasets_and_versions(user_client):
    html = user_client.get("/submissions").get_data(as_text=True)
    assert "demo: " in html and "6 test images" in html and "Generate submission" in html


def test_generate_queues_one_prediction_with_the_champion(user_client, job_client, model_name, queue_env):
    before = {j.run_id for j in predictions(job_client)}
    form = predict_form(user_client)
    first = user_client.post("/submissions", data=form)
    second = user_client.post("/submissions", data=form)  # a double click
    assert first.status_code == second.status_code == 302
    [job] = [j for j in predictions(job_client) if j.run_id not in before]
    assert job.params["model_uri"] == f"models:/{model_name}@champion" and job.params["data_dir"].endswith("demo/test")
    assert job.priority == "high"
    assert job.run_id in user_client.get("/submissions").get_data(as_text=True)


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"model_version": "3"}, None, None),
        ({"model_version": "latest; rm"}, "model_version", "version number"),
        ({"threshold": "1.5"}, "threshold", "less than or equal to 1"),
        ({"threshold": "nan"}, "threshold", "finite"),
        ({"dataset": "nosuch"}, "dataset", "no dataset named"),
        ({"priority": "now"}, "priority", "expected one of"),
    ],
)
def test_choices_and_bad_input(user_client, job_client, model_name, changes, field, message):
    before = {j.run_id for j in predictions(job_client)}
    response = user_client.post("/submissions", data=predict_form(user_client, **changes))
    new = [j for j in predictions(job_client) if j.run_id not in before]
    if field is None:
        assert response.status_code == 302 and new[0].params["model_uri"] == f"models:/{model_name}/3"
        return
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and new == []
    assert f'data-field="{field}"' in html and message in html


@pytest.mark.parametrize("dataset", ["../demo", "/etc", "demo/test", "a\x00b", "escape"])
def test_path_like_test_datasets_are_400(user_client, job_client, dataset):
    before = len(predictions(job_client))
    assert user_client.post("/submissions", data=predict_form(user_client, dataset=dataset)).status_code == 400
    assert len(predictions(job_client)) == before


def finished_prediction(experiment: str, tmp_path) -> str:
    """A prediction run as the worker leaves it: submission/ artifacts, metrics, the model version tag."""
    client = MlflowClient()
    run = client.create_run(
        client.create_experiment(experiment), tags={"dataslayer.job_type": "predict", "dataslayer.model_version": "4"}
    )
    run_id = run.info.run_id
    (tmp_path / "submission.csv").write_text("id,label\na.jpg,1\nb.jpg,0\n")
    (tmp_path / "submission_probabilities.csv").write_text("id,probability,label,error\na.jpg,0.9,1,\nb.jpg,0.1,0,\n")
    client.log_artifact(run_id, str(tmp_path / "submission.csv"), "submission")
    client.log_artifact(run_id, str(tmp_path / "submission_probabilities.csv"), "submission")
    client.log_text(run_id, json.dumps({"threshold_source": "model"}), "reports/prediction.json")
    client.log_param(run_id, "model_uri", "models:/fall-detector/4")
    client.log_metric(run_id, "rows", 2)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_a_finished_prediction_downloads_its_csvs(user_client, experiment, tmp_path):
    run_id = finished_prediction(experiment, tmp_path)
    html = user_client.get("/submissions").get_data(as_text=True)
    assert f"/submissions/{run_id}/submission.csv" in html and "v4" in html
    response = user_client.get(f"/submissions/{run_id}/submission.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.get_data(as_text=True).splitlines() == ["id,label", "a.jpg,1", "b.jpg,0"]
    assert "attachment" in response.headers["Content-Disposition"]
    probs = user_client.get(f"/submissions/{run_id}/probabilities.csv")
    assert probs.get_data(as_text=True).startswith("id,probability")
    assert "Download submission.csv" in user_client.get(f"/jobs/{run_id}").get_data(as_text=True)


@pytest.mark.parametrize("kind", ["../summary", "model", "submission.csv%00"])
def test_only_the_two_files_can_be_downloaded(user_client, experiment, tmp_path, kind):
    run_id = finished_prediction(experiment, tmp_path)
    assert user_client.get(f"/submissions/{run_id}/{kind}.csv").status_code == 404


def test_an_unfinished_prediction_has_nothing_to_download(user_client, job_client, experiment, data_root):
    run_id = job_client.submit_predict(
        {"data_dir": str(data_root / "demo"), "model_uri": "models:/x@champion", "experiment_name": experiment}
    )
    assert user_client.get(f"/submissions/{run_id}/submission.csv").status_code == 409
    assert len(runs_in(experiment)) == 1
