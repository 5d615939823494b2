"""scripts/gpu_check.py on a machine without CUDA: its plan, its skips, its JSON and its stage runner."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

STAGE_KEYS = {"name", "status", "seconds", "reason", "command", "figures", "tail"}


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_dry_run_lists_every_stage():
    done = check("--dry-run")
    assert done.returncode == 0, done.stderr
    for name in ("cuda-tests", "bench", "stack"):
        assert f"{name} (timeout" in done.stdout
    assert "pytest -m cuda tests/cuda" in done.stdout
    assert "mlcore.bench --device cuda" in done.stdout
    assert "--confcutdir tests/cuda" in done.stdout


def test_timeouts_fit_in_eight_minutes():
    plan = gpu_check.stages(Path("/tmp"))
    assert (
        sum(s.timeout_s + gpu_check.GRACE_S for s in plan) + 20 <= 8 * 60
    )  # 20 s: installing the wheels, probing CUDA


def test_cpu_run_skips_cuda_stages_and_writes_the_documented_json(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = check("--json", str(out), "--wheels", str(tmp_path / "no-wheels"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"cuda", "python", "seconds", "notes", "stages"}
    assert report["cuda"] is False
    assert [s["name"] for s in report["stages"]] == ["cuda-tests", "bench", "stack"]
    for stage in report["stages"]:
        assert set(stage) == STAGE_KEYS
        assert (stage["status"], stage["reason"]) == ("skipped", "no CUDA device")
    assert any("no wheels in" in note for note in report["notes"])
    # The table comes last.
    assert done.stdout.strip().splitlines()[-1].startswith("stack ")


def test_missing_modules_skip_the_stage_with_the_note(tmp_path):
    stage = gpu_check.Stage("needs-absent", [sys.executable, "-c", "pass"], 10, ("no_such_module_zz",), False)
    result = gpu_check.run_stage(stage, has_cuda=False, json_dir=tmp_path)
    assert result.status == "skipped"
    assert "missing modules no_such_module_zz" in result.reason and "--wheels" in result.reason
    assert "engine only: no_such_module_zz absent" in gpu_check.engine_only_note(("json", "no_such_module_zz"))
    assert gpu_check.engine_only_note(("json",)) is None


def test_a_failing_stage_does_not_stop_the_later_ones(tmp_path):
    (tmp_path / "last.json").write_text('{"stale": 1}')
    write = f"import pathlib; pathlib.Path({str(tmp_path / 'last.json')!r}).write_text('{{\"images_per_s\": 1.5}}')"
    plan = [
        gpu_check.Stage("fails", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 20, (), False),
        gpu_check.Stage("hangs", [sys.executable, "-c", "import time; time.sleep(30)"], 1, (), False),
        gpu_check.Stage("last", [sys.executable, "-c", write], 20, (), False),
    ]
    results = gpu_check.run_all(plan, has_cuda=False, json_dir=tmp_path)
    assert [(r.status, r.reason) for r in results] == [
        ("failed", "exit code 3"),
        ("failed", "timed out after 1 s"),
        ("passed", ""),
    ]
    assert "boom" in results[0].tail
    assert results[2].figures == {"images_per_s": 1.5}


def test_per_test_figures_are_keyed_by_test(tmp_path):
    (tmp_path / "cuda-tests.jsonl").write_text('{"test": "t::a", "mad": 0.5}\n{"test": "t::b", "p99": 2}\n')
    assert gpu_check.read_figures(tmp_path, "cuda-tests") == {"t::a": {"mad": 0.5}, "t::b": {"p99": 2}}
    assert gpu_check.read_figures(tmp_path, "absent") == {}
