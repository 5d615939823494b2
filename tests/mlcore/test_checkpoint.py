"""Tests for mlcore.checkpoint: atomic per-epoch checkpoints that load without running pickled code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlcore.checkpoint import CHECKPOINT_NAME, CheckpointError, cpu_state, load_checkpoint, save_checkpoint


def _state(epoch: int = 3) -> dict:
    torch.manual_seed(epoch)
    model = nn.Linear(4, 2)
    return {
        "epoch": epoch,
        "best_score": 0.75,
        "model": model.state_dict(),
        "history": {"val_f1": [0.5, 0.625, 0.75], "train_loss": [1.0, 0.5, 0.25]},
        "nested": {"a": {"b": [torch.arange(3), {"c": torch.ones(2, 2)}]}},
        "rng": torch.get_rng_state(),
        "note": "text",
        "none": None,
    }


def _assert_equal(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal(x, y)
    else:
        assert a == b


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != CHECKPOINT_NAME)


def test_round_trip(tmp_path):
    state = _state()
    path = save_checkpoint(tmp_path / "ckpt" / "run-1", state)
    assert path == tmp_path / "ckpt" / "run-1" / CHECKPOINT_NAME and path.is_file()
    _assert_equal(load_checkpoint(path.parent), state)


def test_existing_checkpoint_is_replaced_without_temp_files(tmp_path):
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2))
    loaded = load_checkpoint(tmp_path)
    assert loaded["epoch"] == 2
    _assert_equal(loaded, _state(2))
    assert _leftovers(tmp_path) == []


def _failing_save(obj, f, *args, **kwargs):
    Path(f).write_bytes(b"half a checkpoint")
    raise OSError("disk full")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state(1))
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_failed_save_leaves_no_temp_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _state(2))
    assert _leftovers(tmp_path) == []


def test_no_checkpoint_gives_none(tmp_path):
    assert load_checkpoint(None) is None
    assert load_checkpoint(tmp_path / "missing") is None
    assert load_checkpoint(tmp_path) is None  # folder exists, no last.pt


class Payload:
    """Unpickling this object creates `marker` (a harmless stand-in for an attacker's code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    state = _state()
    state["extra"] = Payload(marker)
    save_checkpoint(tmp_path / "ckpt", state)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt" / CHECKPOINT_NAME) in str(info.value)
    assert not marker.exists()
    torch.load(tmp_path / "ckpt" / CHECKPOINT_NAME, weights_only=False)  # control: the payload is live
    assert marker.exists()


def test_garbage_checkpoint_is_refused(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


def test_cpu_state_of_a_model_is_a_copy():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    copy = cpu_state(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(5.0)
    _assert_equal(copy, original)
    assert not torch.equal(copy["0.weight"], model.state_dict()["0.weight"])


def test_cpu_state_of_an_optimizer_is_a_deep_copy(tmp_path):
    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
    copy = cpu_state(opt)
    exp_avg = copy["state"][0]["exp_avg"].clone()
    assert copy["param_groups"][0]["lr"] == 0.1
    opt.zero_grad()
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert torch.equal(copy["state"][0]["exp_avg"], exp_avg)
    assert not torch.equal(opt.state_dict()["state"][0]["exp_avg"], exp_avg)
    save_checkpoint(tmp_path, {"optimizer": cpu_state(opt)})  # plain tensors and containers: loads safely
    opt2 = torch.optim.Adam(nn.Linear(3, 1).parameters(), lr=0.1)
    opt2.load_state_dict(load_checkpoint(tmp_path)["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
