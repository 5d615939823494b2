"""Smoke test of the benchmark at tiny sizes on CPU: every figure exists and is positive; speeds are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import pytest

from mlcore.bench import BenchConfig, format_table, main, run_benchmark
from mlcore.bench.run import parse_args

TINY = dict(
    images=48,
    image_size=32,
    arch="resnet18",
    large_batch=32,
    test_images=16,
    predict_batch=16,
    rounds=1,
    round_seconds=0.01,
    e2e_images=48,
    e2e_epochs=1,
    job_images=1000,
    job_epochs=2,
)

# Runs `python -m mlcore.bench` where importing the packages outside the engine's set fails as if
# they were not installed (find_spec still answers: torch probes names without importing them).
BLOCKED_RUN = """
import importlib.machinery, runpy, sys
BLOCKED = {"pydantic", "mlflow", "click", "pandas", "tqdm"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked in this test)", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Block())
sys.argv = ["mlcore.bench", *sys.argv[1:]]
runpy.run_module("mlcore.bench", run_name="__main__")
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    return run_benchmark("cpu", json_path=out, progress=lambda msg: None, **TINY), out


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_every_training_and_prediction_figure_is_positive_with_its_ceiling(bench):
    results, _ = bench
    for group in ("train", "predict"):
        for name, figure in results[group].items():
            assert _positive(figure["img_per_s"]) and all(map(_positive, figure["rounds_img_per_s"])), name
            assert _positive(figure["first_step_s"]) and _positive(figure["peak_mb"]), name
            if "ceiling" in figure:
                assert _positive(results[group][figure["ceiling"]]["img_per_s"]), name
    names = " ".join(results["train"])
    assert "notebook" in names and "engine bs16" in names and "throughput bs32" in names and "ceiling" in names
    assert any("inference ceiling" in name for name in results["predict"])


def test_decode_job_and_memory_figures_are_positive(bench):
    results, _ = bench
    decode, job = results["decode"], results["job"]
    assert (
        _positive(decode["img_per_s"])
        and _positive(decode["notebook_img_per_s"])
        and _positive(decode["cpu_busy_share"])
    )
    assert job["time_to_first_step_s"] and all(map(_positive, job["time_to_first_step_s"].values()))
    assert set(job["projection"]) == {"notebook", *job["time_to_first_step_s"]}
    assert all(_positive(p["wall_s"]) and _positive(p["epoch_s"]) for p in job["projection"].values())
    e2e = job["end_to_end"]
    assert _positive(e2e["wall_s"]) and _positive(e2e["projected"]["wall_s"]) and e2e["epochs_run"] == 1
    assert _positive(results["memory"]["peak_mb"])
    machine = results["machine"]
    assert (
        machine["device_name"]
        and machine["torch"]
        and _positive(machine["cpu_count"])
        and machine["date"]
        and machine["command"]
    )


def test_json_is_written_and_table_lists_every_row_last(bench):
    results, path = bench
    written = json.loads(path.read_text())
    assert written["rows"] == json.loads(json.dumps(results["rows"]))
    assert all(_positive(row["img_per_s"]) for row in results["rows"])
    table = format_table(results).splitlines()
    rows = table[-len(results["rows"]) :]
    assert [line.split(" | ")[0].lstrip("| ") for line in rows] == [row["configuration"] for row in results["rows"]]
    assert table[-len(results["rows"]) - 2].startswith(
        "| configuration | img/s | ratio to the notebook | share of its ceiling |"
    )


def test_command_line_runs_without_mlflow_pydantic_click_pandas_tqdm(tmp_path):
    out = tmp_path / "cli.json"
    args = [
        "--device",
        "cpu",
        "--images",
        "40",
        "--image-size",
        "32",
        "--arch",
        "resnet18",
        "--large-batch",
        "16",
        "--precision",
        "fp32",
        "--test-images",
        "16",
        "--predict-batch",
        "16",
        "--rounds",
        "1",
        "--round-seconds",
        "0.01",
        "--e2e-images",
        "40",
        "--e2e-epochs",
        "1",
        "--json",
        str(out),
    ]
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert "skipped" in results["job"]["end_to_end"]  # the end-to-end job needs pydantic: skipped with a note
    assert any("needs the project's parameter model" in note for note in results["notes"])
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| job ")
    assert "[bench" in proc.stderr  # progress goes to stderr, the table to stdout


def test_bad_sizes_are_refused_before_any_work(capsys):
    assert main(["--device", "cpu", "--images", "8", "--quiet"]) == 2
    assert "images (8) must hold at least one batch" in capsys.readouterr().err
    with pytest.raises(TypeError, match="unknown benchmark options"):
        run_benchmark("cpu", imagez=3)


def test_every_config_field_is_an_option_with_its_default_and_help_runs():
    parsed = vars(parse_args([]))
    assert set(parsed) == {f.name for f in fields(BenchConfig)} | {"json_path", "quiet"}
    assert all(parsed[f.name] == f.default for f in fields(BenchConfig))
    assert (parse_args(["--compile"]).compile, parse_args(["--no-compile"]).compile) == (True, False)
    proc = subprocess.run([sys.executable, "-m", "mlcore.bench", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(f"--{f.name.replace('_', '-')}" in proc.stdout for f in fields(BenchConfig))
    assert "(default: cuda 4096, cpu 256)" in proc.stdout  # the per-device defaults, from DEFAULTS
