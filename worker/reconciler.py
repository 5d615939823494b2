"""The reconciler process: runs `scheduler.reconcile` at worker start and every few seconds after.

It runs beside each worker as its own small process (not a thread in the Celery parent, which
forks a child per job), takes a Redis lock so that several workers do not reconcile at once, and
exits when its worker does.
"""

from __future__ import annotations

import argparse
import logging
import time

from worker.stack import pid_alive
from worker.state import PREFIX

log = logging.getLogger("dataslayer.reconciler")


def reconcile_once() -> list[dict]:
    """One pass, under a lock shared by all workers."""
    from worker.client import JobClient
    from worker.scheduler import reconcile

    client = JobClient()
    lock = client.redis.lock(f"{PREFIX}:reconcile-lock", timeout=300, blocking=False)
    if not lock.acquire(blocking=False):
        return []
    try:
        return reconcile(client)
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - the lock expired meanwhile
            pass


def main(argv: list[str] | None = None) -> None:
    """Reconcile every --every seconds until the --parent-pid process exits."""
    from worker.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--every", type=float, default=get_settings().reconcile_every_s)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    while pid_alive(args.parent_pid):
        try:
            reconcile_once()
        except Exception as exc:  # noqa: BLE001 - Redis or MLflow down: try again next round
            log.warning("reconcile failed: %s", exc)
        deadline = time.monotonic() + args.every
        while time.monotonic() < deadline and pid_alive(args.parent_pid):
            time.sleep(min(1.0, args.every))


if __name__ == "__main__":
    main()
