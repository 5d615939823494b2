"""Sweep scheduling and the reconciler: the two places that move jobs along without a user.

`advance_sweep` starts a sweep's children up to its concurrency cap and, once the last child has
ended, ends the parent with the best child's id and score (and, opt-in, promotes that child's
model when it beats the current champion). It runs after every child and from the `sweep` task,
under a Redis lock, and is idempotent.

`reconcile` finds runs left RUNNING whose lease expired (their worker died): it puts them back on
the queue to resume from their checkpoint, or fails them once they have used their attempts.
"""

from __future__ import annotations

import json
import logging

from worker.client import PARAMS_TAG, TAG, JobClient, enqueue
from worker.state import PREFIX, JobState

log = logging.getLogger(__name__)
SCORE = "best_val_f1_weighted"  # the notebook's selection metric, logged by every finished training run


def advance_sweep(client: JobClient, parent_id: str) -> dict:
    """Start children up to the cap; end the parent when every child has ended."""
    lock = client.redis.lock(f"{PREFIX}:sweep-lock:{parent_id}", timeout=60, blocking_timeout=30)
    with lock:
        parent = client.job(parent_id, with_progress=False)
        if parent.done:
            return {"parent": parent_id, "status": parent.status}
        children = sorted(
            client.list_jobs(sweep=parent_id, limit=1000), key=lambda j: int(j.tags.get(TAG + "sweep_index", 0))
        )
        cancelled = JobState(client.redis, parent_id).cancel_requested()
        waiting = [c for c in children if c.status == "SCHEDULED" and c.tags.get(TAG + "enqueued") != "1"]
        active = [c for c in children if not c.done and c not in waiting]
        started = []
        if not cancelled:
            cap = int(parent.tags.get(TAG + "max_concurrent", "1"))
            for child in waiting[: max(0, cap - len(active))]:
                client.mlflow.set_tag(child.run_id, TAG + "enqueued", "1")
                enqueue("train", child.run_id, json.loads(child.tags[PARAMS_TAG]), parent.priority, client.settings)
                started.append(child.run_id)
        if all(c.done for c in children) or (cancelled and not active):
            return _finish_sweep(client, parent, children, cancelled)
        return {"parent": parent_id, "started": started, "active": len(active) + len(started)}


def _finish_sweep(client: JobClient, parent, children, cancelled: bool) -> dict:
    children = [client.job(c.run_id, with_progress=False) for c in children]  # final metrics
    finished = [c for c in children if c.status == "FINISHED" and SCORE in c.metrics]
    result: dict = {"parent": parent.run_id, "children": len(children), "finished": len(finished)}
    if finished:
        best = max(finished, key=lambda c: c.metrics[SCORE])  # on a tie, the first child in sweep order
        client.mlflow.log_metric(parent.run_id, SCORE, best.metrics[SCORE])
        client.mlflow.set_tag(parent.run_id, TAG + "best_child_run_id", best.run_id)
        result.update(best_child_run_id=best.run_id, score=best.metrics[SCORE])
        if parent.tags.get(TAG + "promote_best") == "true" and not cancelled:
            result["promotion"] = _promote_if_better(client, best)
    status = "KILLED" if cancelled else "FINISHED" if finished else "FAILED"
    if status == "FAILED":
        client.mlflow.set_tag(parent.run_id, TAG + "failure", "no child run finished")
    client.mlflow.set_terminated(parent.run_id, status)
    result["status"] = status
    return result


def _promote_if_better(client: JobClient, best) -> dict:
    """Point `champion` at the best child's model version if its validation F1 beats the champion's."""
    name, version = best.tags.get(TAG + "registered_model"), best.tags.get(TAG + "model_version")
    if not name or not version:
        return {"promoted": False, "reason": "the best child registered no model"}
    ours = float(client.mlflow.get_model_version(name, version).tags.get("val_f1_weighted", "nan"))
    try:
        champion = client.mlflow.get_model_version_by_alias(name, "champion")
        theirs = float(champion.tags.get("val_f1_weighted", "-inf"))
    except Exception:  # noqa: BLE001 - no champion yet
        champion, theirs = None, float("-inf")
    if ours > theirs:
        client.mlflow.set_registered_model_alias(name, "champion", version)
        return {"promoted": True, "model_version": version, "previous": champion.version if champion else None}
    return {"promoted": False, "reason": f"val_f1_weighted {ours:.4f} does not beat the champion's {theirs:.4f}"}


def reconcile(client: JobClient) -> list[dict]:
    """Requeue or fail RUNNING runs whose lease expired; advance sweeps whose children ended meanwhile."""
    actions = []
    for job in client.list_jobs(status="RUNNING", limit=1000):
        if job.job_type == "sweep":
            actions.append({"sweep": job.run_id, **advance_sweep(client, job.run_id)})
            continue
        state = JobState(client.redis, job.run_id)
        if TAG + "queue" not in job.tags or state.lease_owner() is not None:
            continue  # not a queued job (e.g. `dataslayer train` in a terminal), or alive
        attempts = int(client.redis.get(state.attempts_key) or 0)
        if attempts >= client.settings.max_attempts:
            reason = f"its worker stopped responding (lease expired) after {attempts} attempts"
            client.mlflow.set_tag(job.run_id, TAG + "failure", reason)
            client.mlflow.set_terminated(job.run_id, "FAILED")
            actions.append({"run_id": job.run_id, "action": "failed", "reason": reason})
            if job.parent_run_id:
                advance_sweep(client, job.parent_run_id)
        elif PARAMS_TAG in job.tags:
            client.mlflow.update_run(job.run_id, status="SCHEDULED")
            client.mlflow.set_tag(job.run_id, TAG + "recovered", str(int(job.tags.get(TAG + "recovered", "0")) + 1))
            enqueue(job.job_type, job.run_id, json.loads(job.tags[PARAMS_TAG]), job.priority, client.settings)
            actions.append({"run_id": job.run_id, "action": "requeued"})
    for job in client.list_jobs(status="SCHEDULED", limit=1000):
        if (
            job.tags.get(TAG + "requeue_pending") == "1"
            and PARAMS_TAG in job.tags
            and not JobState(client.redis, job.run_id).lease_owner()
        ):
            client.mlflow.set_tag(job.run_id, TAG + "requeue_pending", "0")
            enqueue(job.job_type, job.run_id, json.loads(job.tags[PARAMS_TAG]), job.priority, client.settings)
            actions.append({"run_id": job.run_id, "action": "requeued after preemption"})
    for action in actions:
        log.warning("reconciler: %s", action)
    return actions
