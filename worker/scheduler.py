"""Sweep scheduling: starting a sweep's children up to its cap, and ending it.

`advance_sweep` starts a sweep's children up to its concurrency cap and, once the last child has
ended, ends the parent with the best child's id and score (and, opt-in, promotes that child's
model when it beats the current champion). It runs after every child and from the `sweep` task,
under a Redis lock, and is idempotent.
"""

from __future__ import annotations

import json
import logging

from mlcore.names import BEST_SELECTION_METRIC, Tag
from worker.broker import enqueue
from worker.client import JobClient
from worker.state import PREFIX, JobState

log = logging.getLogger(__name__)
SCORE = BEST_SELECTION_METRIC  # logged by every finished training run


def advance_sweep(client: JobClient, parent_id: str) -> dict:
    """Start children up to the cap; end the parent when every child has ended."""
    lock = client.redis.lock(f"{PREFIX}:sweep-lock:{parent_id}", timeout=60, blocking_timeout=30)
    with lock:
        parent = client.job(parent_id, with_progress=False)
        if parent.done:
            return {"parent": parent_id, "status": parent.status}
        children = sorted(
            client.list_jobs(sweep=parent_id, limit=1000), key=lambda j: int(j.tags.get(Tag.SWEEP_INDEX, 0))
        )
        cancelled = JobState(client.redis, parent_id).cancel_requested()
        waiting = [c for c in children if c.status == "SCHEDULED" and c.tags.get(Tag.ENQUEUED) != "1"]
        active = [c for c in children if not c.done and c not in waiting]
        started = []
        if not cancelled:
            cap = int(parent.tags.get(Tag.MAX_CONCURRENT, "1"))
            for child in waiting[: max(0, cap - len(active))]:
                client.mlflow.set_tag(child.run_id, Tag.ENQUEUED, "1")
                enqueue(
                    "train", child.run_id, json.loads(child.tags[Tag.PARAMS_JSON]), parent.priority, client.settings
                )
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
        client.mlflow.set_tag(parent.run_id, Tag.BEST_CHILD_RUN_ID, best.run_id)
        result.update(best_child_run_id=best.run_id, score=best.metrics[SCORE])
        if parent.tags.get(Tag.PROMOTE_BEST) == "true" and not cancelled:
            result["promotion"] = _promote(client, best)
    status = "KILLED" if cancelled else "FINISHED" if finished else "FAILED"
    if status == "FAILED":
        client.mlflow.set_tag(parent.run_id, Tag.FAILURE, "no child run finished")
    client.mlflow.set_terminated(parent.run_id, status)
    result["status"] = status
    return result


def _promote(client: JobClient, best) -> dict:
    """Promote the best child's model version if it beats the champion (mlcore.registry decides)."""
    name, version = best.tags.get(Tag.REGISTERED_MODEL), best.tags.get(Tag.MODEL_VERSION)
    if not name or not version:
        return {"promoted": False, "reason": "the best child registered no model"}
    return client.registry.promote_if_better(name, version)
