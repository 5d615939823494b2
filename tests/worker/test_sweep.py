"""Sweep expansion and validation (no services needed)."""

import pytest

from mlcore.errors import ParamsError
from worker.commands.queue import _split_sweep
from worker.sweep import MAX_CHILDREN, sweep_params


def test_grid_makes_every_combination_in_a_stable_order(demo_root):
    s = sweep_params(
        {
            "base": {"data_dir": str(demo_root), "arch": "resnet18"},
            "grid": {"learning_rate": [1e-4, 1e-3], "batch_size": [8, 16]},
        }
    )
    children = s.children()
    assert [(c.learning_rate, c.batch_size) for c in children] == [(1e-4, 8), (1e-4, 16), (1e-3, 8), (1e-3, 16)]
    assert all(c.arch == "resnet18" for c in children)


def test_random_search_draws_within_ranges_reproducibly(demo_root):
    spec = {
        "base": {"data_dir": str(demo_root)},
        "strategy": "random",
        "samples": 20,
        "seed": 3,
        "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "epochs": {"low": 2, "high": 6}},
        "grid": {"arch": ["resnet18", "resnet34"]},
    }
    a, b = sweep_params(spec).children(), sweep_params(spec).children()
    assert [c.model_dump() for c in a] == [c.model_dump() for c in b]
    assert all(1e-5 <= c.learning_rate <= 1e-2 and 2 <= c.epochs <= 6 and isinstance(c.epochs, int) for c in a)
    assert {c.arch for c in a} == {"resnet18", "resnet34"}
    assert len({c.learning_rate for c in a}) == 20
    other = sweep_params({**spec, "seed": 4}).children()
    assert [c.learning_rate for c in other] != [c.learning_rate for c in a]


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"grid": {"batch_size": [16, -1]}}, "grid.batch_size"),
        ({"grid": {"learning_rate": [float("nan")]}}, "grid"),
        ({"grid": {"data_dir": ["/etc"]}}, "grid"),
        ({"grid": {"arch": ["vgg16"]}}, "grid.arch"),
        ({"grid": {}}, "params"),
        ({"strategy": "grid", "ranges": {"learning_rate": {"low": 1e-4, "high": 1e-3}}}, "params"),
        ({"strategy": "random", "ranges": {"learning_rate": {"low": 1e-3, "high": 1e-4}}}, "ranges.learning_rate"),
        (
            {"strategy": "random", "ranges": {"learning_rate": {"low": 0, "high": 1e-3, "log": True}}},
            "ranges.learning_rate",
        ),
        ({"grid": {"epochs": [1]}, "max_concurrent": 0}, "max_concurrent"),
        ({"grid": {"epochs": [1]}, "base": {"data_dir": "/no/such/dir"}}, "data_dir"),
    ],
)
def test_invalid_sweeps_name_the_field(demo_root, spec, field):
    with pytest.raises(ParamsError) as info:
        sweep_params({"base": {"data_dir": str(demo_root)}, **spec}).children()
    assert info.value.field.startswith(field)


def test_sweep_size_is_capped(demo_root):
    with pytest.raises(ParamsError, match=str(MAX_CHILDREN)):
        sweep_params({"base": {"data_dir": str(demo_root)}, "grid": {"seed": list(range(MAX_CHILDREN + 1))}}).children()


def test_the_size_is_known_before_any_combination_is_built(demo_root):
    grid = {f: list(range(1, 41)) for f in ("batch_size", "epochs", "image_size", "eval_batch_size", "seed")}
    sweep = sweep_params({"base": {"data_dir": str(demo_root)}, "grid": grid})
    assert sweep.size() == 40**5
    with pytest.raises(ParamsError, match="102,400,000 runs") as info:
        sweep.combinations()  # would take minutes and gigabytes if it built the product first
    assert info.value.field == "grid"


def test_cli_values_split_into_base_lists_and_ranges():
    base, grid, ranges = _split_sweep(
        {
            "data_dir": "/d,x",
            "learning_rate": "1e-4,3e-4",
            "epochs": "2:6",
            "weight_decay": "1e-5:1e-2:log",
            "device": "cuda:0",
            "batch_size": "16",
        }
    )
    assert base == {"data_dir": "/d,x", "device": "cuda:0", "batch_size": "16"}
    assert grid == {"learning_rate": ["1e-4", "3e-4"]}
    assert ranges == {
        "epochs": {"low": 2.0, "high": 6.0, "log": False},
        "weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
    }
