"""Error pages: outages of Redis or MLflow become a friendly 503, never a traceback."""

from __future__ import annotations

import logging

import redis
import requests
from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from mlflow.exceptions import MlflowException
from werkzeug.exceptions import HTTPException

from worker.client import QueueUnavailable, TrackingUnavailable

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


class ServiceDown(Exception):
    """A backing service is unreachable; `service` is 'queue' or 'tracking'."""

    def __init__(self, service: str, detail: str):
        super().__init__(detail)
        self.service, self.detail = service, detail


def tracking_down(exc: BaseException) -> bool:
    """Whether an MLflow error means the server cannot be reached (rather than a bad request)."""
    if isinstance(exc, (requests.exceptions.RequestException, TrackingUnavailable)):
        return True
    if isinstance(exc.__context__, requests.exceptions.RequestException):
        return True
    text = str(exc)
    return "failed with exception" in text or any(f"error code {code}" in text for code in (500, 502, 503, 504))


def not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says the run, model or version does not exist."""
    return isinstance(exc, MlflowException) and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def wants_json() -> bool:
    """API calls and the pages' polling endpoints get JSON errors."""
    return (
        request.blueprint == "api"
        or request.path.endswith(".json")
        or request.accept_mimetypes.best == "application/json"
    )


def error_response(status: int, message: str, *, service: str | None = None):
    """A JSON or HTML error with `status`."""
    if wants_json():
        body = {"error": message}
        if service:
            body["service"] = service
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

    @app.errorhandler(QueueUnavailable)
    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def queue_error(exc: Exception):
        log.warning("queue unavailable: %s", exc)
        return error_response(503, QUEUE_DOWN, service="queue")

    @app.errorhandler(TrackingUnavailable)
    @app.errorhandler(requests.exceptions.RequestException)
    def tracking_error(exc: Exception):
        log.warning("tracking server unavailable: %s", exc)
        return error_response(503, TRACKING_DOWN, service="tracking")

    @app.errorhandler(ServiceDown)
    def service_down(exc: ServiceDown):
        return error_response(503, QUEUE_DOWN if exc.service == "queue" else TRACKING_DOWN, service=exc.service)

    @app.errorhandler(MlflowException)
    def mlflow_error(exc: MlflowException):
        if not_found(exc):
            return error_response(404, "No such run, model or version in the tracking server.")
        if tracking_down(exc):
            log.warning("tracking server unavailable: %s", exc)
            return error_response(503, TRACKING_DOWN, service="tracking")
        log.error("tracking server error: %s", exc)
        return error_response(502, f"The tracking server refused the request: {exc.message[:300]}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s", request.path)
        return error_response(
            500, "The server hit an unexpected error; it is logged. Try again, or tell whoever runs the service."
        )
