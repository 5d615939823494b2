"""Error pages: outages of Redis or MLflow become a friendly 503, never a traceback.

The client (`worker.client`) translates every transport error into QueueUnavailable or
TrackingUnavailable; these handlers only turn those two, and MLflow's refusals, into pages.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from mlflow.exceptions import MlflowException
from werkzeug.exceptions import HTTPException

from mlcore.tracking import is_not_found
from worker.errors import QueueUnavailable, TrackingUnavailable
from worker.rerun import SweepRefused
from worker.users import Refused

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    401: "Not logged in",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    429: "Too many requests",
    500: "Something went wrong",
    502: "Tracking server error",
    503: "Service unavailable",
}


def wants_json() -> bool:
    """API calls and the pages' polling endpoints get JSON errors."""
    return (
        request.blueprint == "api"
        or request.path.endswith(".json")
        or request.accept_mimetypes.best == "application/json"
    )


def error_response(status: int, message: str, *, service: str | None = None, limit: str | None = None):
    """A JSON or HTML error with `status` (`limit`: the role or limit a refusal names)."""
    if wants_json():
        body = {"error": message}
        if service:
            body["service"] = service
        if limit:
            body["limit"] = limit
        return jsonify(body), status
    return render_template(
        "error.html", status=status, title=TITLES.get(status, "Error"), message=message, service=service
    ), status


QUEUE_DOWN = "The job queue (Redis) is unavailable, so nothing was queued or cancelled. Try again when it is back."
TRACKING_DOWN = "The tracking server (MLflow) is unavailable, so jobs, metrics and models cannot be shown right now."


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or TITLES.get(exc.code, "Error"))

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(
            400,
            f"The form was refused: its security token did not check out ({exc.description.rstrip('.')}). "
            "Reload the page and send it again.",
        )

    @app.errorhandler(Refused)
    def refused(exc: Refused):
        # The same status and words in the pages, the API and the CLI (worker/users.py makes them).
        log.info("refused %s %s: %s", request.method, request.path, exc.message)
        return error_response(exc.status, exc.message, limit=exc.limit)

    @app.errorhandler(SweepRefused)
    def sweep_refused(exc: SweepRefused):
        # Re-run or extend of a running (409), unknown (404) or unchangeable (400) sweep: the CLI's words
        return error_response(exc.status, exc.message)

    @app.errorhandler(QueueUnavailable)
    def queue_error(exc: Exception):
        log.warning("queue unavailable: %s", exc)
        return error_response(503, QUEUE_DOWN, service="queue")

    @app.errorhandler(TrackingUnavailable)
    def tracking_error(exc: Exception):
        log.warning("tracking server unavailable: %s", exc)
        return error_response(503, TRACKING_DOWN, service="tracking")

    @app.errorhandler(MlflowException)
    def mlflow_error(exc: MlflowException):
        if is_not_found(exc):
            return error_response(404, "No such run, model or version in the tracking server.")
        log.error("tracking server error: %s", exc)
        return error_response(502, f"The tracking server refused the request: {exc.message[:300]}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s", request.path)
        return error_response(
            500, "The server hit an unexpected error; it is logged. Try again, or tell whoever runs the service."
        )
