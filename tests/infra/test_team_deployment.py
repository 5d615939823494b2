"""The team deployment for real: the compose file's services run natively on PostgreSQL and S3.

PostgreSQL comes from the Debian server binaries, MinIO's place is taken by moto's S3 server, and
every other service (Redis, the bucket job, the MLflow server, two GPU workers from a generated
2-GPU override, Flower, the web UI when it exists) runs the command, environment and health check
written in docker-compose.yml (tests/infra/native_compose.py). Then a train -> register -> promote
-> predict round trip goes through it with the project's client.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from compose_model import COMPOSE_FILE, environment, load_project
from dockerfile_model import ROOT
from native_compose import NativeCompose, free_port
from team_services import MotoS3Server, PostgresServer

from worker.state import ready_key

sys.path.insert(0, str(ROOT / "infra"))
import gpu_workers  # noqa: E402  (infra/gpu_workers.py: a script, not a package)

pytestmark = pytest.mark.slow
WORKERS = ("worker-gpu0", "worker-gpu1")
CLIENT_KEYS = (
    "REDIS_URL",
    "MLFLOW_TRACKING_URI",
    "DATASLAYER_STATE_DIR",
    "DATASLAYER_DATA_ROOT",
    "DATASLAYER_CACHE_DIR",
)


def _node(native: NativeCompose, service: str) -> str:
    cmd = native.services[service]["command"]
    return cmd[cmd.index("--name") + 1]


@pytest.fixture(scope="module")
def team(tmp_path_factory, compose_env, demo_root):
    """PostgreSQL, S3, Redis, the bucket job, MLflow and two workers, as the compose file runs them."""
    root = tmp_path_factory.mktemp("team")
    files = root / "compose"
    files.mkdir()
    shutil.copy(COMPOSE_FILE, files / "docker-compose.yml")  # the override extends it by relative name
    (files / "docker-compose.override.yml").write_text(gpu_workers.render(2, "docker-compose.yml"))
    env = {**compose_env, "DATASLAYER_DATA_DIR": str(demo_root)}
    project = load_project([files / "docker-compose.yml", files / "docker-compose.override.yml"], env)
    native = NativeCompose(project, root)
    pg_env = environment(project["services"]["postgres"])
    pg = PostgresServer(
        native.port("postgres", 5432), pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"]
    )
    s3 = MotoS3Server(native.port("minio", 9000), root / "moto.log")
    try:
        pg.start()
        s3.start()
        native.start("redis", timeout=30)
        for expected in ("created", "exists"):  # the one-shot job runs on every `up`: idempotent
            job = native.run("createbucket")
            assert job.returncode == 0 and f"' {expected} at" in job.stdout, job.stdout + job.stderr
        native.start("mlflow", timeout=120)
        for worker in WORKERS:
            native.start(worker, wait=False)
        r = redis.Redis.from_url(native.env(WORKERS[0])["REDIS_URL"])
        deadline = time.monotonic() + 180
        for worker in WORKERS:  # ready: Celery consumes (the key worker/celery_app.py sets)
            while not r.exists(ready_key(_node(native, worker))):
                if native.procs[worker].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{worker} did not start:\n{native.log_tail(worker)}")
                time.sleep(0.2)
        minio = environment(project["services"]["minio"])
        yield {
            "native": native,
            "pg": pg,
            "s3": s3.client(minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]),
            "bucket": environment(project["services"]["createbucket"])["MLFLOW_BUCKET"],
            "root": root,
            "env": env,
        }
    finally:
        native.stop_all()
        s3.stop()
        pg.stop()


@pytest.fixture
def team_client(team, monkeypatch):
    """The project's JobClient with the workers' environment (their REDIS_URL and MLFLOW_TRACKING_URI)."""
    from worker.client import JobClient
    from worker.settings import get_settings

    worker_env = team["native"].env(WORKERS[0])
    for key in CLIENT_KEYS:
        monkeypatch.setenv(key, worker_env[key])
    get_settings.cache_clear()
    yield JobClient()
    get_settings.cache_clear()


def test_train_register_promote_predict_through_postgres_and_s3_with_two_workers(
    team, team_client, tiny_job, demo_root, tmp_path
):
    native, s3, bucket = team["native"], team["s3"], team["bucket"]
    for worker in WORKERS:  # the compose health check: `celery inspect ping` to the worker's node
        check = native.healthcheck(worker)
        assert check.returncode == 0, check.stdout + check.stderr

    name = tiny_job["registered_model_name"]
    runs = [team_client.submit_train(tiny_job) for _ in range(2)]
    jobs = [team_client.wait(run_id, timeout=300) for run_id in runs]
    assert [j.status for j in jobs] == ["FINISHED", "FINISHED"], [j.failure for j in jobs]
    versions = team_client.mlflow.search_model_versions(f"name='{name}'")
    assert sorted(v.run_id for v in versions) == sorted(runs)  # one registered version per training job
    received = {w: native.log_tail(w, 200_000).count("dataslayer.train[") for w in WORKERS}
    assert all(received.values()), f"each worker should have run a job: {received}"

    best = max(versions, key=lambda v: float(v.tags["val_f1_weighted"]))
    promote = subprocess.run(
        [str(Path(sys.executable).parent / "dataslayer"), "promote", "--model", name, "--version", best.version],
        env=native.env(WORKERS[0]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert promote.returncode == 0, promote.stderr
    assert team_client.mlflow.get_model_version_by_alias(name, "champion").version == best.version

    predict = team_client.submit_predict(
        {
            "data_dir": str(demo_root),
            "model_uri": f"models:/{name}@champion",
            "device": "cpu",
            "experiment_name": tiny_job["experiment_name"],
        }
    )
    job = team_client.wait(predict, timeout=300)
    assert job.status == "FINISHED", job.failure
    # The submission's home is the run: it went through the MLflow server into the bucket.
    out = Path(team_client.mlflow.download_artifacts(predict, "submission/submission.csv", str(tmp_path / "logged")))
    test_images = sorted(
        p.name for p in (demo_root / "test").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label"]
    assert sorted(r[0] for r in rows[1:]) == test_images and all(r[1] in ("0", "1") for r in rows[1:])
    assert Path(job.progress["summary"]["submission"]).read_text() == out.read_text()  # the worker's file, unchanged

    for run_id in [*runs, predict]:
        assert team_client.mlflow.get_run(run_id).info.status == "FINISHED"
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("submission/submission.csv") and predict in k for k in keys), keys[:20]
    for run_id in runs:
        assert any(run_id in k for k in keys), f"no artifact of training run {run_id} in the bucket"
    assert sum(k.endswith("/MLmodel") for k in keys) >= 2  # the registered models themselves live in S3


def test_redis_reads_its_password_from_a_600_file_never_from_its_command_line(team, compose_env):
    """infra/redis-entrypoint.sh wrote requirepass into the config file and exec'd Redis, which asks for it."""
    import stat

    native, password = team["native"], compose_env["REDIS_PASSWORD"]
    proc = native.procs["redis"]
    assert password not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert Path(f"/proc/{proc.pid}/exe").resolve().name == "redis-server"  # the entrypoint exec'd Redis
    conf = Path(native.path("redis", "/tmp/dataslayer/redis.conf"))
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and f'requirepass "{password}"' in conf.read_text()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=native.port("redis", 6379), socket_timeout=5).lpush("dataslayer", "{}")


def test_a_stopped_worker_exits_cleanly_on_sigterm_through_the_entrypoint(team):
    """`docker stop`: SIGTERM reaches the Celery worker (the entrypoint exec'd it), which shuts down in time."""
    native, worker = team["native"], WORKERS[1]
    r = redis.Redis.from_url(native.env(worker)["REDIS_URL"])
    assert native.stop(worker, timeout=60) == 0, native.log_tail(worker)
    assert native.leftovers[worker] == [], "a process of the worker outlived it (pool child or reconciler)"
    assert not r.exists(ready_key(_node(native, worker)))


def test_flower_is_behind_the_admin_login(team, compose_env):
    native = team["native"]
    native.start("flower", timeout=60)  # waits for its compose health check (/healthcheck)
    url = native.url("flower", 5555, "/workers")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    login = base64.b64encode(
        f"{compose_env['DATASLAYER_ADMIN_USER']}:{compose_env['DATASLAYER_ADMIN_PASSWORD']}".encode()
    ).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(request, timeout=10) as page:
        assert page.status == 200


@pytest.mark.skipif(
    importlib.util.find_spec("webui") is None or importlib.util.find_spec("webui.wsgi") is None,
    reason="webui.wsgi does not exist yet (the web UI is being written)",
)
def test_the_web_ui_serves_its_health_check_under_gunicorn(team):
    team["native"].start("webui", timeout=90)  # gunicorn webui.wsgi:app, healthy by its own check
    team["native"].stop("webui")


def test_mlflow_basic_auth_override_requires_the_login(team, compose_env):
    """infra/compose.auth.yml on the same PostgreSQL and bucket: the API answers 401 without the admin log-in."""
    project = load_project([COMPOSE_FILE, ROOT / "infra" / "compose.auth.yml"], team["env"])
    ports = {**team["native"].ports, ("mlflow", 5000): free_port()}
    auth = NativeCompose(project, team["root"] / "auth", ports=ports)
    try:
        auth.start("mlflow", timeout=120)  # /health stays open for the health check
        url = auth.url("mlflow", 5000, "/api/2.0/mlflow/experiments/search?max_results=1")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        from mlflow import MlflowClient

        admin = {
            "MLFLOW_TRACKING_USERNAME": compose_env["DATASLAYER_ADMIN_USER"],
            "MLFLOW_TRACKING_PASSWORD": compose_env["DATASLAYER_ADMIN_PASSWORD"],
        }
        with pytest.MonkeyPatch.context() as mp:
            for key, value in admin.items():
                mp.setenv(key, value)
            assert MlflowClient(auth.url("mlflow", 5000)).search_experiments(max_results=1) is not None
        assert (team["root"] / "auth" / "volumes" / "mlflow-auth" / "basic_auth.db").exists()  # users on the volume
    finally:
        auth.stop_all()


def test_the_documented_backups_restore_the_mlflow_tables_and_read_redis(team, tmp_path):
    """docs/DEPLOY.md's pg_dump and redis-cli --rdb commands, against the running services."""
    pg = team["pg"]
    dump = tmp_path / "mlflow.dump"
    subprocess.run(
        [
            str(pg.bin / "pg_dump"),
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.port),
            "-U",
            pg.user,
            "-d",
            pg.database,
            "-Fc",
            "-f",
            str(dump),
        ],
        env=pg.env(),
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [str(pg.bin / "pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    for table in ("runs", "metrics", "registered_models", "model_versions"):
        assert f"TABLE public {table} " in listing
    native = team["native"]
    rdb = tmp_path / "redis.rdb"
    cli = [native.program("redis-cli"), "-p", str(native.port("redis", 6379)), "--rdb", str(rdb)]
    subprocess.run(cli, env=native.env("redis"), check=True, capture_output=True, timeout=60)
    assert rdb.read_bytes()[:5] == b"REDIS"
