"""The JSON API under /api: the pages' operations for scripts and the CLI, with Bearer tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, request, session
from pydantic import BaseModel, ConfigDict, ValidationError

from mlcore.errors import ParamsError
from mlcore.names import JOB_TYPES, STATUSES
from mlcore.params import describe_errors
from webui import auth, datasets, progress, submissions, users
from webui.jobqueue import checked_run_id, jobs
from webui.jobs import log_lines, metric_curves, sweep_children
from webui.models import find_version, model_name, versions
from webui.openapi import document
from webui.queueing import (
    count_sweep,
    extend_sweep,
    queue_predict,
    queue_sweep,
    queue_train,
    rerun_sweep,
    sweep_values,
)
from worker.users import ROLES, check_cancel, require_role

bp = Blueprint("api", __name__, url_prefix="/api")


class _Request(BaseModel):
    """A JSON body: unknown fields refused by name, strict types (a number is a number, a boolean a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    priority: str = "normal"
    idempotency_key: str | None = None


class RunRequest(_Request):
    dataset: str | None = None
    params: dict[str, Any] = {}
    name: str | None = None


class SweepRequest(_Request):
    dataset: str | None = None
    name: str | None = None
    base: dict[str, Any] = {}
    strategy: str | None = None
    grid: dict[str, Any] | None = None
    ranges: dict[str, Any] | None = None
    samples: int | None = None
    seed: int | None = None
    objective: str | None = None
    pruner: str | None = None
    pruning_warmup_epochs: int | None = None
    max_concurrent: int | None = None
    promote_best: bool | None = None


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    failed: bool = False
    killed: bool = False
    pruned: bool = False


class ExtendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    samples: int


class SubmissionRequest(_Request):
    dataset: str | None = None
    model_version: str | int | None = None
    threshold: float | None = None


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    label: str = ""
    expires_days: float | None = None
    user: str | None = None  # an admin may issue a token for another user


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: str | None = None
    max_jobs: int | None = None
    max_sweep: int | None = None


@bp.before_request
def _authenticate():
    """A Bearer token for everything; a logged-in browser may also read (GET) without one."""
    user = auth.token_user(request.headers.get("Authorization"))
    if user is None and request.method == "GET" and session.get("user") in users.accounts():
        user = session["user"]
    account = users.accounts().account(user)
    if account is None:
        response = jsonify(
            error="missing or invalid API token: send 'Authorization: Bearer TOKEN' (see your profile page)"
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="dataslayer"'
        return response
    g.user, g.account = account.name, account
    return None


@bp.errorhandler(ParamsError)
def _params_error(exc: ParamsError):
    return jsonify(error=str(exc), field=exc.field, errors=exc.errors), 400


def _body(model: type[BaseModel] | None = None):
    """The JSON object body, checked against `model` (ParamsError naming the first bad or unknown field)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object body (Content-Type: application/json)")
    if model is None:
        return body
    unknown = sorted(set(body) - set(model.model_fields))
    if unknown:
        raise ParamsError(
            unknown[0],
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"expected {', '.join(model.model_fields)}",
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = describe_errors(exc)
        raise ParamsError(errors[0]["field"], errors[0]["message"], errors) from None


def _token(body) -> str | None:
    return request.headers.get("Idempotency-Key") or body.idempotency_key


def _job_json(job, children=None) -> dict:
    return {**job.to_dict(), "view": progress.view(job, children)}


@bp.route("/openapi.json")
def openapi():
    """The OpenAPI 3 description of this API."""
    return jsonify(document(request.url_root.rstrip("/")))


@bp.route("/datasets")
def list_datasets():
    """Datasets under the data root with their image counts."""
    return jsonify(
        datasets=[
            {
                "name": d.name,
                "train": d.has_train,
                "test": d.has_test,
                "counts": d.counts,
                "test_images": d.test_images,
                "problems": d.problems,
            }
            for d in datasets.find_datasets()
        ]
    )


@bp.route("/jobs")
def list_jobs():
    """Jobs newest first, filtered by status, type or sweep."""
    status, job_type, sweep = request.args.get("status"), request.args.get("type"), request.args.get("sweep")
    status = status.upper() if status else None  # the UI shows statuses in lower case
    if (status and status not in STATUSES) or (job_type and job_type not in JOB_TYPES):
        abort(400, f"status is one of {', '.join(STATUSES)}; type is one of {', '.join(JOB_TYPES)}")
    limit = min(max(request.args.get("limit", 100, type=int), 1), 500)
    listed = jobs().list_jobs(
        status=status,
        job_type=job_type,
        sweep=checked_run_id(sweep) if sweep else None,
        limit=limit,
        with_progress=True,
    )
    return jsonify(jobs=[_job_json(j) for j in listed])


@bp.route("/jobs/<run_id>")
def job(run_id: str):
    """One job with its progress (and children for a sweep)."""
    found = jobs().job(checked_run_id(run_id))
    children = sweep_children(found) if found.job_type == "sweep" else None
    body = _job_json(found, children)
    if children is not None:
        body["children"] = [progress.view(c) for c in children]
    return jsonify(body)


@bp.route("/jobs/<run_id>/log")
def job_log(run_id: str):
    """The tail of the job's log."""
    return jsonify(lines=log_lines(jobs().job(checked_run_id(run_id), with_progress=False)))


@bp.route("/jobs/<run_id>/metrics")
def job_metrics(run_id: str):
    """Per-epoch metric history: {key: [[epoch, value], ...]}."""
    return jsonify(curves=metric_curves(checked_run_id(run_id)))


@bp.route("/jobs/<run_id>/cancel", methods=["POST"])
def cancel(run_id: str):
    """Cancel a job (a sweep cancels its children): the caller's own, or anyone's for an admin; 409 once ended."""
    found = jobs().job(checked_run_id(run_id), with_progress=False)
    check_cancel(users.current(), found.submitted_by)
    result = jobs().cancel(run_id, by=users.current().name)
    if not result["cancelled"]:
        return jsonify({**result, "error": f"the job has ended already ({result['status']}): nothing to cancel"}), 409
    return jsonify(result)


@bp.route("/runs", methods=["POST"])
def create_run():
    """Queue a training job: {dataset, params, priority, name, idempotency_key}."""
    body = _body(RunRequest)
    run_id = queue_train(
        body.params,
        body.dataset,
        priority=body.priority,
        user=g.user,
        token=_token(body),
        name=body.name,
        strict=True,
    )
    return jsonify(run_id=run_id, status="SCHEDULED"), 201


def _sweep(body: SweepRequest) -> dict:
    spec = body.model_dump(exclude_unset=True, exclude={"base", "dataset", "priority", "idempotency_key"})
    return sweep_values(body.base, body.dataset, spec, strict=True)


@bp.route("/sweeps", methods=["POST"])
def create_sweep():
    """Queue a sweep: {dataset, name, base, strategy, grid, ranges, samples, seed, objective, pruner,
    pruning_warmup_epochs, max_concurrent, promote_best, priority}."""
    body = _body(SweepRequest)
    run_id = queue_sweep(_sweep(body), priority=body.priority, user=g.user, token=_token(body))
    return jsonify(run_id=run_id, status="RUNNING"), 201


@bp.route("/sweeps/preview", methods=["POST"])
def preview_sweep():
    """How many runs a sweep would make (every child validated); nothing is queued."""
    return jsonify(runs=count_sweep(_sweep(_body(SweepRequest))))


@bp.route("/sweeps/<run_id>/rerun", methods=["POST"])
def rerun(run_id: str):
    """Re-run an ended sweep's trials {failed, killed, pruned} (none chosen: failed and killed) as new children;
    404 unknown, 409 still running, 400 nothing to re-run."""
    body = _body(RerunRequest)
    states = [s for s in ("failed", "killed", "pruned") if getattr(body, s)]
    return jsonify(rerun_sweep(checked_run_id(run_id), states or None))


@bp.route("/sweeps/<run_id>/extend", methods=["POST"])
def extend(run_id: str):
    """Add {samples} trials to an ended random or TPE sweep; a grid, or over the cap: 400 naming `samples`."""
    body = _body(ExtendRequest)
    return jsonify(extend_sweep(checked_run_id(run_id), body.samples))


@bp.route("/models")
def list_models():
    """Versions of the registered model (or ?name=) with validation F1, threshold, source run and aliases."""
    name = model_name(request.args.get("name"))
    return jsonify(name=name, versions=versions(name))


@bp.route("/models/<name>/<int:version>/promote", methods=["POST"])
def promote_version(name: str, version: int):
    """Point the `champion` alias at a version (admins only)."""
    require_role(users.current(), "promoting a model", "admin")
    name = model_name(name)
    find_version(versions(name), str(version))
    return jsonify(jobs().promote(name, str(version)))


@bp.route("/submissions", methods=["GET", "POST"])
def submissions_index():
    """GET: prediction jobs and model versions; POST: {dataset, model_version, threshold, priority} queues one."""
    if request.method == "GET":
        return jsonify(
            submissions=[submissions.history_row(j) for j in jobs().list_jobs(job_type="predict", limit=100)]
        )
    body = _body(SubmissionRequest)
    run_id = queue_predict(
        body.dataset,
        version=body.model_version,
        threshold=body.threshold,
        priority=body.priority,
        user=g.user,
        token=_token(body),
        strict=True,
    )
    return jsonify(run_id=run_id, status="SCHEDULED"), 201


@bp.route("/submissions/<run_id>/<kind>.csv")
def download(run_id: str, kind: str):
    """A finished prediction's submission or probabilities CSV."""
    return submissions.download(run_id, kind)


@bp.route("/tokens", methods=["GET", "POST"])
def tokens():
    """GET: the caller's tokens (an admin: everyone's); POST {label, expires_days}: a new token, shown once."""
    account = users.current()
    if request.method == "GET":
        return jsonify(tokens=users.store().tokens(None if account.is_admin else account.name))
    body = _body(TokenRequest)
    owner = body.user or account.name
    if owner != account.name:
        require_role(account, "issuing a token for another user", "admin")
        if users.accounts().account(owner) is None:
            abort(404, f"No user {owner}.")
    token, record = users.store().issue_token(owner, label=body.label, expires_days=auth.expiry_days(body.expires_days))
    return jsonify(**record, token=token), 201


@bp.route("/tokens/<token_id>", methods=["DELETE"])
def revoke_token(token_id: str):
    """Revoke a token: the caller's own, or anyone's for an admin."""
    return jsonify(revoked=auth.revoke(token_id)["id"])


@bp.route("/users")
def list_users():
    """Every user with role and limits (admins only)."""
    require_role(users.current(), "managing users", "admin")
    rows = [users.accounts().account(name) for name in users.accounts()]
    return jsonify(
        users=[{"name": u.name, "role": u.role, "max_jobs": u.max_jobs, "max_sweep": u.max_sweep} for u in rows]
    )


@bp.route("/users/<name>", methods=["POST"])
def change_user(name: str):
    """Change a user's role or limits {role, max_jobs, max_sweep} (admins only; -1: the role's default)."""
    require_role(users.current(), "managing users", "admin")
    body = _body(UserChange)
    if body.role is not None and body.role not in ROLES:
        raise ParamsError("role", f"expected one of {', '.join(ROLES)}")
    try:
        user = users.store().update(name, role=body.role, max_jobs=body.max_jobs, max_sweep=body.max_sweep)
    except LookupError:
        abort(404, f"No user {name} in the users file.")
    except ValueError as exc:
        raise ParamsError("body", str(exc)) from None
    return jsonify(name=user.name, role=user.role, max_jobs=user.max_jobs, max_sweep=user.max_sweep)
