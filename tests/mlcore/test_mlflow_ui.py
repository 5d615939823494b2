"""Links into the MLflow UI open the model-training view, whatever the browser chose last."""

from urllib.parse import parse_qs, urlsplit

from mlcore import mlflow_ui


def _route(url: str) -> tuple[str, dict]:
    """The hash route and its query (MLflow's UI routes after `#`)."""
    route, _, query = urlsplit(url).fragment.partition("?")
    return route, parse_qs(query)


def test_every_link_asks_for_the_machine_learning_view():
    base = "http://127.0.0.1:5000/"
    links = [
        mlflow_ui.experiments_url(base),
        mlflow_ui.experiment_url(base, "3"),
        mlflow_ui.run_url(base, "3", "a" * 32),
        mlflow_ui.compare_url(base, ["a" * 32, "b" * 32], ["3"]),
        mlflow_ui.model_version_url(base, "fall detector", "7"),
    ]
    for link in links:
        assert link.startswith("http://127.0.0.1:5000/#/"), link  # one slash after the host
        assert _route(link)[1]["workflowType"] == ["machine_learning"], link


def test_routes_are_the_ones_mlflow_serves():
    base = "http://mlflow:5000"
    assert _route(mlflow_ui.experiment_url(base, "3"))[0] == "/experiments/3"
    assert _route(mlflow_ui.run_url(base, "3", "r1"))[0] == "/experiments/3/runs/r1"
    assert _route(mlflow_ui.model_version_url(base, "fall detector", "7"))[0] == "/models/fall%20detector/versions/7"
    route, query = _route(mlflow_ui.compare_url(base, ["r1", "r2"], ["3"]))
    assert route == "/compare-runs" and query["runs"] == ['["r1","r2"]'] and query["experiments"] == ['["3"]']
