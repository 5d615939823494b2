"""Processes of the stack and of the tests: is one alive, and stopping a group of them in order."""

from __future__ import annotations

import os
import signal
import time


def pid_alive(pid: int) -> bool:
    """Whether a process exists (a zombie counts until it is reaped)."""
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def stop_pids(named_pids: list[tuple[str, int]], grace: float = 60) -> None:
    """SIGTERM each process group in reverse order and wait; SIGKILL what outlives `grace`."""
    for _, pid in reversed(named_pids):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.2)
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
