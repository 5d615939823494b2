"""Rate limits: failed log-ins and bad API tokens per client address, counted in Redis, no 500 when Redis is down."""

import re

import pytest
import redis
from ui_helpers import ADMIN, API_TOKEN, PASSWORD, log_in, ui_config

from webui import create_app
from webui.config import ConfigError

LIMITS = {"LOGIN_RATE_LIMIT": "3 per minute", "API_RATE_LIMIT": "2 per minute"}
BAD_TOKEN = {"Authorization": "Bearer wrong-token-0123456789"}
GOOD_TOKEN = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def app(queue_env, data_root):
    """The web UI with low limits (the conftest's app, but 3 failed log-ins and 2 bad tokens a minute)."""
    return create_app(ui_config(data_root, **LIMITS))


def client_at(app, address: str):
    """A test client whose requests come from `address`."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def fail(client, times: int) -> None:
    for _ in range(times):
        assert log_in(client, ADMIN, "wrong password").status_code == 401


def assert_limited(response) -> int:
    """A 429 that says how long to wait, in the page and in Retry-After; returns the seconds."""
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 60
    text = response.get_data(as_text=True)
    seconds = re.search(r"try again in (\d+) seconds", text)
    assert seconds and abs(int(seconds.group(1)) - wait) <= 1
    return wait


def test_failed_log_ins_are_limited_and_then_even_the_right_password_is_refused(client):
    fail(client, 3)
    response = log_in(client, ADMIN, "wrong password")
    assert_limited(response)
    assert "Too many failed log-in attempts; try again in" in response.get_data(as_text=True)
    assert 'name="password"' in response.get_data(as_text=True)  # the log-in page, not an error page
    assert_limited(log_in(client))
    assert client.get("/jobs").status_code == 302  # no session was started
    assert client.get("/login").status_code == 200  # pages are never limited


def test_successful_log_ins_and_pages_are_not_counted(client):
    for _ in range(5):
        assert log_in(client).status_code == 302
    for _ in range(5):
        assert client.get("/profile").status_code == 200
    fail(client, 3)  # the whole allowance is still there
    assert log_in(client).status_code == 429


def test_another_address_is_not_affected(app):
    attacker, colleague = client_at(app, "203.0.113.7"), client_at(app, "198.51.100.2")
    fail(attacker, 3)
    assert log_in(attacker).status_code == 429
    fail(colleague, 2)
    assert log_in(colleague).status_code == 302
    response = app.test_client().post(
        "/login", data={"username": ADMIN, "password": PASSWORD}, environ_overrides={"REMOTE_ADDR": "203.0.113.7"}
    )
    assert response.status_code == 429  # the limit is checked before anything else, the CSRF token too


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(queue_env, data_root):
    direct = create_app(ui_config(data_root, **LIMITS)).test_client()
    for n in range(3):
        direct.environ_base["HTTP_X_FORWARDED_FOR"] = f"192.0.2.{n}"  # an attacker cannot rotate addresses by header
        fail(direct, 1)
    assert log_in(direct).status_code == 429

    proxied = create_app(ui_config(data_root, TRUSTED_PROXIES=1, **LIMITS)).test_client()
    proxied.environ_base["HTTP_X_FORWARDED_FOR"] = "192.0.2.10"
    fail(proxied, 3)
    assert log_in(proxied).status_code == 429
    proxied.environ_base["HTTP_X_FORWARDED_FOR"] = "192.0.2.11"  # another client behind the same proxy
    assert log_in(proxied).status_code == 302


def test_bad_api_tokens_are_limited(app, client):
    assert client.get("/api/openapi.json", headers=BAD_TOKEN).status_code == 401
    assert client.get("/api/openapi.json").status_code == 401  # a missing token counts too
    response = client.get("/api/openapi.json", headers=BAD_TOKEN)
    assert_limited(response)
    assert "Too many requests with a missing or invalid API token" in response.json["error"]
    assert client.get("/api/openapi.json", headers=GOOD_TOKEN).status_code == 429  # even a right token, while limited
    assert client_at(app, "198.51.100.2").get("/api/openapi.json", headers=GOOD_TOKEN).status_code == 200
    assert log_in(client).status_code == 302  # the log-in's count is its own


def test_good_api_tokens_are_not_counted(client):
    for _ in range(5):
        assert client.get("/api/openapi.json", headers=GOOD_TOKEN).status_code == 200
    assert client.get("/api/openapi.json", headers=BAD_TOKEN).status_code == 401


def test_the_count_is_kept_in_redis_and_shared_by_every_app(queue_env, data_root, redis_server):
    """Two apps stand for two gunicorn workers: failures on either count against one allowance."""
    first, second = (create_app(ui_config(data_root, **LIMITS)).test_client() for _ in range(2))
    fail(first, 2)
    fail(second, 1)
    assert log_in(first).status_code == 429 and log_in(second).status_code == 429
    store = redis.Redis.from_url(redis_server.url)
    assert any(b"dataslayer" in key and b"login" in key for key in store.keys("LIMITS:*"))
    store.flushall()  # the count lives in Redis, not in the processes
    assert log_in(first).status_code == 302


@pytest.mark.stops_redis
def test_with_redis_down_log_in_still_works_and_is_still_limited(app, client, redis_server):
    redis_server.stop()
    assert log_in(client).status_code == 302  # no 500, no lock-out
    fail(client, 3)  # counted in this process's memory meanwhile
    assert_limited(log_in(client))


@pytest.mark.parametrize("limit", ["lots", "0 per minute", ""])
def test_a_bad_limit_setting_is_refused(data_root, monkeypatch, limit):
    monkeypatch.setenv("DATASLAYER_LOGIN_RATE_LIMIT", limit)
    if not limit:  # empty: the default
        assert create_app(ui_config(data_root)).config["LOGIN_RATE_LIMIT"] == "10 per minute; 50 per hour"
        return
    with pytest.raises(ConfigError, match="DATASLAYER_LOGIN_RATE_LIMIT"):
        create_app(ui_config(data_root))


def test_limits_and_storage_come_from_the_environment(data_root, monkeypatch):
    monkeypatch.setenv("DATASLAYER_LOGIN_RATE_LIMIT", "5/minute")
    monkeypatch.setenv("DATASLAYER_API_RATE_LIMIT", "7 per hour")
    monkeypatch.setenv("DATASLAYER_RATELIMIT_STORAGE_URI", "memory://")
    app = create_app(ui_config(data_root))
    assert (app.config["LOGIN_RATE_LIMIT"], app.config["API_RATE_LIMIT"]) == ("5/minute", "7 per hour")
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
