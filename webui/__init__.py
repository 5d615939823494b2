"""The web UI: a Flask application factory with one blueprint per area."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()

# Scripts, styles and images come from this app only: the UI works offline and injected markup cannot load code.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from the environment (or `test_config`), extensions, blueprints, error pages."""
    # Imported here: the blueprints import this package, and `import webui` stays free of MLflow and Redis.
    from webui import api, auth, errors, health, jobs, mlflow_links, models, ratelimit, runs, submissions
    from webui.config import configure
    from webui.jobqueue import queue
    from webui.templating import init_templating

    app = Flask(__name__)
    configure(app, test_config)
    auth.init_app(app)  # before CSRF: a request without a session goes to the log-in page first
    ratelimit.init_app(app, auth.bp, api.bp)  # before CSRF and the token check: a limited address is refused first
    csrf.init_app(app)
    queue.init_app(app)
    errors.init_app(app)
    init_templating(app)
    for bp in (health.bp, auth.bp, jobs.bp, runs.bp, models.bp, submissions.bp, mlflow_links.bp, api.bp):
        app.register_blueprint(bp)
    csrf.exempt(api.bp)  # token-authenticated: browsers never send the token by themselves
    app.after_request(_security_headers)
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)
    return app


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")  # pages carry CSRF tokens and live data
    return response
