"""The `dataslayer` command end to end, as a user runs it, on tiny generated data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from services import VENV_BIN


def dataslayer(*args, env=None, cwd=None, check=True):
    """Run the installed console script; return (last-line JSON or None, completed process)."""
    proc = subprocess.run(
        [str(VENV_BIN / "dataslayer"), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dataslayer {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    lines = proc.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if proc.returncode == 0 and lines else None), proc


def test_demo_train_promote_predict_models(tmp_path, mlflow_server):
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    data, _ = dataslayer("demo-data", tmp_path / "demo", "--subjects", 3, "--images-per-class", 6, "--test-images", 5)
    assert data["train"] == 36 and data["test"] == 5

    trained, proc = dataslayer(
        "train",
        "--data",
        tmp_path / "demo",
        "--preset",
        "quick",
        "--epochs",
        2,
        "--image-size",
        32,
        "--registered-model-name",
        "cli-model",
        "--device",
        "cpu",
        env=env,
    )
    assert trained["model_version"] and trained["run_id"] and 0 <= trained["val_f1_weighted"] <= 1
    assert "epoch 2/2" in proc.stderr  # the progress report
    run = MlflowClient(mlflow_server.url).get_run(trained["run_id"])
    assert run.info.run_name == "r18 32px lr1e-3 bs32 2ep"  # named after what it is (mlcore/runname.py)

    promoted, _ = dataslayer("promote", "--model", "cli-model", "--version", trained["model_version"], env=env)
    assert promoted["alias"] == "champion"

    out = tmp_path / "out" / "submission.csv"
    predicted, _ = dataslayer(
        "predict",
        "--data",
        tmp_path / "demo",
        "--model",
        "models:/cli-model@champion",
        "--out",
        out,
        "--device",
        "cpu",
        env=env,
    )
    assert predicted["rows"] == 5 and Path(predicted["submission"]) == out
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and len(rows) == 6
    assert predicted["threshold"] == pytest.approx(trained["threshold"], abs=1e-6)

    listed, proc = dataslayer("models", "--model", "cli-model", env=env)
    assert listed["champion"] == trained["model_version"] and "champion" in proc.stdout


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--epochs", "-3"], "--epochs"),
        (["--val-fraction", "abc"], "--val-fraction"),
        (["--pretrained", "/no/such/weights.pth"], "--pretrained"),
        (["--arch", "vgg16"], "--arch"),
        (["--threshold-metric", "recall"], "--threshold-metric"),
    ],
)
def test_bad_train_flags_exit_2_naming_the_flag_before_any_work(demo_root, tmp_path, args, flag):
    _, proc = dataslayer("train", "--data", demo_root, *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert flag in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was tracked


def test_missing_data_folder_is_named(tmp_path):
    _, proc = dataslayer("train", "--data", tmp_path / "nowhere", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--data" in proc.stderr and str(tmp_path / "nowhere") in proc.stderr


def test_one_subject_with_subject_split_fails_naming_the_path(tmp_path, demo_root):
    import shutil

    train = tmp_path / "one" / "train"
    shutil.copytree(demo_root / "train" / "subject-01", train / "subject-01")
    _, proc = dataslayer(
        "train",
        "--data",
        tmp_path / "one",
        "--pretrained",
        "none",
        cwd=tmp_path,
        check=False,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert proc.returncode == 1 and str(train) in proc.stderr and "Traceback" not in proc.stderr


def test_offline_imagenet_weights_error_says_where_the_file_goes(tmp_path, demo_root):
    _, proc = dataslayer(
        "train",
        "--data",
        demo_root,
        "--arch",
        "resnet18",
        "--image-size",
        32,
        "--epochs",
        1,
        cwd=tmp_path,
        check=False,
        env={
            "TORCH_HOME": str(tmp_path / "torch"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
            "https_proxy": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    )
    assert proc.returncode == 1
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in proc.stderr
    assert "none" in proc.stderr and "Traceback" not in proc.stderr


def test_python_dash_m_mlcore_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "mlcore", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "demo-data" in proc.stdout and "train" in proc.stdout
