"""Run names from what a run is: the rule for a run, a sweep child, a sweep and a re-run."""

import pytest

from mlcore.params import PRESETS, TrainParams, train_params
from mlcore.runname import child_label, clean_name, number, rerun_label, run_label, sweep_label


def test_a_run_is_named_by_arch_size_and_lr_then_what_differs_from_the_defaults(tmp_path):
    quick = train_params("quick", data_dir=str(tmp_path)).model_dump()
    assert run_label(quick) == "r18 64px lr1e-3 bs32 8ep"
    defaults = TrainParams(data_dir=tmp_path).model_dump()
    assert run_label(defaults) == "r50 224px lr2e-5"  # the default batch size and epochs are not repeated
    assert run_label({**defaults, "cv_folds": 5, "batch_size": 256}) == "r50 224px lr2e-5 bs256 cv5"
    assert run_label({**PRESETS["throughput"], "arch": "resnet34", "image_size": 128}) == "r34 128px lr3.2e-4 bs256"


@pytest.mark.parametrize(
    "value, sci, text",
    [(64, False, "64"), (20.0, False, "20"), (0.2, False, "0.2"), (1e-4, False, "1e-4"), (0.001, True, "1e-3")]
    + [(3.2e-4, True, "3.2e-4"), (0.000123456, True, "1.23e-4"), (0.01, True, "1e-2"), (0.0, False, "0")],
)
def test_numbers_are_short(value, sci, text):
    assert number(value, sci) == text


def test_a_sweep_child_is_named_by_its_number_and_what_varies():
    params = {"learning_rate": 1e-3, "batch_size": 16, "aug_flip": False, "lr_schedule": "cosine", "split": "image"}
    assert child_label(2, params, ["learning_rate", "batch_size"]) == "#3 lr1e-3 bs16"
    assert child_label(0, params, ["aug_flip", "lr_schedule", "split"]) == "#1 noflip cosine split=image"
    assert child_label(
        0, {"early_stopping_patience": None, "arch": "resnet50"}, ["early_stopping_patience", "arch"]
    ) == ("#1 nopatience r50")


def test_a_sweep_is_named_by_strategy_what_varies_and_size():
    assert sweep_label("grid", ["learning_rate", "batch_size"], 4) == "grid lr×bs (4)"
    assert sweep_label("tpe", ["learning_rate"], 16) == "tpe lr (16)"
    assert sweep_label("random", ["image_size", "split"], 8) == "random px×split (8)"


def test_a_rerun_keeps_the_originals_name_once():
    assert rerun_label("#3 lr1e-3 bs16", 2) == "#3 lr1e-3 bs16 (re-run)"
    assert rerun_label("#3 lr1e-3 bs16 (re-run)", 5) == "#3 lr1e-3 bs16 (re-run)"
    assert rerun_label("", 2) == "#3 (re-run)"


def test_a_given_name_is_trimmed_and_checked():
    assert clean_name("  my run ") == "my run" and clean_name("") is None and clean_name(None) is None
    for bad in ("x" * 101, "tab\there", 3):
        with pytest.raises(ValueError, match="printable"):
            clean_name(bad)
