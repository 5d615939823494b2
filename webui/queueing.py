"""Queueing from the forms and the API: role and limits, datasets by name, web-only limits, then the JobClient.

Both entrances pass through here so they refuse the same things: a role that may not queue, a
user over their limits (worker/users.py), a path in any field, a weights file named by path, an
unknown dataset. JSON requests are also type-checked strictly (`strict=True`: "1" is no number);
form values are strings by nature and the models parse them. Everything else is the models' job.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app

from mlcore.errors import ParamsError
from mlcore.names import CHAMPION, IDEMPOTENCY_KEY_RE, MODEL_NAME_RE, PRIORITIES
from mlcore.params import PredictParams, TrainParams, build, check_types
from mlcore.runname import given_name
from webui import users
from webui.datasets import UnknownDataset, resolve_dataset
from webui.jobqueue import jobs
from webui.paramforms import WEB_CHOICES
from worker.users import check_limits, check_queueing, check_sweep_change, check_sweep_owner

SERVER_ONLY = {"data_dir", "output"}  # chosen by the server; a request may not set them


def idempotency_key(user: str, token: str | None) -> str | None:
    """The JobClient key of a form token (per user, so one user's token never matches another's)."""
    if not token:
        return None
    if not IDEMPOTENCY_KEY_RE.match(token):
        raise ParamsError("idempotency_key", "expected 8 to 64 letters, digits, '-' or '_'")
    return f"webui:{user}:{token}"


def check_priority(priority: Any) -> str:
    """One of high, normal, low; then the caller's role may queue at all, and at this priority (403 otherwise)."""
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise ParamsError("priority", f"expected one of {', '.join(PRIORITIES)}")
    check_queueing(users.current(), priority)
    return priority


def _within_limits(runs: int, sweep: bool = False) -> None:
    """The caller's queued + running jobs and sweep size limits (429 / 403 naming the limit)."""
    account = users.current()
    check_limits(account, runs=runs, sweep=sweep, active=lambda: jobs().active_jobs(account.name))


def _dataset_dir(name: Any, kind: str) -> str:
    if name in (None, ""):
        raise ParamsError("dataset", "choose a dataset")
    try:
        return str(resolve_dataset(name, kind))
    except UnknownDataset as exc:
        raise ParamsError("dataset", f"{exc}; choose one of the datasets listed") from None


def _web_limits(values: dict[str, Any], where: str = "") -> None:
    """Refuse what only the server may choose, and weights files (they are paths)."""
    for key in SERVER_ONLY & set(values):
        raise ParamsError(where + key, "is chosen by the server: pick a dataset by name instead")
    for key, allowed in WEB_CHOICES.items():
        if key in values:
            chosen = values[key] if isinstance(values[key], list) else [values[key]]
            bad = [v for v in chosen if v not in allowed]
            if bad:
                raise ParamsError(where + key, f"expected one of {', '.join(allowed)}")


def run_name(value: Any) -> str | None:
    """An optional run name (shown in the jobs list and MLflow; the JobClient names an unnamed run)."""
    return given_name(value)


def queue_train(
    values: dict[str, Any],
    dataset: Any,
    *,
    priority: Any,
    user: str,
    token: str | None = None,
    name: Any = None,
    strict: bool = False,
) -> str:
    """Validate and queue one training job; returns its run id."""
    priority = check_priority(priority)
    _web_limits(values)
    if strict:
        check_types(TrainParams, values)
    key = idempotency_key(user, token)
    params = build(TrainParams, {**values, "data_dir": _dataset_dir(dataset, "train")})
    if params.cv_folds is not None:
        from mlcore.split import check_folds  # numpy and scikit-learn: only when needed

        check_folds(params)
    _within_limits(1)
    return jobs().submit_train(
        params, priority=priority, submitted_by=user, idempotency_key=key, run_name=run_name(name)
    )


def sweep_values(base: dict[str, Any], dataset: Any, spec: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """The SweepParams values for a base, a dataset and the sweep's own settings."""
    from worker.sweep import Range, SweepParams, check_shape

    _web_limits(base)
    for field in ("grid", "ranges"):
        if not isinstance(spec.get(field, {}), dict):
            raise ParamsError(field, "expected an object of field -> values")
    check_shape(spec.get("grid"), spec.get("ranges"))
    _web_limits(spec.get("grid", {}), "grid.")
    _web_limits(spec.get("ranges", {}), "ranges.")
    if strict:
        check_types(TrainParams, base, "base.")
        check_types(SweepParams, {k: v for k, v in spec.items() if k not in ("grid", "ranges")})
        for key, values in spec.get("grid", {}).items():
            for value in values if isinstance(values, list) else []:
                check_types(TrainParams, {key: value}, "grid.")
        for key, bounds in spec.get("ranges", {}).items():
            if isinstance(bounds, dict):
                check_types(Range, bounds, f"ranges.{key}.")
    return {**spec, "base": {**base, "data_dir": _dataset_dir(dataset, "train")}}


def count_sweep(values: dict[str, Any]) -> int:
    """How many runs a sweep makes; every child is validated (ParamsError names the field)."""
    from worker.sweep import sweep_params

    return sweep_params(values).check()


def queue_sweep(values: dict[str, Any], *, priority: Any, user: str, token: str | None = None) -> str:
    """Validate and queue a sweep; returns the parent's run id."""
    priority = check_priority(priority)
    key = idempotency_key(user, token)
    _within_limits(count_sweep(values), sweep=True)
    return jobs().submit_sweep(values, priority=priority, submitted_by=user, idempotency_key=key)


def _sweep_check(run_id: str):
    """The owner rule now (403 before anything else), and a check of the limits for when the change is planned."""
    from worker.rerun import find_sweep

    account = users.current()
    owner = find_sweep(jobs(), run_id).submitted_by  # 404 with the CLI's words for an unknown sweep
    check_sweep_owner(account, owner)

    def check(runs: int, trials: int) -> None:
        check_sweep_change(account, owner, runs=runs, total=trials, active=lambda: jobs().active_jobs(account.name))

    return check


def rerun_sweep(run_id: str, states: list[str] | None) -> dict:
    """Re-run an ended sweep's failed and killed (or the chosen) trials: the caller's own sweep, or any for an admin."""
    return jobs().rerun_sweep(run_id, states, _sweep_check(run_id))


def extend_sweep(run_id: str, samples: Any) -> dict:
    """Add `samples` trials to an ended random or TPE sweep: the caller's own, or any for an admin."""
    if isinstance(samples, str):  # a form's value
        if not re.fullmatch(r"\s*\d{1,4}\s*", samples):
            raise ParamsError("samples", "expected a whole number of trials >= 1")
        samples = int(samples)
    return jobs().extend_sweep(run_id, samples, _sweep_check(run_id))


def model_uri(version: Any) -> str:
    """models:/NAME@champion, or models:/NAME/VERSION for a chosen version."""
    name = current_app.config["MODEL_NAME"]
    if not MODEL_NAME_RE.match(name):
        raise ParamsError("model", "the configured model name is invalid")
    if version in (None, "", CHAMPION):
        return f"models:/{name}@{CHAMPION}"
    if not re.fullmatch(r"\d{1,9}", str(version)):
        raise ParamsError("model_version", "expected a version number or 'champion'")
    return f"models:/{name}/{int(version)}"


def queue_predict(
    dataset: Any,
    *,
    version: Any,
    threshold: Any,
    priority: Any,
    user: str,
    token: str | None = None,
    strict: bool = False,
) -> str:
    """Queue a prediction job writing a fresh submission; returns its run id."""
    priority = check_priority(priority)
    key = idempotency_key(user, token)
    if strict:
        check_types(PredictParams, {"threshold": threshold})
    values: dict[str, Any] = {"data_dir": _dataset_dir(dataset, "test"), "model_uri": model_uri(version)}
    if threshold not in (None, ""):
        values["threshold"] = threshold
    params = build(PredictParams, values)
    _within_limits(1)
    return jobs().submit_predict(
        params, priority=priority, submitted_by=user, idempotency_key=key, run_name="submission"
    )
