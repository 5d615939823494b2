"""Plain helpers of the web UI tests: the test users and secrets, log-in, CSRF tokens, screenshots."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
ADMIN, PASSWORD = "admin", "correct horse battery staple"
API_TOKEN = "tok-ana-0123456789abcdef"
SECRET = "test-secret-key-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ui_config(data_root: Path, **extra) -> dict:
    """A test configuration: a fixed key, the admin, one API token."""
    return {
        "TESTING": True,
        "SECRET_KEY": SECRET,
        "ADMIN_USER": ADMIN,
        "ADMIN_PASSWORD": PASSWORD,
        "API_TOKENS": f"ana:{API_TOKEN}",
        "DATA_ROOT": data_root,
        **extra,
    }


def csrf_token(client, path: str = "/login") -> str:
    """The CSRF token of a rendered form."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, user: str = ADMIN, password: str = PASSWORD):
    """Log in through the form; returns the response."""
    return client.post("/login", data={"username": user, "password": password, "csrf_token": csrf_token(client)})


def runs_in(experiment: str) -> list:
    """Every run of an experiment (empty when it does not exist)."""
    from mlflow import MlflowClient

    exp = MlflowClient().get_experiment_by_name(experiment)
    return MlflowClient().search_runs([exp.experiment_id]) if exp else []


def shot(page, name: str) -> Path:
    """Save a full-page screenshot under test-output/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
