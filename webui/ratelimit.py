"""Rate limits on failed log-ins and bad API tokens (Flask-Limiter), counted in the queue's Redis.

Only failures count: a POST /login answered 401, an /api request answered 401. Once a client address
has used its allowance every log-in (even with the right password) or API call from it gets 429 until
the window ends, so a password cannot be guessed faster than the limit. Successful log-ins and pages
are never limited. The counts live in Redis, so they hold across gunicorn workers and restarts; while
Redis is down each process counts in memory instead, and log-in keeps working.
"""

from __future__ import annotations

import logging
import math
import time
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from redis.backoff import NoBackoff
from redis.retry import Retry

from webui.errors import error_response
from worker.settings import get_settings

log = logging.getLogger(__name__)
EXTENSION = "dataslayer_limiter"
LOGIN_LIMITED = "Too many failed log-in attempts; try again in {} seconds."
API_LIMITED = "Too many requests with a missing or invalid API token from this address; try again in {} seconds."


def _failed(response) -> bool:
    return response.status_code == 401


def init_app(app: Flask, auth_bp: Blueprint, api_bp: Blueprint) -> Limiter:
    """A limiter for this app (its own: state such as "Redis is down" must not leak between apps)."""
    # Limits are per client address: request.remote_addr, which ProxyFix sets from X-Forwarded-For
    # only when DATASLAYER_TRUSTED_PROXIES says a proxy is in front; otherwise the header is ignored.
    app.config["RATELIMIT_STORAGE_URI"] = app.config.get("RATELIMIT_STORAGE_URI") or get_settings().redis_url
    options = {}
    if urlsplit(app.config["RATELIMIT_STORAGE_URI"]).scheme.startswith("redis"):
        # An outage must cost a log-in a moment, not redis-py's default retries with back-off.
        options = {"socket_connect_timeout": 2, "socket_timeout": 2, "retry": Retry(NoBackoff(), 1)}
    limiter = Limiter(
        get_remote_address,
        key_prefix="dataslayer",
        storage_options=options,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.shared_limit(
        app.config["LOGIN_RATE_LIMIT"],
        scope="login",
        methods=["POST"],
        deduct_when=_failed,
        exempt_when=lambda: request.endpoint != "auth.login",
    )(auth_bp)
    limiter.shared_limit(app.config["API_RATE_LIMIT"], scope="api-token", deduct_when=_failed)(api_bp)
    limiter.init_app(app)
    app.extensions[EXTENSION] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many)
    return limiter


def retry_after() -> int:
    """Seconds until the breached limit's window ends (at least 1)."""
    try:
        reset_at = current_app.extensions[EXTENSION].current_limit.window.reset_time
    except Exception:  # the storage failed between the check and here: a guess beats a 500
        log.warning("rate limit window unknown", exc_info=True)
        return 60
    return max(1, math.ceil(reset_at - time.time()))


def _too_many(exc: RateLimitExceeded):
    wait = retry_after()
    log.warning("rate limit hit by %s on %s", get_remote_address(), request.path)
    if request.endpoint == "auth.login":
        response = current_app.make_response(
            (render_template("auth/login.html", error=LOGIN_LIMITED.format(wait)), 429)
        )
    else:
        response = current_app.make_response(error_response(429, API_LIMITED.format(wait)))
    response.headers["Retry-After"] = str(wait)
    return response
