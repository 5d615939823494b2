"""Settings: SECRET_KEY required outside development, users with hashed passwords, API tokens, cookie flags."""

import json

import pytest
from ui_helpers import ADMIN, PASSWORD, log_in, ui_config
from werkzeug.security import generate_password_hash

from webui import create_app
from webui.config import ConfigError, parse_api_tokens


@pytest.fixture
def clean_env(monkeypatch):
    """No UI variables from the machine running the tests."""
    for name in (
        "SECRET_KEY",
        "DATASLAYER_DEV",
        "FLASK_DEBUG",
        "DATASLAYER_ADMIN_PASSWORD",
        "DATASLAYER_USERS_FILE",
        "DATASLAYER_API_TOKENS",
        "DATASLAYER_SECURE_COOKIES",
        "DATASLAYER_MLFLOW_PUBLIC_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_refuses_to_start_without_secret_key_outside_development(clean_env, monkeypatch):
    monkeypatch.setenv("DATASLAYER_ADMIN_PASSWORD", "pw")
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        create_app()


def test_refuses_a_short_secret_key(clean_env, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "short")
    monkeypatch.setenv("DATASLAYER_ADMIN_PASSWORD", "pw")
    with pytest.raises(ConfigError, match="too short"):
        create_app()


def test_development_mode_makes_a_key_and_an_admin_password(clean_env, monkeypatch, data_root):
    monkeypatch.setenv("DATASLAYER_DEV", "1")
    app = create_app({"DATA_ROOT": data_root})
    assert len(app.config["SECRET_KEY"]) >= 32 and list(app.config["USERS"]) == ["admin"]


def test_environment_configures_the_app(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SECRET_KEY", "x" * 32)
    monkeypatch.setenv("DATASLAYER_ADMIN_USER", "boss")
    monkeypatch.setenv("DATASLAYER_ADMIN_PASSWORD", "pw")
    monkeypatch.setenv("DATASLAYER_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("DATASLAYER_MLFLOW_PUBLIC_URL", "https://mlflow.example/")
    monkeypatch.setenv("DATASLAYER_SECURE_COOKIES", "1")
    app = create_app()
    assert list(app.config["USERS"]) == ["boss"] and app.config["USERS"]["boss"].startswith(("scrypt:", "pbkdf2:"))
    assert app.config["DATA_ROOT"] == tmp_path and app.config["MLFLOW_PUBLIC_URL"] == "https://mlflow.example"
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax" and app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024


def test_more_users_come_hashed_from_a_file(clean_env, tmp_path, data_root, queue_env):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"ana": generate_password_hash("ana-pw")}))
    app = create_app(ui_config(data_root, USERS_FILE=str(users)))
    assert set(app.config["USERS"]) == {ADMIN, "ana"}
    client = app.test_client()
    assert log_in(client, "ana", "ana-pw").status_code == 302
    assert client.get("/jobs").status_code == 200


def test_plain_text_passwords_in_the_users_file_are_refused(clean_env, tmp_path, data_root):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"ana": "hunter2"}))
    with pytest.raises(ConfigError, match="not a werkzeug hash"):
        create_app(ui_config(data_root, USERS_FILE=str(users)))


@pytest.mark.parametrize("spec", ["ana", "ana:short", ":0123456789abcdefgh"])
def test_bad_api_token_settings_are_refused(spec):
    with pytest.raises(ConfigError):
        parse_api_tokens(spec)


def test_api_tokens_map_to_users():
    assert parse_api_tokens("ana:0123456789abcdef, bo:fedcba9876543210") == {
        "0123456789abcdef": "ana",
        "fedcba9876543210": "bo",
    }


def test_session_cookie_flags(clean_env, data_root, queue_env):
    app = create_app(ui_config(data_root, SESSION_COOKIE_SECURE=True))
    client = app.test_client()
    response = log_in(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_security_headers_and_size_limit(user_client):
    response = user_client.get("/jobs")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["X-Content-Type-Options"] == "nosniff"
    big = user_client.post("/runs/new", data={"name": "x" * (2 * 1024 * 1024)})
    assert big.status_code == 413


def test_wrong_password_keeps_you_out(client):
    response = log_in(client, ADMIN, PASSWORD + "!")
    assert response.status_code == 401 and "wrong password" in response.get_data(as_text=True)
    assert client.get("/jobs").status_code == 302


def test_behind_a_proxy_links_use_the_forwarded_host(data_root, queue_env):
    app = create_app(ui_config(data_root, TRUSTED_PROXIES=1))
    client = app.test_client()
    log_in(client)
    html = client.get("/profile", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ui.example"}).get_data(
        as_text=True
    )
    assert "https://ui.example/api/jobs" in html
