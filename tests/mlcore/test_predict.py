"""The prediction job and the submission format."""

import csv

import numpy as np
import pandas as pd
import pytest
import torch

from mlcore.data import DataError
from mlcore.engine import make_runtime, precision_of, prediction_precision
from mlcore.hooks import JobHooks
from mlcore.model import build_model
from mlcore.params import PredictParams, build
from mlcore.predict import run_prediction, write_submission


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_submission_has_header_one_row_per_id_sorted(tmp_path):
    path = write_submission(["b.jpg", "a.png", "c.jpeg"], np.array([1, 0, 1]), tmp_path / "out" / "submission.csv")
    assert _rows(path) == [["id", "label"], ["a.png", "0"], ["b.jpg", "1"], ["c.jpeg", "1"]]


def test_submission_bytes_equal_the_notebooks_to_csv(tmp_path):
    ids = ["img_10.jpg", "a,comma.jpg", 'quote"d.png', "space name.jpeg", "ünïcode.jpg", "img_2.JPG"]
    labels = (np.array([0.9, 0.2, 0.7, 0.4, 0.6, 0.1]) > 0.5).astype(int)  # the notebook's label dtype
    ours = write_submission(ids, labels, tmp_path / "submission.csv")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    # STEP 8 of the notebook, verbatim, on the same rows in our (sorted) order.
    submission = pd.DataFrame({"id": [ids[i] for i in order], "label": labels[order]})
    submission.to_csv(tmp_path / "notebook.csv", index=False)
    assert ours.read_bytes() == (tmp_path / "notebook.csv").read_bytes()
    assert b"\r" not in ours.read_bytes()


@pytest.fixture
def model_info():
    torch.manual_seed(0)
    return build_model("resnet18", "none").eval(), {"image_size": 32, "threshold": 0.5, "version": "7"}


def test_prediction_writes_every_test_image_and_lists_bad_ones(demo_copy, tmp_path, model_info):
    test_dir = demo_copy / "test"
    (test_dir / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (test_dir / "notes.txt").write_text("not an image")
    params = build(
        PredictParams, {"data_dir": str(demo_copy), "output": str(tmp_path / "submission.csv"), "device": "cpu"}
    )
    result = run_prediction(params, *model_info)
    rows = _rows(result["submission"])
    expected_ids = sorted(p.name for p in test_dir.iterdir() if p.suffix == ".jpg")
    assert rows[0] == ["id", "label"]
    assert [r[0] for r in rows[1:]] == expected_ids
    assert {r[1] for r in rows[1:]} <= {"0", "1"}
    assert result["rows"] == len(expected_ids) and result["bad_files"] == 1
    probs = {r[0]: r for r in _rows(result["probabilities"])[1:]}
    assert probs["zz_broken.jpg"][3]  # the reason is listed next to its fallback prediction
    for image_id, p, label, _ in probs.values():
        assert int(label) == int(float(p) > 0.5)
    assert result["model_version"] == "7" and result["threshold_source"] == "model"


@pytest.mark.parametrize("threshold, expected", [(0.0, "1"), (1.0, "0")])
def test_threshold_override_wins_over_the_models(demo_root, tmp_path, model_info, threshold, expected):
    params = build(
        PredictParams,
        {
            "data_dir": str(demo_root / "test"),
            "output": str(tmp_path / "s.csv"),
            "threshold": threshold,
            "device": "cpu",
        },
    )
    result = run_prediction(params, *model_info)
    assert {r[1] for r in _rows(result["submission"])[1:]} == {expected}
    assert result["threshold_source"] == "override"


def test_progress_reports_decoding_and_every_image_predicted(demo_root, tmp_path, model_info):
    events = []
    params = build(
        PredictParams, {"data_dir": str(demo_root / "test"), "output": str(tmp_path / "s.csv"), "device": "cpu"}
    )
    result = run_prediction(params, *model_info, hooks=JobHooks(progress=events.append))
    predicting = [e for e in events if e["phase"] == "predicting"]
    assert [e["done"] for e in predicting] == [0, result["rows"]] and predicting[-1]["total"] == result["rows"]
    assert events[0]["phase"] == "decoding" and events[-1]["phase"] == "done"


def test_empty_test_folder_is_refused_naming_it(tmp_path, model_info):
    (tmp_path / "test").mkdir()
    params = build(PredictParams, {"data_dir": str(tmp_path / "test"), "output": str(tmp_path / "s.csv")})
    with pytest.raises(DataError, match=str(tmp_path / "test")):
        run_prediction(params, *model_info)


def test_a_model_without_a_tuned_threshold_is_refused(demo_root, tmp_path, model_info):
    model, info = model_info
    params = build(
        PredictParams,
        {
            "data_dir": str(demo_root / "test"),
            "model_uri": "runs:/" + "a" * 32 + "/model",
            "output": str(tmp_path / "s.csv"),
            "device": "cpu",
        },
    )
    with pytest.raises(LookupError, match="carries no tuned threshold.*--threshold"):
        run_prediction(params, model, {**info, "threshold": None})
    assert not (tmp_path / "s.csv").exists()


@pytest.fixture
def low_model():
    """A model whose fall probabilities all sit far below 0.5, so argmax calls every test image non_fall."""
    torch.manual_seed(0)
    model = build_model("resnet18", "none").eval()
    with torch.no_grad():
        model.fc.weight.mul_(20)
        model.fc.bias[1] -= 1.5
    return model


def test_submitted_labels_follow_a_tuned_threshold_far_from_one_half(demo_root, tmp_path, low_model):
    def predict(info, out):
        params = build(PredictParams, {"data_dir": str(demo_root / "test"), "output": str(out), "device": "cpu"})
        return run_prediction(params, low_model, info)

    first = predict({"image_size": 32, "threshold": 0.5}, tmp_path / "argmax.csv")
    probs = {r[0]: float(r[1]) for r in _rows(first["probabilities"])[1:]}
    assert first["positives"] == 0 and max(probs.values()) < 0.4
    # A tuned threshold between the 3rd and 4th highest probability: three falls, all below 0.5.
    ranked = sorted(probs.values(), reverse=True)
    threshold = (ranked[2] + ranked[3]) / 2
    assert abs(threshold - 0.5) > 0.2
    result = predict({"image_size": 32, "threshold": threshold}, tmp_path / "submission.csv")
    labels = {r[0]: int(r[1]) for r in _rows(result["submission"])[1:]}
    assert labels == {i: int(p > threshold) for i, p in probs.items()}
    assert sum(labels.values()) == result["positives"] == 3
    assert result["threshold"] == threshold and result["threshold_source"] == "model"


@pytest.mark.parametrize(
    ("requested", "trained", "device", "expected"),
    [
        ("auto", "fp32", "cuda", "fp32"),  # a seed-preset (fp32) model: fp32 on CUDA
        ("auto", "bf16", "cuda", "bf16"),
        ("auto", None, "cuda", "auto"),  # a version from before the tag: the old default (bf16 on CUDA)
        ("bf16", "fp32", "cuda", "bf16"),  # the job's own choice wins
        ("fp32", "bf16", "cuda", "fp32"),
        ("auto", "bf16", "cpu", "auto"),  # CPU stays fp32 unless asked
        ("bf16", "fp32", "cpu", "bf16"),
    ],
)
def test_prediction_precision_follows_the_model_unless_overridden(requested, trained, device, expected) -> None:
    chosen = prediction_precision(requested, trained, torch.device(device))
    assert chosen == expected
    if device == "cpu":
        assert precision_of(make_runtime(torch.device("cpu"), chosen)) == ("bf16" if requested == "bf16" else "fp32")


def test_the_tuned_threshold_is_applied_exactly_not_rounded(demo_root, tmp_path, low_model):
    def predict(threshold, out):
        params = build(PredictParams, {"data_dir": str(demo_root / "test"), "output": str(out), "device": "cpu"})
        # The version tag holds repr(threshold); the registry reads it back with float().
        return run_prediction(params, low_model, {"image_size": 32, "threshold": float(repr(threshold))})

    first = predict(0.5, tmp_path / "first.csv")
    p = sorted((float(r[1]) for r in _rows(first["probabilities"])[1:]), reverse=True)[2]
    # A threshold 1e-9 from an image's probability on the side where 6-decimal rounding crosses it.
    threshold = p - 1e-9 if round(p - 1e-9, 6) >= p else p + 1e-9
    assert (p > round(threshold, 6)) != (p > threshold)  # rounding would flip this image's label
    result = predict(threshold, tmp_path / "exact.csv")
    rows = {float(r[1]): int(r[2]) for r in _rows(result["probabilities"])[1:]}
    assert rows[p] == int(p > threshold) and result["threshold"] == threshold
