"""Running the local stack: start the services in order, restart one that exits, stop them all on a signal.

A service that exits is restarted after a backoff (1 s, doubling to 30 s) while the others keep
running; more than RESTART_LIMIT exits within RESTART_WINDOW_S gives up on it (state `failed`,
named in the log and in `dataslayer status`). Every change is written to `<state>/stack.json`,
which `dataslayer status`, `dataslayer down` and the web UI's health line read.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from worker.processes import pid_alive, stop_pids
from worker.stack import Service, Stack, StackError

RESTART_LIMIT = 5  # exits within the window before the supervisor gives up on a service
RESTART_WINDOW_S = 60.0
BACKOFF_S, BACKOFF_MAX_S = 1.0, 30.0
STATE_FILE = "stack.json"


@dataclass
class ServiceState:
    """What the supervisor knows of one service."""

    name: str
    state: str = "starting"  # starting, running, restarting, failed, stopped
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    since: float = field(default_factory=time.time)
    exits: list[float] = field(default_factory=list, repr=False)  # recent exit times, for the restart limit
    due: float = 0.0  # when a restarting service starts again


def _public(state: ServiceState) -> dict:
    return {k: v for k, v in asdict(state).items() if k not in ("exits", "due")}


def state_path(state_dir: Path) -> Path:
    """The supervisor's state file in a stack's state directory."""
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: Path) -> dict | None:
    """The last state the supervisor wrote, or None when no stack was started from `state_dir`."""
    try:
        return json.loads(state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None


class Supervisor:
    """Owns the stack's processes for as long as `dataslayer up` runs."""

    def __init__(self, stack: Stack, *, out: Callable[[str], None] = print):
        self.stack, self.cfg, self.out = stack, stack.cfg, out
        self.services: list[Service] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.states: dict[str, ServiceState] = {}
        self.ready = False

    # -- starting ----------------------------------------------------------------------------------
    def start(self, stop: threading.Event, timeout: float = 120) -> None:
        """Start every service in order, each healthy before the next starts; StackError names the one that is not."""
        self.stack.prepare()
        self.services = self.stack.services()
        for svc in self.services:
            self.states[svc.name] = ServiceState(svc.name)
            self._launch(svc)
            deadline = time.monotonic() + timeout
            while svc.health is not None and not svc.health():
                if stop.is_set():
                    raise StackError("stopped while starting")
                if self.procs[svc.name].poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"{svc.name} did not start; see {self._log_path(svc.name)}")
                time.sleep(0.3)
            if svc.ready is not None:
                svc.ready()  # e.g. the MLflow server's worker user, which the workers after it log in as
            self._set(svc.name, "running")
            self.out(f"  {svc.name:<8} up (pid {self.procs[svc.name].pid})")
        self.ready = True
        self._write()

    def _launch(self, svc: Service) -> None:
        with open(self._log_path(svc.name), "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                svc.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **svc.env},
                start_new_session=True,
                cwd=self.cfg.state_dir,
            )
        self.procs[svc.name] = proc
        state = self.states[svc.name]
        state.pid, state.state, state.since = proc.pid, "starting", time.time()
        self._write()

    # -- supervising -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Watch the services until `stop` is set: restart what exits, give up on what keeps exiting."""
        while not stop.wait(poll_s):
            for svc in self.services:
                self._watch(svc)

    def _watch(self, svc: Service) -> None:
        state, proc = self.states[svc.name], self.procs.get(svc.name)
        now = time.time()
        if state.state in ("starting", "running") and proc is not None and proc.poll() is not None:
            state.last_exit = proc.returncode
            state.exits = [t for t in state.exits if now - t < RESTART_WINDOW_S] + [now]
            if len(state.exits) > RESTART_LIMIT:
                self._set(svc.name, "failed")
                self._log(
                    f"{svc.name} exited {len(state.exits)} times within {RESTART_WINDOW_S:.0f} s (last exit "
                    f"{proc.returncode}); not restarting it, the rest keep running (see {self._log_path(svc.name)})"
                )
                return
            delay = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (len(state.exits) - 1))
            state.due = now + delay
            self._set(svc.name, "restarting")
            self._log(f"{svc.name} exited with {proc.returncode}; restarting it in {delay:.0f} s")
        elif state.state == "restarting" and now >= state.due:
            state.restarts += 1
            self._launch(svc)
            self._log(f"{svc.name} restarted (pid {self.procs[svc.name].pid}, restart {state.restarts})")
        elif state.state == "starting" and (svc.health is None or svc.health()):
            self._set(svc.name, "running")

    # -- stopping ----------------------------------------------------------------------------------
    def stop(self, grace: float = 60) -> None:
        """Stop services in reverse order: SIGTERM (workers requeue their jobs), then SIGKILL after `grace`."""
        alive = [(n, p.pid) for n, p in self.procs.items() if p.poll() is None]
        stop_pids(alive, grace)
        for name in self.states:
            self.states[name].state = "stopped"
        self.procs.clear()
        state_path(self.cfg.state_dir).unlink(missing_ok=True)

    # -- the state file ----------------------------------------------------------------------------
    def _set(self, name: str, value: str) -> None:
        state = self.states[name]
        if state.state != value:
            state.state, state.since = value, time.time()
            self._write()

    def _write(self) -> None:
        cfg = self.cfg
        doc = {
            "supervisor": os.getpid(),
            "ready": self.ready,
            "updated": time.time(),
            "config": {
                "redis_url": cfg.redis_address,  # never the password: clients read it from the state directory
                "redis_auth": bool(cfg.redis_password),
                "mlflow_auth": cfg.mlflow_auth,
                "tracking_uri": cfg.tracking_uri,
                "webui_url": cfg.webui_url,
            },
            "services": {name: _public(state) for name, state in self.states.items()},
        }
        path = state_path(cfg.state_dir)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)

    def _log(self, line: str) -> None:
        stamped = time.strftime("%Y-%m-%d %H:%M:%S ") + line
        self.out(line)
        with open(self._log_path("stack"), "a") as f:
            f.write(stamped + "\n")

    def _log_path(self, name: str) -> Path:
        return self.cfg.state_dir / "logs" / f"{name}.log"


def down(state_dir: Path, timeout: float = 120) -> list[str]:
    """Stop the stack started from `state_dir`: signal its supervisor (which stops the services), or the services.

    Returns the services that were running.
    """
    import signal

    doc = read_state(state_dir)
    if doc is None:
        return []
    names = [n for n, s in doc.get("services", {}).items() if s.get("pid") and pid_alive(s["pid"])]
    supervisor = doc.get("supervisor")
    if supervisor and pid_alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pid_alive(supervisor):
            return names
    # No supervisor (it was killed): stop what it left, in reverse start order.
    stop_pids([(n, s["pid"]) for n, s in doc.get("services", {}).items() if s.get("pid")])
    state_path(state_dir).unlink(missing_ok=True)
    return names


def already_running(state_dir: Path) -> bool:
    """Whether a supervisor or a service of a stack from `state_dir` is alive."""
    doc = read_state(state_dir) or {}
    pids = [doc.get("supervisor")] + [s.get("pid") for s in doc.get("services", {}).values()]
    return any(p and pid_alive(p) for p in pids)
