"""TPE proposals for a sweep, from a study rebuilt out of the sweep's child runs each time (ask-and-tell).

MLflow is the state of record; Optuna keeps nothing. Each time `advance_sweep` has a free slot under
the sweep's cap it reads the children (their varied parameters, their state, their per-epoch
objective), rebuilds an in-memory Optuna study from them (`rebuild`), asks it for one trial
(`propose`), and creates that child run before looking for the next free slot. Trials map as:
finished -> COMPLETE with its best objective over its epochs; pruned -> PRUNED with its epoch
history (TPE ranks it by its last value); scheduled or running -> RUNNING (the sampler's
constant liar keeps a new proposal away from them); failed or killed -> FAIL (ignored by TPE).
The sampler is seeded with the sweep's seed + the number of trials already made, so the same
history gives the same proposal: a rerun of the scheduler after a crash proposes what it would have.

Why concurrent proposals are safe:
- Every proposal happens inside `advance_sweep`, under the sweep's Redis lock
  (`sweep-lock:<parent>`), so two schedulers (two workers, a worker and the reconciler, a restarted
  stack) never propose for one sweep at the same time.
- The child run, with its `dataslayer.sweep_index` tag and its parameters, is created in MLflow
  before the lock is released; the next holder lists the children from MLflow (read-after-write on
  the tracking server's database), so it sees that trial, counts it against the budget and the
  cap, and feeds it to the study as RUNNING. A proposal is therefore never made twice, and the
  budget never overshoots.
- A scheduler that dies after creating the child but before enqueueing it leaves a SCHEDULED child
  without `dataslayer.enqueued`: the next `advance_sweep` enqueues it like any waiting grid child,
  instead of proposing a new one. One that dies before creating it has changed nothing.
- Losing Redis loses the lock and the queue, not the study: the reconciler re-advances sweeps when
  the stack is back, and the study is rebuilt from MLflow alone.
- The lock's 60 s timeout bounds a holder that hangs; a proposal (a few MLflow reads per child and
  one TPE fit over at most MAX_CHILDREN trials) takes well under a second to a few seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from worker.sweep import SweepParams

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "running": TrialState.RUNNING,
    "failed": TrialState.FAIL,
}


@dataclass(frozen=True)
class TrialRecord:
    """One child as the study sees it: its varied values, state, objective and per-epoch objective."""

    params: dict[str, Any]
    state: str  # complete | pruned | running | failed
    value: float | None = None
    history: dict[int, float] = field(default_factory=dict)


def distributions(sweep: SweepParams) -> dict[str, BaseDistribution]:
    """The search space: ranges as float or int distributions (log or linear), lists as categorical choices."""
    integer = sweep.integer_fields()
    out: dict[str, BaseDistribution] = {}
    for key, r in sweep.ranges.items():
        if key in integer:
            out[key] = IntDistribution(math.ceil(r.low), math.floor(r.high), log=r.log)
        else:
            out[key] = FloatDistribution(r.low, r.high, log=r.log)
    for key, choices in sweep.grid.items():
        out[key] = CategoricalDistribution(choices)
    return out


def _fit(value: Any, dist: BaseDistribution) -> Any:
    """A recorded value as the distribution holds it (floats are recorded at 6 significant digits)."""
    if isinstance(dist, FloatDistribution):
        return min(max(float(value), dist.low), dist.high)
    if isinstance(dist, IntDistribution):
        return min(max(int(value), dist.low), dist.high)
    return value


def rebuild(sweep: SweepParams, trials: list[TrialRecord]) -> optuna.Study:
    """An in-memory study holding `trials`, with a TPE sampler seeded from the sweep seed + len(trials)."""
    sampler = optuna.samplers.TPESampler(
        seed=sweep.seed + len(trials),
        n_startup_trials=startup_trials(sweep),
        constant_liar=True,
    )
    study = optuna.create_study(direction="maximize" if sweep.maximize else "minimize", sampler=sampler)
    dists = distributions(sweep)
    for t in trials:
        state = STATES[t.state] if not (t.state == "complete" and t.value is None) else TrialState.FAIL
        try:
            frozen = optuna.trial.create_trial(
                state=state,
                value=t.value if state == TrialState.COMPLETE else None,
                params={k: _fit(t.params[k], d) for k, d in dists.items()},
                distributions=dists,
                intermediate_values=dict(t.history),
            )
        except (KeyError, ValueError, TypeError) as exc:  # a child edited by hand, or of another search space
            log.warning("sweep trial %s left out of the study: %s", t.params, exc)
            continue
        study.add_trial(frozen)
    return study


def startup_trials(sweep: SweepParams) -> int:
    """Random trials before TPE models the results: a third of the budget, between 2 and 10."""
    return max(2, min(10, sweep.samples // 3))


def propose(sweep: SweepParams, trials: list[TrialRecord]) -> dict[str, Any]:
    """The varied values of the next trial, given every trial made so far (deterministic for a given history)."""
    study = rebuild(sweep, trials)
    trial = study.ask(distributions(sweep))
    integer = sweep.integer_fields()
    out = {}
    for key, value in trial.params.items():
        if key in sweep.ranges and key not in integer:
            value = _fit(float(f"{value:.6g}"), trial.distributions[key])  # as random search records them
        out[key] = value
    return out
