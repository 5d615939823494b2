"""Jobs through real worker processes: train, sweep, predict, cancel, and a hostile message."""

import base64
import json
import pickle
import uuid

import redis
from queue_helpers import epoch_steps, versions_of, wait_until


def test_a_queued_training_job_finishes_with_a_registered_version(job_client, start_worker, tiny_job):
    start_worker("w1")
    run_id = job_client.submit_train({**tiny_job, "epochs": 2})
    job = job_client.wait(run_id, timeout=240)
    assert job.status == "FINISHED", job.failure
    assert epoch_steps(job_client, run_id) == [1, 2]
    versions = versions_of(job_client, tiny_job["registered_model_name"])
    assert [v.run_id for v in versions] == [run_id]
    assert job.progress["phase"] == "done" and job.progress["summary"]["model_version"] == versions[0].version
    assert any("epoch 2/2" in line for line in job_client.log_tail(run_id))
    assert "logs/job.log" in {a.path for a in job_client.mlflow.list_artifacts(run_id, "logs")}
    # MLflow's duration counts from submission: the queue wait is its own metric, logged once.
    (waited,) = job_client.mlflow.get_metric_history(run_id, "queue_wait_s")
    started = float(job.tags["dataslayer.started_at"])
    assert abs(waited.value - (started - job_client.mlflow.get_run(run_id).info.start_time / 1000)) < 0.01


def test_a_sweep_of_4_runs_4_children_and_ends_the_parent_with_the_best(job_client, start_worker, tiny_job):
    start_worker("w1")
    parent = job_client.submit_sweep(
        {
            "base": tiny_job,
            "grid": {"learning_rate": [1e-3, 3e-3], "batch_size": [8, 16]},
            "max_concurrent": 2,
            "promote_best": True,
        }
    )
    job = job_client.wait(parent, timeout=420)
    assert job.status == "FINISHED", job.failure
    children = job_client.list_jobs(sweep=parent)
    assert len(children) == 4 and all(c.status == "FINISHED" for c in children)
    top = max(c.metrics["best_val_f1_weighted"] for c in children)
    best = next(c for c in children if c.run_id == job.tags["dataslayer.best_child_run_id"])
    assert best.metrics["best_val_f1_weighted"] == top == job.metrics["best_val_f1_weighted"]  # ties: any top child
    assert len(versions_of(job_client, tiny_job["registered_model_name"])) == 4
    champion = job_client.mlflow.get_model_version_by_alias(tiny_job["registered_model_name"], "champion")
    assert champion.run_id == best.run_id  # promote_best: there was no champion to beat


def test_cancel_a_running_job_stops_it_within_seconds(job_client, start_worker, tiny_job):
    start_worker("w1")
    run_id = job_client.submit_train({**tiny_job, "epochs": 200})
    wait_until(
        lambda: (job_client.job(run_id).progress or {}).get("phase") == "training", 180, what="training to start"
    )
    job_client.cancel(run_id)
    job = job_client.wait(run_id, timeout=30)
    assert job.status == "KILLED" and job.failure == "cancelled"
    assert versions_of(job_client, tiny_job["registered_model_name"]) == []
    # The worker is free again: the next job runs.
    nxt = job_client.submit_train(tiny_job)
    assert job_client.wait(nxt, timeout=240).status == "FINISHED"


def test_a_cancelled_queued_job_never_starts_even_after_a_worker_restart(job_client, start_worker, tiny_job):
    queued = job_client.submit_train(tiny_job)
    job_client.cancel(queued)
    start_worker("w1")
    after = job_client.submit_train(tiny_job)
    assert job_client.wait(after, timeout=240).status == "FINISHED"
    job = job_client.job(queued)
    assert job.status == "KILLED" and "dataslayer.attempt" not in job.tags  # it never started


def test_a_pickled_message_is_refused_and_the_queue_keeps_draining(
    job_client, start_worker, tiny_job, queue_env, tmp_path
):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = base64.b64encode(pickle.dumps(((Exploit(),), {}, {}))).decode()
    message = {
        "body": body,
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {
            "lang": "py",
            "task": "dataslayer.train",
            "id": str(uuid.uuid4()),
            "argsrepr": "",
            "kwargsrepr": "",
        },
        "properties": {
            "delivery_tag": str(uuid.uuid4()),
            "delivery_mode": 2,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue_env["DATASLAYER_QUEUE"]},
        },
    }
    redis.Redis.from_url(queue_env["REDIS_URL"]).lpush(queue_env["DATASLAYER_QUEUE"], json.dumps(message))
    run_id = job_client.submit_train(tiny_job)
    start_worker("w1")
    assert job_client.wait(run_id, timeout=240).status == "FINISHED"
    assert not marker.exists()
    queue = redis.Redis.from_url(queue_env["REDIS_URL"])
    assert queue.llen(queue_env["DATASLAYER_QUEUE"]) == 0  # consumed and refused, not stuck


def test_the_queue_benchmark_reports_latency_and_throughput(job_client, start_worker, demo_root, tmp_path):
    from worker.queue_bench import main

    start_worker("w1")
    out = tmp_path / "bench.json"
    main(["--data", str(demo_root), "--jobs", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["finished"] == 2
    assert result["jobs_per_min"] > 0 and result["latency_p50_s"] >= 0 and result["first_start_latency_s"] > 0
