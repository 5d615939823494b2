"""Re-run and extend of an ended sweep through the API and the sweep page: roles, refusals, the CSRF form.

No worker runs here: the sweep is ended by its own scheduler function (a cancelled sweep with no child
running), so what is checked is what the entrances decide and create; tests/worker/test_rerun_stack.py runs
the re-runs to completion.
"""

import uuid

import pytest
from ui_helpers import ADMIN, API_TOKEN, PASSWORD, csrf_token

from mlcore.names import Tag
from worker.scheduler import advance_sweep
from worker.sweep import RERUN_OF


@pytest.fixture
def tokens(app) -> dict[str, str]:
    """API tokens of a trainer who owns the sweep, another trainer, a viewer and the admin."""
    store = app.config["USERS"].store
    store.add("tina", "trainer", PASSWORD)
    store.add("vic", "viewer", PASSWORD)
    return {name: store.issue_token(name, label="test")[0] for name in ("tina", "vic", ADMIN)}


@pytest.fixture
def ended_sweep(job_client, tiny_train_values, experiment) -> str:
    """Tina's grid sweep of one trial, cancelled before it started: it ended KILLED with its trial killed."""
    parent = job_client.submit_sweep(
        {"base": {**tiny_train_values, "experiment_name": experiment}, "grid": {"learning_rate": [1e-3]}},
        submitted_by="tina",
    )
    job_client.cancel(parent)
    assert advance_sweep(job_client, parent)["status"] == "KILLED"
    return parent


def _post(client, path: str, token: str, body: dict | None = None):
    return client.post(path, json=body or {}, headers={"Authorization": f"Bearer {token}"})


def test_the_api_reruns_only_the_owners_or_an_admins_ended_sweep_with_the_clis_words(
    client, tokens, ended_sweep, job_client
):
    path = f"/api/sweeps/{ended_sweep}/rerun"
    unknown = _post(client, f"/api/sweeps/{uuid.uuid4().hex}/rerun", tokens["tina"])
    assert unknown.status_code == 404 and unknown.json["error"].startswith("no sweep ")
    viewer = _post(client, path, tokens["vic"])
    assert viewer.status_code == 403 and viewer.json["limit"] == "role"
    other = _post(client, path, API_TOKEN)  # ana: another trainer
    assert (
        other.status_code == 403 and other.json["limit"] == "owner" and "only their own sweeps" in other.json["error"]
    )
    loose = _post(client, path, tokens["tina"], {"failed": "yes"})
    assert loose.status_code == 400 and loose.json["field"] == "failed"
    nothing = _post(client, path, tokens["tina"], {"failed": True})  # its trial was killed, not failed
    assert nothing.status_code == 400 and "nothing to re-run" in nothing.json["error"]
    grid = _post(client, f"/api/sweeps/{ended_sweep}/extend", tokens["tina"], {"samples": 2})
    assert grid.status_code == 400 and grid.json["field"] == "samples"
    assert len(job_client.list_jobs(sweep=ended_sweep)) == 1  # nothing created by any refusal

    done = _post(client, path, tokens["tina"])  # default: failed and killed
    assert done.status_code == 200, done.json
    (original,) = done.json["rerun"]
    assert job_client.job(ended_sweep).status == "RUNNING"
    new = job_client.job(done.json["rerun"][original])
    assert new.tags[RERUN_OF] == original and new.status == "SCHEDULED" and new.submitted_by == "tina"
    assert job_client.job(original).name == "#1 lr1e-3" and new.name == "#1 lr1e-3 (re-run)"
    again = _post(client, path, tokens[ADMIN])
    assert again.status_code == 409 and "still running" in again.json["error"]
    extend = _post(client, f"/api/sweeps/{ended_sweep}/extend", tokens["tina"], {"samples": 1})
    assert extend.status_code == 409 and extend.json["error"] == again.json["error"]


def test_the_sweep_page_reruns_through_its_csrf_form_and_marks_the_rerun(user_client, ended_sweep, job_client):
    page = user_client.get(f"/jobs/{ended_sweep}").get_data(as_text=True)
    assert 'data-role="rerun"' in page and 'data-role="extend"' not in page  # a grid cannot be extended
    assert user_client.post(f"/jobs/{ended_sweep}/rerun").status_code == 400  # no CSRF token
    token = csrf_token(user_client, f"/jobs/{ended_sweep}")
    response = user_client.post(f"/jobs/{ended_sweep}/rerun", data={"csrf_token": token, "killed": "1"})
    assert response.status_code == 302
    page = user_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Re-running 1 trial of sweep" in page
    children = job_client.list_jobs(sweep=ended_sweep)
    rerun = next(c for c in children if RERUN_OF in c.tags)
    assert rerun.tags[Tag.SWEEP_INDEX] == "1" and f're-run of <a href="/jobs/{rerun.tags[RERUN_OF]}"' in page
    assert 'data-role="rerun"' not in page  # running again: nothing to re-run until it ends
    twice = user_client.post(f"/jobs/{ended_sweep}/rerun", data={"csrf_token": token})
    assert "Nothing was re-run" in user_client.get(twice.headers["Location"]).get_data(as_text=True)
    assert len(job_client.list_jobs(sweep=ended_sweep)) == 2


def test_the_openapi_document_describes_rerun_and_extend(client, tokens):
    doc = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {tokens['tina']}"}).json
    rerun = doc["paths"]["/api/sweeps/{run_id}/rerun"]["post"]
    assert {"404", "409", "400"} <= set(rerun["responses"])
    assert set(doc["components"]["schemas"]["RerunRequest"]["properties"]) == {"failed", "killed", "pruned"}
    assert doc["components"]["schemas"]["ExtendRequest"]["required"] == ["samples"]
