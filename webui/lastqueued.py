"""What a form just queued, so that the browser's Back shows the same values, with a note that they were queued.

Pages are never cached (`Cache-Control: no-store`), so Back fetches the form again: without this it
would come back blank. After a successful queue the form's typed values are kept in the session (only
those that differ from the blank form's, so the cookie stays small) with the job's run id; a GET of
the same form within WINDOW_S shows them again, with a fresh idempotency token (submitting again
deliberately queues a second job) and a note linking the job. "The same form" is the same page: the
form posts to its own address (`/runs/new?preset=quick`), and Back fetches that address again.
Submitting other values, or asking for the defaults (`?fresh=1`, which then drops itself from the
address), forgets them.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from flask import session

KEY = "last_queued"
WINDOW_S = 600


def page(args) -> str:
    """The form page's query (`?preset=quick`, `?from=RUN_ID`), in a stable order: Back fetches that same page."""
    return urlencode(sorted(args.items(multi=True)))


def remember(
    form: str, typed: dict[str, Any], blank: dict[str, Any], run_id: str, args, preset: str | None = None
) -> None:
    """Keep what `form` ("run" or "sweep") on the page of `args` just queued: the values differing from the blank
    form's, and the job."""
    changed = {k: v for k, v in typed.items() if blank.get(k) != v}
    session[KEY] = {
        "form": form,
        "page": page(args),
        "values": changed,
        "run_id": run_id,
        "preset": preset,
        "at": time.time(),
    }


def recall(form: str, blank: dict[str, Any], args) -> dict[str, Any] | None:
    """{values: the blank form with what was queued, run_id, preset} if `form` on the page of `args` queued them
    within WINDOW_S."""
    last = session.get(KEY)
    if not isinstance(last, dict) or last.get("form") != form or last.get("page") != page(args):
        return None
    if time.time() - float(last.get("at", 0)) > WINDOW_S:
        session.pop(KEY, None)
        return None
    values = {**blank, **{k: v for k, v in last.get("values", {}).items() if k in blank}}
    return {"values": values, "run_id": last.get("run_id"), "preset": last.get("preset")}


def forget(form: str | None = None) -> None:
    """Drop what was kept (only `form`'s, when given)."""
    last = session.get(KEY)
    if last is not None and (form is None or (isinstance(last, dict) and last.get("form") == form)):
        session.pop(KEY, None)


def forget_if_changed(form: str, typed: dict[str, Any], blank: dict[str, Any]) -> None:
    """A submit of other values than those kept: they no longer describe the form."""
    last = session.get(KEY)
    if isinstance(last, dict) and last.get("form") == form:
        if {k: v for k, v in typed.items() if blank.get(k) != v} != last.get("values"):
            session.pop(KEY, None)
