"""Template filters and the values every page uses (navigation, MLflow link)."""

from __future__ import annotations

from flask import Flask, current_app, g, request

NAV = [
    ("jobs.index", "Jobs"),
    ("runs.new_run", "New run"),
    ("runs.new_sweep", "New sweep"),
    ("models.index", "Models"),
    ("submissions.index", "Submissions"),
    ("runs.dataset_list", "Datasets"),
]


def number(value, digits: int = 4) -> str:
    """A metric for a table: 4 decimals, or a dash when missing."""
    if value is None or value == "":
        return "–"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def signed(value, digits: int = 4) -> str:
    """A difference with its sign (+0.0123, −0.0040)."""
    if value is None:
        return "–"
    return f"{value:+.{digits}f}".replace("-", "−")


def init_templating(app: Flask) -> None:
    """Register filters and the common context."""
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["signed"] = signed
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True

    @app.context_processor
    def common():
        return {
            "nav": NAV,
            "user": g.get("user"),
            "mlflow_url": current_app.config.get("MLFLOW_PUBLIC_URL", ""),
            "current_endpoint": request.endpoint or "",
        }
