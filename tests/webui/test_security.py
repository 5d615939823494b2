"""Attacks on the real service, each shown refused: one local stack (Redis, MLflow, a worker, gunicorn) for all.

CSRF, open redirects, path traversal in every name the UI takes, XSS in run and experiment names,
tokens reused after revoke (or expired, or the old HMAC kind), role escalation through the API,
loose types, unknown fields, and hand-made messages pushed straight into Redis. Users and tokens
are made with the real `dataslayer users` CLI in the stack's users file; the count of attacks is
printed at the end (and written to test-output/security-attacks.txt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from services import TEST_OUTPUT, VENV_BIN
from ui_helpers import ADMIN, PASSWORD, SECRET, ui_config

from mlcore.names import Tag

pytestmark = pytest.mark.slow
TINY = {"arch": "resnet18", "pretrained": "none", "image_size": 32, "epochs": 1, "batch_size": 8, "device": "cpu"}
TRIED: list[tuple[str, str]] = []  # (attack, how it was refused)
PW = "a long enough password"
RUN = "0123456789abcdef0123456789abcdef"


def refused(attack: str, how: str) -> None:
    """Record an attack that was tried and refused (called after its assertions passed)."""
    TRIED.append((attack, how))


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    lines = [f"{len(TRIED)} attacks tried, {len(TRIED)} refused, 0 succeeded"] + [f"  {a}: {h}" for a, h in TRIED]
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "security-attacks.txt").write_text("\n".join(lines) + "\n")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + lines[0] + " (test-output/security-attacks.txt lists them)")


# -- the stack, its users and their tokens ----------------------------------------------------------
def cli(stack, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `dataslayer` against the stack (as UNIX user `user` when given)."""
    env = {**stack.env, **({"USER": user} if user else {})}
    return subprocess.run([str(VENV_BIN / "dataslayer"), *args], env=env, capture_output=True, text=True, timeout=120)


def last_json(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class Sec:
    stack: object
    url: str
    tokens: dict[str, str]  # user -> API token
    outside: Path  # a dataset outside the data root
    admin: requests.Session | None = None  # logged in as the admin

    def api(self, method: str, path: str, who: str | None = None, token: str | None = None, **kw):
        token = token or (self.tokens[who] if who else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(method, self.url + path, headers=headers, timeout=60, allow_redirects=False, **kw)

    def browser(self, user: str = ADMIN, password: str = PASSWORD) -> requests.Session:
        s = requests.Session()
        r = s.post(
            self.url + "/login",
            data={"username": user, "password": password, "csrf_token": self.csrf(s, "/login")},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 302, r.text[:300]
        return s

    def csrf(self, s: requests.Session, path: str) -> str:
        html = s.get(self.url + path, timeout=60).text
        return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    def runs_in(self, experiment: str) -> list:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.stack.mlflow.url)
        exp = client.get_experiment_by_name(experiment)
        return client.search_runs([exp.experiment_id]) if exp else []


@pytest.fixture(scope="module")
def sec(ui_stack, tmp_path_factory) -> Sec:
    """Users of every role (made with the CLI) and a token each; a dataset outside the data root."""
    users_file = ui_stack.root / "state" / "users.json"
    for name, role, extra in (
        ("tina", "trainer", ()),
        ("vic", "viewer", ()),
        ("lim", "trainer", ("--max-jobs", "0", "--max-sweep", "1")),
    ):
        done = cli(ui_stack, "users", "add", name, "--role", role, "--password", PW, *extra)
        assert done.returncode == 0, done.stderr
    assert users_file.stat().st_mode & 0o777 == 0o600
    tokens = {name: last_json(cli(ui_stack, "users", "token", name))["token"] for name in ("tina", "vic", "lim")}
    outside = tmp_path_factory.mktemp("outside-data")
    shutil.copytree(ui_stack.data / "demo", outside / "demo")
    s = Sec(ui_stack, ui_stack.url, tokens, outside)
    admin = s.browser()  # the admin's token is made on the profile page, as a person would
    made = admin.post(s.url + "/profile/tokens", data={"label": "sec", "csrf_token": s.csrf(admin, "/profile")})
    tokens[ADMIN] = re.search(r'value="(ds_[^"]+)"', made.text).group(1)
    s.admin = admin
    return s


def body(experiment: str, **params) -> dict:
    return {"dataset": "demo", "params": {**TINY, "experiment_name": experiment, **params}}


# -- CSRF --------------------------------------------------------------------------------------------
def test_csrf_forms_refuse_requests_without_the_session_token(sec):
    victim, attacker = sec.browser(), sec.browser()
    stolen = sec.csrf(attacker, "/runs/new")  # the attacker's own token does not fit the victim's session
    exp = "sec-csrf"
    form = {"dataset": "demo", "experiment_name": exp, **{k: str(v) for k, v in TINY.items()}}
    for attack, data in (("no CSRF token", form), ("another session's CSRF token", {**form, "csrf_token": stolen})):
        r = victim.post(sec.url + "/runs/new", data=data, allow_redirects=False)
        assert r.status_code == 400 and "security token" in r.text
        refused(f"CSRF: new run with {attack}", "400")
    for path in ("/profile/tokens", "/logout", f"/jobs/{RUN}/cancel", "/submissions", "/sweeps/new"):
        assert victim.post(sec.url + path, data={}, allow_redirects=False).status_code == 400
        refused(f"CSRF: POST {path} without a token", "400")
    assert sec.runs_in(exp) == [] and victim.get(sec.url + "/jobs", allow_redirects=False).status_code == 200


def test_no_environment_variable_turns_csrf_or_the_debugger_on(monkeypatch, ui_stack, tmp_path):
    from webui import create_app
    from worker.settings import get_settings

    for name, value in (
        ("FLASK_WTF_CSRF_ENABLED", "false"),
        ("FLASK_WTF_CSRF_CHECK_DEFAULT", "false"),
        ("FLASK_WTF_CSRF_METHODS", "[]"),
        ("FLASK_TESTING", "true"),
        ("FLASK_DEBUG", "1"),
        ("REDIS_URL", ui_stack.redis.url),
        ("DATASLAYER_STATE_DIR", str(tmp_path)),
    ):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    app = create_app({k: v for k, v in ui_config(ui_stack.data).items() if k != "TESTING"})
    assert app.config["WTF_CSRF_ENABLED"] and not app.debug and not app.testing
    r = app.test_client().post("/login", data={"username": ADMIN, "password": PASSWORD})
    assert r.status_code == 400
    refused("CSRF switched off by FLASK_WTF_CSRF_* / FLASK_TESTING", "still 400 without a token")
    refused("debug mode from FLASK_DEBUG=1", "app.debug stays off")
    for args in (["--dev", "--host", "0.0.0.0"], ["--host", "::", "--dev"]):
        done = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "webui", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and "loopback only" in done.stderr
        refused(f"Flask's debugger on a public address ({' '.join(args)})", "refused to start")


# -- open redirects ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "\\\\evil"]
)
def test_no_open_redirect_after_log_in(sec, target):
    s = requests.Session()
    r = s.post(
        sec.url + "/login",
        params={"next": target},
        data={"username": ADMIN, "password": PASSWORD, "csrf_token": sec.csrf(s, "/login")},
        allow_redirects=False,
    )
    assert r.headers["Location"] == "/jobs"
    refused(f"open redirect via next={target!r}", "sent to /jobs")


# -- path traversal in every name the UI takes ------------------------------------------------------
TRAVERSAL = ["../demo", "..", "/etc", "demo/../../x", "x\x00y", "escape", "~root", "C:\\x", "%2e%2e"]
URL_NAMES = [
    ("GET", "/jobs/..%2f..%2fetc%2fpasswd"),
    ("GET", "/jobs/%2e%2e/live.json"),
    ("GET", f"/jobs/{RUN}/plots/..%2f..%2fsecret.png"),
    ("GET", f"/jobs/{RUN}/plots/%2e%2e.png"),
    ("GET", "/submissions/..%2f..%2fmlflow.db/submission.csv"),
    ("GET", f"/submissions/{RUN}/..%2fsecret.csv"),
    ("GET", "/models?name=../../etc"),
    ("GET", "/models/..%2f..%2fx/1/promote"),
    ("GET", "/runs/new?from=../../etc/passwd"),
    ("GET", "/jobs?sweep=../../x"),
    ("GET", "/api/jobs/..%2f..%2fetc"),
    ("GET", "/api/jobs?sweep=' or 1=1 --"),
    ("GET", "/api/models?name=../x"),
    ("GET", f"/api/submissions/{RUN}/..%2f..%2fx.csv"),
    ("POST", "/api/users/..%2f..%2froot"),
    ("DELETE", "/api/tokens/..%2f..%2fx"),
]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_dataset_names_never_reach_outside_the_data_root(sec, name):
    exp = "sec-traversal"
    for path, payload in (
        ("/api/runs", body(exp) | {"dataset": name}),
        ("/api/sweeps", {"dataset": name, "base": {**TINY, "experiment_name": exp}, "grid": {"epochs": [1, 2]}}),
        ("/api/submissions", {"dataset": name}),
    ):
        r = sec.api("POST", path, ADMIN, json=payload)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
    admin = sec.browser()
    for path, form in (
        ("/runs/new", {"dataset": name, "experiment_name": exp}),
        ("/sweeps/new", {"dataset": name, "experiment_name": exp, "grid.learning_rate": "1e-3,2e-3"}),
        ("/submissions", {"dataset": name}),
    ):
        r = admin.post(sec.url + path, data={**form, "csrf_token": sec.csrf(admin, path)}, allow_redirects=False)
        assert r.status_code == 400, (path, r.status_code)
    assert sec.runs_in(exp) == []
    refused(f"dataset {name!r} in the run, sweep and submission forms and API", "400")


@pytest.mark.parametrize("method, path", URL_NAMES)
def test_names_in_urls_are_checked_before_anything_is_read(sec, method, path):
    if path.startswith("/api/"):
        r = sec.api(method, path, ADMIN, json={} if method == "POST" else None)
    else:
        r = sec.admin.request(method, sec.url + path, allow_redirects=False, timeout=60)
    # A `..` that leaves /api matches no route and lands on the log-in page: nothing is read either way.
    to_login = r.status_code == 302 and r.headers["Location"].startswith("/login")
    assert r.status_code in (400, 403, 404) or to_login, (path, r.status_code, r.text[:200])
    refused(f"path traversal {method} {path}", str(r.status_code))


def test_weights_files_and_server_paths_are_refused(sec):
    exp = "sec-paths"
    for params, field in (
        ({"pretrained": "/etc/passwd"}, "pretrained"),
        ({"data_dir": "/etc"}, "data_dir"),
        ({"registered_model_name": "../x"}, "registered_model_name"),
    ):
        r = sec.api("POST", "/api/runs", ADMIN, json=body(exp, **params))
        assert r.status_code == 400 and r.json()["field"] == field
        refused(f"server path in {field}", "400 naming it")
    r = sec.api("POST", "/api/submissions", ADMIN, json={"dataset": "demo", "model_version": "../1"})
    assert r.status_code == 400 and r.json()["field"] == "model_version"
    refused("model_version '../1'", "400 naming it")
    assert sec.runs_in(exp) == []


# -- XSS in run and experiment names ------------------------------------------------------------------
def test_run_and_experiment_names_are_escaped(sec):
    payload = "<script>alert(1)</script>"
    exp = "sec-xss<img src=x onerror=alert(2)>"
    r = sec.api("POST", "/api/runs", "tina", json={**body(exp), "name": payload, "priority": "low"})
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    tina = sec.browser("tina", PW)
    pages = [tina.get(sec.url + p) for p in ("/jobs", f"/jobs/{run_id}", "/runs/new?from=" + run_id)]
    for page in pages:
        assert page.status_code == 200
        assert payload not in page.text and "<img src=x" not in page.text
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].text + pages[1].text
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[1].text + pages[2].text
    refused("XSS in a run name", "escaped on the jobs page and the job page; CSP")
    refused("XSS in an experiment name", "escaped on the job page and the new-run form; CSP")
    assert sec.api("POST", f"/api/jobs/{run_id}/cancel", "tina").status_code == 200  # her own: allowed


# -- tokens --------------------------------------------------------------------------------------------
def test_a_revoked_expired_or_old_style_token_does_not_work(sec):
    tina = sec.browser("tina", PW)
    made = tina.post(sec.url + "/profile/tokens", data={"label": "laptop", "csrf_token": sec.csrf(tina, "/profile")})
    token = re.search(r'value="(ds_[^"]+)"', made.text).group(1)
    assert sec.api("GET", "/api/jobs", token=token).status_code == 200
    assert token not in tina.get(sec.url + "/profile").text  # shown once
    stored = (sec.stack.root / "state" / "users.json").read_text()
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored
    token_id = next(
        t["id"] for t in sec.api("GET", "/api/tokens", token=token).json()["tokens"] if t["label"] == "laptop"
    )
    assert sec.api("DELETE", f"/api/tokens/{token_id}", token=token).status_code == 200
    assert sec.api("GET", "/api/jobs", token=token).status_code == 401
    refused("token reused after its user revoked it", "401")

    other = last_json(cli(sec.stack, "users", "token", "tina", "--label", "ci"))
    assert sec.api("DELETE", f"/api/tokens/{other['id']}", ADMIN).status_code == 200  # an admin revokes anyone's
    assert sec.api("GET", "/api/jobs", token=other["token"]).status_code == 401
    refused("token reused after an admin revoked it", "401")

    short = last_json(cli(sec.stack, "users", "token", "tina", "--expires-days", "0.00002"))  # 1.7 s
    time.sleep(2.5)
    assert sec.api("GET", "/api/jobs", token=short["token"]).status_code == 401
    refused("expired token", "401")

    old = "ds_" + hmac.new(SECRET.encode(), f"api-token:{ADMIN}".encode(), hashlib.sha256).hexdigest()[:40]
    assert sec.api("GET", "/api/jobs", token=old).status_code == 401
    refused("the old HMAC-of-the-user-name token", "401")

    assert cli(sec.stack, "users", "add", "gone", "--password", PW).returncode == 0
    gone = last_json(cli(sec.stack, "users", "token", "gone"))["token"]
    session = sec.browser("gone", PW)
    assert cli(sec.stack, "users", "remove", "gone").returncode == 0
    assert sec.api("GET", "/api/jobs", token=gone).status_code == 401
    assert session.get(sec.url + "/jobs", allow_redirects=False).status_code == 302
    refused("token and session of a removed user", "401 and back to log-in")


# -- roles ------------------------------------------------------------------------------------------------
def test_a_viewer_reads_but_queues_nothing_in_the_pages_the_api_and_the_cli(sec):
    assert sec.api("GET", "/api/jobs", "vic").status_code == 200
    api = sec.api("POST", "/api/runs", "vic", json=body("sec-viewer"))
    assert api.status_code == 403 and api.json()["limit"] == "role"
    message = api.json()["error"]
    vic = sec.browser("vic", PW)
    page = vic.post(
        sec.url + "/runs/new", data={"dataset": "demo", "csrf_token": sec.csrf(vic, "/runs/new")}, allow_redirects=False
    )
    assert page.status_code == 403 and message in page.text
    done = cli(sec.stack, "queue", "train", "--data", str(sec.stack.data / "demo"), "--preset", "quick", user="vic")
    assert done.returncode == 1 and message in done.stderr and last_json(done)["limit"] == "role"
    assert sec.runs_in("sec-viewer") == []
    refused("a viewer queues a run (API, form, CLI)", f"403 everywhere: {message}")


def test_a_trainer_cannot_escalate_through_the_api(sec):
    admin_job = sec.api("POST", "/api/runs", ADMIN, json={**body("sec-roles"), "priority": "low"}).json()["run_id"]
    attempts = [
        ("promote a model", "POST", "/api/models/fall-detector/1/promote", None, 403),
        ("queue at high priority", "POST", "/api/runs", {**body("sec-roles"), "priority": "high"}, 403),
        ("cancel the admin's job", "POST", f"/api/jobs/{admin_job}/cancel", None, 403),
        ("make itself admin", "POST", "/api/users/tina", {"role": "admin"}, 403),
        ("lift its own limits", "POST", "/api/users/tina", {"max_jobs": 100000}, 403),
        ("list the users", "GET", "/api/users", None, 403),
        ("issue a token for the admin", "POST", "/api/tokens", {"user": ADMIN}, 403),
    ]
    admin_token = next(t for t in sec.api("GET", "/api/tokens", ADMIN).json()["tokens"] if t["user"] == ADMIN)
    attempts.append(("revoke the admin's token", "DELETE", f"/api/tokens/{admin_token['id']}", None, 403))
    for what, method, path, payload, status in attempts:
        r = sec.api(method, path, "tina", json=payload)
        assert r.status_code == status and r.json()["limit"] in ("role", "priority", "owner"), (what, r.text)
        refused(f"role escalation: a trainer tries to {what}", f"{r.status_code} {r.json()['limit']}")
    tina = sec.browser("tina", PW)
    for path in (f"/jobs/{admin_job}/cancel", "/models/fall-detector/1/promote"):
        r = tina.post(sec.url + path, data={"csrf_token": sec.csrf(tina, "/jobs")}, allow_redirects=False)
        assert r.status_code == 403
        refused(f"role escalation in the pages: POST {path}", "403")
    assert last_json(cli(sec.stack, "users", "list")) == {"users": 3}
    assert sec.api("GET", "/api/jobs", ADMIN).status_code == 200  # the admin's token still works
    assert sec.api("POST", f"/api/jobs/{admin_job}/cancel", ADMIN).status_code == 200
    assert sec.api("GET", "/api/users", ADMIN).json()["users"][0]["role"] == "admin"


def test_limits_are_refused_with_the_limit_named_everywhere(sec):
    exp = "sec-limits"
    api = sec.api("POST", "/api/runs", "lim", json=body(exp))
    assert api.status_code == 429 and api.json()["limit"] == "max_jobs"
    lim = sec.browser("lim", PW)
    form = {"dataset": "demo", "experiment_name": exp, **{k: str(v) for k, v in TINY.items()}}
    page = lim.post(sec.url + "/runs/new", data={**form, "csrf_token": sec.csrf(lim, "/runs/new")})
    assert page.status_code == 429 and api.json()["error"] in page.text
    done = cli(
        sec.stack, "queue", "train", "--data", str(sec.stack.data / "demo"), "--experiment-name", exp, user="lim"
    )
    assert done.returncode == 1 and api.json()["error"] in done.stderr
    refused("a trainer over max_jobs (API, form, CLI)", "429 max_jobs")
    sweep = {"dataset": "demo", "base": {**TINY, "experiment_name": exp}, "grid": {"epochs": [1, 2]}}
    r = sec.api("POST", "/api/sweeps", "lim", json=sweep)
    assert r.status_code == 403 and r.json()["limit"] == "max_sweep" and "max_sweep" in r.json()["error"]
    refused("a sweep larger than max_sweep", "403 max_sweep")
    assert sec.runs_in(exp) == []


# -- loose types and unknown fields ------------------------------------------------------------------------
SWEEP = {"dataset": "demo", "base": dict(TINY), "grid": {"learning_rate": [1e-3, 2e-3]}}


@pytest.mark.parametrize(
    "path, payload, field",
    [
        ("/api/runs", body("sec-types", epochs=True), "epochs"),
        ("/api/runs", body("sec-types", epochs="1"), "epochs"),
        ("/api/runs", body("sec-types", epochs=1.0), "epochs"),
        ("/api/runs", body("sec-types", learning_rate="0.1"), "learning_rate"),
        ("/api/runs", body("sec-types", aug_flip=1), "aug_flip"),
        ("/api/runs", body("sec-types", aug_flip="false"), "aug_flip"),
        ("/api/runs", {**body("sec-types"), "priority": 1}, "priority"),
        ("/api/runs", {**body("sec-types"), "name": 5}, "name"),
        ("/api/runs", {**body("sec-types"), "dataset": ["demo"]}, "dataset"),
        ("/api/sweeps", {**SWEEP, "samples": "3"}, "samples"),
        ("/api/sweeps", {**SWEEP, "promote_best": "yes"}, "promote_best"),
        ("/api/sweeps", {**SWEEP, "grid": {"epochs": ["1", "2"]}}, "grid.epochs"),
        ("/api/sweeps", {**SWEEP, "base": {**TINY, "epochs": "2"}}, "base.epochs"),
        ("/api/sweeps/preview", {**SWEEP, "grid": {"aug_flip": [1, 0]}}, "grid.aug_flip"),
        (
            "/api/sweeps",
            {**SWEEP, "grid": {}, "strategy": "random", "ranges": {"learning_rate": {"low": "1e-4", "high": 1e-3}}},
            "ranges.learning_rate.low",
        ),
        ("/api/submissions", {"dataset": "demo", "threshold": "0.5"}, "threshold"),
        ("/api/tokens", {"expires_days": "30"}, "expires_days"),
        # unknown fields, at the top level and inside
        ("/api/runs", {**body("sec-types"), "run_as": "admin"}, "run_as"),
        ("/api/runs", body("sec-types", data_root="/"), "data_root"),
        ("/api/sweeps", {**SWEEP, "submitted_by": "admin"}, "submitted_by"),
        ("/api/submissions", {"dataset": "demo", "model_uri": "runs:/x/y"}, "model_uri"),
        ("/api/tokens", {"label": "x", "role": "admin"}, "role"),
    ],
)
def test_loose_types_and_unknown_fields_are_refused_by_name(sec, path, payload, field):
    r = sec.api("POST", path, ADMIN, json=payload)
    assert r.status_code == 400 and r.json()["field"] == field, r.text
    assert sec.runs_in("sec-types") == []
    kind = "unknown field" if "unknown" in r.json()["error"] or "Extra" in r.json()["error"] else "loose type"
    refused(f"{kind} {field}={json.dumps(payload)[:60]} on {path}", "400 naming the field")


# -- messages pushed straight into Redis --------------------------------------------------------------------
def test_a_hand_made_redis_message_is_failed_naming_the_field_never_run(sec, tmp_path):
    from mlcore.params import TrainParams, build
    from worker.broker import enqueue
    from worker.client import JobClient
    from worker.settings import get_settings

    settings = dataclasses.replace(
        get_settings(), redis_url=sec.stack.redis.url, tracking_uri=sec.stack.mlflow.url, data_root=sec.stack.data
    )
    client = JobClient(settings)
    weights = tmp_path / "evil.pth"
    weights.write_bytes(b"not weights")
    good = {**TINY, "data_dir": str(sec.stack.data / "demo"), "experiment_name": "sec-redis"}
    cases = [
        # (what, params recorded on the run, what the message changes in them, the field the failure names)
        ("a queued job's message with data_dir=/etc", good, {"data_dir": "/etc"}, "data_dir"),
        ("a message and run outside the data root", {**good, "data_dir": str(sec.outside)}, {}, "data_dir"),
        ("a weights file from outside the allowed places", {**good, "pretrained": str(weights)}, {}, "pretrained"),
        ("a message whose parameters differ from the run's", good, {"epochs": 999}, "epochs"),
        ("a message with an unknown field", good, {"exec": "import os"}, "exec"),
        ("a message with a loose type", good, {"epochs": "many"}, "epochs"),
    ]
    sent = []
    for what, recorded, message, field in cases:
        params = build(TrainParams, recorded)
        run_id = client._create_run("sec-redis", "train", "hand-made", "normal", "mallory", {})
        client._record_params(run_id, params)
        enqueue("train", run_id, {**params.model_dump(mode="json"), **message}, "high", settings)
        sent.append((what, run_id, field))
    deadline = time.monotonic() + 240
    for what, run_id, field in sent:
        while (job := client.job(run_id, with_progress=False)).status not in ("FAILED", "FINISHED", "KILLED"):
            assert time.monotonic() < deadline, f"{what}: still {job.status}"
            time.sleep(0.5)
        assert job.status == "FAILED" and job.failure.startswith("refused message"), (what, job.failure)
        assert f"{field}:" in job.failure, (what, job.failure)
        assert Tag.ATTEMPT not in job.tags and "train_loss" not in job.metrics  # it never started
        refused(f"Redis: {what}", f"run FAILED: {job.failure[:90]}")
