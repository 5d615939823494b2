"""The local stack locked: Redis asks for a password, MLflow for a log-in (kept 600 in a 700 folder); none is printed.

One real stack (`dataslayer up --detach`, one CPU worker, the web UI) for the module; each attack is
made against it and shown refused.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from services import VENV_BIN, SupervisedStack, free_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_root):
    import shutil

    root = tmp_path_factory.mktemp("stack-security")
    shutil.copytree(demo_root, root / "data" / "demo")
    stack = SupervisedStack(root, root / "data", {"DATASLAYER_WORKERS": "1", "DATASLAYER_SYSTEM_METRICS": "0"})
    done = stack.command("up", "--detach", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    stack.up_output = done.stdout + done.stderr
    from worker.settings import MLFLOW_ADMIN_PASSWORD_FILE, read_secret

    stack.read_secrets()
    stack.admin_password = read_secret(stack.state_dir / MLFLOW_ADMIN_PASSWORD_FILE)
    stack.queued = None
    _cli_job(stack)  # queued now, it trains while the other tests run (test_a_job_through_the_stack_...)
    yield stack
    stack.command("down")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_state_folder_is_700_and_every_secret_file_600(stack):
    assert _mode(stack.state_dir) == 0o700
    for name in (
        "redis_password",
        "redis.conf",
        "secret_key",
        "admin_password",
        "mlflow_admin_password",
        "mlflow_worker_password",
        "mlflow_auth.ini",
        "mlflow_flask_secret_key",
    ):
        assert _mode(stack.state_dir / name) == 0o600, name
    assert len(stack.redis_password) >= 24
    assert len(stack.admin_password) >= 24 and len(stack.tracking_password) >= 24
    assert stack.admin_password != stack.tracking_password


def _secrets(stack) -> dict[str, str]:
    return {
        "redis": stack.redis_password,
        "mlflow admin": stack.admin_password,
        "mlflow worker": stack.tracking_password,
        "mlflow flask key": (stack.state_dir / "mlflow_flask_secret_key").read_text().strip(),
    }


def _command_lines() -> dict[int, str]:
    """Every process's command line on this machine (what `ps` shows to any local user)."""
    lines = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass  # it ended meanwhile
    return lines


def test_the_password_is_in_no_command_line_no_state_file_and_no_output(stack):
    pw = stack.redis_password
    pid = stack.pid("redis")
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode()
    assert pw not in cmdline and "requirepass" not in cmdline  # what `ps` shows (Redis retitles itself)
    mlflow_cmdline = open(f"/proc/{stack.pid('mlflow')}/cmdline", "rb").read().decode()
    assert "basic-auth" in mlflow_cmdline  # the log-in is on, its config file named by the environment
    lines = _command_lines()
    for what, secret in _secrets(stack).items():
        assert not [p for p, line in lines.items() if secret in line], what  # no service, worker child or client
        assert secret not in (stack.state_dir / "stack.json").read_text(), what
        assert secret not in stack.up_output, what
    assert stack.state()["config"]["redis_url"].startswith("redis://127.0.0.1:")
    assert stack.state()["config"]["mlflow_auth"] is True
    assert "REDIS_PASSWORD=" in stack.up_output  # named, not shown
    assert f"log in as admin, password in {stack.state_dir / 'mlflow_admin_password'}" in stack.up_output
    assert "MLFLOW_TRACKING_PASSWORD=" in stack.up_output
    assert stack.admin_password.encode() not in (stack.state_dir / "mlflow" / "auth.db").read_bytes()  # hashed
    status = stack.command("status")
    assert status.returncode == 0
    for what, secret in _secrets(stack).items():
        assert secret not in status.stdout + status.stderr, what
        for log in (stack.state_dir / "logs").iterdir():
            assert secret not in log.read_text(errors="replace"), (what, log.name)


def test_redis_refuses_a_client_without_the_password(stack):
    import redis

    anonymous = stack.redis_url.replace(f":{stack.redis_password}@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(anonymous, socket_timeout=5).lpush("dataslayer", "{}")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(anonymous.replace("redis://", "redis://:wrong@"), socket_timeout=5).ping()
    assert redis.Redis.from_url(stack.redis_url, socket_timeout=5).ping()


def _queue_train(stack) -> list[str]:
    """`dataslayer queue train` on the demo data: it checks the queue before anything is created."""
    data = str(stack.root / "data" / "demo")
    return ["queue", "train", "--data", data, "--preset", "quick", "--epochs", "1", "--image-size", "32"]


def _cli_job(stack) -> str:
    """Queue one job with the CLI, once for the module (it trains while the other tests run); its run id."""
    if stack.queued is None:
        # No REDIS_URL, no MLflow log-in in the environment: the settings read the stack's kept passwords,
        # as a second terminal in the folder does.
        done = stack.command(*_queue_train(stack))
        assert done.returncode == 0 and '"run_id"' in done.stdout, done.stderr[-2000:]
        stack.queued = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
        stack.queued_stderr = done.stderr
    return stack.queued


def test_the_cli_finds_the_password_through_the_settings(stack):
    assert len(_cli_job(stack)) == 32  # `dataslayer queue train` created the job's run as the worker user and queued it


def test_printed_links_open_mlflow_on_the_runs_not_the_genai_view(stack):
    run_id = _cli_job(stack)
    link = stack.queued_stderr.split("in the MLflow UI: ")[1].split()[0]
    assert f"/runs/{run_id}?" in link and "workflowType=machine_learning" in link, stack.queued_stderr
    assert (
        f":{stack.env['DATASLAYER_WEBUI_PORT']}/mlflow   (the runs table)" in stack.up_output
    )  # the ready block's MLflow link: the redirect to the runs table
    assert (
        '"Model training" toggle shows the runs' in stack.up_output
    )  # and how to get there from the server's own address


def test_the_ready_block_names_the_venvs_dataslayer(stack):
    # `dataslayer` is not on PATH after `make up`: the example command names the venv's, or says to activate it
    assert f"{VENV_BIN / 'dataslayer'} queue train --data" in stack.up_output
    assert f"source {VENV_BIN / 'activate'}" in stack.up_output


def test_a_queue_unavailable_error_names_redis_without_its_password(stack):
    bad = {**stack.env, "REDIS_URL": f"redis://:{stack.redis_password}@127.0.0.1:{free_port()}/0"}
    wrong = {**stack.env, "REDIS_URL": stack.redis_url.replace(stack.redis_password, "not-the-password-123")}
    for env, secret in ((bad, stack.redis_password), (wrong, "not-the-password-123")):
        done = subprocess.run(
            [str(VENV_BIN / "dataslayer"), *_queue_train(stack)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0
        assert "the queue (Redis at redis://:***@127.0.0.1:" in done.stderr, done.stderr[-2000:]
        assert secret not in done.stdout + done.stderr


def test_a_non_loopback_host_without_a_redis_password_is_refused(tmp_path):
    env = {
        **os.environ,
        "DATASLAYER_STATE_DIR": str(tmp_path / "state"),
        "DATASLAYER_HOST": "0.0.0.0",
        "DATASLAYER_REDIS_AUTH": "0",
    }
    env.pop("REDIS_PASSWORD", None)
    done = subprocess.run([str(VENV_BIN / "dataslayer"), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DATASLAYER_HOST=0.0.0.0 is not a loopback address" in done.stderr
    assert "DATASLAYER_REDIS_AUTH=0" in done.stderr
    assert not (tmp_path / "state" / "redis_password").exists()


def test_a_non_loopback_host_is_refused_unless_both_logins_are_on(tmp_path):
    from worker.stack import StackConfig, StackError, refuse_open_host

    locked = StackConfig(state_dir=tmp_path, host="0.0.0.0", redis_auth=True, mlflow_auth=True)
    refuse_open_host(locked)  # Redis password and MLflow log-in: the stack may listen on the network
    refuse_open_host(StackConfig(state_dir=tmp_path, redis_password="given", mlflow_auth=True, host="10.1.2.3"))
    for cfg, named in (
        (
            StackConfig(state_dir=tmp_path, host="0.0.0.0", redis_auth=False, mlflow_auth=True),
            "DATASLAYER_REDIS_AUTH=0",
        ),
        (StackConfig(state_dir=tmp_path, host="0.0.0.0", redis_auth=True, mlflow_auth=False), "without a log-in"),
    ):
        with pytest.raises(StackError, match="DATASLAYER_HOST=0.0.0.0 is not a loopback address") as refused:
            refuse_open_host(cfg)
        assert named in str(refused.value)
    refuse_open_host(StackConfig(state_dir=tmp_path, host="127.0.0.1"))  # loopback: nothing to lock
    assert StackConfig.from_settings().mlflow_auth  # `dataslayer up` always turns the MLflow log-in on


def test_secret_files_are_600_from_creation_and_masking_hides_passwords(tmp_path):
    from worker.settings import kept_secret, masked, private_dir, write_private

    old = os.umask(0)  # the widest umask: only the mode given at creation protects the file
    try:
        folder = private_dir(tmp_path / "state")
        first = kept_secret(folder / "s", lambda: "first")
        assert kept_secret(folder / "s", lambda: "second") == first == "first"
        write_private(folder / "c.conf", "requirepass x\n")
    finally:
        os.umask(old)
    assert (_mode(folder), _mode(folder / "s"), _mode(folder / "c.conf")) == (0o700, 0o600, 0o600)
    assert masked("redis://:p%40ss@host:6379/0") == "redis://:***@host:6379/0"
    assert masked("http://u:secret@host/x") == "http://u:***@host/x"
    assert masked("redis://host:6379/0") == "redis://host:6379/0"


# -- the MLflow log-in ------------------------------------------------------------------------------
def _rest(stack, method: str, endpoint: str, body: dict | None = None, auth: tuple[str, str] | None = None):
    """One REST call to the stack's MLflow server; (status, parsed body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(stack.tracking_uri + endpoint, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


WRITES = (  # what an attacker would write: an experiment, a registry version (item 1's attack), a run's tag
    ("POST", "/api/2.0/mlflow/experiments/create", {"name": "attacker"}),
    ("POST", "/api/2.0/mlflow/registered-models/create", {"name": "attacker-model"}),
    ("POST", "/api/2.0/mlflow/model-versions/create", {"name": "fall-detector", "source": "/tmp/evil"}),
    ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": "0" * 32, "key": "dataslayer.status", "value": "FINISHED"}),
)


def test_mlflow_refuses_writes_without_a_log_in_or_with_a_wrong_password(stack):
    wrong = (("worker", "not-the-password-1234567"), ("admin", "not-the-password-1234567"), ("nobody", "x" * 24))
    search = "/api/2.0/mlflow/experiments/search?max_results=10"
    for right in (("worker", stack.tracking_password), ("admin", stack.admin_password)):
        assert _rest(stack, "GET", search, auth=right)[0] == 200  # cached now (auth_cache_ttl_seconds): ...
    for method, endpoint, body in WRITES:
        assert _rest(stack, method, endpoint, body)[0] == 401, endpoint
        for auth in wrong:
            assert _rest(stack, method, endpoint, body, auth)[0] == 401, (endpoint, auth[0])
    assert _rest(stack, "GET", search)[0] == 401  # reads too
    assert all(_rest(stack, "GET", search, auth=auth)[0] == 401 for auth in wrong)  # ... which caches no wrong one
    status, found = _rest(
        stack,
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=attacker",
        auth=("admin", stack.admin_password),
    )
    assert status == 404, found  # nothing was created


def test_the_worker_user_is_no_admin_and_cannot_manage_users(stack):
    worker = ("worker", stack.tracking_password)
    admin = ("admin", stack.admin_password)
    status, found = _rest(stack, "GET", "/api/2.0/mlflow/users/get?username=worker", auth=admin)
    assert status == 200 and found["user"]["is_admin"] is False
    for method, endpoint, body in (
        ("POST", "/api/2.0/mlflow/users/create", {"username": "mallory", "password": "m" * 24}),
        ("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": "worker", "is_admin": True}),
        ("PATCH", "/api/2.0/mlflow/users/update-password", {"username": "admin", "password": "p" * 24}),
        ("DELETE", "/api/2.0/mlflow/users/delete", {"username": "admin"}),
    ):
        assert _rest(stack, method, endpoint, body, worker)[0] == 403, endpoint
    assert _rest(stack, "GET", "/api/2.0/mlflow/users/get?username=mallory", auth=admin)[0] == 404
    assert _rest(stack, "GET", "/api/2.0/mlflow/users/get?username=admin", auth=admin)[0] == 200  # admin's still works


def test_a_job_through_the_stack_logs_and_registers_as_the_worker_user(stack, monkeypatch):
    run_id = _cli_job(stack)
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "worker")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.tracking_password)
    client = MlflowClient(stack.tracking_uri)
    deadline = time.monotonic() + 240
    while (run := client.get_run(run_id)).info.status not in ("FINISHED", "FAILED", "KILLED"):
        assert time.monotonic() < deadline, f"the job did not end: {run.info.status}"
        time.sleep(1)
    assert run.info.status == "FINISHED", run.data.tags
    versions = client.search_model_versions(f"run_id='{run_id}'")
    assert len(versions) == 1 and versions[0].name == "fall-detector"
    # A teammate's user (default permission READ) reads the registry but cannot add a version or move an alias.
    admin = ("admin", stack.admin_password)
    assert (
        _rest(stack, "POST", "/api/2.0/mlflow/users/create", {"username": "ana", "password": "a" * 24}, admin)[0] == 200
    )
    ana = ("ana", "a" * 24)
    assert _rest(stack, "GET", "/api/2.0/mlflow/registered-models/get?name=fall-detector", auth=ana)[0] == 200
    for method, endpoint, body in (
        ("POST", "/api/2.0/mlflow/model-versions/create", {"name": "fall-detector", "source": versions[0].source}),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": "fall-detector", "alias": "champion", "version": "1"},
        ),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": "dataslayer.status", "value": "x"}),
    ):
        assert _rest(stack, method, endpoint, body, ana)[0] == 403, endpoint


# Last: it changes the worker's grant for a moment, so no job may be running.
def test_the_worker_user_is_kept_across_starts(stack):
    from functools import partial

    from worker.mlflow_login import ensure_worker_user

    admin_file = stack.state_dir / "mlflow_admin_password"
    ensure = partial(ensure_worker_user, stack.tracking_uri, admin_file=admin_file)
    admin, worker = ("admin", stack.admin_password), ("worker", stack.tracking_password)
    # What `dataslayer up` does once the server answers, again (a restart): the user is kept, its password the kept one.
    assert ensure(stack.admin_password, stack.tracking_password) is False
    assert _rest(stack, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", auth=worker)[0] == 200
    with pytest.raises(ConnectionError, match="refused the admin password kept in .*mlflow_admin_password"):
        ensure("a-lost-password-0123456789", stack.tracking_password)
    # Someone lowered the worker's grant (the MLflow UI's permissions page): the next start puts it back.
    grants = "/api/3.0/mlflow/users/permissions"
    which = {"username": "worker", "resource_type": "experiment", "resource_id": "*"}
    assert _rest(stack, "POST", f"{grants}/revoke", which, admin)[0] == 200
    assert _rest(stack, "POST", f"{grants}/grant", {**which, "permission": "READ"}, admin)[0] == 200
    assert ensure(stack.admin_password, stack.tracking_password) is False
    query = "username=worker&resource_type=experiment&resource_id=*"
    assert _rest(stack, "GET", f"{grants}/get?{query}", auth=admin)[1]["permission"] == "MANAGE"
