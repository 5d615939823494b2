"""Smoke test of the large-batch quality comparison at tiny sizes: figures exist, in range; quality unasserted."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

from mlcore.bench.quality import QualityConfig, main


def test_both_settings_are_trained_per_seed_and_tabled(demo_root, tmp_path, capsys):
    out = tmp_path / "quality.json"
    assert (
        main(
            [
                "--data",
                str(demo_root),
                "--seeds",
                "0",
                "1",
                "--epochs",
                "1",
                "--large-batch",
                "32",
                "--device",
                "cpu",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    reference, large = results["rows"]
    assert (reference["batch_size"], large["batch_size"]) == (16, 32)
    assert large["learning_rate"] == reference["learning_rate"] * 2  # linear scaling
    assert results["train_images"] > 0 and results["seeds"] == [0, 1]
    for row in results["rows"]:
        assert len(row["val_f1"]) == 2 and all(0.0 <= f <= 1.0 for f in row["val_f1"])
        assert row["steps_per_epoch"] == -(-results["train_images"] // row["batch_size"])
    assert reference["gap_to_reference"] == 0.0
    table = capsys.readouterr().out.splitlines()
    assert table[-2].startswith("| batch 16, lr 0.0005 |") and table[-1].startswith("| batch 32, lr 0.001 (linear) |")


def test_every_config_field_is_an_option_of_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "mlcore.bench.quality", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(f"--{f.name.replace('_', '-')}" in proc.stdout for f in fields(QualityConfig))
