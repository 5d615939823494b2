"""Log-in in front of every page but /health, CSRF on every form, safe redirects, log-out."""

import re

import pytest
from ui_helpers import csrf_token, log_in

PAGES = [
    "/",
    "/jobs",
    "/jobs.json",
    "/runs/new",
    "/sweeps/new",
    "/models",
    "/submissions",
    "/datasets",
    "/profile",
    "/jobs/0123456789abcdef0123456789abcdef",
    "/submissions/0123456789abcdef0123456789abcdef/submission.csv",
]


def test_health_answers_without_login(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json == {"status": "ok"}


@pytest.mark.parametrize("path", PAGES)
def test_no_session_redirects_to_login(client, path):
    response = client.get(path)
    if path.endswith(".json"):
        assert response.status_code == 401 and response.json["error"]
    else:
        assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(
    "path",
    [
        "/runs/new",
        "/sweeps/new",
        "/submissions",
        "/jobs/0123456789abcdef0123456789abcdef/cancel",
        "/models/fall-detector/1/promote",
        "/sweeps/preview",
    ],
)
def test_no_session_cannot_post(client, path):
    response = client.post(path, data={"csrf_token": csrf_token(client)})
    assert response.status_code in (302, 401)


def test_login_page_and_assets_are_public(client):
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.css").status_code == 200 and client.get("/static/app.js").status_code == 200


def test_login_returns_to_the_page_asked_for(client):
    token = csrf_token(client)
    response = client.post(
        "/login?next=/models",
        data={"username": "admin", "password": "correct horse battery staple", "csrf_token": token},
    )
    assert response.headers["Location"] == "/models"


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_never_redirects_off_site(client, target):
    token = csrf_token(client)
    response = client.post(
        "/login",
        query_string={"next": target},
        data={"username": "admin", "password": "correct horse battery staple", "csrf_token": token},
    )
    assert response.headers["Location"] == "/jobs"


def test_login_without_csrf_token_is_refused(client):
    response = client.post("/login", data={"username": "admin", "password": "correct horse battery staple"})
    assert response.status_code == 400 and "refused" in response.get_data(as_text=True)
    assert client.get("/jobs").status_code == 302


def test_logout_needs_post_and_csrf(user_client):
    assert user_client.get("/logout").status_code == 405
    assert user_client.post("/logout").status_code == 400
    assert user_client.get("/jobs").status_code == 200
    out = user_client.post("/logout", data={"csrf_token": csrf_token(user_client, "/jobs")})
    assert out.status_code == 302
    assert "You are logged out." in user_client.get(out.headers["Location"]).get_data(as_text=True)
    assert user_client.get("/jobs").status_code == 302


def test_the_log_in_page_says_why_after_a_redirect_and_shows_no_markdown(client):
    page = client.get(client.get("/models").headers["Location"]).get_data(as_text=True)
    assert "Please log in to open that page." in page
    assert "`" not in page and "<code>make up</code>" in page
    assert "Please log in" not in client.get("/login").get_data(as_text=True)  # not when opened directly


def test_a_session_of_an_unknown_user_is_no_session(client):
    with client.session_transaction() as session:
        session["user"] = "mallory"
    assert client.get("/jobs").status_code == 302


def test_profile_issues_a_personal_api_token_shown_once(user_client):
    html = user_client.get("/profile").get_data(as_text=True)
    assert "New token" in html and "/api/openapi.json" in html and "ds_" not in html
    made = user_client.post("/profile/tokens", data={"label": "ci", "csrf_token": csrf_token(user_client, "/profile")})
    token = re.search(r'value="(ds_[^"]+)"', made.get_data(as_text=True)).group(1)
    assert made.status_code == 201 and len(token) > 40
    again = user_client.get("/profile").get_data(as_text=True)
    assert token not in again and "ci" in again  # listed by id and label, never shown again


def test_log_in_helper_works(client):
    assert log_in(client).status_code == 302
