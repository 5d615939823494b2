"""The job messages in Redis: sending them, seeing them in start order, and moving them without duplicates.

Celery's Redis transport (kombu) keeps one list per priority step (`dataslayer`, `dataslayer:3`,
`dataslayer:6`); producers LPUSH and workers BRPOP, so the right end of the first non-empty list
starts next. A delivered, not yet acknowledged message sits in the `unacked` hash (delivery tag ->
[payload, exchange, routing key]) with its delivery time in `unacked_index`. Knowing that layout
lets the queue keep two promises Celery alone does not: a recovered job goes back at the *front*
of its priority (kombu's requeue puts it at the back), and a job has *one* message after a crash
(`ensure_queued` moves or restores the one that exists, and sends a new one only when none does).
Every move is one Redis transaction (WATCH/MULTI), so a worker popping the message meanwhile
makes the move retry or find nothing, never run the job twice.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import redis

from worker.settings import Settings, get_settings

UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's default key names
# A task that finds Redis or MLflow down before its job starts retries this many seconds later: its retry is a
# message a worker holds (delivered, unacknowledged) that long, the longest a live worker holds a queued job's.
RETRY_S = 15


@dataclass(frozen=True)
class Message:
    """One queued message: the list it is in, its raw payload, and what it carries."""

    key: str
    raw: bytes
    task: str
    run_id: str
    priority: str


def priority_steps() -> dict[str, int]:
    """Priority name -> kombu priority step (0 is served first)."""
    from worker.celery_app import PRIORITY_STEPS

    return PRIORITY_STEPS


def queue_key(settings: Settings, priority: str) -> str:
    """The Redis list holding the messages of `priority`."""
    step = priority_steps()[priority]
    return settings.queue if step == 0 else f"{settings.queue}:{step}"


def enqueue(
    job_type: str, run_id: str, params: dict, priority: str = "normal", settings: Settings | None = None
) -> None:
    """Send the task of a job to the back of its priority (by task name: no task code is imported here)."""
    settings = settings or get_settings()
    args = [run_id] if job_type == "sweep" else [run_id, params]
    _producer(settings.redis_url).send_task(
        f"dataslayer.{job_type}", args=args, priority=priority_steps()[priority], queue=settings.queue
    )


@lru_cache(maxsize=8)
def _producer(redis_url: str):
    """A Celery app for sending, per broker URL (settings may change between tests, or per tenant)."""
    from worker.celery_app import make_app

    app = make_app()
    app.conf.broker_url = app.conf.result_backend = redis_url
    return app


def _decode(raw: str | bytes) -> tuple[str, str] | None:
    """(task name, run id) of a raw message, or None for anything this project did not send."""
    try:
        msg = json.loads(raw)
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(msg["headers"]["task"]), str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class Broker:
    """The queue's messages in one Redis, for one settings object (queue name, URL)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        # Bytes, not decoded text: a foreign message (even a pickle pushed by hand) must not break a listing.
        self.r = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)

    def keys(self) -> list[tuple[str, str]]:
        """(priority, list key) in the order workers serve them."""
        steps = priority_steps()
        return [(p, queue_key(self.settings, p)) for p in sorted(steps, key=steps.get)]

    def queued(self, pipe=None) -> Iterator[Message]:
        """Every queued message in the order the workers will start them."""
        r = pipe if pipe is not None else self.r
        for priority, key in self.keys():
            for raw in reversed(r.lrange(key, 0, -1)):  # BRPOP takes the right end first
                found = _decode(raw)
                if found is not None:
                    yield Message(key, raw, found[0], found[1], priority)

    def positions(self) -> dict[str, int]:
        """Run id -> place in line (1 starts next) of every queued job."""
        out: dict[str, int] = {}
        for msg in self.queued():
            out.setdefault(msg.run_id, len(out) + 1)
        return out

    def find(self, run_id: str, pipe=None) -> Message | None:
        """The queued message of a run, if any."""
        return next((m for m in self.queued(pipe) if m.run_id == run_id), None)

    def move(self, run_id: str, *, front: bool = True, priority: str | None = None) -> bool:
        """Move a run's queued message to the front (or back) of its priority, or of `priority`; False if not queued."""
        keys = [key for _, key in self.keys()]
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    msg = self.find(run_id, pipe)
                    if msg is None:
                        pipe.unwatch()
                        return False
                    target, raw = msg.key, msg.raw
                    if priority is not None and priority != msg.priority:
                        target, raw = queue_key(self.settings, priority), _with_priority(msg.raw, priority)
                    pipe.multi()
                    pipe.lrem(msg.key, 1, msg.raw)
                    (pipe.rpush if front else pipe.lpush)(target, raw)
                    pipe.execute()
                    return True
                except redis.WatchError:  # a worker took a message meanwhile: look again
                    continue

    def remove(self, run_id: str) -> int:
        """Drop every queued message of a run (a cancelled job); how many were dropped."""
        dropped = 0
        for msg in list(self.queued()):
            if msg.run_id == run_id:
                dropped += self.r.lrem(msg.key, 0, msg.raw)
        return dropped

    def delivered(self, run_id: str) -> list[tuple[str, str, float]]:
        """(delivery tag, raw payload, delivered at) of the run's delivered, unacknowledged messages."""
        out = []
        for tag, entry in self.r.hgetall(UNACKED).items():
            try:
                payload = json.loads(entry)[0]
            except (ValueError, IndexError, TypeError):
                continue
            found = _decode(json.dumps(payload))
            if found is not None and found[1] == run_id:
                out.append((tag.decode(), json.dumps(payload), float(self.r.zscore(UNACKED_INDEX, tag) or 0.0)))
        return out

    def held(self, run_id: str, *, grace: float) -> bool:
        """Whether a live worker may hold the run's message: one was delivered less than `grace` + RETRY_S ago.

        An older delivery of a job nobody leases is dead: its worker died, or its ack or retry was lost with Redis.
        """
        now = time.time()
        return any(now - at < grace + RETRY_S for _, _, at in self.delivered(run_id))

    def restore(self, run_id: str, *, older_than: float) -> bool:
        """Put a dead delivery of the run (unacknowledged for `older_than` s) back at the front of its priority."""
        now = time.time()
        for tag, raw, at in self.delivered(run_id):
            if now - at < older_than:
                continue
            payload = json.loads(raw)
            for flags in (
                payload.setdefault("headers", {}),
                payload.setdefault("properties", {}).get("delivery_info", {}),
            ):
                flags["redelivered"] = True
            priority = _priority_of(payload)
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(UNACKED)
                    if not pipe.hexists(UNACKED, tag):
                        pipe.unwatch()
                        continue  # its worker acknowledged or requeued it meanwhile
                    pipe.multi()
                    pipe.hdel(UNACKED, tag)
                    pipe.zrem(UNACKED_INDEX, tag)
                    pipe.rpush(queue_key(self.settings, priority), json.dumps(payload))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        return False

    def ensure_queued(self, job_type: str, run_id: str, params: dict, priority: str, *, grace: float) -> str:
        """Make sure the run has exactly one message, at the front of its priority; returns what was done.

        "moved": it was queued (e.g. Celery's requeue after a lost pool child put it at the back);
        "restored": its worker died holding it (unacknowledged for more than `grace` seconds);
        "delivered": a worker took it moments ago (it will run; nothing to do);
        "sent": no message existed (lost with Redis), so a new one was sent.
        """
        if self.move(run_id, front=True):
            return "moved"
        if self.restore(run_id, older_than=grace):
            return "restored"
        if self.delivered(run_id):
            return "delivered"
        enqueue(job_type, run_id, params, priority, self.settings)
        self.move(run_id, front=True)
        return "sent"


def _priority_of(payload: dict) -> str:
    step = payload.get("properties", {}).get("priority", priority_steps()["normal"])
    return next((name for name, s in priority_steps().items() if s == step), "normal")


def _with_priority(raw: bytes, priority: str) -> str:
    """The same message at another priority step (kombu reads the step from its properties)."""
    payload = json.loads(raw)
    payload.setdefault("properties", {})["priority"] = priority_steps()[priority]
    return json.dumps(payload)
