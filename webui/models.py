"""Models: versions of the registered model, and promoting one to `champion` after a confirmation."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from mlcore import mlflow_ui
from mlcore.names import CHAMPION, MODEL_NAME_RE, PREDICTION_EXPERIMENT
from webui import users
from webui.jobqueue import jobs
from webui.progress import mlflow_run_url, timestamp
from worker.users import require_role

bp = Blueprint("models", __name__)


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
    rows = jobs().model_versions(name)
    predictions = jobs().experiment_named(PREDICTION_EXPERIMENT) if rows else None
    experiments: dict[str, str] = {}
    for row in rows:
        for key in ("val_f1", "val_f1_weighted", "threshold"):
            row[key] = _number(row[key])
        row["created"] = timestamp(row["created"])
        row["champion"] = CHAMPION in row["aliases"]
        row["mlflow_version_url"] = mlflow_ui.model_version_url(
            current_app.config["MLFLOW_PUBLIC_URL"], name, row["version"]
        )
        row["predictions_url"] = (  # its prediction runs, in their own experiment
            mlflow_ui.experiment_url(
                current_app.config["MLFLOW_PUBLIC_URL"],
                predictions,
                mlflow_ui.predictions_filter(name, row["version"]),
            )
            if predictions
            else None
        )
        if row["run_id"]:
            if row["run_id"] not in experiments:
                experiments[row["run_id"]] = _experiment_of(row["run_id"])
            exp = experiments[row["run_id"]]
            row["mlflow_url"] = mlflow_run_url(exp, row["run_id"]) if exp else None
    return rows


def _experiment_of(run_id: str) -> str:
    """The source run's experiment, or '' when the run was deleted."""
    from mlcore.tracking import is_not_found

    try:
        return jobs().experiment_of(run_id)
    except Exception as exc:  # noqa: BLE001 - MLflow's not-found carries its own code
        if is_not_found(exc):
            return ""
        raise


def registered_names() -> list[str]:
    """Every registered model's name (the configured one first)."""
    main = current_app.config["MODEL_NAME"]
    return [main] + [n for n in jobs().model_names() if n != main]


@bp.route("/models")
def index():
    """The versions of one registered model with their scores and aliases."""
    name = model_name(request.args.get("name"))
    return render_template(
        "models/list.html",
        name=name,
        versions=versions(name),
        names=registered_names(),
        prediction_experiment=PREDICTION_EXPERIMENT,
    )


def find_version(rows: list[dict], version: str) -> dict:
    row = next((r for r in rows if r["version"] == version), None)
    if row is None:
        abort(404, f"No version {version}.")
    return row


@bp.route("/models/<name>/<int:version>/promote", methods=["GET", "POST"])
def promote_version(name: str, version: int):
    """GET: the confirmation (current champion and the difference in F1); POST: set the alias."""
    require_role(users.current(), "promoting a model", "admin")
    name = model_name(name)
    rows = versions(name)
    candidate = find_version(rows, str(version))
    champion = next((r for r in rows if r["champion"]), None)
    if request.method == "POST":
        result = jobs().promote(name, str(version))
        was = f" (was version {result['previous_version']})" if result.get("previous_version") else ""
        flash(f"Version {version} of {name} is the champion now{was}.", "success")
        return redirect(url_for("models.index", name=name))
    diff = {
        k: (candidate[k] - champion[k]) if champion and candidate[k] is not None and champion[k] is not None else None
        for k in ("val_f1", "val_f1_weighted")
    }
    return render_template("models/promote.html", name=name, candidate=candidate, champion=champion, diff=diff)
