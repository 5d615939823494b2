"""Changing an ended sweep: re-run its failed, killed or pruned trials, or extend it by more trials.

Both create new child runs of the same parent (the originals stay for the record), then reopen the
parent: its `dataslayer.sweep_size` grows by the new children, its status goes back to RUNNING and
the `sweep` task is queued, so `advance_sweep` starts the children under the sweep's concurrency
cap and ends the parent again (best child, `--promote-best`) once every child has ended.

A re-run child carries `dataslayer.rerun_of` = the run id of the child it repeats, with that
child's recorded parameters. A child that has a re-run already is not re-run again (its re-run is,
if that failed too), so a second `rerun` repeats only what is still failed.

Extending a random sweep draws the next `samples` values from the sweep's seeded stream (the first
draws are the ones it made already); extending a TPE sweep only raises the budget: the scheduler
proposes the new trials one by one from the whole history. A grid has no more combinations.

Everything happens under the sweep's lock (`scheduler.sweep_lock`), and the parent is reopened
last: a change that dies half-way leaves SCHEDULED children of an ended parent, never enqueued, and
the next `rerun` or `extend` starts them with its own. Nothing is created twice: a trial with a
re-run child is not re-run again, and an extension records its new budget (`samples` in the
parent's parameters) before it creates a child, so the next one draws after it.
"""

from __future__ import annotations

import json
from typing import Callable

from mlcore.errors import ParamsError
from mlcore.names import Tag
from mlcore.params import TrainParams, build
from mlcore.runname import rerun_label
from worker.broker import enqueue
from worker.jobs import check_locations
from worker.scheduler import sweep_lock
from worker.state import JobState
from worker.sweep import MAX_CHILDREN, RERUN_OF, SweepParams

RERUNNABLE = ("failed", "killed", "pruned")
DEFAULT_RERUN = ("failed", "killed")
# check(new_runs, trials): the caller's role and limits (worker.users.check_sweep_change), run before anything is
# created; `trials` is the sweep's number of trials afterwards (re-runs repeat trials, they add none)
Check = Callable[[int, int], None]


class SweepRefused(Exception):
    """A sweep cannot be changed now; `status`: HTTP status (404 unknown, 409 still running, 400 nothing to do)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def trial_state(child) -> str:
    """How a child ended, as re-run chooses: finished, failed, killed, pruned, or active (not ended)."""
    if not child.done:
        return "active"
    if child.pruned:
        return "pruned"
    return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}[child.status]


def find_sweep(client, parent_id: str):
    """The sweep `parent_id`; SweepRefused 404 when there is no such run or it is no sweep."""
    from mlcore.names import RUN_ID_RE
    from mlcore.tracking import is_not_found

    if not RUN_ID_RE.match(parent_id or ""):
        raise SweepRefused(404, f"no sweep {parent_id!r}: a run id is 32 hexadecimal digits")
    try:
        parent = client.job(parent_id, with_progress=False)
    except Exception as exc:  # noqa: BLE001 - MLflow's not-found carries its own code
        if is_not_found(exc):
            raise SweepRefused(404, f"no sweep {parent_id}") from None
        raise
    if parent.job_type != "sweep":
        raise SweepRefused(404, f"no sweep {parent_id}: it is a {parent.job_type} job")
    return parent


def ended_sweep(client, parent_id: str):
    """The sweep `parent_id`, ended; SweepRefused 404 when there is no such sweep, 409 while it runs."""
    parent = find_sweep(client, parent_id)
    if not parent.done:
        raise SweepRefused(
            409, f"sweep {parent_id} is still running: wait until it ends (or cancel it) before changing it"
        )
    return parent


def _children(client, parent_id: str) -> list:
    return sorted(client.list_jobs(sweep=parent_id, limit=1000), key=lambda c: int(c.tags.get(Tag.SWEEP_INDEX, 0)))


def _leftovers(children: list) -> list:
    """Children an interrupted change created but never released (SCHEDULED, not enqueued)."""
    return [c for c in children if c.status == "SCHEDULED" and c.tags.get(Tag.ENQUEUED) != "1"]


def _counts(children: list) -> str:
    states = [trial_state(c) for c in children]
    return ", ".join(f"{states.count(s)} {s}" for s in ("finished", "failed", "killed", "pruned") if s in states)


def rerun_sweep(client, parent_id: str, states=DEFAULT_RERUN, check: Check | None = None) -> dict:
    """Re-run the ended sweep's trials that ended in one of `states` (failed, killed, pruned) as new children."""
    states = tuple(states) or DEFAULT_RERUN
    bad = [s for s in states if s not in RERUNNABLE]
    if bad:
        raise ParamsError("states", f"{', '.join(bad)}: expected some of {', '.join(RERUNNABLE)}")
    ended_sweep(client, parent_id)
    with sweep_lock(client, parent_id):
        parent = ended_sweep(client, parent_id)  # again, under the lock: a second click finds it running
        children = _children(client, parent_id)
        repeated = {c.tags.get(RERUN_OF) for c in children}
        targets = [c for c in children if trial_state(c) in states and c.run_id not in repeated]
        leftovers = _leftovers(children)
        if not targets and not leftovers:
            raise SweepRefused(
                400,
                f"nothing to re-run: sweep {parent_id} has no {' or '.join(states)} trial without a re-run "
                f"({_counts(children) or 'no children'})",
            )
        _within_cap(len(children) + len(targets), "a re-run")
        params = [_recorded(c) for c in targets]
        for p in params:
            check_locations(p, client.settings)  # the data may have moved since
        if check is not None:  # a re-run repeats trials: the sweep's number of trials stays what it was
            sweep = SweepParams.model_validate_json(parent.tags[Tag.PARAMS_JSON])
            check(len(targets) + len(leftovers), sweep.size())
        created = []
        for i, (original, p) in enumerate(zip(targets, params)):
            index = len(children) + i
            name = rerun_label(original.name, int(original.tags.get(Tag.SWEEP_INDEX, 0)))
            created.append(
                client.create_sweep_child(
                    parent_id,
                    p.experiment_name,
                    index,
                    p,
                    parent.priority,
                    parent.submitted_by,
                    tags={RERUN_OF: original.run_id},
                    run_name=name,
                )  # fmt: skip
            )
        _reopen(client, parent, len(children) + len(created))
    return {
        "parent": parent_id,
        "status": "RUNNING",
        "rerun": {o.run_id: new for o, new in zip(targets, created)},
        "resumed": [c.run_id for c in leftovers],
    }


def extend_sweep(client, parent_id: str, samples: int, check: Check | None = None) -> dict:
    """Add `samples` trials to an ended random or TPE sweep (ParamsError naming `samples` for a grid or the cap)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ParamsError("samples", "expected a whole number of trials >= 1")
    ended_sweep(client, parent_id)
    with sweep_lock(client, parent_id):
        parent = ended_sweep(client, parent_id)
        sweep = SweepParams.model_validate_json(parent.tags[Tag.PARAMS_JSON])
        if sweep.strategy == "grid":
            raise ParamsError(
                "samples",
                "a grid sweep has run every combination of its lists already: extend a random or tpe sweep, "
                "or queue a new grid with the values you want to add",
            )
        children = _children(client, parent_id)
        trials = sweep.samples + samples
        if trials > MAX_CHILDREN or len(children) + samples > MAX_CHILDREN:
            raise ParamsError(
                "samples",
                f"{samples} more trials make {max(trials, len(children) + samples)} runs, more than the "
                f"{MAX_CHILDREN} a sweep may have ({len(children)} so far)",
            )
        extended = SweepParams.model_validate({**sweep.model_dump(), "samples": trials})
        combos = extended.combinations()[sweep.samples :] if sweep.strategy == "random" else []
        params = [extended.child(combo, f"trial {sweep.samples + i + 1}") for i, combo in enumerate(combos)]
        for p in params or [extended.child({}, "base")]:
            check_locations(p, client.settings)
        if check is not None:
            check(samples + len(_leftovers(children)), trials)
        # The new budget first: an extension that dies half-way never has its draws made again by the next one
        client.mlflow.set_tag(parent_id, Tag.PARAMS_JSON, extended.model_dump_json())
        for i, p in enumerate(params):
            index = len(children) + i
            client.create_sweep_child(
                parent_id,
                p.experiment_name,
                index,
                p,
                parent.priority,
                parent.submitted_by,
                run_name=extended.child_name(index, p),
            )
        # TPE: the scheduler proposes until the sweep holds `sweep_size` children (scheduler._propose)
        _reopen(client, parent, len(children) + samples)
    return {"parent": parent_id, "status": "RUNNING", "strategy": sweep.strategy, "samples": trials}


def _within_cap(total: int, what: str) -> None:
    if total > MAX_CHILDREN:
        raise SweepRefused(400, f"{what} would make {total} runs, more than the {MAX_CHILDREN} a sweep may have")


def _recorded(child) -> TrainParams:
    """The child's parameters as recorded, validated again (ParamsError naming the field if they no longer are)."""
    return build(TrainParams, json.loads(child.tags[Tag.PARAMS_JSON]))


def _reopen(client, parent, size: int) -> None:
    """The parent back to RUNNING with `size` children and the scheduler asked to start them (the last step)."""
    JobState(client.redis, parent.run_id).clear_cancel()  # a cancelled sweep's flag would end it again at once
    client.mlflow.set_tag(parent.run_id, Tag.SWEEP_SIZE, str(size))
    if Tag.FAILURE in parent.tags:
        client.mlflow.delete_tag(parent.run_id, Tag.FAILURE)
    client.mlflow.update_run(parent.run_id, status="RUNNING")
    enqueue("sweep", parent.run_id, {}, "high", client.settings)
