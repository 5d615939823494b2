"""The supervisor with real processes: a service that exits is restarted, one that keeps exiting is given up on."""

from __future__ import annotations

import threading
import time

import pytest
from queue_helpers import wait_until

from worker import supervisor as sup
from worker.stack import Service


class TwoServices:
    """A stack of two plain processes: one that exits after a moment and one that runs."""

    def __init__(self, cfg, exit_after: float):
        self.cfg = cfg
        self.flaky = Service("flaky", ["sh", "-c", f"sleep {exit_after}; exit 3"])
        self.steady = Service("steady", ["sleep", "120"])

    def prepare(self):
        (self.cfg.state_dir / "logs").mkdir(parents=True, exist_ok=True)

    def services(self):
        return [self.steady, self.flaky]


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(sup, "BACKOFF_S", 0.05)
    monkeypatch.setattr(sup, "BACKOFF_MAX_S", 0.2)


def _run(tmp_path, exit_after: float):
    from worker.stack import StackConfig

    cfg = StackConfig(state_dir=tmp_path, data_root=tmp_path / "data")
    lines: list[str] = []
    supervisor = sup.Supervisor(TwoServices(cfg, exit_after), out=lines.append)
    stop = threading.Event()
    supervisor.start(stop)
    thread = threading.Thread(target=supervisor.run, args=(stop, 0.05), daemon=True)
    thread.start()
    return supervisor, stop, thread, lines


def test_a_service_that_exits_is_restarted_and_the_others_keep_running(tmp_path, fast_backoff):
    supervisor, stop, thread, lines = _run(tmp_path, exit_after=0.5)
    steady_pid = supervisor.procs["steady"].pid
    try:
        wait_until(lambda: supervisor.states["flaky"].restarts >= 2, 30, 0.05, "two restarts")
        doc = sup.read_state(tmp_path)
        assert doc["services"]["flaky"]["restarts"] >= 2 and doc["services"]["flaky"]["last_exit"] == 3
        assert supervisor.procs["steady"].pid == steady_pid and supervisor.procs["steady"].poll() is None
        assert any("flaky exited with 3; restarting it" in line for line in lines)
        assert "flaky restarted" in (tmp_path / "logs" / "stack.log").read_text()
    finally:
        stop.set()
        thread.join(10)
        supervisor.stop(grace=5)
    assert sup.read_state(tmp_path) is None and supervisor.procs == {}


def test_a_service_exiting_too_often_is_given_up_on_and_named(tmp_path, fast_backoff):
    supervisor, stop, thread, lines = _run(tmp_path, exit_after=0)
    try:
        wait_until(lambda: supervisor.states["flaky"].state == "failed", 30, 0.05, "the supervisor to give up")
        time.sleep(0.5)  # it stays given up on
        state = sup.read_state(tmp_path)["services"]
        assert state["flaky"]["state"] == "failed" and state["flaky"]["restarts"] == sup.RESTART_LIMIT
        assert state["steady"]["state"] == "running" and supervisor.procs["steady"].poll() is None
        assert any(f"exited {sup.RESTART_LIMIT + 1} times within 60 s" in line for line in lines)
    finally:
        stop.set()
        thread.join(10)
        supervisor.stop(grace=5)
