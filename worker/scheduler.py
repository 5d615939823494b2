"""Sweep scheduling: starting a sweep's children up to its cap, and ending it.

`advance_sweep` starts a sweep's children up to its concurrency cap and, once the last child has
ended, ends the parent with the best child's id and score (and, opt-in, promotes that child's
model when it beats the current champion). It runs after every child and from the `sweep` task,
under a Redis lock, and is idempotent.

A TPE sweep has no children until the scheduler proposes them: each call fills the free slots under
the cap with proposals (worker/tpe.py, which says why that is safe under concurrent schedulers),
creating each child run before the lock is released, until `dataslayer.sweep_size` children exist
(`samples`, plus the re-runs and extensions of worker/rerun.py).

The best child is the FINISHED child with the best objective (the sweep's `objective`, best over
its epochs; `best_val_f1_weighted` by default) that was not pruned: a pruned trial's metrics are
valid up to the epoch it stopped at, but it never trained as long as the others.
"""

from __future__ import annotations

import json
import logging

from mlcore.names import BEST_SELECTION_METRIC, SELECTION_METRIC, Tag
from worker.broker import enqueue
from worker.client import JobClient
from worker.state import PREFIX, JobState
from worker.sweep import SweepParams

log = logging.getLogger(__name__)
SCORE = BEST_SELECTION_METRIC  # logged by every finished training run


def advance_sweep(client: JobClient, parent_id: str) -> dict:
    """Start children up to the cap; end the parent when every child has ended."""
    with sweep_lock(client, parent_id):
        parent = client.job(parent_id, with_progress=False)
        if parent.done:
            return {"parent": parent_id, "status": parent.status}
        children = sorted(
            client.list_jobs(sweep=parent_id, limit=1000), key=lambda j: int(j.tags.get(Tag.SWEEP_INDEX, 0))
        )
        cancelled = JobState(client.redis, parent_id).cancel_requested()
        sweep = SweepParams.model_validate_json(parent.tags[Tag.PARAMS_JSON])
        if sweep.strategy == "tpe" and not cancelled:
            children += _propose(client, parent, sweep, children)
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
        complete = len(children) >= int(parent.tags.get(Tag.SWEEP_SIZE, len(children)))
        if (complete and all(c.done for c in children)) or (cancelled and not active):
            return _finish_sweep(client, parent, children, cancelled, sweep)
        return {"parent": parent_id, "started": started, "active": len(active) + len(started)}


def sweep_lock(client: JobClient, parent_id: str):
    """The lock every change of one sweep's children holds (scheduling, proposing, re-running, extending)."""
    return client.redis.lock(f"{PREFIX}:sweep-lock:{parent_id}", timeout=60, blocking_timeout=30)


def objective_history(client: JobClient, run_id: str, metric: str) -> dict[int, float]:
    """A run's per-epoch values of `metric` (step = epoch)."""
    return {m.step: m.value for m in client.mlflow.get_metric_history(run_id, metric)}


def objective_value(
    client: JobClient, child, sweep: SweepParams, history: dict[int, float] | None = None
) -> float | None:
    """A finished child's objective: the best over its epochs (`best_val_f1_weighted` for the default).

    `history`: the child's objective_history, where the caller has read it already.
    """
    if sweep.objective == SELECTION_METRIC and SCORE in child.metrics:
        return child.metrics[SCORE]
    values = (history if history is not None else objective_history(client, child.run_id, sweep.objective)).values()
    return (max(values) if sweep.maximize else min(values)) if values else None


def trial_record(client: JobClient, child, sweep: SweepParams):
    """A child as a TPE trial (worker/tpe.py)."""
    from worker.tpe import TrialRecord

    recorded = json.loads(child.tags.get(Tag.PARAMS_JSON) or "{}")
    varied = {k: recorded.get(k) for k in (*sweep.ranges, *sweep.grid)}
    if not child.done:
        return TrialRecord(varied, "running", history=objective_history(client, child.run_id, sweep.objective))
    if child.status != "FINISHED":
        return TrialRecord(varied, "failed")
    history = objective_history(client, child.run_id, sweep.objective)
    if Tag.PRUNED in child.tags:
        return TrialRecord(varied, "pruned", history=history)
    return TrialRecord(varied, "complete", objective_value(client, child, sweep, history), history)


def _propose(client: JobClient, parent, sweep: SweepParams, children: list) -> list:
    """Create TPE children for the free slots under the cap (under the sweep lock: see worker/tpe.py)."""
    from worker.tpe import propose

    cap = int(parent.tags.get(Tag.MAX_CONCURRENT, "1"))
    # sweep_size, not samples: it counts the re-runs too (worker/rerun.py), which are children but no proposals
    size = int(parent.tags.get(Tag.SWEEP_SIZE, sweep.samples))
    free = min(cap - sum(not c.done for c in children), size - len(children))
    if free <= 0:
        return []
    trials = [trial_record(client, c, sweep) for c in children]
    experiment = sweep.child({}, "base").experiment_name
    created = []
    for _ in range(free):
        combo = propose(sweep, trials)
        params = sweep.child(combo, f"trial {len(children) + len(created) + 1}")
        index = len(children) + len(created)
        run_id = client.create_sweep_child(
            parent.run_id,
            experiment,
            index,
            params,
            parent.priority,
            parent.submitted_by,
            run_name=sweep.child_name(index, params),
        )
        created.append(client.job(run_id, with_progress=False))
        trials.append(trial_record(client, created[-1], sweep))
    log.info("sweep %s: proposed %d TPE trial(s)", parent.run_id, len(created))
    return created


def _finish_sweep(client: JobClient, parent, children, cancelled: bool, sweep: SweepParams) -> dict:
    children = [client.job(c.run_id, with_progress=False) for c in children]  # final metrics
    scores = {
        c.run_id: objective_value(client, c, sweep)
        for c in children
        if c.status == "FINISHED" and Tag.PRUNED not in c.tags
    }
    finished = [c for c in children if scores.get(c.run_id) is not None]
    pruned = [c for c in children if Tag.PRUNED in c.tags]
    result: dict = {
        "parent": parent.run_id,
        "children": len(children),
        "finished": len(finished),
        "pruned": len(pruned),
    }
    if finished:
        sign = 1 if sweep.maximize else -1
        best = max(finished, key=lambda c: sign * scores[c.run_id])  # on a tie, the first child in sweep order
        client.mlflow.log_metric(parent.run_id, "best_" + sweep.objective, scores[best.run_id])
        client.mlflow.set_tag(parent.run_id, Tag.BEST_CHILD_RUN_ID, best.run_id)
        result.update(best_child_run_id=best.run_id, score=scores[best.run_id])
        if parent.tags.get(Tag.PROMOTE_BEST) == "true" and not cancelled:
            result["promotion"] = _promote(client, best)
    status = "KILLED" if cancelled else "FINISHED" if finished else "FAILED"
    if status == "FAILED":
        reason = "every finished child was pruned" if pruned else "no child run finished"
        client.mlflow.set_tag(parent.run_id, Tag.FAILURE, reason)
    client.mlflow.set_terminated(parent.run_id, status)
    result["status"] = status
    return result


def _promote(client: JobClient, best) -> dict:
    """Promote the best child's model version if it beats the champion (mlcore.registry decides)."""
    name, version = best.tags.get(Tag.REGISTERED_MODEL), best.tags.get(Tag.MODEL_VERSION)
    if not name or not version:
        return {"promoted": False, "reason": "the best child registered no model"}
    return client.registry.promote_if_better(name, version)
