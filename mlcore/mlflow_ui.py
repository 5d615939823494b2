"""Links into the MLflow UI, every one opening the model-training view.

MLflow 3 opens an experiment in its GenAI view (Overview, Traces, ...) unless the link says
otherwise: the UI reads `workflowType` from the query of its hash route and otherwise falls back to
the browser's last choice, GenAI by default. The server has no setting for it (checked in 3.17.2:
the experiment tag `mlflow.experimentKind` changes nothing), so every link the project prints or
shows carries `workflowType=machine_learning`. A user who opens MLflow directly switches with the
"GenAI / Model training" toggle at the top of the experiment page.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

ML_VIEW = {"workflowType": "machine_learning"}


def _link(base: str, route: str, **query: str) -> str:
    return f"{base.rstrip('/')}/#/{route}?{urlencode({**query, **ML_VIEW}, quote_via=quote)}"


def experiments_url(base: str) -> str:
    """The experiment list."""
    return _link(base, "experiments")


def experiment_url(base: str, experiment_id: str, search_filter: str | None = None) -> str:
    """An experiment's runs table, optionally filtered (MLflow's search syntax, e.g. `tags.x = 'y'`)."""
    return _link(base, f"experiments/{experiment_id}", **({"searchFilter": search_filter} if search_filter else {}))


def predictions_filter(model_name: str, version: str) -> str:
    """The search filter of a model version's prediction runs (tagged by worker/jobs.py and `dataslayer demo`)."""
    from mlcore.names import Tag

    return f"tags.`{Tag.MODEL_NAME}` = '{model_name}' and tags.`{Tag.MODEL_VERSION}` = '{version}'"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page."""
    return _link(base, f"experiments/{experiment_id}/runs/{run_id}")


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """The compare view of several runs."""
    compact = {"separators": (",", ":")}
    return _link(
        base, "compare-runs", runs=json.dumps(run_ids, **compact), experiments=json.dumps(experiment_ids, **compact)
    )


def model_version_url(base: str, name: str, version: str) -> str:
    """A registered model version's page."""
    return _link(base, f"models/{quote(name, safe='')}/versions/{version}")
