"""Form fields generated from the parameter models, form parsing and error mapping (no services)."""

import pytest
from werkzeug.datastructures import MultiDict

from mlcore.params import PRESETS, TrainParams
from webui.paramforms import field_errors, field_specs, grouped, initial_values, parse_form, train_specs
from webui.sweepform import error_key, parse, row_specs, setting_specs
from worker.sweep import SweepParams


def test_every_training_parameter_but_the_data_dir_gets_a_field():
    specs = train_specs()
    assert set(specs) == set(TrainParams.model_fields) - {"data_dir"}
    placed = [s.name for _, fields in grouped(specs) for s in fields]
    assert sorted(placed) == sorted(specs)  # each exactly once, in some section


@pytest.mark.parametrize(
    "name, kind, default, bounds",
    [
        ("epochs", "number", 20, "1 to 1000"),
        ("learning_rate", "number", 2e-5, "> 0 to 1"),
        ("arch", "select", "resnet50", ""),
        ("aug_flip", "checkbox", True, ""),
        ("early_stopping_patience", "number", None, "1 to 1000"),
        ("experiment_name", "text", "dataslayer", ""),
        ("threshold_metric", "select", "f1", ""),
    ],
)
def test_fields_carry_the_models_kind_default_bounds_and_help(name, kind, default, bounds):
    spec = train_specs()[name]
    assert (spec.kind, spec.default, spec.bounds) == (kind, default, bounds)
    assert spec.help == TrainParams.model_fields[name].description


def test_the_browser_may_not_name_a_weights_file():
    assert train_specs()["pretrained"].choices == ("imagenet", "none")
    assert train_specs()["arch"].choices == ("resnet18", "resnet34", "resnet50")


def test_presets_and_overrides_seed_the_initial_values():
    values = initial_values(train_specs(), "quick", {"epochs": 3})
    assert values["arch"] == PRESETS["quick"]["arch"] and values["image_size"] == "64" and values["epochs"] == "3"
    assert values["aug_flip"] is True and values["early_stopping_patience"] == ""


def test_parse_form_sends_what_was_typed_and_the_model_checks_it():
    form = MultiDict({"epochs": " 3 ", "early_stopping_patience": "", "learning_rate": "nan", "arch": "resnet18"})
    values, typed = parse_form(train_specs(), form)
    assert values["epochs"] == "3" and values["early_stopping_patience"] is None and values["learning_rate"] == "nan"
    assert values["aug_flip"] is False  # an unticked checkbox is off, not the default
    assert "batch_size" not in values  # not sent: the model's default applies


def test_errors_land_on_their_fields_and_the_rest_is_general():
    errors, general = field_errors(
        [
            {"field": "epochs", "message": "too big"},
            {"field": "params", "message": "odd"},
            {"field": "grid.x", "message": "no"},
        ],
        {"epochs", "grid"},
    )
    assert errors == {"epochs": "too big", "grid": "no"} and general == ["odd"]


def test_sweep_settings_come_from_sweep_params_and_rows_are_sweepable():
    assert set(setting_specs()) == {
        "strategy",
        "samples",
        "seed",
        "max_concurrent",
        "promote_best",
        "objective",
        "pruner",
        "pruning_warmup_epochs",
    }
    assert setting_specs()["seed"].input_name == "sweep.seed"  # not the training seed's input
    assert setting_specs()["max_concurrent"].help == SweepParams.model_fields["max_concurrent"].description
    assert {"learning_rate", "batch_size", "epochs", "image_size", "arch", "aug_flip"} <= {s.name for s in row_specs()}


def test_sweep_form_parses_lists_choices_switches_and_ranges():
    form = MultiDict(
        [
            ("grid.learning_rate", "1e-3, 3e-3"),
            ("grid.arch", "resnet18"),
            ("grid.arch", "resnet34"),
            ("grid.aug_flip", "both"),
            ("range.epochs.low", "1"),
            ("range.epochs.high", "3"),
            ("sweep.strategy", "random"),
            ("sweep.samples", "4"),
            ("sweep.max_concurrent", "1"),
        ]
    )
    spec, typed = parse(form)
    assert spec["grid"] == {
        "learning_rate": [0.001, 0.003],
        "arch": ["resnet18", "resnet34"],
        "aug_flip": [True, False],
    }
    assert spec["ranges"] == {"epochs": {"low": "1", "high": "3", "log": False}}
    assert spec["strategy"] == "random" and spec["samples"] == "4" and spec["promote_best"] is False
    assert typed["grid.learning_rate"] == "1e-3, 3e-3"


@pytest.mark.parametrize(
    "field, key",
    [
        ("grid.learning_rate", "row.learning_rate"),
        ("ranges.epochs.low", "row.epochs"),
        ("samples", "sweep.samples"),
        ("epochs", "epochs"),
    ],
)
def test_sweep_errors_map_to_their_rows(field, key):
    assert error_key(field) == key


def test_field_specs_work_for_any_model():
    specs = field_specs(SweepParams, ["samples"], prefix="x.")
    assert specs["samples"].input_name == "x.samples" and specs["samples"].integer
