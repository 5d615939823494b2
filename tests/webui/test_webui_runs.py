"""New run and new sweep: forms from the models, errors next to fields, nothing queued on bad input."""

import re

import pytest
import redis
from ui_helpers import csrf_token, runs_in

from mlcore.params import TrainParams

TINY = {
    "arch": "resnet18",
    "pretrained": "none",
    "image_size": "32",
    "epochs": "1",
    "batch_size": "8",
    "learning_rate": "0.001",
    "device": "cpu",
    "eval_batch_size": "32",
    "aug_flip": "on",
}


def run_form(client, experiment, **changes) -> dict:
    """A complete, valid training form for the tiny dataset; `changes` override fields (None drops one)."""
    form = {
        **TINY,
        "dataset": "demo",
        "priority": "normal",
        "experiment_name": experiment,
        "csrf_token": csrf_token(client, "/runs/new"),
        "idempotency_key": "k" + "0" * 15,
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}


def queued(url: str) -> int:
    """Messages waiting in the test's Redis queue."""
    r = redis.Redis.from_url(url)
    return sum(r.llen(k) for k in r.keys("dataslayer*") if r.type(k) == b"list" and not k.startswith(b"dataslayer:log"))


def test_the_form_has_every_field_with_default_and_help(user_client):
    html = user_client.get("/runs/new").get_data(as_text=True)
    for name, field in TrainParams.model_fields.items():
        if name == "data_dir":
            continue
        assert f'name="{name}"' in html, name
        assert field.description.replace("'", "&#39;").split("(")[0][:30] in html
    assert 'name="idempotency_key"' in html and 'name="csrf_token"' in html
    assert re.search(r'<option value="demo"[^>]*>demo: 48 training images \(24 fall, 24 non_fall, 3 subjects\)', html)
    assert "escape" not in html  # the symlink out of the data root is not offered


def test_a_preset_fills_the_form(user_client):
    html = user_client.get("/runs/new?preset=quick").get_data(as_text=True)
    assert re.search(r'name="image_size"[^>]*value="64"', html) and re.search(
        r'<option value="resnet18" selected', html
    )


def test_a_valid_form_queues_one_job_and_opens_its_page(user_client, experiment, redis_server):
    response = user_client.post("/runs/new", data=run_form(user_client, experiment, name="tiny run"))
    assert response.status_code == 302
    run_id = response.headers["Location"].rsplit("/", 1)[1]
    [run] = runs_in(experiment)
    assert run.info.run_id == run_id and run.info.status == "SCHEDULED" and run.info.run_name == "tiny run"
    assert run.data.params["image_size"] == "32" and run.data.params["data_dir"].endswith("demo/train")
    assert run.data.tags["dataslayer.submitted_by"] == "admin" and queued(redis_server.url) == 1
    page = user_client.get(f"/jobs/{run_id}").get_data(as_text=True)
    assert "Training job queued." in page and "tiny run" in page


def test_the_same_submit_posted_twice_queues_one_job(user_client, experiment, redis_server):
    form = run_form(user_client, experiment)
    first = user_client.post("/runs/new", data=form)
    second = user_client.post("/runs/new", data=form)
    assert first.headers["Location"] == second.headers["Location"]
    assert len(runs_in(experiment)) == 1 and queued(redis_server.url) == 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", "5", "less than or equal to 1"),
        ("learning_rate", "-0.1", "greater than 0"),
        ("learning_rate", "nan", "finite number"),
        ("batch_size", "0", "greater than or equal to 1"),
        ("epochs", "many", "valid integer"),
        ("epochs", "2.5", "valid integer"),
        ("image_size", "99999", "less than or equal to 1024"),
        ("arch", "vgg16", "'resnet18', 'resnet34' or 'resnet50'"),
        ("pretrained", "/etc/passwd", "expected one of imagenet, none"),
        ("device", "tpu", "expected auto, cpu, cuda or cuda:N"),
        ("warmup_epochs", "5", "must not exceed epochs"),
        ("cv_folds", "5", "number of subjects (3"),  # the demo dataset has 3 subjects
        ("experiment_name", "", "at least 1 character"),
        ("registered_model_name", "team/model", "letters, digits"),
        ("priority", "urgent", "expected one of high, normal, low"),
        ("dataset", "", "choose a dataset"),
        ("dataset", "nosuch", "no dataset named 'nosuch'"),
    ],
)
def test_bad_input_shows_the_error_next_to_its_field_and_queues_nothing(
    user_client, experiment, redis_server, field, value, message
):
    response = user_client.post("/runs/new", data=run_form(user_client, experiment, **{field: value}))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    error = re.search(rf'<div class="error" role="alert" data-field="{field}">([^<]*)</div>', html)
    assert error and message in error.group(1).replace("&#39;", "'"), html[:200]
    assert runs_in(experiment) == [] and queued(redis_server.url) == 0
    assert f'value="{value}"' in html or field in ("arch", "pretrained", "priority", "dataset")  # what was typed stays


@pytest.mark.parametrize(
    "dataset", ["../demo", "/etc", "demo/../..", "demo/train", "de\x00mo", "..", "escape", "~root"]
)
def test_path_like_datasets_are_refused_with_400_and_nothing_read(user_client, experiment, redis_server, dataset):
    response = user_client.post("/runs/new", data=run_form(user_client, experiment, dataset=dataset))
    assert response.status_code == 400
    assert runs_in(experiment) == [] and queued(redis_server.url) == 0


def test_a_form_without_csrf_token_is_refused(user_client, experiment, redis_server):
    response = user_client.post("/runs/new", data=run_form(user_client, experiment, csrf_token=None))
    assert response.status_code == 400 and "security token" in response.get_data(as_text=True).lower()
    assert runs_in(experiment) == [] and queued(redis_server.url) == 0


@pytest.mark.stops_redis
def test_with_the_queue_down_the_form_says_so_and_nothing_is_created(user_client, experiment, redis_server):
    form = run_form(user_client, experiment)
    redis_server.stop()
    response = user_client.post("/runs/new", data=form)
    assert response.status_code == 503 and "queue (Redis) is unavailable" in response.get_data(as_text=True)
    assert runs_in(experiment) == []


def test_run_again_prefills_from_a_job(user_client, experiment):
    response = user_client.post("/runs/new", data=run_form(user_client, experiment, batch_size="12"))
    run_id = response.headers["Location"].rsplit("/", 1)[1]
    html = user_client.get(f"/runs/new?from={run_id}").get_data(as_text=True)
    assert re.search(r'name="batch_size"[^>]*value="12"', html) and re.search(r'<option value="demo" selected', html)


# -- sweeps ----------------------------------------------------------------------------------
def sweep_form(client, experiment, **changes) -> dict:
    form = {
        **{k: v for k, v in TINY.items()},
        "dataset": "demo",
        "priority": "normal",
        "experiment_name": experiment,
        "sweep.strategy": "grid",
        "sweep.samples": "8",
        "sweep.seed": "0",
        "sweep.max_concurrent": "1",
        "grid.learning_rate": "1e-3, 3e-3",
        "csrf_token": csrf_token(client, "/sweeps/new"),
        "idempotency_key": "s" + "0" * 15,
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}


@pytest.mark.parametrize(
    "changes, runs",
    [
        ({}, 2),
        ({"grid.batch_size": "8, 16"}, 4),
        ({"grid.arch": ["resnet18", "resnet34"], "grid.aug_flip": "both"}, 8),
        (
            {
                "sweep.strategy": "random",
                "sweep.samples": "3",
                "grid.learning_rate": "",
                "range.learning_rate.low": "1e-4",
                "range.learning_rate.high": "1e-2",
                "range.learning_rate.log": "on",
            },
            3,
        ),
    ],
)
def test_the_preview_counts_the_runs(user_client, experiment, changes, runs):
    response = user_client.post("/sweeps/preview", data=sweep_form(user_client, experiment, **changes))
    assert response.json == {"ok": True, "runs": runs}
    assert runs_in(experiment) == []


@pytest.mark.parametrize(
    "changes, field, text",
    [
        ({"grid.learning_rate": "1e-3, 7"}, "row.learning_rate", "less than or equal to 1"),
        ({"grid.batch_size": "8, x"}, "row.batch_size", "valid integer"),
        (
            {"grid.learning_rate": "", "range.learning_rate.low": "1e-4", "range.learning_rate.high": "1e-2"},
            None,
            "need strategy",
        ),
        ({"sweep.strategy": "random", "range.epochs.low": "3", "range.epochs.high": "1"}, "row.epochs", "high must be"),
        ({"grid.learning_rate": ""}, None, "nothing to sweep"),
        ({"sweep.max_concurrent": "0"}, "sweep.max_concurrent", "greater than or equal to 1"),
        ({"epochs": "0"}, "epochs", "greater than or equal to 1"),
        ({"name": "x" * 101}, "name", "printable characters"),
    ],
)
def test_a_bad_sweep_is_refused_naming_its_row_and_nothing_is_queued(
    user_client, experiment, redis_server, changes, field, text
):
    preview = user_client.post("/sweeps/preview", data=sweep_form(user_client, experiment, **changes)).json
    assert preview["ok"] is False and preview["error"]
    response = user_client.post("/sweeps/new", data=sweep_form(user_client, experiment, **changes))
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    if field:
        assert f'data-field="{field}"' in html and preview["field"] == field
    assert text in html.replace("&#39;", "'") and text in preview["error"]
    assert runs_in(experiment) == [] and queued(redis_server.url) == 0


def test_a_sweep_queues_a_parent_and_its_children(user_client, experiment, redis_server):
    response = user_client.post("/sweeps/new", data=sweep_form(user_client, experiment, **{"sweep.promote_best": "on"}))
    assert response.status_code == 302
    parent_id = response.headers["Location"].rsplit("/", 1)[1]
    runs = runs_in(experiment)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 3 and len(children) == 2
    assert sorted(c.data.params["learning_rate"] for c in children) == ["0.001", "0.003"]
    assert {c.data.params["epochs"] for c in children} == {"1"}
    parent = next(r for r in runs if r.info.run_id == parent_id)
    assert (
        parent.data.tags["dataslayer.promote_best"] == "true" and parent.data.tags["dataslayer.max_concurrent"] == "1"
    )
    html = user_client.get(f"/jobs/{parent_id}").get_data(as_text=True)
    assert "Runs of this sweep" in html and "compare-runs" in html and "learning_rate=0.001" in html
    assert parent.info.run_name == "grid lr (2)"  # no name given: strategy, what varies, size
    assert sorted(c.info.run_name for c in children) == ["#1 lr1e-3", "#2 lr3e-3"]


def test_the_sweep_form_names_the_sweep(user_client, experiment):
    response = user_client.post("/sweeps/new", data=sweep_form(user_client, experiment, name="lr for r18"))
    parent_id = response.headers["Location"].rsplit("/", 1)[1]
    assert {r.info.run_id: r.info.run_name for r in runs_in(experiment)}[parent_id] == "lr for r18"
    assert 'name="name"' in user_client.get("/sweeps/new?fresh=1", follow_redirects=True).get_data(as_text=True)


def test_back_is_the_page_the_form_was_posted_from(user_client, experiment):
    form = run_form(user_client, experiment, learning_rate="0.0042")
    run_id = user_client.post("/runs/new?preset=quick", data=form).headers["Location"].rsplit("/", 1)[1]
    back = user_client.get("/runs/new?preset=quick").get_data(as_text=True)
    assert f'href="/jobs/{run_id}"' in back and 'value="0.0042"' in back
    assert 'href="/runs/new?preset=quick&amp;fresh=1" data-role="start-over"' in back
    assert 'data-role="just-queued"' not in user_client.get("/runs/new").get_data(as_text=True)  # another page


def _session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else ""


def test_back_after_queueing_shows_the_values_just_queued_and_says_so(user_client, experiment, redis_server):
    response = user_client.post("/runs/new", data=run_form(user_client, experiment, learning_rate="0.0042"))
    run_id = response.headers["Location"].rsplit("/", 1)[1]
    back = user_client.get("/runs/new").get_data(as_text=True)  # the browser's Back fetches the form again
    assert re.search(r'name="learning_rate"[^>]*value="0.0042"', back)
    assert re.search(r'<option value="demo"[^>]*selected', back) and experiment in back
    assert 'data-role="just-queued"' in back and f'href="/jobs/{run_id}"' in back
    assert "submitting again queues a second job" in back
    token = re.search(r'name="idempotency_key" value="([^"]+)"', back)[1]
    assert token != "k" + "0" * 15  # a fresh token: submitting again on purpose queues a second job
    again = user_client.post(
        "/runs/new", data={**run_form(user_client, experiment, learning_rate="0.0042"), "idempotency_key": token}
    )
    assert again.headers["Location"] != response.headers["Location"] and queued(redis_server.url) == 2
    fresh = user_client.get("/runs/new?fresh=1")  # "Start over": forgotten, and the address is clean again
    assert fresh.status_code == 302 and fresh.headers["Location"] == "/runs/new"
    assert 'value="0.0042"' not in user_client.get("/runs/new").get_data(as_text=True)
    assert 'data-role="just-queued"' not in user_client.get("/runs/new").get_data(as_text=True)  # forgotten
    assert 'data-role="just-queued"' not in user_client.get("/sweeps/new").get_data(as_text=True)  # another form


def test_back_after_a_sweep_keeps_its_rows_and_the_session_stays_small(user_client, experiment, monkeypatch):
    from webui import lastqueued

    form = sweep_form(user_client, experiment, **{"grid.batch_size": "8, 16", "name": "bs x lr"})
    run_id = user_client.post("/sweeps/new", data=form).headers["Location"].rsplit("/", 1)[1]
    assert len(_session_cookie(user_client)) < 1500  # only what differs from the blank form
    back = user_client.get("/sweeps/new").get_data(as_text=True)
    assert 'value="8, 16"' in back and 'value="1e-3, 3e-3"' in back and 'value="bs x lr"' in back
    assert f'href="/jobs/{run_id}"' in back
    failed = user_client.post("/sweeps/new", data={**form, "grid.batch_size": "8, x", "idempotency_key": "t" * 16})
    assert failed.status_code == 400  # other values submitted: the kept ones no longer describe the form
    assert 'data-role="just-queued"' not in user_client.get("/sweeps/new").get_data(as_text=True)
    user_client.post("/sweeps/new", data={**form, "idempotency_key": "u" * 16})
    monkeypatch.setattr(lastqueued, "WINDOW_S", 0)  # the window has passed
    assert 'data-role="just-queued"' not in user_client.get("/sweeps/new").get_data(as_text=True)


def test_a_sweep_may_not_name_a_weights_file(user_client, experiment):
    response = user_client.post("/sweeps/new", data=sweep_form(user_client, experiment, pretrained="/etc/passwd"))
    assert response.status_code == 400 and runs_in(experiment) == []


def test_the_datasets_page_counts_images_per_class_and_subject(user_client):
    html = user_client.get("/datasets").get_data(as_text=True)
    assert "demo" in html and "48" in html and "subj" in html and "escape" not in html
