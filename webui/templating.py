"""Template filters and the values every page uses (navigation, MLflow link)."""

from __future__ import annotations

import time

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


def utc(seconds) -> str:
    """Epoch seconds as a UTC date and time."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(seconds)))


def init_templating(app: Flask) -> None:
    """Register filters and the common context."""
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["signed"] = signed
    app.jinja_env.filters["timestamp"] = utc
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True

    @app.context_processor
    def common():
        return {
            "stack_services": stack_services() if g.get("user") else [],
            "nav": NAV,
            "user": g.get("user"),
            "role": g.account.role if g.get("account") else None,
            "current_endpoint": request.endpoint or "",
        }


def stack_services() -> list[dict]:
    """The local stack's services as its supervisor last wrote them ([] outside a `dataslayer up` stack)."""
    from worker.processes import pid_alive
    from worker.supervisor import read_state

    doc = read_state(current_app.config["STATE_DIR"])
    if not doc:
        return []
    supervised = bool(doc.get("supervisor")) and pid_alive(doc["supervisor"])
    return [
        {"name": name, "state": s["state"] if supervised else "unsupervised", "restarts": s.get("restarts", 0)}
        for name, s in doc.get("services", {}).items()
    ]
