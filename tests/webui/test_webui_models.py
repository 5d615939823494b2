"""Models: versions with their scores, and promotion to champion after a confirmation."""

import pytest
from mlflow import MlflowClient
from ui_helpers import csrf_token


def register(name: str, experiment: str, f1: float, threshold: float = 0.4) -> str:
    """A registered version with the tags a training run sets (no training needed to test the pages)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(exp.experiment_id if exp else client.create_experiment(experiment))
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - the second version of the same model
        pass
    mv = client.create_model_version(
        name,
        f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags={
            "val_f1": str(f1),
            "val_f1_weighted": str(f1 - 0.01),
            "threshold": str(threshold),
            "arch": "resnet18",
            "image_size": "32",
            "run_id": run.info.run_id,
        },
    )
    return str(mv.version)


def test_no_registered_model_yet_is_an_empty_state(user_client):
    html = user_client.get("/models").get_data(as_text=True)
    assert "No version of" in html


def test_versions_are_listed_with_scores_and_aliases(user_client, model_name, experiment):
    register(model_name, experiment, 0.61)
    register(model_name, experiment, 0.72)
    MlflowClient().set_registered_model_alias(model_name, "champion", "1")
    html = user_client.get("/models").get_data(as_text=True)
    assert 'data-version="2"' in html and "0.7200" in html and "0.6100" in html and "badge-champion" in html
    assert html.index('data-version="2"') < html.index('data-version="1"')  # newest first
    assert "/models/%s/2/promote" % model_name in html
    api_like = user_client.get(f"/models?name={model_name}").get_data(as_text=True)
    assert "resnet18" in api_like


def test_promote_asks_first_showing_the_champion_and_the_difference(user_client, model_name, experiment):
    register(model_name, experiment, 0.61)
    register(model_name, experiment, 0.72)
    MlflowClient().set_registered_model_alias(model_name, "champion", "1")
    html = user_client.get(f"/models/{model_name}/2/promote").get_data(as_text=True)
    assert "v1" in html and "+0.1100" in html and "Promote v2" in html
    assert MlflowClient().get_model_version_by_alias(model_name, "champion").version == "1"  # a GET changes nothing
    response = user_client.post(
        f"/models/{model_name}/2/promote", data={"csrf_token": csrf_token(user_client, "/models")}
    )
    assert response.status_code == 302
    assert MlflowClient().get_model_version_by_alias(model_name, "champion").version == "2"
    assert "is the champion now (was version 1)" in user_client.get(response.headers["Location"]).get_data(as_text=True)


def test_promoting_the_first_version_shows_no_champion_yet(user_client, model_name, experiment):
    register(model_name, experiment, 0.5)
    html = user_client.get(f"/models/{model_name}/1/promote").get_data(as_text=True)
    assert "none yet" in html


def test_promote_without_csrf_token_is_refused(user_client, model_name, experiment):
    register(model_name, experiment, 0.5)
    assert user_client.post(f"/models/{model_name}/1/promote").status_code == 400
    with pytest.raises(Exception):
        MlflowClient().get_model_version_by_alias(model_name, "champion")


@pytest.mark.parametrize("path", ["/models/{name}/9/promote", "/models/bad%2Fname/1/promote", "/models?name=../x"])
def test_unknown_versions_and_bad_names_are_404(user_client, model_name, experiment, path):
    register(model_name, experiment, 0.5)
    assert user_client.get(path.format(name=model_name)).status_code == 404


def test_mlflow_links_open_the_model_training_view(user_client, model_name, experiment):
    import re

    register(model_name, experiment, 0.61)
    html = user_client.get("/models").get_data(as_text=True)
    links = [h for h in re.findall(r'href="([^"]+)"', html) if "/#/" in h]
    # the version and its source run (and its predictions, once the predictions experiment exists)
    assert len([h for h in links if "searchFilter" not in h]) == 2, links
    assert all("workflowType=machine_learning" in h for h in links), links
    # The menu's MLflow link goes through /mlflow, which opens the named experiment's runs table.
    assert 'href="/mlflow"' in html
    exp_id = MlflowClient().get_experiment_by_name(experiment).experiment_id
    opened = user_client.get(f"/mlflow?experiment={experiment}")
    assert opened.status_code == 302
    assert opened.headers["Location"].endswith(f"/#/experiments/{exp_id}?workflowType=machine_learning")
    before_any_run = user_client.get("/mlflow?experiment=no-such-experiment").headers["Location"]
    assert before_any_run.endswith("/#/experiments?workflowType=machine_learning")


def test_a_version_links_to_its_prediction_runs_in_their_own_experiment(user_client, model_name, experiment):
    import html as html_lib
    import re
    from urllib.parse import parse_qs, urlsplit

    from mlcore.names import PREDICTION_EXPERIMENT, Tag

    version = register(model_name, experiment, 0.61)
    other = register(model_name, experiment, 0.62)
    client = MlflowClient()  # prediction runs as the worker tags them (worker/jobs.py)
    exp = client.get_experiment_by_name(PREDICTION_EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(PREDICTION_EXPERIMENT)
    mine = client.create_run(exp_id, tags={Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: version}).info.run_id
    client.create_run(exp_id, tags={Tag.MODEL_NAME: model_name, Tag.MODEL_VERSION: other})
    page = user_client.get("/models").get_data(as_text=True)
    row = re.search(rf'<tr data-version="{version}".*?</tr>', page, re.S).group(0)
    link = html_lib.unescape(re.search(r'href="([^"]+)"[^>]*data-role="predictions"', row).group(1))
    assert f"/#/experiments/{exp_id}?" in link and "workflowType=machine_learning" in link
    search = parse_qs(urlsplit(urlsplit(link).fragment).query)["searchFilter"][0]
    # the filter the link opens MLflow with selects exactly this version's predictions on the real server
    assert [r.info.run_id for r in client.search_runs([exp_id], search)] == [mine]
