"""Tests for mlcore.params: notebook defaults, presets, validation naming the bad field."""

from __future__ import annotations

import math

import pytest

from mlcore.params import PRESETS, ParamsError, PredictParams, TrainParams, build, train_params


@pytest.fixture
def train_dir(tmp_path):
    """A dataset root holding train/ and test/ folders (params only check that folders exist)."""
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    return tmp_path


def test_defaults_are_the_notebooks_hyperparameters(train_dir):
    p = build(TrainParams, {"data_dir": str(train_dir / "train")})
    assert (p.epochs, p.batch_size, p.learning_rate, p.image_size) == (20, 16, 2e-5, 224)
    assert (p.arch, p.pretrained, p.val_fraction, p.seed) == ("resnet50", "imagenet", 0.2, 42)


def test_seed_preset_is_the_notebook_exactly(train_dir):
    p = train_params("seed", data_dir=str(train_dir))
    assert (p.split, p.precision, p.compile) == ("image", "fp32", "off")
    assert (p.epochs, p.batch_size, p.learning_rate, p.arch, p.seed) == (20, 16, 2e-5, "resnet50", 42)
    assert (p.aug_rotation, p.aug_hue, p.lr_schedule, p.weight_decay) == (10.0, 0.1, "constant", 0.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_explicit_values_override_presets(train_dir, preset):
    p = train_params(preset, data_dir=str(train_dir), epochs=3, batch_size=5, arch="resnet34", seed=7, warmup_epochs=0)
    assert (p.epochs, p.batch_size, p.arch, p.seed) == (3, 5, "resnet34", 7)


def test_none_values_do_not_override_presets(train_dir):
    """A caller passing None (an unset form field) keeps the preset's value."""
    p = train_params("quick", data_dir=str(train_dir), epochs=None)
    assert p.epochs == PRESETS["quick"]["epochs"]


def test_unknown_preset_names_the_preset_field(train_dir):
    with pytest.raises(ParamsError) as info:
        train_params("turbo", data_dir=str(train_dir))
    assert info.value.field == "preset"
    assert "turbo" in str(info.value)


INVALID_TRAIN = [
    ("epochs", -1),
    ("epochs", 0),
    ("batch_size", 0),
    ("learning_rate", math.nan),
    ("learning_rate", math.inf),
    ("val_fraction", 1.5),
    ("arch", "vgg16"),
    ("aug_hue", 0.9),
    ("device", "tpu"),
    ("registered_model_name", "team/fall-detector"),
    ("no_such_option", 1),
]


@pytest.mark.parametrize(("field", "value"), INVALID_TRAIN)
def test_invalid_train_values_name_the_field(train_dir, field, value):
    with pytest.raises(ParamsError) as info:
        build(TrainParams, {"data_dir": str(train_dir), field: value})
    assert info.value.field == field
    assert info.value.errors[0]["field"] == field


def test_missing_data_dir_is_named():
    with pytest.raises(ParamsError) as info:
        build(TrainParams, {"epochs": 3})
    assert info.value.field == "data_dir"


def test_data_dir_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ParamsError) as info:
        build(TrainParams, {"data_dir": str(tmp_path / "nowhere")})
    assert info.value.field == "data_dir"
    assert "nowhere" in info.value.message


def test_pretrained_missing_file_is_named(train_dir):
    missing = train_dir / "weights.pth"
    with pytest.raises(ParamsError) as info:
        build(TrainParams, {"data_dir": str(train_dir), "pretrained": str(missing)})
    assert info.value.field == "pretrained"
    assert str(missing) in info.value.message


def test_pretrained_existing_file_is_accepted_as_absolute_path(train_dir, monkeypatch):
    (train_dir / "w.pth").write_bytes(b"x")
    monkeypatch.chdir(train_dir)
    p = build(TrainParams, {"data_dir": str(train_dir), "pretrained": "w.pth"})
    assert p.pretrained == str((train_dir / "w.pth").resolve())


def test_warmup_longer_than_training_names_warmup_epochs(train_dir):
    with pytest.raises(ParamsError) as info:
        build(TrainParams, {"data_dir": str(train_dir), "epochs": 2, "warmup_epochs": 3})
    assert info.value.field == "warmup_epochs"


def test_warmup_longer_than_training_is_refused(train_dir):
    """Whatever field is named, the combination itself is refused with a clear message."""
    with pytest.raises(ParamsError, match="warmup_epochs"):
        build(TrainParams, {"data_dir": str(train_dir), "epochs": 2, "warmup_epochs": 3})


def test_train_data_dir_root_resolves_to_train(train_dir):
    p = build(TrainParams, {"data_dir": str(train_dir)})
    assert p.data_dir == (train_dir / "train").resolve()
    direct = build(TrainParams, {"data_dir": str(train_dir / "train")})
    assert direct.data_dir == p.data_dir


def test_predict_data_dir_root_resolves_to_test(train_dir):
    p = build(PredictParams, {"data_dir": str(train_dir)})
    assert p.data_dir == (train_dir / "test").resolve()


@pytest.mark.parametrize(
    "uri",
    [
        "models:/fall-detector@champion",
        "models:/fall-detector/3",
        "runs:/0123456789abcdef0123456789abcdef/model",
    ],
)
def test_model_uri_accepted(train_dir, uri):
    assert build(PredictParams, {"data_dir": str(train_dir), "model_uri": uri}).model_uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://x",
        "models:/../x",
        "runs:/notahexid/model",
        "file:///etc/passwd",
        "",
        "models:/../3",
        "models:/..",
        "runs:/" + "a" * 32 + "/../../x",
    ],
)
def test_model_uri_refused(train_dir, uri):
    with pytest.raises(ParamsError) as info:
        build(PredictParams, {"data_dir": str(train_dir), "model_uri": uri})
    assert info.value.field == "model_uri"


@pytest.mark.parametrize("threshold", [-0.01, 1.01, math.nan])
def test_threshold_outside_unit_interval_refused(train_dir, threshold):
    with pytest.raises(ParamsError) as info:
        build(PredictParams, {"data_dir": str(train_dir), "threshold": threshold})
    assert info.value.field == "threshold"


@pytest.mark.parametrize("threshold", [0.0, 0.37, 1.0, None])
def test_threshold_inside_unit_interval_accepted(train_dir, threshold):
    assert build(PredictParams, {"data_dir": str(train_dir), "threshold": threshold}).threshold == threshold


def test_params_are_frozen(train_dir):
    p = build(TrainParams, {"data_dir": str(train_dir)})
    with pytest.raises(Exception):
        p.epochs = 3
    assert p.epochs == 20


def test_to_log_is_flat_strings(train_dir):
    p = train_params("seed", data_dir=str(train_dir))
    log = p.to_log()
    assert set(log) == set(TrainParams.model_fields)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in log.items())
    assert log["epochs"] == "20" and log["learning_rate"] == "2e-05"
    assert log["early_stopping_patience"] == ""  # None is logged as an empty string
    assert log["data_dir"] == str((train_dir / "train").resolve())
    predict_log = build(PredictParams, {"data_dir": str(train_dir)}).to_log()
    assert all(isinstance(v, str) for v in predict_log.values()) and predict_log["threshold"] == ""
