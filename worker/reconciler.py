"""The reconciler: finds jobs whose worker died and puts them back on the queue (or fails them).

`reconcile` finds runs left RUNNING whose lease expired (their worker died): it puts them back on
the queue to resume from their checkpoint, or fails them once they have used their attempts; it
also advances sweeps whose children ended meanwhile. It runs at worker start and then every few
seconds beside each worker, as its own small process (not a thread in the Celery parent, which
forks a child per job), under a Redis lock so that several workers do not reconcile at once, and
exits when its worker does.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from mlcore.names import Tag
from worker.broker import Broker
from worker.processes import pid_alive
from worker.scheduler import advance_sweep
from worker.state import PREFIX, JobState

log = logging.getLogger("dataslayer.reconciler")


def reconcile_once() -> list[dict]:
    """One pass, under a lock shared by all workers."""
    from worker.client import JobClient

    client = JobClient()
    # A reconciler killed mid-pass (SIGKILL of its worker's group) never releases the lock: it expires after one
    # lease, as the dead worker's jobs do, so the next worker's reconciler takes over then rather than minutes later.
    lock = client.redis.lock(f"{PREFIX}:reconcile-lock", timeout=max(15, client.settings.lease_ttl), blocking=False)
    if not lock.acquire(blocking=False):
        return []
    try:
        return reconcile(client)
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - the lock expired meanwhile
            pass


def reconcile(client) -> list[dict]:
    """Requeue or fail RUNNING runs whose lease expired; advance sweeps whose children ended meanwhile.

    Only runs sent to this worker's queue (tag `dataslayer.queue`) are its business: two stacks that share
    a tracking server (a team's and someone's laptop, staging and production) never adopt each other's jobs.

    A requeued job keeps one message, at the front of its priority (`Broker.ensure_queued`): the
    one Celery put back at the back, the one its dead worker held, or a new one if Redis lost it.
    """
    broker = Broker(client.settings)
    grace = client.settings.lease_ttl
    actions = []
    for job in client.list_jobs(status="RUNNING", queue=client.settings.queue, limit=1000):
        if job.job_type == "sweep":
            actions.append({"sweep": job.run_id, **advance_sweep(client, job.run_id)})
            continue
        state = JobState(client.redis, job.run_id)
        if Tag.QUEUE not in job.tags or state.lease_owner() is not None:
            continue  # not a queued job (e.g. `dataslayer train` in a terminal), or alive
        attempts = int(client.redis.get(state.attempts_key) or 0)
        if attempts >= client.settings.max_attempts:
            reason = f"its worker stopped responding (lease expired) after {attempts} attempts"
            client.mlflow.set_tag(job.run_id, Tag.FAILURE, reason)
            client.mlflow.set_terminated(job.run_id, "FAILED")
            broker.remove(job.run_id)  # a copy Celery requeued would only be skipped
            actions.append({"run_id": job.run_id, "action": "failed", "reason": reason})
            if job.parent_run_id:
                advance_sweep(client, job.parent_run_id)
        elif Tag.PARAMS_JSON in job.tags:
            client.mlflow.update_run(job.run_id, status="SCHEDULED")
            client.mlflow.set_tag(job.run_id, Tag.RECOVERED, str(int(job.tags.get(Tag.RECOVERED, "0")) + 1))
            params = json.loads(job.tags[Tag.PARAMS_JSON])
            done = broker.ensure_queued(job.job_type, job.run_id, params, job.priority, grace=grace)
            actions.append({"run_id": job.run_id, "action": "requeued", "message": done})
    queued = broker.positions()
    scheduled = client.list_jobs(status="SCHEDULED", queue=client.settings.queue, limit=1000)
    suspects = [j for j in scheduled if _lost(j, queued, broker, client, grace)]
    if suspects:
        # A worker's pop and its "unacknowledged" record are two steps: look again once that moment has passed.
        time.sleep(1.0)
        queued = broker.positions()
        suspects = [j for j in (client.job(s.run_id, with_progress=False) for s in suspects) if j.status == "SCHEDULED"]
    for job in suspects:
        if _lost(job, queued, broker, client, grace):
            params = json.loads(job.tags[Tag.PARAMS_JSON])
            done = broker.ensure_queued(job.job_type, job.run_id, params, job.priority, grace=grace)
            actions.append({"run_id": job.run_id, "action": "requeued a lost message", "message": done})
    for action in actions:
        log.warning("reconciler: %s", action)
    return actions


def _lost(job, queued: dict[str, int], broker: Broker, client, grace: float) -> bool:
    """A queued job with no live message: not in line, not held by a worker, not leased (e.g. Redis lost it).

    A delivery nobody acted on for longer than a worker holds one (Broker.held) counts as lost too: Redis killed
    between a task's retry and its ack keeps the old delivery unacknowledged, for hours of visibility timeout.
    """
    if job.job_type == "sweep" or Tag.PARAMS_JSON not in job.tags or job.run_id in queued:
        return False
    if job.parent_run_id and job.tags.get(Tag.ENQUEUED) != "1":
        return False  # a sweep child its scheduler has not released yet
    if time.time() - float(job.tags.get(Tag.SUBMITTED_AT, 0)) < grace:
        return False  # its submit may still be sending the message
    return not JobState(client.redis, job.run_id).lease_owner() and not broker.held(job.run_id, grace=grace)


def main(argv: list[str] | None = None) -> None:
    """Reconcile every --every seconds until the --parent-pid process exits."""
    from worker.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--every", type=float, default=get_settings().reconcile_every_s)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    while pid_alive(args.parent_pid):
        try:
            reconcile_once()
        except Exception as exc:  # noqa: BLE001 - Redis or MLflow down: try again next round
            log.warning("reconcile failed: %s", exc)
        deadline = time.monotonic() + args.every
        while time.monotonic() < deadline and pid_alive(args.parent_pid):
            time.sleep(min(1.0, args.every))


if __name__ == "__main__":
    main()
