"""Settings of the web UI, read from the environment once when the app is created."""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Config, Flask
from limits import parse_many
from werkzeug.security import generate_password_hash

from mlcore.names import DEFAULT_MODEL_NAME
from webui.users import Accounts
from worker.settings import get_settings
from worker.users import UsersFileError, UserStore
from worker.users import default_path as default_users_file

log = logging.getLogger(__name__)
MIN_TOKEN_LENGTH = 16
DEFAULT_RATE_LIMIT = "10 per minute; 50 per hour"


# Settings no FLASK_* variable may change: CSRF protection, and the modes that skip the SECRET_KEY check.
LOCKED = {
    "WTF_CSRF_ENABLED": True,
    "WTF_CSRF_CHECK_DEFAULT": True,
    "WTF_CSRF_METHODS": ["POST", "PUT", "PATCH", "DELETE"],
}
NOT_FROM_ENV = ("WTF_", "TESTING", "DEBUG", "DEV_MODE", "PROPAGATE_EXCEPTIONS")


class ConfigError(RuntimeError):
    """The UI cannot start with this configuration; the message says which variable to set."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def from_environment() -> dict:
    """Every setting the UI reads, with the local stack's defaults."""
    settings = get_settings()  # locations mean what they mean for the workers and the stack
    return {
        "SECRET_KEY": _env("SECRET_KEY"),
        # Development mode (random SECRET_KEY and admin password) only when asked for by name: never FLASK_DEBUG.
        "DEV_MODE": _env("DATASLAYER_DEV") == "1",
        # REDIS_URL and MLFLOW_TRACKING_URI are read by worker.settings, as in the workers.
        # Where the browser reaches the MLflow UI: behind a proxy it differs from the URI the server uses.
        "MLFLOW_PUBLIC_URL": _env("DATASLAYER_MLFLOW_PUBLIC_URL"),
        "STATE_DIR": settings.state_dir,
        "DATA_ROOT": settings.data_root,
        "MODEL_NAME": _env("DATASLAYER_MODEL_NAME", DEFAULT_MODEL_NAME),
        "ADMIN_USER": _env("DATASLAYER_ADMIN_USER", "admin"),
        "ADMIN_PASSWORD": _env("DATASLAYER_ADMIN_PASSWORD"),
        "USERS_FILE": _env("DATASLAYER_USERS_FILE"),
        "API_TOKENS": _env("DATASLAYER_API_TOKENS", ""),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _env("DATASLAYER_SECURE_COOKIES") == "1",
        # Reverse proxies in front of the UI (TLS termination): trust that many X-Forwarded-* hops.
        "TRUSTED_PROXIES": int(_env("DATASLAYER_TRUSTED_PROXIES", "0")),
        # Failed log-ins and requests with a bad API token per client address (webui/ratelimit.py), counted in
        # RATELIMIT_STORAGE_URI (unset: REDIS_URL, so every gunicorn worker shares the counts; memory:// per process).
        "LOGIN_RATE_LIMIT": _env("DATASLAYER_LOGIN_RATE_LIMIT", DEFAULT_RATE_LIMIT),
        "API_RATE_LIMIT": _env("DATASLAYER_API_RATE_LIMIT", DEFAULT_RATE_LIMIT),
        "RATELIMIT_STORAGE_URI": _env("DATASLAYER_RATELIMIT_STORAGE_URI"),
        "SESSION_COOKIE_NAME": "dataslayer_session",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        # A form left open all day must still submit: the CSRF token lives as long as the session.
        "WTF_CSRF_TIME_LIMIT": 12 * 3600,
        "MAX_CONTENT_LENGTH": 1024 * 1024,  # forms and JSON only; nothing is uploaded
    }


def configure(app: Flask, test_config: dict | None) -> None:
    """Load settings (environment, then FLASK_* overrides, then the test's) and check them."""
    app.config.from_mapping(from_environment())
    app.config.from_mapping(_prefixed_env())
    if test_config:
        app.config.from_mapping(test_config)
    app.config.update(LOCKED)  # CSRF stays on whatever the environment or a test says
    app.config["DEBUG"] = False  # Flask reads FLASK_DEBUG at construction; only `python -m webui --dev` turns it on
    app.config["DATA_ROOT"] = Path(app.config["DATA_ROOT"])
    app.config["STATE_DIR"] = Path(app.config["STATE_DIR"])
    _check_secret_key(app)
    _check_rate_limits(app)
    app.config["API_TOKEN_USERS"] = parse_api_tokens(app.config["API_TOKENS"])
    app.config["USERS"] = load_users(app.config)
    if not app.config["USERS"] and not app.config["API_TOKEN_USERS"]:
        raise ConfigError(
            "no users: set DATASLAYER_ADMIN_PASSWORD (and DATASLAYER_ADMIN_USER), or DATASLAYER_USERS_FILE"
        )


def _prefixed_env() -> dict:
    """FLASK_* overrides, less those that would switch CSRF off or skip the checks (logged and ignored)."""
    scratch = Config("")
    scratch.from_prefixed_env()
    refused = sorted(k for k in scratch if k.startswith(NOT_FROM_ENV))
    if refused:
        log.warning(
            "ignored: %s (CSRF and the debug and testing modes cannot be set from the environment)",
            ", ".join("FLASK_" + k for k in refused),
        )
    return {k: v for k, v in scratch.items() if k not in refused}


def _check_secret_key(app: Flask) -> None:
    if app.config.get("SECRET_KEY"):
        if len(str(app.config["SECRET_KEY"])) < 16 and not (app.config["DEV_MODE"] or app.testing):
            raise ConfigError(
                "SECRET_KEY is too short: use at least 16 random characters "
                "(python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return
    if not (app.config["DEV_MODE"] or app.testing):
        raise ConfigError(
            "SECRET_KEY is not set: the web UI signs sessions with it. Set SECRET_KEY to a long random "
            "string (python -c 'import secrets; print(secrets.token_hex(32))'), or DATASLAYER_DEV=1 for a "
            "development server"
        )
    # Development only: sessions end when the process does, which is what a dev server wants.
    app.config["SECRET_KEY"] = secrets.token_hex(32)
    log.warning("SECRET_KEY not set: using a random one (development mode)")


def _check_rate_limits(app: Flask) -> None:
    # Flask-Limiter only logs a limit it cannot parse and then limits nothing: refuse to start instead.
    for key in ("LOGIN_RATE_LIMIT", "API_RATE_LIMIT"):
        try:
            if not all(item.amount >= 1 for item in parse_many(str(app.config[key]))):
                raise ValueError("a limit of 0 refuses everyone")
        except ValueError:
            raise ConfigError(
                f"DATASLAYER_{key} {app.config[key]!r}: expected limits such as '10 per minute; 50 per hour'"
            ) from None


def load_users(config: dict) -> Accounts:
    """The accounts: the first admin from the environment, more (with roles and tokens) from the users file."""
    env_users: dict[str, str] = {}
    if config.get("ADMIN_PASSWORD"):
        env_users[config["ADMIN_USER"]] = generate_password_hash(config["ADMIN_PASSWORD"])
    elif config.get("DEV_MODE"):
        password = secrets.token_urlsafe(12)
        env_users[config["ADMIN_USER"]] = generate_password_hash(password)
        log.warning(
            "DATASLAYER_ADMIN_PASSWORD not set: log in as %s / %s (development mode)", config["ADMIN_USER"], password
        )
    store = UserStore(config.get("USERS_FILE") or default_users_file())
    try:
        store.doc()  # a broken file stops the start, not the first log-in
    except UsersFileError as exc:
        raise ConfigError(f"DATASLAYER_USERS_FILE: {exc}") from None
    return Accounts(env_users, store, set(config.get("API_TOKEN_USERS", {}).values()))


def parse_api_tokens(spec: str) -> dict[str, str]:
    """Token -> user name, from `user:token,user2:token2`."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        user, sep, token = item.partition(":")
        if not sep or not user or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"DATASLAYER_API_TOKENS: expected user:token pairs with tokens of at least "
                f"{MIN_TOKEN_LENGTH} characters"
            )
        out[token] = user
    return out
