"""The JSON API under /api: the pages' operations for scripts and the CLI, with Bearer tokens."""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, request, session
from flask import current_app as app

from mlcore.errors import ParamsError
from mlcore.names import JOB_TYPES, STATUSES
from webui import auth, datasets, progress, submissions
from webui.jobqueue import checked_run_id, jobs
from webui.jobs import log_lines, metric_curves, sweep_children
from webui.models import find_version, model_name, versions
from webui.openapi import document
from webui.queueing import count_sweep, queue_predict, queue_sweep, queue_train, sweep_values

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def _authenticate():
    """A Bearer token for everything; a logged-in browser may also read (GET) without one."""
    user = auth.token_user(request.headers.get("Authorization"))
    if user is None and request.method == "GET" and session.get("user") in app.config["USERS"]:
        user = session["user"]
    if user is None:
        response = jsonify(
            error="missing or invalid API token: send 'Authorization: Bearer TOKEN' (see your profile page)"
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="dataslayer"'
        return response
    g.user = user
    return None


@bp.errorhandler(ParamsError)
def _params_error(exc: ParamsError):
    return jsonify(error=str(exc), field=exc.field, errors=exc.errors), 400


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object body (Content-Type: application/json)")
    return body


def _token(body: dict) -> str | None:
    return request.headers.get("Idempotency-Key") or body.get("idempotency_key")


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
    """Cancel a job (a sweep cancels its children); 409 when it has ended already."""
    result = jobs().cancel(checked_run_id(run_id))
    if not result["cancelled"]:
        return jsonify({**result, "error": f"the job has ended already ({result['status']}): nothing to cancel"}), 409
    return jsonify(result)


@bp.route("/runs", methods=["POST"])
def create_run():
    """Queue a training job: {dataset, params, priority, name, idempotency_key}."""
    body = _body()
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise ParamsError("params", "expected an object of TrainParams fields")
    run_id = queue_train(
        params,
        body.get("dataset"),
        priority=body.get("priority", "normal"),
        user=g.user,
        token=_token(body),
        name=body.get("name"),
    )
    return jsonify(run_id=run_id, status="SCHEDULED"), 201


def _sweep(body: dict) -> dict:
    base = body.get("base", {})
    if not isinstance(base, dict):
        raise ParamsError("base", "expected an object of TrainParams fields")
    spec = {k: v for k, v in body.items() if k not in ("base", "dataset", "priority", "idempotency_key")}
    return sweep_values(base, body.get("dataset"), spec)


@bp.route("/sweeps", methods=["POST"])
def create_sweep():
    """Queue a sweep: {dataset, base, strategy, grid, ranges, samples, seed, max_concurrent, promote_best, priority}."""
    body = _body()
    run_id = queue_sweep(_sweep(body), priority=body.get("priority", "normal"), user=g.user, token=_token(body))
    return jsonify(run_id=run_id, status="RUNNING"), 201


@bp.route("/sweeps/preview", methods=["POST"])
def preview_sweep():
    """How many runs a sweep would make (every child validated); nothing is queued."""
    return jsonify(runs=count_sweep(_sweep(_body())))


@bp.route("/models")
def list_models():
    """Versions of the registered model (or ?name=) with validation F1, threshold, source run and aliases."""
    name = model_name(request.args.get("name"))
    return jsonify(name=name, versions=versions(name))


@bp.route("/models/<name>/<int:version>/promote", methods=["POST"])
def promote_version(name: str, version: int):
    """Point the `champion` alias at a version."""
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
    body = _body()
    run_id = queue_predict(
        body.get("dataset"),
        version=body.get("model_version"),
        threshold=body.get("threshold"),
        priority=body.get("priority", "normal"),
        user=g.user,
        token=_token(body),
    )
    return jsonify(run_id=run_id, status="SCHEDULED"), 201


@bp.route("/submissions/<run_id>/<kind>.csv")
def download(run_id: str, kind: str):
    """A finished prediction's submission or probabilities CSV."""
    return submissions.download(run_id, kind)
