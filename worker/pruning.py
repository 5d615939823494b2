"""A sweep's pruner, run by the worker after each epoch of a child: should this trial stop here?

The decision is made from MLflow alone: the sibling children's per-epoch objective (step = epoch)
and this trial's own. Nothing is kept between epochs or workers, so a resumed or requeued trial is
judged the same way.

- `median` (Optuna's MedianPruner, fed a study rebuilt from the siblings): after epoch e, stop if
  the trial's best objective so far is worse than the median of the finished, unpruned siblings'
  values at epoch e (at least MEDIAN_STARTUP of them).
- `asha`, written plainly (Optuna's SuccessiveHalvingPruner keeps its rung results as system
  attributes it writes into the study during the trial, which a study rebuilt from MLflow does not
  have): asynchronous successive halving in its stopping form (as Ray Tune's ASHA). The rungs are
  the epochs (warm-up + 1) * REDUCTION**k; a trial reaching a rung carries on only when its value
  there is among the best 1/REDUCTION (rounded up) of the values every sibling, running, finished
  or pruned, had at that epoch, itself included. The first trial at a rung always carries on.
- Both: never during the first `pruning_warmup_epochs` epochs, nor after the last epoch (nothing
  left to save). An MLflow error while deciding keeps the trial running (logged).

A pruned trial ends FINISHED with `dataslayer.pruned` = the epoch (mlcore/train.py).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from mlcore.names import Tag
from worker.sweep import SweepParams

log = logging.getLogger(__name__)
REDUCTION = 2
MEDIAN_STARTUP = 2


def rungs(warmup: int, epochs: int) -> list[int]:
    """The ASHA rung epochs of a trial of `epochs` epochs (the last epoch is no rung)."""
    out, r = [], warmup + 1
    while r < epochs:
        out.append(r)
        r *= REDUCTION
    return out


def asha_prunes(value: float, others: list[float], maximize: bool) -> bool:
    """At a rung: stop unless `value` is among the best ceil(n / REDUCTION) of the n values (itself included)."""
    if not others:
        return False
    values = sorted([*others, value], reverse=maximize)
    keep = math.ceil(len(values) / REDUCTION)
    cutoff = values[keep - 1]
    return value < cutoff if maximize else value > cutoff


def median_prunes(epoch: int, own: dict[int, float], finished: list[dict[int, float]], sweep: SweepParams) -> bool:
    """Optuna's MedianPruner on a study of the finished siblings' epoch histories."""
    import optuna
    from optuna.trial import TrialState, create_trial

    pruner = optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=sweep.pruning_warmup_epochs)
    study = optuna.create_study(direction="maximize" if sweep.maximize else "minimize", pruner=pruner)
    for history in finished:
        best = max(history.values()) if sweep.maximize else min(history.values())
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=best, intermediate_values=history))
    trial = create_trial(state=TrialState.RUNNING, intermediate_values=own)
    return pruner.prune(study, trial)


def decide(epoch: int, epochs: int, own: dict[int, float], siblings: list[tuple[str, dict[int, float]]], sweep) -> bool:
    """Whether a trial at `epoch` of `epochs` stops; `siblings` are (kind, history), kind complete|pruned|running."""
    if sweep.pruner == "none" or epoch <= sweep.pruning_warmup_epochs or epoch >= epochs or epoch not in own:
        return False
    if sweep.pruner == "median":
        return median_prunes(epoch, own, [h for kind, h in siblings if kind == "complete" and h], sweep)
    if epoch not in rungs(sweep.pruning_warmup_epochs, epochs):
        return False
    others = [h[epoch] for _, h in siblings if epoch in h]
    return asha_prunes(own[epoch], others, sweep.maximize)


def should_prune_hook(client, run_id: str, parent_id: str, sweep: SweepParams, epochs: int) -> Callable:
    """The `should_prune(epoch, metrics)` hook of one sweep child (`client` is a worker.client.JobClient)."""
    from worker.scheduler import objective_history

    def should_prune(epoch: int, metrics: dict[str, float]) -> bool:
        try:
            own = objective_history(client, run_id, sweep.objective)
            if sweep.objective in metrics:
                own[epoch] = metrics[sweep.objective]
            siblings = []
            for job in client.list_jobs(sweep=parent_id, limit=1000):
                if job.run_id == run_id or (job.done and job.status != "FINISHED"):
                    continue
                kind = "running" if not job.done else "pruned" if Tag.PRUNED in job.tags else "complete"
                siblings.append((kind, objective_history(client, job.run_id, sweep.objective)))
            stop = decide(epoch, epochs, own, siblings, sweep)
        except Exception as exc:  # noqa: BLE001 - no decision without the record: the trial carries on
            log.warning("pruner of %s: no decision at epoch %d: %s", run_id, epoch, exc)
            return False
        if stop:
            log.info("trial %s pruned at epoch %d (%s, %s)", run_id, epoch, sweep.pruner, sweep.objective)
        return stop

    return should_prune
