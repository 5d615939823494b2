"""A full disk under the checkpoint, the image cache or the submission: a clear DiskFull naming the path."""

from __future__ import annotations

import pytest
import torch

from mlcore.cache import build_image_cache
from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.data import discover_dataset
from mlcore.errors import DiskFull


def test_a_checkpoint_too_big_for_the_disk_names_the_path_and_keeps_the_last_one(small_disk):
    disk = small_disk(2)
    save_checkpoint(disk / "run", {"w": torch.zeros(1000)})
    with pytest.raises(DiskFull, match=r"no space left on device writing .*last\.pt, 3\.8 MB needed") as err:
        save_checkpoint(disk / "run", {"w": torch.zeros(1_000_000)})
    assert str(disk) in str(err.value)
    assert torch.equal(load_checkpoint(disk / "run")["w"], torch.zeros(1000))  # the previous one is whole
    assert [p.name for p in (disk / "run").iterdir()] == ["last.pt"]  # no half-written file left


def test_a_checkpoint_that_fills_the_disk_while_writing_is_reported_the_same(small_disk, monkeypatch):
    disk = small_disk(2)
    monkeypatch.setattr("mlcore.checkpoint.ensure_free", lambda path, needed: None)  # skip the check before writing
    with pytest.raises(DiskFull, match="no space left on device"):
        save_checkpoint(disk / "run", {"w": torch.zeros(1_000_000)})
    assert not any((disk / "run").iterdir())


def test_an_image_cache_too_big_for_its_disk_fails_before_decoding(small_disk, demo_root):
    disk = small_disk(1)
    ds = discover_dataset(demo_root / "train")
    with pytest.raises(DiskFull, match="MB needed") as err:
        build_image_cache(ds.paths, 96, key=ds.fingerprint, cache_dir=disk)
    assert str(disk) in str(err.value) and list(disk.iterdir()) == []


def test_a_prediction_whose_submission_does_not_fit_names_the_folder(small_disk, demo_root):
    from mlcore.model import build_model
    from mlcore.params import PredictParams, build
    from mlcore.predict import run_prediction

    disk = small_disk(1)
    (disk / "filler").write_bytes(b"\0" * (1024 * 1024))  # the disk is full
    params = build(PredictParams, {"data_dir": str(demo_root), "output": str(disk / "submission.csv"), "device": "cpu"})
    with pytest.raises(DiskFull, match="no space left on device writing") as err:
        run_prediction(params, build_model("resnet18").eval(), {"image_size": 32, "threshold": 0.5})
    assert str(disk) in str(err.value) and not (disk / "submission.csv").exists()
