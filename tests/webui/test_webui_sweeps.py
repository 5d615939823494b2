"""The sweep API and form against the real app: sizes refused before any combination is built."""

import time

import pytest
from ui_helpers import API_TOKEN, csrf_token, runs_in

from worker.sweep import MAX_FIELDS, SWEEPABLE

TINY = {"arch": "resnet18", "pretrained": "none", "image_size": 32, "epochs": 1, "batch_size": 8, "device": "cpu"}
# Issue 11, item 2: 5 fields x 40 values (a 1.9 KB request) took 44 s and 3.9 GB before an HTTP 500.
HUGE_GRID = {
    f: list(range(1, 41)) for f in ("batch_size", "epochs", "image_size", "eval_batch_size", "early_stopping_patience")
}


def auth() -> dict:
    return {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.mark.parametrize("route", ["/api/sweeps/preview", "/api/sweeps"])
def test_a_grid_of_5_fields_x_40_values_is_refused_in_milliseconds(client, experiment, route):
    body = {"dataset": "demo", "base": {**TINY, "experiment_name": experiment}, "grid": HUGE_GRID}
    t0 = time.perf_counter()
    response = client.post(route, json=body, headers=auth())
    elapsed = time.perf_counter() - t0
    assert response.status_code == 400 and response.json["field"] == "grid"
    assert "102,400,000 runs" in response.json["error"] and "256" in response.json["error"]
    assert elapsed < 1.0, f"refused in {elapsed:.2f} s"
    assert runs_in(experiment) == []


@pytest.mark.parametrize(
    "grid, field",
    [
        ({"seed": list(range(257))}, "grid.seed"),  # one list longer than a sweep may be
        ({f: [None] for f in SWEEPABLE if f != "pretrained"}, "grid"),  # more fields than a sweep may vary
    ],
)
def test_long_lists_and_many_fields_are_refused_naming_the_field(client, experiment, grid, field):
    assert len(SWEEPABLE) - 1 > MAX_FIELDS
    body = {"dataset": "demo", "base": {**TINY, "experiment_name": experiment}, "grid": grid}
    response = client.post("/api/sweeps/preview", json=body, headers=auth())
    assert response.status_code == 400 and response.json["field"] == field, response.json


def test_the_form_preview_refuses_a_huge_grid_at_once(user_client, experiment):
    rows = ("learning_rate", "batch_size", "epochs", "image_size", "weight_decay")
    form = {
        **TINY,
        "dataset": "demo",
        "experiment_name": experiment,
        "sweep.strategy": "grid",
        "sweep.max_concurrent": "1",
        "csrf_token": csrf_token(user_client, "/sweeps/new"),
        **{
            f"grid.{f}": ", ".join(str(i / 100 if "rate" in f or "decay" in f else i + 16) for i in range(40))
            for f in rows
        },
    }
    t0 = time.perf_counter()
    response = user_client.post("/sweeps/preview", data=form)
    assert time.perf_counter() - t0 < 1.0
    assert response.json["ok"] is False and "102,400,000 runs" in response.json["error"], response.json


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"objective": "val_f2"}, "objective"),  # never logged
        ({"pruner": "asha"}, "pruner"),  # a one-epoch trial
        ({"samples": 257}, "samples"),  # over the sweep cap
        ({"ranges": {"arch": {"low": 1, "high": 2}}}, "ranges.arch"),  # a range TPE cannot sample
    ],
)
def test_tpe_and_pruner_input_is_refused_naming_the_field(client, experiment, extra, field):
    body = {
        "dataset": "demo",
        "base": {**TINY, "experiment_name": experiment},
        "strategy": "tpe",
        "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
        **extra,
    }
    response = client.post("/api/sweeps", json=body, headers=auth())
    assert response.status_code == 400 and response.json["field"] == field, response.json
    assert runs_in(experiment) == []


def test_a_tpe_sweep_with_a_pruner_previews_its_budget(client, experiment):
    body = {
        "dataset": "demo",
        "base": {**TINY, "epochs": 4, "experiment_name": experiment},
        "strategy": "tpe",
        "samples": 6,
        "pruner": "median",
        "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
    }
    response = client.post("/api/sweeps/preview", json=body, headers=auth())
    assert response.status_code == 200 and response.json["runs"] == 6, response.json
