"""The health check the stack and the containers poll, and the icon browsers ask for."""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, url_for

bp = Blueprint("health", __name__)


@bp.route("/health")
def health():
    """Answer 200 while the process serves requests (no log-in, no calls to Redis or MLflow)."""
    return jsonify(status="ok")


@bp.route("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever the page says; point them at the SVG icon."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)
