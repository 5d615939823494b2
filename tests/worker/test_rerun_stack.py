"""Re-running, extending and resuming sweeps through the real stack: Redis, the MLflow server, a worker process.

One Redis and one worker serve the whole module (a stack per test costs more than the tests); the resume test
kills that worker (its reconciler, the sweep scheduler, with it) mid-sweep and starts a new one, so it runs last.
"""

from __future__ import annotations

import json
import signal
import uuid

import pytest
from click.testing import CliRunner
from queue_helpers import epoch_steps, wait_until
from services import RedisServer, WorkerProcess

from mlcore.errors import ParamsError
from mlcore.names import Tag
from worker.rerun import SweepRefused
from worker.sweep import RERUN_OF, sweep_params


@pytest.fixture(scope="module")
def stack(mlflow_server, tmp_path_factory):
    """A Redis server, the session's MLflow server and one worker, with the queue_env settings, for the module."""
    from worker.settings import get_settings

    root = tmp_path_factory.mktemp("rerun-stack")
    redis_server = RedisServer(root / "redis")
    redis_server.start()
    env = {
        "DATASLAYER_DATA_ROOT": str(tmp_path_factory.getbasetemp()),
        "DATASLAYER_QUEUE": f"dataslayer-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_server.url,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "DATASLAYER_STATE_DIR": str(root / "state"),
        "DATASLAYER_CACHE_DIR": str(root / "cache"),
        "DATASLAYER_LEASE_TTL": "4",
        "DATASLAYER_HEARTBEAT_S": "1",
        "DATASLAYER_RECONCILE_S": "2",
        "DATASLAYER_MAX_ATTEMPTS": "3",
        "DATASLAYER_SYSTEM_METRICS": "0",
        "DATASLAYER_TRACKING_OUTAGE_S": "120",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        workers = [WorkerProcess("rerun", env, root / "worker-0.log").start()]
        yield {"env": env, "root": root, "workers": workers}
        for w in workers:
            w.stop(timeout=20)
        redis_server.stop()
    get_settings.cache_clear()


@pytest.fixture
def client(stack):
    from worker.client import JobClient

    return JobClient()


@pytest.fixture
def job(tiny_job, stack) -> dict:
    return {**tiny_job, "eval_batch_size": 64}


def _children(client, parent) -> list:
    return sorted(client.list_jobs(sweep=parent), key=lambda c: int(c.tags[Tag.SWEEP_INDEX]))


def _cli(*args: str):
    from worker.cli import command_tree

    return CliRunner().invoke(command_tree(), list(args))


def test_a_cancelled_sweep_reruns_its_killed_trial_to_completion_as_a_new_child(client, job):
    parent = client.submit_sweep(
        {"base": job, "grid": {"learning_rate": [3e-3]}, "max_concurrent": 1, "promote_best": True}
    )
    client.cancel(parent)  # its one child is killed before or while it runs
    assert client.wait(parent, timeout=120).status == "KILLED"
    (killed,) = _children(client, parent)
    assert killed.status == "KILLED"

    result = client.rerun_sweep(parent)  # default: failed and killed
    (new,) = result["rerun"].values()
    assert result["rerun"] == {killed.run_id: new}
    with pytest.raises(SweepRefused) as running:  # a second click while it runs again
        client.rerun_sweep(parent)
    assert running.value.status == 409 and "still running" in running.value.message
    done = client.wait(parent, timeout=240)
    assert done.status == "FINISHED", done.failure  # the cancel is not held against the re-run
    children = _children(client, parent)
    assert [c.run_id for c in children] == [killed.run_id, new]  # the original stays for the record
    assert [c.status for c in children] == ["KILLED", "FINISHED"]
    rerun = children[1]
    assert rerun.tags[RERUN_OF] == killed.run_id and rerun.tags[Tag.SWEEP_INDEX] == "1"
    assert rerun.typed_params == killed.typed_params and epoch_steps(client, new) == [1]
    assert done.tags[Tag.SWEEP_SIZE] == "2" and done.tags[Tag.BEST_CHILD_RUN_ID] == new
    champion = client.mlflow.get_model_version_by_alias(job["registered_model_name"], "champion")
    assert champion.run_id == new  # --promote-best applies to the re-run pass (there was no champion to beat)

    # Refusals, with the same words in the CLI (the API's: tests/webui/test_webui_rerun.py).
    with pytest.raises(SweepRefused) as nothing:
        client.rerun_sweep(parent)
    assert nothing.value.status == 400 and "nothing to re-run" in nothing.value.message
    assert "(1 finished, 1 killed)" in nothing.value.message
    cli = _cli("sweep", "rerun", parent)
    assert cli.exit_code == 1 and f"error: {nothing.value.message}" in cli.output
    with pytest.raises(ParamsError) as grid:
        client.extend_sweep(parent, 2)
    assert grid.value.field == "samples" and "grid" in grid.value.message
    for unknown in (uuid.uuid4().hex, new):  # no such run; a run that is no sweep
        with pytest.raises(SweepRefused) as missing:
            client.rerun_sweep(unknown)
        assert missing.value.status == 404
    with pytest.raises(ParamsError) as states:
        client.rerun_sweep(parent, ["lost"])
    assert states.value.field == "states"


def test_extending_a_tpe_sweep_adds_finished_trials_proposed_from_the_history(client, job):
    parent = client.submit_sweep(
        {
            "base": job,
            "strategy": "tpe",
            "samples": 1,
            "seed": 2,
            "ranges": {"learning_rate": {"low": 1e-4, "high": 5e-2, "log": True}},
            "max_concurrent": 1,
        }
    )
    assert client.wait(parent, timeout=240).status == "FINISHED"
    with pytest.raises(ParamsError) as over:
        client.extend_sweep(parent, 256)
    assert over.value.field == "samples" and "256" in over.value.message
    cli = _cli("sweep", "extend", parent, "--samples", "1")
    assert cli.exit_code == 0, cli.output
    done = client.wait(parent, timeout=300)
    assert done.status == "FINISHED", done.failure
    children = _children(client, parent)
    assert [c.status for c in children] == ["FINISHED"] * 2
    assert [c.tags[Tag.SWEEP_INDEX] for c in children] == ["0", "1"]  # no duplicate proposal
    assert len({c.typed_params["learning_rate"] for c in children}) == 2
    assert sweep_params(json.loads(done.tags[Tag.PARAMS_JSON])).samples == 2
    assert done.tags[Tag.SWEEP_SIZE] == "2"


def test_random_extension_continues_the_seeded_draws(demo_root):
    spec = {
        "base": {"data_dir": str(demo_root)},
        "strategy": "random",
        "seed": 5,
        "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
    }
    three, five = sweep_params({**spec, "samples": 3}), sweep_params({**spec, "samples": 5})
    assert five.combinations()[:3] == three.combinations()  # extend by 2 draws combinations()[3:]


def test_a_sweep_stopped_mid_way_resumes_where_it_was(client, job, stack):
    parent = client.submit_sweep(
        {
            "base": job,
            "strategy": "random",
            "samples": 2,
            "seed": 1,
            "ranges": {"learning_rate": {"low": 1e-3, "high": 3e-3}},
            "max_concurrent": 1,
        }
    )
    first = _children(client, parent)[0]
    running = lambda: (client.job(first.run_id).progress or {}).get("phase") in ("decoding", "training")  # noqa: E731
    wait_until(running, 120, 0.1, "the first trial to run")
    old = stack["workers"][-1]
    old.signal(signal.SIGKILL)  # the worker, its job and its reconciler (the sweep's scheduler) at once
    old.proc.wait(10)
    assert client.job(parent, with_progress=False).status == "RUNNING"
    assert _children(client, parent)[1].status == "SCHEDULED"  # not started: the cap is 1
    stack["workers"].append(WorkerProcess("rerun2", stack["env"], stack["root"] / "worker-1.log").start())
    done = client.wait(parent, timeout=300)
    assert done.status == "FINISHED", done.failure
    children = _children(client, parent)
    assert len(children) == 2 and [c.status for c in children] == ["FINISHED", "FINISHED"]
    assert int(children[0].tags[Tag.ATTEMPT]) == 2 and children[1].tags[Tag.ATTEMPT] == "1"
    assert [epoch_steps(client, c.run_id) for c in children] == [[1], [1]]  # each epoch logged once
