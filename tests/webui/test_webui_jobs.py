"""The jobs list and its polling endpoint, a job's page, cancel, plots by name, outages as friendly pages."""

import re

import pytest
from mlflow import MlflowClient
from ui_helpers import csrf_token, ui_config

from worker.settings import get_settings


@pytest.fixture
def queued_job(job_client, tiny_train_values, experiment) -> str:
    """A training job waiting in the queue (no worker runs in these tests)."""
    return job_client.submit_train({**tiny_train_values, "experiment_name": experiment}, submitted_by="ana")


def test_the_list_shows_a_queued_job_with_its_progress_and_links(user_client, queued_job, app):
    html = user_client.get("/jobs").get_data(as_text=True)
    assert f'data-run-id="{queued_job}"' in html and "badge-scheduled" in html and "<progress" in html
    assert f"{app.config['MLFLOW_PUBLIC_URL']}/#/experiments/" in html and f"/runs/{queued_job}" in html
    assert f"/jobs/{queued_job}/cancel" in html


def test_the_polling_endpoint_reports_progress(user_client, queued_job, job_client):
    from worker.state import JobState

    JobState(job_client.redis, queued_job).set_progress(
        {
            "phase": "training",
            "epoch": 2,
            "epochs": 4,
            "step": 5,
            "steps": 10,
            "img_per_s": 123.4,
            "eta_s": 75,
            "metrics": {"train_loss": 0.5, "val_f1": 0.7},
        }
    )
    job_client.mlflow.update_run(queued_job, status="RUNNING")
    body = user_client.get("/jobs.json").json
    [row] = [j for j in body["jobs"] if j["run_id"] == queued_job]
    assert body["queue_ok"] is True and row["status"] == "RUNNING" and row["label"] == "epoch 2/4"
    assert row["percent"] == pytest.approx(5 + 90 * 1.5 / 4, abs=0.1)
    assert (
        "123 img/s" in row["detail"]
        and "ETA 1 min 15 s" in row["detail"]
        and "loss 0.500" in row["detail"]
        and "F1 0.700" in row["detail"]
    )


@pytest.mark.parametrize(
    "query, shown",
    [
        ("status=SCHEDULED", True),
        ("status=FINISHED", False),
        ("type=train", True),
        ("type=predict", False),
        ("status=BOGUS", True),
    ],
)
def test_filters(user_client, queued_job, query, shown):
    assert (queued_job in user_client.get(f"/jobs?{query}").get_data(as_text=True)) is shown


def test_a_sweep_filter_must_be_a_run_id(user_client):
    assert user_client.get("/jobs?sweep=x' or '1'='1").status_code == 404


def test_the_job_page_shows_params_status_and_log(user_client, queued_job, job_client):
    from worker.state import JobState

    JobState(job_client.redis, queued_job).append_log("12:00:00 INFO hello <script>alert(1)</script>")
    html = user_client.get(f"/jobs/{queued_job}").get_data(as_text=True)
    assert "learning_rate" in html and "queued" in html and "Cancel" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html  # autoescaped
    live = user_client.get(f"/jobs/{queued_job}/live.json").json
    assert live["job"]["status"] == "SCHEDULED" and live["log"][-1].endswith("</script>")
    assert set(live["curves"]) == {"train_loss", "val_loss", "val_f1", "val_f1_weighted"}


@pytest.mark.parametrize(
    "path, status",
    [
        ("/jobs/nothex", 404),
        ("/jobs/0123456789abcdef0123456789abcdef", 404),
        ("/jobs/{run}/plots/..%2Fmodel.png", 404),
        ("/jobs/{run}/plots/secret.png", 404),
        ("/jobs/{run}/plots/learning_curve.png", 404),
    ],
)
def test_unknown_jobs_and_plots_are_404(user_client, queued_job, path, status):
    assert user_client.get(path.format(run=queued_job)).status_code == status


def test_cancel_ends_a_queued_job(user_client, queued_job, job_client):
    response = user_client.post(f"/jobs/{queued_job}/cancel", data={"csrf_token": csrf_token(user_client, "/jobs")})
    assert response.status_code == 302
    assert job_client.job(queued_job).status == "KILLED"
    page = user_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Cancel requested" in page
    # Who cancelled and when, in neutral styling; not "Cancelled: cancelled" as an error.
    job = job_client.job(queued_job)
    assert job.cancelled[0] == "admin" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job.cancelled[1])
    assert 'data-role="cancelled"' in page and "Cancelled by <b>admin</b> at" in page and ", before it started." in page
    assert 'class="failure"' not in page and "Cancelled:" not in page


def test_cancel_without_csrf_token_is_refused(user_client, queued_job, job_client):
    assert user_client.post(f"/jobs/{queued_job}/cancel").status_code == 400
    assert job_client.job(queued_job).status == "SCHEDULED"


@pytest.mark.stops_redis
def test_cancel_with_the_queue_down_says_so(user_client, queued_job, job_client, redis_server):
    token = csrf_token(user_client, "/jobs")
    redis_server.stop()
    response = user_client.post(f"/jobs/{queued_job}/cancel", data={"csrf_token": token})
    assert response.status_code == 503 and "queue (Redis) is unavailable" in response.get_data(as_text=True)
    assert job_client.job(queued_job, with_progress=False).status == "SCHEDULED"


@pytest.mark.stops_redis
def test_the_list_still_shows_jobs_with_the_queue_down(user_client, queued_job, redis_server):
    redis_server.stop()
    html = user_client.get("/jobs").get_data(as_text=True)
    assert queued_job in html and 'data-role="queue-banner"' in html and 'data-role="queue-banner" hidden' not in html


@pytest.mark.parametrize(
    "path",
    [
        "/jobs",
        "/jobs.json",
        "/models",
        "/submissions",
        "/runs/new?from=0123456789abcdef0123456789abcdef",
        "/jobs/0123456789abcdef0123456789abcdef",
    ],
)
def test_with_mlflow_down_pages_say_so_without_a_traceback(queue_env, data_root, monkeypatch, path):
    from services import free_port
    from ui_helpers import log_in

    from webui import create_app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    get_settings.cache_clear()
    client = create_app(ui_config(data_root)).test_client()
    log_in(client)
    response = client.get(path)
    text = response.get_data(as_text=True)
    assert response.status_code == 503 and "tracking server (MLflow) is unavailable" in text and "Traceback" not in text


def test_a_failed_job_shows_its_reason(user_client, queued_job):
    client = MlflowClient()
    client.set_tag(queued_job, "dataslayer.failure", "DataError: no images in /data/x")
    client.set_terminated(queued_job, "FAILED")
    html = user_client.get(f"/jobs/{queued_job}").get_data(as_text=True)
    assert "DataError: no images" in html and "badge-failed" in html


def test_a_job_warning_is_shown_on_its_page(user_client, queued_job):
    MlflowClient().set_tag(queued_job, "dataslayer.warning", "batch_size 256 gives 2 optimizer steps per epoch")
    html = user_client.get(f"/jobs/{queued_job}").get_data(as_text=True)
    assert 'data-role="warning"' in html and "batch_size 256 gives 2 optimizer steps" in html


def test_the_job_page_shows_the_queue_wait_apart_from_the_training_time(user_client, queued_job):
    """MLflow's run time counts from submission; the page counts from when the worker started training."""
    import time

    from mlcore.names import QUEUE_WAIT_METRIC, Tag

    client = MlflowClient()  # as the worker marks a run when it takes it (worker/jobs.py; tests/worker/test_jobs.py)
    client.set_tag(queued_job, Tag.STARTED_AT, f"{time.time() - 130:.3f}")
    client.log_metric(queued_job, QUEUE_WAIT_METRIC, 452.3, step=0)
    client.update_run(queued_job, "RUNNING")
    html = user_client.get(f"/jobs/{queued_job}").get_data(as_text=True)
    assert "waited 7 min 32 s in the queue" in html
    assert re.search(r'ran <span data-role="elapsed">2 min 1[0-2] s</span>', html), html
    row = user_client.get(f"/jobs/{queued_job}/live.json").get_json()  # what the page refreshes itself from
    assert row["job"]["queue_wait"] == "7 min 32 s" and row["job"]["elapsed"].startswith("2 min 1")
