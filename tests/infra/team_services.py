"""Real backing services of the deployment tests: PostgreSQL from the Debian binaries, moto's S3 server."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


# -- PostgreSQL from the Debian server binaries ---------------------------------------------------
def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding a server."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: run `make system-deps` "
            "(apt-get install postgresql)"
        )
    return found[-1].parent


class PostgresServer:
    """A throwaway PostgreSQL cluster (password auth, TCP on loopback) in a temporary folder.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user the
    Debian package creates (or `nobody`), in a folder of its own under /tmp.
    """

    def __init__(self, port: int, user: str, password: str, database: str):
        self.port, self.user, self.password, self.database = port, user, password, database
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="dataslayer-pg-"))
        self.proc: subprocess.Popen | None = None
        self.run_as: dict = {}
        if os.geteuid() == 0:
            owner = next((n for n in ("postgres", "nobody") if _has_user(n)), None)
            if owner is None:
                pytest.fail("running as root and there is no `postgres` user to run PostgreSQL as")
            entry = pwd.getpwnam(owner)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self.run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        """initdb (scram-sha-256 for TCP), start the server, create the database."""
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            os.chown(pwfile, self.run_as["user"], self.run_as["group"])
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth-host",
                "scram-sha-256",
                "--auth-local",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self.run_as,
        )
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=open(self.dir / "server.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self.run_as,
        )
        deadline = time.monotonic() + 30
        while self.psql("SELECT 1", db="postgres", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{(self.dir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        self.psql(f'CREATE DATABASE "{self.database}"', db="postgres")
        return self

    def env(self) -> dict[str, str]:
        """Client environment with the password (as the MLflow service gets it)."""
        return {**os.environ, "PGPASSWORD": self.password}

    def psql(self, sql: str, db: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run SQL over TCP with password auth, as the MLflow server connects."""
        return subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                db or self.database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
        )

    def stop(self) -> None:
        """Fast shutdown, then remove the cluster."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# -- S3 from moto's server mode ------------------------------------------------------------------
class MotoS3Server:
    """moto's standalone server (`moto_server`): a real HTTP S3 endpoint in its own process."""

    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MotoS3Server:
        """Start it and wait until it answers."""
        server = VENV_BIN / "moto_server"
        if not server.exists():
            pytest.fail("moto_server not installed: `pip install -e .[test]` installs moto[server]")
        self.proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def client(self, access_key: str, secret_key: str):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        """Stop the server."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
