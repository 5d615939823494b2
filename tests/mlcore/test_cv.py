"""Cross-validation by subject: `dataslayer train --cv-folds K` through a real MLflow server, the fold ensemble
registered as one version, and predictions from it."""

from __future__ import annotations

import csv
import io
import json

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient

from mlcore.cli import cli
from mlcore.errors import ParamsError
from mlcore.metrics import tune_threshold
from mlcore.model import FoldEnsemble
from mlcore.params import PredictParams, build, train_params
from mlcore.predict import run_prediction
from mlcore.registry import Registry, UnsafeModel


def _flags(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in (f"--{'data' if k == 'data_dir' else k.replace('_', '-')}", str(v))]


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cv_trains_k_child_runs_registers_one_ensemble_and_predicts_with_its_threshold(
    tracking_server, tiny_train_values, demo_root, tmp_path
):
    values = {**tiny_train_values, "epochs": 1, "experiment_name": "cv", "registered_model_name": "cv-ensemble"}
    result = CliRunner().invoke(cli, ["train", *_flags(values), "--cv-folds", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    client = MlflowClient()
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["cv_folds"] == "2"
    children = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    assert [c.data.params["cv_fold"] for c in children] == ["0", "1"]
    assert all(c.info.status == "FINISHED" and "val_f1_at_threshold" in c.data.metrics for c in children)
    # Each child is a training run on its fold: its validation subjects are the fold's, its training the others'.
    subjects = [set(f["subjects"]) for f in summary["folds"]]
    assert not subjects[0] & subjects[1] and len(subjects[0] | subjects[1]) == 3

    # Mean and std over the folds of each fold's final figures.
    fold_f1 = [c.data.metrics["val_f1_at_threshold"] for c in children]
    assert parent.data.metrics["cv_mean_val_f1_at_threshold"] == pytest.approx(np.mean(fold_f1))
    assert parent.data.metrics["cv_std_val_f1_at_threshold"] == pytest.approx(np.std(fold_f1))
    assert parent.data.metrics["cv_mean_best_val_f1_weighted"] == pytest.approx(
        np.mean([c.data.metrics["best_val_f1_weighted"] for c in children])
    )

    # Out-of-fold predictions: every image once, predicted by the fold that held its subject out.
    oof = _rows(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/tables/oof_predictions.csv"))
    assert len(oof) == 48 and set(oof[0]) == {"id", "subject", "fold", "label", "probability"}
    fold_of = {f["fold"]: set(f["subjects"]) for f in summary["folds"]}
    assert all(r["subject"] in fold_of[int(r["fold"])] for r in oof)
    labels, probs = np.array([int(r["label"]) for r in oof]), np.array([float(r["probability"]) for r in oof])

    # One version, the ensemble, its threshold tuned on the out-of-fold probabilities.
    versions = client.search_model_versions("name='cv-ensemble'")
    assert [v.version for v in versions] == [summary["model_version"]]
    mv = versions[0]
    assert mv.run_id == parent.info.run_id and mv.tags["cv_folds"] == "2"
    threshold = float(mv.tags["threshold"])
    assert threshold == tune_threshold(labels, probs, "f1")[0] == summary["threshold"]
    # This tiny seeded job tunes far from one half, so labels at the threshold differ from argmax's.
    assert abs(threshold - 0.5) > 0.1

    model, info = Registry().load(f"models:/cv-ensemble/{mv.version}")
    assert isinstance(model, FoldEnsemble) and len(model.members) == 2 and info["cv_folds"] == 2
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in model.members]).mean(0)
        assert torch.allclose(torch.softmax(model(x), 1), mean, atol=1e-6)

    pred = build(
        PredictParams,
        {
            "data_dir": str(demo_root),
            "model_uri": f"models:/cv-ensemble/{mv.version}",
            "output": str(tmp_path / "submission.csv"),
            "device": "cpu",
        },
    )
    predicted = run_prediction(pred, model, info)
    with open(predicted["probabilities"]) as f:
        test_probs = {r["id"]: float(r["probability"]) for r in csv.DictReader(f)}
    with open(predicted["submission"]) as f:
        submitted = {r["id"]: int(r["label"]) for r in csv.DictReader(f)}
    assert len(submitted) == 6 and predicted["threshold"] == threshold
    assert submitted == {i: int(p > threshold) for i, p in test_probs.items()}

    # Checked like any version: a fold count that does not match its state dict, or is no count, is refused.
    for bad in ("3", "many"):
        client.set_model_version_tag("cv-ensemble", mv.version, "cv_folds", bad)
        with pytest.raises(UnsafeModel):
            Registry().load(f"models:/cv-ensemble/{mv.version}")


def test_a_fold_count_above_the_subjects_is_refused_naming_the_flag_before_a_run(tracking_server, tiny_train_values):
    values = {**tiny_train_values, "experiment_name": "cv-refused"}
    result = CliRunner().invoke(cli, ["train", *_flags(values), "--cv-folds", "4"])
    assert result.exit_code == 2
    assert "--cv-folds" in result.output and "number of subjects (3" in result.output  # the demo data has 3
    assert MlflowClient().get_experiment_by_name("cv-refused") is None  # refused before any run


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"cv_folds": 1}, "cv_folds"),
        ({"cv_folds": 3, "split": "image"}, "cv_folds"),
        ({"cv_fold": 0}, "cv_fold"),
        ({"cv_folds": 3, "cv_fold": 3}, "cv_fold"),
    ],
)
def test_bad_fold_parameters_are_refused_naming_the_field(tiny_train_values, values, field):
    with pytest.raises(ParamsError) as err:
        train_params(**{**tiny_train_values, **values})
    assert err.value.field == field
