"""Submissions: queue a prediction with the champion (or a chosen version), download its CSVs."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for

from mlcore.errors import ParamsError
from mlcore.names import CHAMPION, PRIORITIES, Tag
from webui import artifacts, datasets, progress
from webui.errors import QUEUE_DOWN, TRACKING_DOWN
from webui.jobqueue import checked_run_id, jobs, queue_available
from webui.models import versions
from webui.paramforms import field_errors
from webui.queueing import queue_predict
from worker.errors import QueueUnavailable, TrackingUnavailable
from worker.job import Job

bp = Blueprint("submissions", __name__)
KINDS = ("submission", "probabilities")


def history_row(job: Job) -> dict:
    """One prediction job as the history shows it: the model version it used and what it produced."""
    row = progress.view(job)
    uri = job.params.get("model_uri", "")
    row.update(
        model_version=job.tags.get(Tag.MODEL_VERSION) or uri.rpartition("/")[2] or uri,
        model_uri=uri,
        dataset=datasets.name_of(job.params.get("data_dir")) or "(outside the data root)",
        rows=job.metrics.get("rows"),
        positives=job.metrics.get("positives"),
        threshold=job.metrics.get("threshold"),
        downloadable=job.status == "FINISHED",
    )
    return row


def _page(typed: dict, errors: dict, general: list, token: str, status: int = 200):
    history = [history_row(j) for j in jobs().list_jobs(job_type="predict", limit=100)]
    ctx = {
        "history": history,
        "values": typed,
        "errors": errors,
        "general": general,
        "token": token,
        "datasets": datasets.find_datasets("test"),
        "versions": versions(current_app.config["MODEL_NAME"]),
        "priorities": PRIORITIES,
        "model_name": current_app.config["MODEL_NAME"],
        "data_root": datasets.data_root(),
        "queue_ok": queue_available(),
    }
    return render_template("submissions/list.html", **ctx), status


@bp.route("/submissions", methods=["GET", "POST"])
def index():
    """The history of submissions and the form that generates one."""
    if request.method == "GET":
        first = {
            "model_version": request.args.get("model_version", CHAMPION),
            "priority": "normal",
            "threshold": "",
            "dataset": request.args.get("dataset", ""),
        }
        return _page(first, {}, [], uuid.uuid4().hex)
    typed = {k: request.form.get(k, "") for k in ("dataset", "model_version", "threshold", "priority")}
    token = request.form.get("idempotency_key") or ""
    try:
        run_id = queue_predict(
            typed["dataset"],
            version=typed["model_version"],
            threshold=typed["threshold"] or None,
            priority=typed["priority"] or "normal",
            user=g.user,
            token=token,
        )
    except ParamsError as exc:
        aliases = {"model_uri": "model_version", "data_dir": "dataset"}
        errors, general = field_errors(exc.errors, {"dataset", "model_version", "threshold", "priority"}, aliases)
        return _page(typed, errors, general, token, 400)
    except (QueueUnavailable, TrackingUnavailable) as exc:
        return _page(typed, {}, [QUEUE_DOWN if isinstance(exc, QueueUnavailable) else TRACKING_DOWN], token, 503)
    flash("Prediction queued: the submission appears below when it is done.", "success")
    return redirect(url_for("submissions.index", _anchor=f"run-{run_id}"))


def download(run_id: str, kind: str) -> Response:
    """A prediction run's submission or probabilities CSV, as an attachment."""
    if kind not in KINDS:
        abort(404)
    job = jobs().job(checked_run_id(run_id), with_progress=False)
    if job.job_type != "predict":
        abort(404)
    if job.status != "FINISHED":
        abort(409, "The prediction has not finished yet.")
    path = artifacts.submission_files(job.run_id).get(kind)
    data = artifacts.fetch(job.run_id, path, cache=True) if path else None
    if data is None:
        abort(404, "This run logged no such file.")
    name = "submission" if kind == "submission" else "probabilities"
    return Response(
        data,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-{job.run_id[:8]}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


@bp.route("/submissions/<run_id>/<kind>.csv")
def download_csv(run_id: str, kind: str):
    """Download a finished prediction's CSV."""
    return download(run_id, kind)
