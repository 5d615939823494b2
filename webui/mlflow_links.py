"""`/mlflow`: the MLflow UI, opened on the training experiment's runs table in the model-training view."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, request

from mlcore import mlflow_ui
from mlcore.names import DEFAULT_EXPERIMENT
from webui.jobqueue import jobs

bp = Blueprint("mlflow_links", __name__)


@bp.route("/mlflow")
def open_mlflow():
    """Redirect to `?experiment=NAME` (default: the training experiment), or to the list before its first run."""
    base = current_app.config["MLFLOW_PUBLIC_URL"]
    name = request.args.get("experiment", DEFAULT_EXPERIMENT)[:200]
    experiment_id = jobs().experiment_named(name)
    return redirect(mlflow_ui.experiment_url(base, experiment_id) if experiment_id else mlflow_ui.experiments_url(base))
