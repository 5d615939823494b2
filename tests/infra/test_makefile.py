"""`make up` / `make test` set up the venv quietly: pip's output goes to a log, shown only when an install fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOISE = "Collecting something-noisy"
KEEP = {"pyproject.toml", "README.md", "mlcore", "worker", "webui"}  # what `pip wheel .` reads


def _fake_venv(tmp_path: Path, fail_on: str | None) -> Path:
    """A venv whose python is a stand-in for pip: 250 lines of noise, then success (or failure on `fail_on`)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    fail = f'case "$*" in *{fail_on}*) echo "ERROR: no matching distribution"; exit 1;; esac' if fail_on else ""
    python.write_text(f'#!/bin/sh\nfor i in $(seq 250); do echo "{NOISE} $i"; done\n{fail}\nexit 0\n')
    python.chmod(0o755)
    return venv


def _install(venv: Path) -> subprocess.CompletedProcess:
    stamp = venv / ".installed-stamp"
    return subprocess.run(
        ["make", "--no-print-directory", f"VENV={venv}", str(stamp)], cwd=ROOT, capture_output=True, text=True
    )


def test_a_successful_install_prints_one_line_not_pips_output(tmp_path):
    venv = _fake_venv(tmp_path, fail_on=None)
    done = _install(venv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip().splitlines() == [
        f"setting up {venv} (pip's output: {venv / 'pip-install.log'})"
    ]
    log = (venv / "pip-install.log").read_text()
    assert log.count(NOISE) == 3 * 250  # pip, torch, the project: all kept in the log
    assert (venv / ".installed-stamp").exists()


def test_a_failed_install_shows_the_end_of_the_log_and_fails(tmp_path):
    venv = _fake_venv(tmp_path, fail_on="torch==")
    done = _install(venv)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and not (venv / ".installed-stamp").exists()
    assert "ERROR: no matching distribution" in out and f"the whole log is {venv / 'pip-install.log'}" in out
    assert out.count(NOISE) <= 40  # the tail, not the whole log


def test_the_package_builds_without_setuptools_warnings(tmp_path):
    """The licence is an SPDX expression (setuptools >= 77), so building the project warns about nothing."""
    src = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n not in KEEP] if d == str(ROOT) else [])
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("dataslayer-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
