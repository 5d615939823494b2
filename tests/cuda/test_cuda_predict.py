"""bf16 prediction on a GPU against fp32: label agreement on the demo test set at the model's tuned threshold."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytestmark = pytest.mark.cuda
pytest.importorskip("pydantic", reason="the jobs' parameters need pydantic (docs/GPU.md)")

from mlcore.hooks import NullTracker  # noqa: E402
from mlcore.params import PredictParams, build, train_params  # noqa: E402
from mlcore.predict import run_prediction  # noqa: E402
from mlcore.train import run_training  # noqa: E402

MIN_AGREEMENT = 0.95  # share of test images whose bf16 label is the fp32 label
MAX_PROB_DIFF = 0.02  # mean |p_bf16 - p_fp32|


class _Keep(NullTracker):
    """Keeps the model and info the job would register."""

    def log_model(self, model, info):
        self.model, self.info = model, info
        return {}


def _read(path) -> dict[str, tuple[float, int]]:
    with open(path) as f:
        return {row["id"]: (float(row["probability"]), int(row["label"])) for row in csv.DictReader(f)}


def test_bf16_prediction_agrees_with_fp32_at_the_tuned_threshold(train_values, gpu_demo, tmp_path, record_figures):
    keep = _Keep()
    run_training(train_params(**train_values), tracker=keep)
    results = {}
    for precision in ("fp32", "bf16"):
        params = build(
            PredictParams,
            {
                "data_dir": str(gpu_demo),
                "output": str(tmp_path / precision / "submission.csv"),
                "device": "cuda",
                "precision": precision,
            },
        )
        summary = run_prediction(params, keep.model, keep.info)
        assert summary["rows"] == 64 and summary["bad_files"] == 0
        results[precision] = _read(summary["probabilities"])
    ids = sorted(results["fp32"])
    p32, l32 = np.array([results["fp32"][i] for i in ids]).T
    p16, l16 = np.array([results["bf16"][i] for i in ids]).T
    with open(gpu_demo / "test_labels.csv") as f:
        truth = {row["id"]: int(row["label"]) for row in csv.DictReader(f)}
    y = np.array([truth[i] for i in ids])
    agreement, flips = float((l32 == l16).mean()), int((l32 != l16).sum())
    prob_diff = float(np.abs(p32 - p16).mean())
    near = int((np.abs(p32 - keep.info["threshold"]) < 0.02).sum())  # decisions within 0.02 of the threshold
    record_figures(
        threshold=keep.info["threshold"],
        agreement=agreement,
        flips=flips,
        images=len(ids),
        mean_abs_prob_diff=prob_diff,
        max_abs_prob_diff=float(np.abs(p32 - p16).max()),
        near_threshold=near,
        accuracy_fp32=float((l32 == y).mean()),
        accuracy_bf16=float((l16 == y).mean()),
    )
    assert agreement >= MIN_AGREEMENT, f"{flips} of {len(ids)} labels flip in bf16"
    assert prob_diff <= MAX_PROB_DIFF


def test_an_fp32_model_is_predicted_in_fp32_on_cuda_unless_the_job_overrides_it(train_values, gpu_demo, tmp_path):
    keep = _Keep()
    run_training(train_params(**{**train_values, "precision": "fp32"}), tracker=keep)
    assert keep.info["precision"] == "fp32"  # what the version tag records
    for requested, expected in (("auto", "fp32"), ("bf16", "bf16")):
        values = {"data_dir": str(gpu_demo), "output": str(tmp_path / requested / "s.csv"), "device": "cuda"}
        summary = run_prediction(build(PredictParams, {**values, "precision": requested}), keep.model, keep.info)
        assert summary["precision"] == expected
