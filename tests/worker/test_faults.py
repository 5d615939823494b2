"""RELIABILITY.md's fault cases against real processes: kills, deploys, duplicates, outages, limits.

Each test asserts exact counts afterwards: one registered version per finished training job, every
epoch logged once, no run left RUNNING.
"""

import json
import signal
import time

import psutil
import redis
from queue_helpers import epoch_steps, versions_of, wait_until
from services import MlflowServer

from worker.broker import enqueue


def _checkpointed(job_client, run_id):
    """Wait until the job has written its first epoch's checkpoint (it is then mid-training)."""
    path = job_client.settings.checkpoint_root / run_id / "last.pt"
    wait_until(path.exists, 240, 0.05, f"the first checkpoint of {run_id}")


def _assert_once(job_client, run_id, model_name, epochs):
    job = job_client.job(run_id)
    assert job.status == "FINISHED", job.failure
    assert epoch_steps(job_client, run_id) == list(range(1, epochs + 1))
    assert epoch_steps(job_client, run_id, "train_loss") == list(range(1, epochs + 1))
    assert [v.run_id for v in versions_of(job_client, model_name)] == [run_id]
    assert job_client.list_jobs(status="RUNNING", queue=job_client.settings.queue) == []
    return job


def test_sigkill_of_the_worker_mid_training_resumes_from_the_checkpoint_once(job_client, start_worker, tiny_job):
    w1 = start_worker("w1")
    run_id = job_client.submit_train({**tiny_job, "epochs": 8})
    _checkpointed(job_client, run_id)
    w1.signal(signal.SIGKILL)  # the whole worker: parent, pool child, reconciler
    start_worker("w2")  # its reconciler finds the run RUNNING with an expired lease and requeues it
    job_client.wait(run_id, timeout=300)
    job = _assert_once(job_client, run_id, tiny_job["registered_model_name"], 8)
    assert int(job.tags["dataslayer.resumed_from_epoch"]) >= 1 and job.tags["dataslayer.recovered"] == "1"


def test_sigterm_of_the_worker_requeues_its_job_which_resumes_elsewhere(job_client, start_worker, tiny_job):
    w1 = start_worker("w1")
    run_id = job_client.submit_train({**tiny_job, "epochs": 8})
    _checkpointed(job_client, run_id)
    w1.signal(signal.SIGTERM, group=False)  # a deploy: only the worker's main process is told
    wait_until(lambda: w1.proc.poll() is not None, 60, what="the worker to exit")
    assert job_client.job(run_id).status == "SCHEDULED"  # back in the queue, not failed
    start_worker("w2")
    job_client.wait(run_id, timeout=300)
    job = _assert_once(job_client, run_id, tiny_job["registered_model_name"], 8)
    assert int(job.tags["dataslayer.resumed_from_epoch"]) >= 1
    assert job.tags["dataslayer.attempt"] == "1"  # a preemption is not a failed attempt


def test_a_redelivered_message_for_a_running_job_does_not_train_twice(job_client, start_worker, tiny_job, redis_server):
    start_worker("w1")
    start_worker("w2")
    run_id = job_client.submit_train({**tiny_job, "epochs": 6})
    _checkpointed(job_client, run_id)
    enqueue("train", run_id, json.loads(job_client.job(run_id).tags["dataslayer.params_json"]))  # a second copy
    job_client.wait(run_id, timeout=300)
    _assert_once(job_client, run_id, tiny_job["registered_model_name"], 6)
    assert redis.Redis.from_url(redis_server.url).get(f"dataslayer:attempts:{run_id}") == b"1"


def test_the_pool_child_killed_on_every_attempt_fails_the_job_and_the_next_job_runs(job_client, start_worker, tiny_job):
    w1 = start_worker("w1")
    doomed = job_client.submit_train({**tiny_job, "epochs": 200})
    nxt = job_client.submit_train(tiny_job)
    for attempt in (1, 2):
        wait_until(
            lambda a=attempt: (
                (p := job_client.job(doomed).progress or {}).get("attempt") == a and p.get("phase") == "training"
            ),
            240,
            0.3,
            f"attempt {attempt} to train",
        )
        for child in psutil.Process(w1.proc.pid).children():
            if "reconciler" not in " ".join(child.cmdline()):
                child.kill()  # the pool child running the job, never the worker itself
    job = job_client.wait(doomed, timeout=240)
    assert job.status == "FAILED" and "attempts" in job.failure
    assert job_client.wait(nxt, timeout=240).status == "FINISHED"
    assert versions_of(job_client, tiny_job["registered_model_name"])[0].run_id == nxt


def test_restarting_redis_with_jobs_queued_and_running_loses_none(job_client, start_worker, tiny_job, redis_server):
    start_worker("w1")
    runs = [job_client.submit_train({**tiny_job, "epochs": 6}) for _ in range(3)]
    _checkpointed(job_client, runs[0])
    redis_server.stop()
    time.sleep(3)
    redis_server.start()  # same port, same append-only file
    for run_id in runs:
        assert job_client.wait(run_id, timeout=420).status == "FINISHED", job_client.job(run_id).failure
    assert sorted(v.run_id for v in versions_of(job_client, tiny_job["registered_model_name"])) == sorted(runs)
    for run_id in runs:
        assert epoch_steps(job_client, run_id) == [1, 2, 3, 4, 5, 6]


def test_a_worker_started_before_redis_waits_for_it(job_client, start_worker, tiny_job, redis_server):
    redis_server.stop()
    w1 = start_worker("w1", wait=False)
    time.sleep(4)
    assert w1.proc.poll() is None  # still waiting, not crashed
    redis_server.start()
    run_id = job_client.submit_train(tiny_job)
    assert job_client.wait(run_id, timeout=240).status == "FINISHED"


def test_stopping_the_tracking_server_mid_job_does_not_kill_it(
    job_client, start_worker, tiny_job, tmp_path, queue_env, monkeypatch
):
    server = MlflowServer(tmp_path / "own-mlflow")
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        from worker.client import JobClient
        from worker.settings import get_settings

        get_settings.cache_clear()
        client = JobClient()
        start_worker("w1", MLFLOW_TRACKING_URI=server.url)
        run_id = client.submit_train({**tiny_job, "epochs": 10})
        _checkpointed(client, run_id)
        server.stop()
        time.sleep(8)  # epochs go on; their metrics wait in the tracker
        server.start()
        job = client.wait(run_id, timeout=300)
        assert job.status == "FINISHED", job.failure
        assert epoch_steps(client, run_id) == list(range(1, 11))
    finally:
        server.stop()


def test_a_job_past_its_time_limit_fails_clearly_and_the_worker_goes_on(job_client, start_worker, tiny_job):
    start_worker("w1", DATASLAYER_TRAIN_TIME_LIMIT="25")
    slow = job_client.submit_train({**tiny_job, "epochs": 500})
    nxt = job_client.submit_train(tiny_job)
    job = job_client.wait(slow, timeout=180)
    assert job.status == "FAILED" and "time limit" in job.failure
    assert job_client.wait(nxt, timeout=180).status == "FINISHED"
