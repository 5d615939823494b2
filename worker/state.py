"""Queue mechanics in Redis: job leases, cancel and drain flags, attempts, live progress and log tails.

The job's state of record is its MLflow run; these keys only coordinate the processes working on
it. A lease is a key with a TTL that the job's heartbeat renews: while it lives, no other worker
may run the job; when it expires, the job's process is gone and the reconciler takes over.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

PREFIX = "dataslayer"
PROGRESS_TTL = 7 * 24 * 3600
LOG_LINES = 500

# Renew only a lease we still hold: a compare-and-expire in one step.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) else return 0 end
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def connect(url: str) -> redis.Redis:
    """A Redis client with short timeouts, so a dead server is noticed in seconds."""
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30, decode_responses=True
    )


class JobState:
    """The Redis keys of one job (one MLflow run id)."""

    def __init__(self, r: redis.Redis, run_id: str):
        self.r, self.run_id = r, run_id
        self.lease_key = f"{PREFIX}:lease:{run_id}"
        self.cancel_key = f"{PREFIX}:cancel:{run_id}"
        self.progress_key = f"{PREFIX}:progress:{run_id}"
        self.attempts_key = f"{PREFIX}:attempts:{run_id}"
        self.log_key = f"{PREFIX}:log:{run_id}"

    # -- lease ---------------------------------------------------------------------------------
    def acquire_lease(self, owner: str, ttl: int) -> bool:
        """Take the lease unless another live owner holds it."""
        return bool(self.r.set(self.lease_key, owner, nx=True, ex=ttl))

    def renew_lease(self, owner: str, ttl: int) -> bool:
        """Extend our lease; False when it expired or another owner took it."""
        return bool(self.r.eval(_RENEW, 1, self.lease_key, owner, ttl))

    def release_lease(self, owner: str) -> None:
        """Drop our lease (never someone else's)."""
        self.r.eval(_RELEASE, 1, self.lease_key, owner)

    def lease_owner(self) -> str | None:
        """Who runs the job now, if anyone."""
        return self.r.get(self.lease_key)

    # -- cancel, attempts ----------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Ask the job to stop (read by its heartbeat, and by the task before it starts)."""
        self.r.set(self.cancel_key, str(time.time()), ex=PROGRESS_TTL)

    def clear_cancel(self) -> None:
        """Forget a cancel request (a cancelled sweep that is re-run or extended runs again)."""
        self.r.delete(self.cancel_key)

    def cancel_requested(self) -> bool:
        """Whether a cancel was asked for."""
        return bool(self.r.exists(self.cancel_key))

    def next_attempt(self) -> int:
        """Count one more start of this job."""
        n = self.r.incr(self.attempts_key)
        self.r.expire(self.attempts_key, PROGRESS_TTL)
        return int(n)

    def forgive_attempt(self) -> None:
        """Un-count a start that ended by preemption (a deploy), not by a crash."""
        self.r.decr(self.attempts_key)

    # -- progress and log ----------------------------------------------------------------------
    def set_progress(self, progress: dict[str, Any]) -> None:
        """Publish the latest progress snapshot."""
        self.r.set(self.progress_key, json.dumps(progress), ex=PROGRESS_TTL)

    def progress(self) -> dict[str, Any] | None:
        """The latest progress snapshot, if any."""
        raw = self.r.get(self.progress_key)
        return json.loads(raw) if raw else None

    def append_log(self, line: str) -> None:
        """Append a line to the job's log tail."""
        with self.r.pipeline() as pipe:
            pipe.rpush(self.log_key, line).ltrim(self.log_key, -LOG_LINES, -1).expire(
                self.log_key, PROGRESS_TTL
            ).execute()

    def log_tail(self, n: int = 200) -> list[str]:
        """The last n log lines."""
        return self.r.lrange(self.log_key, -n, -1)


def ready_key(worker: str) -> str:
    """Set once a worker consumes from the queue (the stack and the tests wait for it)."""
    return f"{PREFIX}:worker-ready:{worker}"


def drain_key(worker: str) -> str:
    """Set while a worker shuts down: its running job checkpoints out and goes back to the queue."""
    return f"{PREFIX}:drain:{worker}"


class Heartbeat(threading.Thread):
    """Keeps a job's lease alive, publishes its progress and watches for cancel and drain.

    Runs beside the training loop in the job's process; the loop only reads two events, so the
    step never waits on Redis. Redis errors are tolerated until the lease itself is in doubt.
    """

    def __init__(self, state: JobState, owner: str, *, ttl: int, every: float, worker: str):
        super().__init__(name=f"heartbeat-{state.run_id[:8]}", daemon=True)
        self.state, self.owner, self.ttl, self.every, self.worker = state, owner, ttl, every, worker
        self.attempt = 0
        self.cancelled = threading.Event()
        self.preempted = threading.Event()
        self.lease_lost = threading.Event()
        self._halt = threading.Event()
        self._latest: dict[str, Any] = {}
        self._dirty = threading.Event()
        self._wake = threading.Event()
        self._last_ok = time.monotonic()

    def publish(self, progress: dict[str, Any]) -> None:
        """Record the latest progress; sent on the next beat (or at once for a phase change)."""
        phase_changed = progress.get("phase") != self._latest.get("phase")
        self._latest = {**progress, "updated": time.time(), "worker": self.worker, "attempt": self.attempt}
        self._dirty.set()
        if phase_changed:
            self._wake.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self.beat()
            self._wake.wait(self.every)
            self._wake.clear()

    def beat(self) -> None:
        """One round: renew the lease, push progress, read the flags."""
        try:
            if not self.state.renew_lease(self.owner, self.ttl):
                self.lease_lost.set()
            if self._dirty.is_set():
                self._dirty.clear()
                self.state.set_progress(self._latest)
            if self.state.cancel_requested():
                self.cancelled.set()
            if self.state.r.exists(drain_key(self.worker)):
                self.preempted.set()
            self._last_ok = time.monotonic()
        except redis.RedisError as exc:
            logging.getLogger(__name__).warning("heartbeat: redis unavailable: %s", exc)
            if time.monotonic() - self._last_ok > self.ttl:
                self.lease_lost.set()  # the lease may have expired meanwhile: another worker may take over

    def stop(self) -> None:
        """Stop beating (after one last progress push)."""
        self._halt.set()
        self._wake.set()
        self.join(timeout=10)
        try:
            if self._dirty.is_set():
                self.state.set_progress(self._latest)
        except redis.RedisError:
            pass
