"""The reconciler against a real Redis and MLflow server: a queued job whose only delivery died is sent again."""

from __future__ import annotations

import time

from mlcore.names import Tag
from worker.broker import RETRY_S, UNACKED_INDEX, Broker, _producer
from worker.reconciler import reconcile


def test_a_queued_job_whose_delivery_died_unacknowledged_is_restored_once(job_client, tiny_job, queue_env):
    """Redis killed between a task's retry and its ack (the fault suite's Redis kill) leaves the old delivery
    unacknowledged and no message in line: kombu would give it back only after its visibility timeout (hours)."""
    run_id = job_client.submit_train(tiny_job)
    job_client.mlflow.set_tag(run_id, Tag.SUBMITTED_AT, str(time.time() - 60))  # long since sent
    broker = Broker(job_client.settings)
    with _producer(queue_env["REDIS_URL"]).connection_for_read() as conn:
        queue = conn.SimpleQueue(job_client.settings.queue)
        message = queue.get(timeout=5)  # taken as a worker takes it, and never acknowledged
        assert message.payload[0][0] == run_id and broker.positions() == {}
        [(tag, _, _)] = broker.delivered(run_id)

        # Fresh, a live worker may hold it (a retry waits RETRY_S in the worker): left alone.
        assert reconcile(job_client) == [] and broker.positions() == {}

        # Older than any worker holds one, with no lease: lost; put back at the front, as its one message.
        grace = job_client.settings.lease_ttl
        broker.r.zadd(UNACKED_INDEX, {tag: broker.r.zscore(UNACKED_INDEX, tag) - grace - RETRY_S - 1})
        [action] = reconcile(job_client)
        assert action == {"run_id": run_id, "action": "requeued a lost message", "message": "restored"}
        assert broker.positions() == {run_id: 1} and broker.delivered(run_id) == []
        assert reconcile(job_client) == []  # in line now: nothing more to do
        queue.close()
    assert job_client.job(run_id, with_progress=False).status == "SCHEDULED"
