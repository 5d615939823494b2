"""Log-in with hashed passwords, the session guard in front of every page, and API tokens (issued, revocable)."""

from __future__ import annotations

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

from mlcore.errors import ParamsError
from webui import users
from worker.users import check_token_owner

bp = Blueprint("auth", __name__)
# Endpoints anyone may reach: the health check, the log-in page and the assets it needs.
PUBLIC_ENDPOINTS = {"health.health", "auth.login", "static", "health.favicon"}
# Compared against when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a password")


def init_app(app: Flask) -> None:
    """Require a session for every page except the public ones; /api checks its own tokens."""
    app.before_request(_require_login)


def _require_login():
    g.account = users.accounts().account(session.get("user")) if session.get("user") in users.accounts() else None
    g.user = g.account.name if g.account else None
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
        hashed = users.accounts().get(name)
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
    """The user's API tokens (a new one is shown once) and how to use them."""
    return _profile()


def _profile(new_token: str | None = None, error: str | None = None, status: int = 200):
    account = users.current()
    listed = users.store().tokens(None if account.is_admin else account.name)
    return render_template(
        "auth/profile.html",
        account=account,
        tokens=listed,
        new_token=new_token,
        error=error,
        api_base=request.url_root.rstrip("/") + "/api",
    ), status


def expiry_days(value) -> float | None:
    """An optional expiry in days from a form or a JSON body (a number; empty: never)."""
    if value in (None, ""):
        return None
    try:
        days = float(value) if isinstance(value, str) else value
    except ValueError:
        days = None
    if isinstance(days, bool) or not isinstance(days, int | float) or not (0 < days <= 3650):
        raise ParamsError("expires_days", "expected a number of days above 0 and at most 3650, or nothing")
    return float(days)


@bp.route("/profile/tokens", methods=["POST"])
def new_token():
    """Issue a token for the signed-in user and show it once."""
    try:
        days = expiry_days(request.form.get("expires_days"))
    except ParamsError as exc:
        return _profile(error=exc.message, status=400)
    token, _ = users.store().issue_token(g.user, label=request.form.get("label", "").strip(), expires_days=days)
    return _profile(new_token=token, status=201)


def revoke(token_id: str) -> dict:
    """Revoke one token: the caller's own, or anyone's for an admin; 404 when there is no such token."""
    record = next((t for t in users.store().tokens() if t["id"] == token_id), None)
    if record is None:
        abort(404, "No such token.")
    check_token_owner(users.current(), record["user"])
    users.store().revoke(token_id)
    return record


@bp.route("/profile/tokens/<token_id>/revoke", methods=["POST"])
def revoke_token(token_id: str):
    """Revoke a token from the profile page."""
    record = revoke(token_id)
    flash(f"Token {record['id']} of {record['user']} is revoked.", "success")
    return redirect(url_for("auth.profile"))


def token_user(header: str | None) -> str | None:
    """The user a `Bearer` token belongs to (an issued token, or one from DATASLAYER_API_TOKENS), or None."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header.removeprefix("Bearer ").strip()
    if not token:
        return None
    record = users.store().token_record(token)
    if record is not None:
        return record["user"] if users.accounts().account(record["user"]) else None
    found = None
    for configured, user in current_app.config["API_TOKEN_USERS"].items():
        if hmac.compare_digest(configured.encode(), token.encode()):
            found = user
    return found
