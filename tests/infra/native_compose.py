"""Run services of a loaded compose project as local processes, the way Docker would run them.

There is no Docker engine on the test machines, so the containers are emulated with what each one
would see: a service name resolves to 127.0.0.1 and each exposed container port to a free local
port; a volume is a folder under `root`; a file the Dockerfile COPYs is the repository's file; the
image's ENTRYPOINT (or the service's `entrypoint`) wraps the command and its ENV is set. Nothing
else of a service's command, environment or health check changes, so the test runs the compose
file's own lines.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from compose_model import environment
from dockerfile_model import ROOT, exec_form, image_files, stages

VENV_BIN = Path(sys.executable).parent
# Image folders a service may name without a volume there: they live under root/<service>/rootfs,
# never on this machine's real /var/lib or /data.
CONTAINER_PREFIXES = ("/var/lib/", "/data", "/opt/", "/tmp/")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NativeCompose:
    """One compose project's services as processes under `root`."""

    def __init__(self, project: dict, root: Path, *, project_dir: Path = ROOT, ports: dict | None = None):
        self.project, self.root, self.project_dir = project, root, project_dir
        self.services = project["services"]
        # (service, container port) -> local port; shared with another instance when given.
        self.ports: dict[tuple[str, int], int] = ports if ports is not None else {}
        for name, svc in self.services.items():
            for port in svc.get("expose", []):
                self.ports.setdefault((name, int(port)), free_port())
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.leftovers: dict[str, list[int]] = {}  # processes still running when a stopped service's main one ended

    # -- what a container sees -----------------------------------------------------------------
    def port(self, service: str, container_port: int) -> int:
        """The local port standing for `service:container_port`."""
        return self.ports[(service, container_port)]

    def url(self, service: str, container_port: int, path: str = "") -> str:
        """http://127.0.0.1:<local port><path> for a service's port."""
        return f"http://127.0.0.1:{self.port(service, container_port)}{path}"

    def mounts(self, service: str) -> dict[str, Path]:
        """Container path -> host folder for the service's volumes (named volumes under root/volumes)."""
        out = {}
        for spec in self.services[service].get("volumes", []):
            source, target = spec.split(":")[:2]
            if source.startswith((".", "/")):
                host = (self.project_dir / source).resolve()
            else:
                host = self.root / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            out[target] = host
        return out

    def _image(self, service: str) -> tuple[dict[str, Path], dict[str, str], list[str], str | None]:
        """(image files, image ENV, ENTRYPOINT, WORKDIR) of a service built from this repository."""
        build = self.services[service].get("build")
        if not build:
            return {}, {}, [], None
        dockerfile = (self.project_dir / build.get("context", ".") / build["dockerfile"]).resolve()
        final = stages(dockerfile)[-1]
        workdir = final.last("WORKDIR")
        return (
            image_files(dockerfile),
            final.env,
            exec_form(final.last("ENTRYPOINT")) or [],
            workdir.args if workdir else None,
        )

    def rewrite(self, service: str, value: str) -> str:
        """One command word or environment value as the local process must see it."""
        own = [(p, local) for (svc, p), local in self.ports.items() if svc == service]
        for (svc, p), local in self.ports.items():  # other services by name, as compose DNS resolves them
            value = re.sub(rf"(?<![\w.-]){re.escape(svc)}:{p}(?!\d)", f"127.0.0.1:{local}", value)
        for p, local in own:  # this container's own listening port and loopback addresses
            value = re.sub(rf"(?<![\w.-])(0\.0\.0\.0|127\.0\.0\.1|localhost):{p}(?!\d)", f"127.0.0.1:{local}", value)
            value = re.sub(rf"(^|\s)(--port=|-p |--port ){p}(?!\d)", rf"\g<1>\g<2>{local}", value)
        value = re.sub(r"(^|=)0\.0\.0\.0$", r"\g<1>127.0.0.1", value)
        files, _, _, _ = self._image(service)
        if value in files:
            return str(files[value])
        return self.path(service, value)

    def path(self, service: str, value: str) -> str:
        """A container path on this machine: on the service's volume, else in its private rootfs."""
        for target, host in sorted(self.mounts(service).items(), key=lambda kv: -len(kv[0])):
            if value == target or value.startswith(target + "/"):
                return str(host) + value[len(target) :]
        if value.startswith(CONTAINER_PREFIXES):
            return str(self.root / service / "rootfs") + value
        return value

    def command(self, service: str, argv: list[str] | None = None) -> list[str]:
        """The service's command (or `argv`) with the entrypoint, local programs and rewritten words."""
        svc = self.services[service]
        argv = list(argv if argv is not None else svc["command"])
        own = {p for (s, p) in self.ports if s == service}
        out = []
        for i, word in enumerate(argv):
            if i > 0 and argv[i - 1] in ("--port", "-p") and word.isdigit() and int(word) in own:
                out.append(str(self.port(service, int(word))))
            else:
                out.append(self.rewrite(service, word))
        out[0] = self.program(out[0])
        if svc.get("entrypoint"):  # the service's own (e.g. Redis' config writer), mounted from the repository
            first, *rest = svc["entrypoint"]
            return [self.program(first), *(self.rewrite(service, w) for w in rest)] + out
        files, _, entrypoint, _ = self._image(service)
        wrapper = [str(files.get(w, w)) for w in entrypoint]
        if wrapper:
            wrapper = ["sh", *wrapper]  # the entrypoint script, run by the shell its shebang names
        return wrapper + out

    @staticmethod
    def program(name: str) -> str:
        """The local program for a container's: this venv's console scripts, Redis' binaries, python."""
        if name in ("python", "python3"):
            return sys.executable
        if name in ("redis-server", "redis-cli"):
            from worker.stack import redis_server_binary

            return str(Path(redis_server_binary()).with_name(name))
        if (VENV_BIN / name).exists():
            return str(VENV_BIN / name)
        return shutil.which(name) or name

    def env(self, service: str) -> dict[str, str]:
        """The process environment: this one's, then the image's ENV, then the service's environment."""
        _, image_env, _, _ = self._image(service)
        merged = {k: v for k, v in image_env.items() if k != "PATH"}
        merged.update(environment(self.services[service]))
        env = {k: self.rewrite(service, v) for k, v in merged.items()}
        path = os.pathsep.join([str(VENV_BIN), str(Path(self.program("redis-cli")).parent), os.environ.get("PATH", "")])
        return {**os.environ, **env, "PATH": path}

    def cwd(self, service: str) -> Path:
        """The service's working_dir, else the image's WORKDIR, as a local folder."""
        _, _, _, workdir = self._image(service)
        workdir = self.services[service].get("working_dir") or workdir or "/"
        folder = Path(self.path(service, workdir)) if workdir != "/" else self.root / service / "rootfs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- running ----------------------------------------------------------------------------------
    def start(self, service: str, *, wait: bool = True, timeout: float = 120) -> subprocess.Popen:
        """Start the service as a process group; with `wait`, poll its own health check until it passes."""
        log = self.logs.setdefault(service, self.root / "logs" / f"{service}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            self.command(service),
            env=self.env(service),
            cwd=self.cwd(service),
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[service] = proc
        if wait:
            self.wait_healthy(service, timeout)
        return proc

    def run(self, service: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a one-shot service to completion."""
        return subprocess.run(
            self.command(service),
            env=self.env(service),
            cwd=self.cwd(service),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def healthcheck(self, service: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the service's compose health check once, as Docker would inside the container."""
        test = self.services[service]["healthcheck"]["test"]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        kind, argv = test[0], test[1:]
        if kind == "CMD-SHELL":
            cmd = ["sh", "-c", " ".join(self.rewrite(service, w) for w in argv)]
        elif kind == "CMD":
            cmd = [self.program(argv[0]), *[self.rewrite(service, w) for w in argv[1:]]]
        else:
            raise ValueError(f"{service}: health check {test[0]!r} is not CMD or CMD-SHELL")
        return subprocess.run(
            cmd, env=self.env(service), cwd=self.cwd(service), capture_output=True, text=True, timeout=timeout
        )

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        """Poll the service's own health check until it passes; fail with its log if it exits."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs.get(service)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{service} exited with {proc.returncode}:\n{self.log_tail(service)}")
            result = self.healthcheck(service)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{service} not healthy after {timeout}s: {result.stderr[-500:]}\n{self.log_tail(service)}"
                )
            time.sleep(0.5)

    def log_tail(self, service: str, chars: int = 4000) -> str:
        """The end of a service's log."""
        log = self.logs.get(service)
        return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""

    def stop(self, service: str, timeout: float = 30) -> int | None:
        """As `docker stop` with `init: true`: SIGTERM to the main process only, SIGKILL to all after `timeout`.

        The main process is the entrypoint, which exec'd the command: the signal reaches the
        service itself, and whatever it started must end with it.
        """
        proc = self.procs.pop(service, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5  # what the service started should end with it
        while self.group_running(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.leftovers[service] = self.group_running(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the container's end: nothing outlives it
        except ProcessLookupError:
            pass
        return proc.wait()

    @staticmethod
    def group_running(pgid: int) -> list[int]:
        """Processes of the group `pgid` still running (zombies, already dead, do not count)."""
        running = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                running.append(int(stat.parent.name))
        return running

    def stop_all(self) -> None:
        """Stop every started service, newest first."""
        for service in reversed(list(self.procs)):
            self.stop(service)
