"""Tests for mlcore.model: the 2-class ResNet, offline ImageNet weights and safe local weight files."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from mlcore.model import WeightsUnavailable, build_model, imagenet_weights_path


def _same_weights(a: dict, b: dict, skip_head: bool = False) -> bool:
    keys = [k for k in a if not (skip_head and k.startswith("fc."))]
    return set(keys) <= set(b) and all(torch.equal(a[k], b[k]) for k in keys)


def _fresh(arch: str = "resnet18", classes: int = 2, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(models, arch)(weights=None)
    if classes != 1000:
        model.fc = nn.Linear(model.fc.in_features, classes)
    return model


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_untrained_model_has_a_two_class_head(arch):
    model = build_model(arch, "none")
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 2
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_unknown_arch_lists_the_choices():
    with pytest.raises(ValueError) as info:
        build_model("vgg16", "none")
    assert all(a in str(info.value) for a in ("vgg16", "resnet18", "resnet34", "resnet50"))


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME and no network: any download attempt raises URLError."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)  # what torchvision's loader calls to fetch
    return home


def test_imagenet_offline_without_the_file_says_where_it_goes(offline_torch_home, monkeypatch):
    monkeypatch.setattr(
        torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline"))
    )
    expected = imagenet_weights_path("resnet18")
    assert offline_torch_home in expected.parents
    with pytest.raises(WeightsUnavailable) as info:
        build_model("resnet18", "imagenet")
    message = str(info.value)
    assert str(expected) in message and "none" in message and "offline" in message
    assert not expected.exists()


def test_imagenet_file_in_the_torch_cache_is_used_offline(offline_torch_home):
    source = _fresh("resnet18", classes=1000, seed=3).state_dict()
    target = imagenet_weights_path("resnet18")
    target.parent.mkdir(parents=True)
    torch.save(source, target)
    model = build_model("resnet18", "imagenet")
    assert model.fc.out_features == 2
    state = model.state_dict()
    assert _same_weights(source, state, skip_head=True)
    assert not torch.equal(state["fc.weight"], source["fc.weight"][:2])  # the ImageNet head is not reused


class NotebookCNN(nn.Module):
    """The notebook's CNN wrapper (resnet18 instead of resnet50 to stay fast): keys start with `model.`."""

    def __init__(self):
        super().__init__()
        self.model = _fresh("resnet18", classes=2, seed=5)

    def forward(self, x):
        return self.model(x)


@pytest.mark.parametrize("layout", ["plain", "notebook", "checkpoint"])
def test_local_weight_files_load(tmp_path, layout):
    if layout == "notebook":
        saved = NotebookCNN().state_dict()
        assert all(k.startswith("model.") for k in saved)
        expected = {k.removeprefix("model."): v for k, v in saved.items()}
    else:
        expected = _fresh("resnet18", classes=2, seed=6).state_dict()
        saved = expected if layout == "plain" else {"model": expected, "epoch": 3}
    path = tmp_path / "weights.pth"
    torch.save(saved, path)
    state = build_model("resnet18", str(path)).state_dict()
    assert _same_weights(expected, state)
    assert set(state) == set(expected)


class CustomThing:
    """An arbitrary class: loading it needs unpickling of code, which weights files must not need."""

    def __init__(self):
        self.value = 1


class Payload:
    """Unpickling this object creates `marker` (what an attacker's payload would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload", ["custom_class", "reduce"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "payload-ran"
    state = _fresh("resnet18").state_dict()
    state["extra"] = CustomThing() if payload == "custom_class" else Payload(marker)
    path = tmp_path / "evil.pth"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailable):
        build_model("resnet18", str(path))
    assert not marker.exists()
    if payload == "reduce":  # control: the payload is live when loaded unsafely
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_weights_of_a_deeper_resnet_of_the_same_family_are_refused(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(_fresh("resnet34").state_dict(), path)
    with pytest.raises(WeightsUnavailable, match="resnet18"):
        build_model("resnet18", str(path))


def test_weights_with_other_shapes_are_refused_as_unavailable(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(_fresh("resnet50").state_dict(), path)
    with pytest.raises(WeightsUnavailable):
        build_model("resnet18", str(path))


@pytest.mark.parametrize("content", ["not a dict", ["a", "list"]])
def test_files_without_a_state_dict_are_refused(tmp_path, content):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(WeightsUnavailable, match="state dict"):
        build_model("resnet18", str(path))


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsUnavailable, match=str(path.name)):
        build_model("resnet18", str(path))
