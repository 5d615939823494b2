"""Models: versions of the registered model, and promoting one to `champion` after a confirmation."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from mlflow.exceptions import MlflowException

from mlcore.params import MODEL_NAME_RE
from mlcore.tracking import list_versions, promote
from webui.errors import not_found
from webui.jobqueue import jobs
from webui.progress import mlflow_run_url, timestamp

bp = Blueprint("models", __name__)
ALIAS = "champion"


def model_name(name: str | None) -> str:
    name = name or current_app.config["MODEL_NAME"]
    if not MODEL_NAME_RE.match(name):
        abort(404)
    return name


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def versions(name: str) -> list[dict]:
    """The model's versions, newest first, with numbers parsed and links added ([] when not registered yet)."""
    try:
        rows = list_versions(name)
    except MlflowException as exc:
        if not_found(exc):
            return []
        raise
    experiments: dict[str, str] = {}
    for row in rows:
        for key in ("val_f1", "val_f1_weighted", "threshold"):
            row[key] = _number(row[key])
        row["created"] = timestamp(row["created"])
        row["champion"] = ALIAS in row["aliases"]
        if row["run_id"]:
            if row["run_id"] not in experiments:
                try:
                    experiments[row["run_id"]] = jobs().mlflow.get_run(row["run_id"]).info.experiment_id
                except MlflowException as exc:
                    if not not_found(exc):
                        raise
                    experiments[row["run_id"]] = ""
            exp = experiments[row["run_id"]]
            row["mlflow_url"] = mlflow_run_url(exp, row["run_id"]) if exp else None
    return rows


def registered_names() -> list[str]:
    """Every registered model's name (the configured one first)."""
    main = current_app.config["MODEL_NAME"]
    names = sorted(m.name for m in jobs().mlflow.search_registered_models(max_results=100))
    return [main] + [n for n in names if n != main]


@bp.route("/models")
def index():
    """The versions of one registered model with their scores and aliases."""
    name = model_name(request.args.get("name"))
    return render_template("models/list.html", name=name, versions=versions(name), names=registered_names())


def find_version(rows: list[dict], version: str) -> dict:
    row = next((r for r in rows if r["version"] == version), None)
    if row is None:
        abort(404, f"No version {version}.")
    return row


@bp.route("/models/<name>/<int:version>/promote", methods=["GET", "POST"])
def promote_version(name: str, version: int):
    """GET: the confirmation (current champion and the difference in F1); POST: set the alias."""
    name = model_name(name)
    rows = versions(name)
    candidate = find_version(rows, str(version))
    champion = next((r for r in rows if r["champion"]), None)
    if request.method == "POST":
        result = promote(name, str(version), ALIAS)
        was = f" (was version {result['previous_version']})" if result.get("previous_version") else ""
        flash(f"Version {version} of {name} is the champion now{was}.", "success")
        return redirect(url_for("models.index", name=name))
    diff = {
        k: (candidate[k] - champion[k]) if champion and candidate[k] is not None and champion[k] is not None else None
        for k in ("val_f1", "val_f1_weighted")
    }
    return render_template("models/promote.html", name=name, candidate=candidate, champion=champion, diff=diff)
