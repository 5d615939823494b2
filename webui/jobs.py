"""Jobs: the live list, one job's page (curves, plots, reports, log), cancel."""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for

from mlcore.names import BEST_SELECTION_METRIC, JOB_TYPES, SELECTION_METRIC, STATUSES, TERMINAL, Tag
from webui import artifacts, datasets, progress, users
from webui.auth import safe_next
from webui.jobqueue import checked_run_id, jobs, queue_available
from webui.queueing import extend_sweep, rerun_sweep
from worker.errors import QueueUnavailable
from worker.users import check_cancel

bp = Blueprint("jobs", __name__)
CURVES = ("train_loss", "val_loss", "val_f1", SELECTION_METRIC)
LOG_LINES = 200


def _filters() -> dict:
    """The list's filters from the query string; anything not on the fixed lists is ignored."""
    status = request.args.get("status", "")
    job_type = request.args.get("type", "")
    sweep = request.args.get("sweep", "")
    return {
        "status": status if status in STATUSES else None,
        "job_type": job_type if job_type in JOB_TYPES else None,
        "sweep": checked_run_id(sweep) if sweep else None,
    }


def _rows(filters: dict) -> list[dict]:
    listed = jobs().list_jobs(**filters, limit=200, with_progress=True)
    children = progress.by_sweep(listed)
    for sweep in (j for j in listed if j.job_type == "sweep" and j.run_id not in children):
        children[sweep.run_id] = jobs().list_jobs(sweep=sweep.run_id, limit=300)
    return [progress.view(j, children.get(j.run_id)) for j in _sweeps_first(listed)]


def _sweeps_first(listed: list) -> list:
    """Newest first, but a sweep's children right below it (they are created after their parent)."""
    present = {j.run_id for j in listed}
    kids = progress.by_sweep(listed)
    out = []
    for j in listed:
        if j.parent_run_id in present:
            continue
        out.append(j)
        out.extend(sorted(kids.get(j.run_id, []), key=lambda c: int(c.tags.get(Tag.SWEEP_INDEX, 0))))
    return out


@bp.route("/")
def home():
    """The jobs page is the home page."""
    return redirect(url_for("jobs.index"))


@bp.route("/jobs")
def index():
    """Every job with live progress, filterable by status, type and sweep."""
    filters = _filters()
    rows = _rows(filters)
    sweeps = [progress.view(j) for j in jobs().list_jobs(job_type="sweep", limit=50)]
    return render_template(
        "jobs/list.html",
        rows=rows,
        filters=filters,
        statuses=STATUSES,
        types=JOB_TYPES,
        sweeps=sweeps,
        queue_ok=queue_available(),
    )


@bp.route("/jobs.json")
def index_json():
    """The list's rows for the page's polling."""
    return jsonify(jobs=_rows(_filters()), queue_ok=queue_available())


def sweep_children(job) -> list:
    kids = jobs().list_jobs(sweep=job.run_id, limit=300)
    score = BEST_SELECTION_METRIC
    return sorted(
        kids,
        key=lambda c: (score in c.metrics, c.metrics.get(score, 0.0), c.metrics.get("best_val_f1", 0.0)),
        reverse=True,
    )


def metric_curves(run_id: str) -> dict[str, list[list[float]]]:
    """Per-epoch history of the curves the job page draws."""
    return jobs().metric_history(run_id, CURVES)


def log_lines(job) -> list[str]:
    """The log tail from Redis while it is there; the logged artifact after the job."""
    try:
        lines = jobs().log_tail(job.run_id, LOG_LINES)
    except QueueUnavailable:  # the page still shows what MLflow has
        lines = []
    if not lines and job.done:
        text = artifacts.text(job.run_id, "log") or ""
        lines = text.splitlines()[-LOG_LINES:]
    return lines


def _varied(job) -> list[str]:
    """The fields a sweep varies, from its logged grid and ranges."""
    keys: list[str] = []
    for param in ("grid", "ranges"):
        try:
            keys += list(json.loads(job.params.get(param) or "{}"))
        except ValueError:  # params are cut at 6000 characters: a huge grid is not valid JSON any more
            pass
    return keys


@bp.route("/jobs/<run_id>")
def detail(run_id: str):
    """One job: progress, curves, evaluation, parameters and log."""
    job = jobs().job(checked_run_id(run_id))
    children = sweep_children(job) if job.job_type == "sweep" else []
    ctx = {
        "job": job,
        "row": progress.view(job, children),
        "children": [progress.view(c) for c in children],
        "child_jobs": children,
        "log": log_lines(job) if job.job_type != "sweep" else [],
        "plots": {},
        "reports": {},
    }
    if job.job_type == "sweep":
        ctx["varied"] = _varied(job)
        if children:
            ctx["compare_url"] = progress.mlflow_compare_url(children)
    if job.job_type == "train" and job.done:
        listed = artifacts.listing(job.run_id, "plots")
        ctx["plots"] = {
            k: artifacts.PLOTS[k][1] for k in artifacts.PAGE_PLOTS if artifacts.PLOTS[k][0].rpartition("/")[2] in listed
        }
        for key in ("classification_report", "confusion_matrix", "skipped_files", "dataset_counts"):
            ctx["reports"][key] = artifacts.report(job.run_id, key)
    if job.job_type == "predict" and job.status == "FINISHED":
        ctx["downloads"] = artifacts.submission_files(job.run_id)
        ctx["reports"]["prediction"] = artifacts.report(job.run_id, "prediction")
    if job.status == "FAILED":
        ctx["traceback"] = artifacts.text(job.run_id, "traceback")
    ctx["dataset"] = datasets.name_of(job.params.get("data_dir"))
    return render_template("jobs/detail.html", **ctx)


@bp.route("/jobs/<run_id>/live.json")
def live(run_id: str):
    """What the job page refreshes: status, progress, curves, log tail, children."""
    job = jobs().job(checked_run_id(run_id))
    children = sweep_children(job) if job.job_type == "sweep" else []
    body = {
        "job": progress.view(job, children),
        "log": log_lines(job) if job.job_type != "sweep" else [],
        "children": [progress.view(c) for c in children],
    }
    if job.job_type == "train":
        body["curves"] = metric_curves(job.run_id)
    return jsonify(body)


@bp.route("/jobs/<run_id>/plots/<name>.png")
def plot(run_id: str, name: str):
    """One of the run's evaluation plots, by its name in the fixed list."""
    if name not in artifacts.PLOTS:
        abort(404)
    job = jobs().job(checked_run_id(run_id), with_progress=False)
    data = artifacts.fetch(job.run_id, artifacts.PLOTS[name][0], cache=job.status in TERMINAL)
    if data is None:
        abort(404)
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@bp.route("/jobs/<run_id>/cancel", methods=["POST"])
def cancel(run_id: str):
    """Cancel a job (a sweep cancels its children): the caller's own, or anyone's for an admin."""
    found = jobs().job(checked_run_id(run_id), with_progress=False)
    check_cancel(users.current(), found.submitted_by)
    result = jobs().cancel(run_id, by=users.current().name)
    if result["cancelled"]:
        flash(
            f"Cancel requested for {run_id[:8]}: "
            f"it is {progress.STATUS_LABELS.get(result['status'], result['status'])} now.",
            "success",
        )
    else:
        flash(
            f"{run_id[:8]} had already ended ({progress.STATUS_LABELS.get(result['status'], result['status'])}).",
            "info",
        )
    return redirect(safe_next(request.form.get("next"), url_for("jobs.detail", run_id=run_id)))


@bp.route("/jobs/<run_id>/rerun", methods=["POST"])
def rerun(run_id: str):
    """Re-run an ended sweep's failed and killed (or the ticked) trials; a refusal is flashed with the API's words."""
    from mlcore.errors import ParamsError
    from worker.rerun import SweepRefused

    states = [s for s in ("failed", "killed", "pruned") if request.form.get(s)]
    try:
        result = rerun_sweep(checked_run_id(run_id), states or None)
    except (SweepRefused, ParamsError) as exc:
        flash(f"Nothing was re-run: {exc.message}", "error")
    else:
        count = len(result["rerun"]) + len(result["resumed"])
        flash(f"Re-running {count} trial{'s' if count != 1 else ''} of sweep {run_id[:8]}.", "success")
    return redirect(url_for("jobs.detail", run_id=run_id))


@bp.route("/jobs/<run_id>/extend", methods=["POST"])
def extend(run_id: str):
    """Add N trials to an ended random or TPE sweep; a refusal is flashed with the API's words."""
    from mlcore.errors import ParamsError
    from worker.rerun import SweepRefused

    try:
        result = extend_sweep(checked_run_id(run_id), request.form.get("samples", ""))
    except (SweepRefused, ParamsError) as exc:
        flash(f"The sweep was not extended: {exc.message}", "error")
    else:
        flash(f"Sweep {run_id[:8]} extended to {result['samples']} trials.", "success")
    return redirect(url_for("jobs.detail", run_id=run_id))
