"""Log-in with hashed passwords, the session guard in front of every page, and API tokens."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

bp = Blueprint("auth", __name__)
# Endpoints anyone may reach: the health check, the log-in page and the assets it needs.
PUBLIC_ENDPOINTS = {"health.health", "auth.login", "static", "health.favicon"}
# Compared against when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password")


def init_app(app: Flask) -> None:
    """Require a session for every page except the public ones; /api checks its own tokens."""
    app.before_request(_require_login)


def _require_login():
    g.user = session.get("user") if session.get("user") in current_app.config["USERS"] else None
    if request.blueprint == "api" or request.endpoint in PUBLIC_ENDPOINTS or g.user:
        return None
    if request.path.endswith(".json") or request.accept_mimetypes.best == "application/json":
        return jsonify(error="log in first"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def safe_next(target: str | None, default: str | None = None) -> str:
    """Only a path on this site: `//evil.example` and absolute URLs go to `default` (the jobs page)."""
    default = default or url_for("jobs.index")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the log-in form; check the password and start a session."""
    error = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        hashed = current_app.config["USERS"].get(name)
        ok = check_password_hash(hashed or _DUMMY_HASH, password) and hashed is not None
        if ok:
            session.clear()  # a fresh session on log-in: nothing carried over from before
            session.permanent = True
            session["user"] = name
            return redirect(safe_next(request.args.get("next")))
        error = "Unknown user or wrong password."
    return render_template("auth/login.html", error=error), 401 if error else 200


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session."""
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/profile")
def profile():
    """The user's API token and how to use it."""
    return render_template(
        "auth/profile.html", token=user_token(g.user), api_base=request.url_root.rstrip("/") + "/api"
    )


def user_token(user: str) -> str:
    """The user's personal API token: derived from SECRET_KEY, so it changes when the key does."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return "ds_" + hmac.new(key, f"api-token:{user}".encode(), hashlib.sha256).hexdigest()[:40]


def token_user(header: str | None) -> str | None:
    """The user a `Bearer` token belongs to, or None."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header.removeprefix("Bearer ").strip()
    if not token:
        return None
    found = None
    for configured, user in current_app.config["API_TOKEN_USERS"].items():
        if hmac.compare_digest(configured.encode(), token.encode()):
            found = user
    for user in current_app.config["USERS"]:
        if hmac.compare_digest(user_token(user).encode(), token.encode()):
            found = user
    return found


def require_token() -> str:
    """The API caller's user name; 401 without a valid token."""
    user = token_user(request.headers.get("Authorization"))
    if user is None:
        abort(401)
    return user
