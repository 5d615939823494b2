"""The local stack locked: Redis asks for a password kept 600 in a 700 state folder, and no password is printed.

One real stack (`dataslayer up --detach`, one CPU worker, the web UI) for the module; each attack is
made against it and shown refused.
"""

from __future__ import annotations

import os
import stat
import subprocess

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
    from worker.settings import REDIS_PASSWORD_FILE, read_secret, with_password

    stack.redis_password = read_secret(stack.state_dir / REDIS_PASSWORD_FILE)
    stack.redis_url = with_password(stack.state()["config"]["redis_url"], stack.redis_password)
    yield stack
    stack.command("down")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_state_folder_is_700_and_every_secret_file_600(stack):
    assert _mode(stack.state_dir) == 0o700
    for name in ("redis_password", "redis.conf", "secret_key", "admin_password"):
        assert _mode(stack.state_dir / name) == 0o600, name
    assert len(stack.redis_password) >= 24


def test_the_password_is_in_no_command_line_no_state_file_and_no_output(stack):
    pw = stack.redis_password
    pid = stack.pid("redis")
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode()
    assert pw not in cmdline and "requirepass" not in cmdline  # what `ps` shows (Redis retitles itself)
    assert pw not in (stack.state_dir / "stack.json").read_text()
    assert stack.state()["config"]["redis_url"].startswith("redis://127.0.0.1:")
    assert pw not in stack.up_output and "REDIS_PASSWORD=" in stack.up_output  # named, not shown
    status = stack.command("status")
    assert status.returncode == 0 and pw not in status.stdout + status.stderr
    for log in (stack.state_dir / "logs").iterdir():
        assert pw not in log.read_text(errors="replace"), log.name


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
    return ["queue", "train", "--data", str(stack.root / "data" / "demo"), "--preset", "quick", "--epochs", "1"]


def test_the_cli_finds_the_password_through_the_settings(stack):
    # No REDIS_URL: the settings read the stack's kept password, as a second terminal in the folder does.
    done = stack.command(*_queue_train(stack))
    assert done.returncode == 0 and '"run_id"' in done.stdout, done.stderr[-2000:]


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
    for extra in ({"DATASLAYER_REDIS_AUTH": "0"}, {"DATASLAYER_REDIS_AUTH": "1"}):
        done = subprocess.run(
            [str(VENV_BIN / "dataslayer"), "up"], env={**env, **extra}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and "DATASLAYER_HOST=0.0.0.0 is not a loopback address" in done.stderr
        assert not (tmp_path / "state" / "redis_password").exists()
    assert (
        "DATASLAYER_REDIS_AUTH=0"
        in subprocess.run(
            [str(VENV_BIN / "dataslayer"), "up"],
            env={**env, "DATASLAYER_REDIS_AUTH": "0"},
            capture_output=True,
            text=True,
            timeout=60,
        ).stderr
    )


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
