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
from worker.broker import enqueue
from worker.processes import pid_alive
from worker.scheduler import advance_sweep
from worker.state import PREFIX, JobState

log = logging.getLogger("dataslayer.reconciler")


def reconcile_once() -> list[dict]:
    """One pass, under a lock shared by all workers."""
    from worker.client import JobClient

    client = JobClient()
    lock = client.redis.lock(f"{PREFIX}:reconcile-lock", timeout=300, blocking=False)
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
    """Requeue or fail RUNNING runs whose lease expired; advance sweeps whose children ended meanwhile."""
    actions = []
    for job in client.list_jobs(status="RUNNING", limit=1000):
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
            actions.append({"run_id": job.run_id, "action": "failed", "reason": reason})
            if job.parent_run_id:
                advance_sweep(client, job.parent_run_id)
        elif Tag.PARAMS_JSON in job.tags:
            client.mlflow.update_run(job.run_id, status="SCHEDULED")
            client.mlflow.set_tag(job.run_id, Tag.RECOVERED, str(int(job.tags.get(Tag.RECOVERED, "0")) + 1))
            enqueue(job.job_type, job.run_id, json.loads(job.tags[Tag.PARAMS_JSON]), job.priority, client.settings)
            actions.append({"run_id": job.run_id, "action": "requeued"})
    for job in client.list_jobs(status="SCHEDULED", limit=1000):
        if (
            job.tags.get(Tag.REQUEUE_PENDING) == "1"
            and Tag.PARAMS_JSON in job.tags
            and not JobState(client.redis, job.run_id).lease_owner()
        ):
            client.mlflow.set_tag(job.run_id, Tag.REQUEUE_PENDING, "0")
            enqueue(job.job_type, job.run_id, json.loads(job.tags[Tag.PARAMS_JSON]), job.priority, client.settings)
            actions.append({"run_id": job.run_id, "action": "requeued after preemption"})
    for action in actions:
        log.warning("reconciler: %s", action)
    return actions


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
