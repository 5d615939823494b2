"""Several job slots per GPU: the stack runs that many workers on each GPU, each told its share of the memory."""

from __future__ import annotations

import subprocess

import pytest
from services import VENV_BIN

from worker.settings import get_settings
from worker.stack import StackConfig, service_commands, worker_names


def _config(tmp_path, **fields) -> StackConfig:
    return StackConfig(state_dir=tmp_path / "state", data_root=tmp_path / "data", **fields)


def test_each_gpu_gets_one_worker_per_slot(tmp_path):
    cfg = _config(tmp_path, slots_per_gpu=2)
    assert worker_names(cfg, gpus=2, host="h") == [("gpu0-0@h", 0), ("gpu0-1@h", 0), ("gpu1-0@h", 1), ("gpu1-1@h", 1)]
    workers = [s for s in service_commands(cfg, gpus=2, host="h", include_webui=False) if s.name.startswith("gpu")]
    assert [s.name for s in workers] == ["gpu0-0", "gpu0-1", "gpu1-0", "gpu1-1"]
    for service in workers:
        gpu = service.name[3]
        assert service.cmd[-4:] == ["--gpu", gpu, "--gpu-slots", "2"], service.cmd


def test_one_slot_keeps_the_one_worker_per_gpu_names_and_cpu_workers_fill_up(tmp_path):
    assert worker_names(_config(tmp_path), gpus=2, host="h") == [("gpu0@h", 0), ("gpu1@h", 1)]
    assert worker_names(_config(tmp_path), gpus=0, host="h") == [("cpu0@h", None)]
    three = _config(tmp_path, slots_per_gpu=2, workers=3)
    assert worker_names(three, gpus=1, host="h") == [("gpu0-0@h", 0), ("gpu0-1@h", 0), ("cpu2@h", None)]
    gpu = next(
        s for s in service_commands(_config(tmp_path), gpus=1, host="h", include_webui=False) if s.name == "gpu0"
    )
    assert "--gpu-slots" not in gpu.cmd


@pytest.mark.parametrize("value", ["0", "9", "two", "1.5"])
def test_a_bad_slot_count_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("DATASLAYER_SLOTS_PER_GPU", value)
    get_settings.cache_clear()
    try:
        with pytest.raises(
            ValueError, match=rf"DATASLAYER_SLOTS_PER_GPU='{value}': expected a whole number from 1 to 8"
        ):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_the_settings_carry_the_slots_to_the_stack(monkeypatch):
    monkeypatch.setenv("DATASLAYER_SLOTS_PER_GPU", "4")
    get_settings.cache_clear()
    try:
        assert StackConfig.from_settings().slots_per_gpu == 4
    finally:
        get_settings.cache_clear()


def test_the_worker_command_refuses_a_bad_slot_count_naming_the_option():
    done = subprocess.run(
        [str(VENV_BIN / "dataslayer"), "worker", "--gpu", "0", "--gpu-slots", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--gpu-slots" in done.stderr


def test_the_slots_benchmark_runs_a_sweep_through_concurrent_slot_processes(tmp_path, demo_root, capsys):
    """The benchmark's figures are printed, not asserted; here: it runs and reports every slot count."""
    import json

    from worker.slots_bench import main

    out = tmp_path / "slots.json"
    main(["--trials", "2", "--slots", "2", "--epochs", "1", "--data", str(demo_root), "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["slots"] == 2 and row["trials"] == 2 and row["trials_per_hour"] > 0
    assert "trials/h" in capsys.readouterr().out
