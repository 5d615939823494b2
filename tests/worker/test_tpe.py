"""TPE proposals from a rebuilt study, the pruning rules, and the TPE/pruner submit checks (no services)."""

import pytest

from mlcore.errors import ParamsError
from worker.pruning import asha_prunes, decide, rungs
from worker.sweep import MAX_CHILDREN, sweep_params
from worker.tpe import TrialRecord, propose, rebuild


def _tpe(demo_root, **extra):
    return sweep_params(
        {
            "base": {"data_dir": str(demo_root), "epochs": 4},
            "strategy": "tpe",
            "samples": 12,
            "seed": 5,
            "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "epochs": {"low": 2, "high": 6}},
            "grid": {"arch": ["resnet18", "resnet34"]},
            **extra,
        }
    )


def test_tpe_proposals_are_reproducible_within_the_space_and_rebuilt_from_every_state(demo_root):
    sweep = _tpe(demo_root)
    trials = []
    for i in range(12):
        combo = propose(sweep, trials)
        assert propose(sweep, trials) == combo  # the same history gives the same proposal
        assert 1e-5 <= combo["learning_rate"] <= 1e-2 and 2 <= combo["epochs"] <= 6
        assert isinstance(combo["epochs"], int) and combo["arch"] in ("resnet18", "resnet34")
        state = ("complete", "running", "pruned", "failed")[i % 4]
        value = 0.5 + 0.01 * i if state == "complete" else None
        trials.append(TrialRecord(combo, state, value, {1: 0.4, 2: 0.45}))
    study = rebuild(sweep, trials)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states.count("COMPLETE") == 3 and states.count("RUNNING") == 3 and states.count("PRUNED") == 3
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 12
    assert propose(_tpe(demo_root, seed=6), trials[:3]) != propose(sweep, trials[:3])


def test_tpe_moves_towards_the_good_region(demo_root):
    sweep = sweep_params(
        {
            "base": {"data_dir": str(demo_root)},
            "strategy": "tpe",
            "samples": 40,
            "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}},
        }
    )
    trials = []
    for _ in range(30):
        lr = propose(sweep, trials)["learning_rate"]
        trials.append(TrialRecord({"learning_rate": lr}, "complete", -abs(lr - 1e-3) / 1e-3))
    late = [t.params["learning_rate"] for t in trials[-10:]]
    assert sum(3e-4 <= lr <= 3e-3 for lr in late) >= 5  # twice the 1 in 4 of random draws


def test_asha_keeps_the_best_half_at_each_rung():
    assert rungs(0, 8) == [1, 2, 4] and rungs(1, 4) == [2]
    assert not asha_prunes(0.5, [], maximize=True)  # the first at a rung carries on
    assert asha_prunes(0.4, [0.6], maximize=True) and not asha_prunes(0.6, [0.4], maximize=True)
    assert asha_prunes(0.9, [0.5], maximize=False)  # val_loss: lower is better


def test_decide_respects_warmup_and_the_last_epoch(demo_root):
    sweep = _tpe(demo_root, pruner="asha", pruning_warmup_epochs=1)
    siblings = [("complete", {1: 0.9, 2: 0.9, 3: 0.9})]
    assert not decide(1, 4, {1: 0.1}, siblings, sweep)  # warm-up
    assert decide(2, 4, {1: 0.1, 2: 0.1}, siblings, sweep)  # rung 2, the worse of two
    assert not decide(3, 4, {3: 0.1}, siblings, sweep)  # no rung
    median = _tpe(demo_root, pruner="median", pruning_warmup_epochs=0)
    finished = [("complete", {1: 0.8, 2: 0.85}), ("complete", {1: 0.7, 2: 0.8}), ("running", {1: 0.0})]
    assert decide(1, 4, {1: 0.2}, finished, median)
    assert not decide(1, 4, {1: 0.9}, finished, median)
    assert not decide(1, 4, {1: 0.2}, finished[:1], median)  # fewer finished siblings than the start-up


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"ranges": {"arch": {"low": 1, "high": 2}}}, "ranges.arch"),
        ({"ranges": {"epochs": {"low": 2.2, "high": 2.8}}}, "ranges.epochs"),
        ({"ranges": {"batch_size": {"low": 4, "high": 100000}}}, "ranges.batch_size"),
        ({"samples": MAX_CHILDREN + 1}, "samples"),
        ({"pruner": "asha", "base": {"epochs": 1}}, "pruner"),
        ({"pruner": "median", "pruning_warmup_epochs": 5}, "pruning_warmup_epochs"),
        ({"objective": "val_f2"}, "objective"),
        ({"objective": "train_loss"}, "objective"),
    ],
)
def test_bad_tpe_and_pruner_input_names_the_field(demo_root, extra, field):
    spec = {
        "base": {"data_dir": str(demo_root), "epochs": 4},
        "strategy": "tpe",
        "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
    }
    base = {**spec["base"], **extra.pop("base", {})}
    with pytest.raises(ParamsError) as info:
        sweep_params({**spec, **extra, "base": base}).check()
    assert info.value.field == field, info.value


def test_a_random_sweep_may_prune_and_its_trials_are_checked(demo_root):
    spec = {
        "base": {"data_dir": str(demo_root), "epochs": 3},
        "strategy": "random",
        "samples": 4,
        "pruner": "asha",
        "ranges": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
    }
    assert sweep_params(spec).check() == 4
    with pytest.raises(ParamsError) as info:
        sweep_params({**spec, "pruning_warmup_epochs": 2}).check()
    assert info.value.field == "pruning_warmup_epochs"
