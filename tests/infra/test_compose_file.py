"""docker-compose.yml and infra/compose.*.yml: the Compose schema, .env.example, and the local stack's commands.

The schema is the Compose Specification's own (compose-spec/compose-spec, schema/compose-spec.json,
Apache-2.0), read offline from the copy the check-jsonschema package vendors.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest
from compose_model import (
    COMPOSE_FILE,
    DEPLOYMENT_ONLY_SERVICES,
    PASSTHROUGH_ENV,
    ROOT,
    MissingVariable,
    compare_with_local_stack,
    environment,
    interpolate,
    load_file,
    load_project,
    local_name,
    read_env_file,
    read_yaml,
    references,
    walk_strings,
)

sys.path.insert(0, str(ROOT / "infra"))
import gpu_workers  # noqa: E402  (infra/gpu_workers.py: a script, not a package)

INFRA = ROOT / "infra"
GPU_HOST = INFRA / "compose.gpu-host.yml"
AUTH = INFRA / "compose.auth.yml"
CENTRAL = INFRA / "compose.central.yml"
COMPOSE_FILES = [COMPOSE_FILE, GPU_HOST, AUTH, CENTRAL]
SECRETS = (
    "REDIS_PASSWORD",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "SECRET_KEY",
    "DATASLAYER_ADMIN_PASSWORD",
    "MLFLOW_SECRET_KEY",
)
# What the other hosts' .env adds (the values .env.example shows commented out).
GPU_HOST_ENV = {
    "DATASLAYER_REDIS_URL": "redis://:pw@10.0.0.5:6379/0",
    "DATASLAYER_TRACKING_URI": "http://10.0.0.5:5000",
    "DATASLAYER_DATA_DIR": "/srv/datasets",
    "DATASLAYER_WORKER_HOST": "host2",
    "DATASLAYER_PRIVATE_IP": "10.0.0.5",
}


@pytest.fixture(scope="module")
def validator():
    """A validator for the Compose Specification's JSON schema (offline copy from check-jsonschema)."""
    schema = json.loads((resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    """infra/gpu_workers.py output for a 4-GPU main host and a 2-GPU other host, beside copies of their base files."""
    folder = tmp_path_factory.mktemp("overrides")
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")
    shutil.copy(GPU_HOST, folder / "compose.gpu-host.yml")
    (folder / "docker-compose.override.yml").write_text(gpu_workers.render(4, "docker-compose.yml"))
    (folder / "compose.gpu-host.override.yml").write_text(gpu_workers.render(2, "infra/compose.gpu-host.yml"))
    return folder


@pytest.fixture(scope="module")
def env(compose_env) -> dict[str, str]:
    """A central host's .env plus what the other hosts set."""
    return {**compose_env, **GPU_HOST_ENV}


def local_services(tmp_path, gpus: int, *, mlflow_auth: bool = False) -> dict:
    """The local stack's services on a machine with `gpus` GPUs, web UI included, by name.

    `mlflow_auth`: with the MLflow log-in `dataslayer up` always turns on (infra/compose.auth.yml's
    counterpart); without it, the stack the main compose file matches (the log-in is that overlay's).
    """
    from worker.stack import Stack, StackConfig, service_commands

    cfg = StackConfig(
        state_dir=tmp_path / f"state-{gpus}-{mlflow_auth}",
        redis_password="from-the-environment",
        data_root=tmp_path / "data",
        mlflow_auth=mlflow_auth,
        mlflow_worker_password="kept-in-the-state-folder" if mlflow_auth else None,
    )
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(cfg)
    services = service_commands(
        cfg, webui_env=stack.webui_env(), mlflow_env=stack.mlflow_env(), gpus=gpus, host="localhost", include_webui=True
    )
    return {s.name: s for s in services}


# -- the schema ----------------------------------------------------------------------------------
def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_each_compose_file_validates_against_the_compose_spec_schema(validator, env, path):
    assert _errors(validator, read_yaml(path)) == []  # as written, ${...} included
    assert _errors(validator, load_file(path, env)) == []  # as Compose reads it with a filled-in .env


@pytest.mark.parametrize(
    "base, override, gpus",
    [
        ("docker-compose.yml", "docker-compose.override.yml", 4),
        ("compose.gpu-host.yml", "compose.gpu-host.override.yml", 2),
    ],
)
def test_the_generated_gpu_overrides_validate_and_merge(validator, env, overrides, base, override, gpus):
    assert _errors(validator, read_yaml(overrides / override)) == []
    project = load_project([overrides / base, overrides / override], env)
    assert _errors(validator, project) == []
    assert sorted(n for n in project["services"] if n.startswith("worker-gpu")) == [
        f"worker-gpu{i}" for i in range(gpus)
    ]


def test_the_merged_deployments_validate(validator, env):
    for files in ([COMPOSE_FILE, AUTH], [COMPOSE_FILE, CENTRAL], [COMPOSE_FILE, AUTH, CENTRAL]):
        assert _errors(validator, load_project(files, env)) == [], files


def test_the_schema_check_catches_a_broken_file(validator):
    doc = read_yaml(COMPOSE_FILE)
    doc["services"]["redis"]["restart"] = ["always"]
    doc["services"]["worker-gpu0"]["healtcheck"] = {}
    assert len(_errors(validator, doc)) == 2


# -- settings and secrets ------------------------------------------------------------------------
def _all_references() -> dict[str, list]:
    found: dict[str, list] = {}
    for path in COMPOSE_FILES:
        for _, value in walk_strings(read_yaml(path)):
            for ref in references(value):
                found.setdefault(ref.name, []).append(ref)
    return found


def test_env_example_documents_every_setting_and_nothing_else():
    active, mentioned = read_env_file()
    documented, used = set(active) | mentioned, set(_all_references())
    assert used - documented == set(), "referenced by a compose file but not in .env.example"
    assert documented - used - {"COMPOSE_PROFILES"} == set(), "in .env.example but used by no compose file"


def test_defaults_agree_across_files_and_with_env_example():
    active, _ = read_env_file()
    for name, refs in _all_references().items():
        defaults = {r.arg for r in refs if r.op == ":-"}
        assert len(defaults) <= 1, f"{name} has different defaults: {defaults}"
        if defaults and active.get(name):
            assert interpolate(defaults.pop(), active) == active[name], f".env.example changes the default of {name}"


@pytest.mark.parametrize("secret", SECRETS)
def test_every_secret_is_required_and_left_empty_in_env_example(env, secret):
    active, mentioned = read_env_file()
    assert active.get(secret, "") == "" and (secret in active or secret in mentioned)
    refs = _all_references()[secret]
    assert refs and all(r.op == ":?" for r in refs), f"every use of {secret} must be ${{{secret}:?...}}"
    files = [COMPOSE_FILE, AUTH] if secret == "MLFLOW_SECRET_KEY" else [COMPOSE_FILE]
    with pytest.raises(MissingVariable, match=secret):
        load_project(files, {k: v for k, v in env.items() if k != secret})


def test_no_secret_is_written_in_a_compose_file_or_a_dockerfile():
    secretish = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)$|BASIC_AUTH|^PGPASSWORD$|^REDISCLI_AUTH$")
    for path in COMPOSE_FILES:
        for svc_name, svc in read_yaml(path).get("services", {}).items():
            for key, value in environment(svc).items():
                if secretish.search(key) and not key.endswith("USERNAME"):
                    assert references(value), f"{path.name}: {svc_name}.{key} is a literal, not ${{VAR}}"
        for where, value in walk_strings(read_yaml(path)):
            assert not re.search(r"://[^/\s:@]+:[^@\s$]+@", value), f"{path.name}: credentials in a URL at {where}"
    for dockerfile in INFRA.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith(("ENV", "ARG")):
                assert not re.search(r"(PASSWORD|SECRET|TOKEN)", line), f"{dockerfile.name}: {line}"


def test_env_file_is_ignored_by_git():
    """.env holds the secrets: git must never pick it up (needs `/.env` in .gitignore)."""
    result = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True)
    if result.returncode == 128:
        pytest.skip(reason="not a git checkout: nothing to ignore .env from")
    assert result.returncode == 0, "add /.env to .gitignore: it holds the deployment's secrets"


def test_passed_through_job_settings_default_to_the_codes(monkeypatch):
    from worker.settings import get_settings

    project = load_project([COMPOSE_FILE], {s: "x" for s in SECRETS})  # nothing else set: every default
    worker_env = environment(project["services"]["worker-gpu0"])
    for key in PASSTHROUGH_ENV:
        monkeypatch.delenv(key, raising=False)
    get_settings.cache_clear()
    code = get_settings()
    for key in PASSTHROUGH_ENV:
        if key in worker_env and key.startswith("DATASLAYER_"):
            monkeypatch.setenv(key, worker_env[key])
    get_settings.cache_clear()
    try:
        assert get_settings() == code
    finally:
        get_settings.cache_clear()
    assert worker_env["MLFLOW_TRACKING_USERNAME"] == worker_env["MLFLOW_TRACKING_PASSWORD"] == ""  # no auth by default


def test_passed_through_web_ui_settings_default_to_the_codes(monkeypatch):
    config = pytest.importorskip("webui.config")
    webui_env = environment(load_project([COMPOSE_FILE], {s: "x" for s in SECRETS})["services"]["webui"])
    for key in ("DATASLAYER_SECURE_COOKIES", "DATASLAYER_API_TOKENS"):
        monkeypatch.delenv(key, raising=False)
    code = config.from_environment()
    for key in ("DATASLAYER_SECURE_COOKIES", "DATASLAYER_API_TOKENS"):
        monkeypatch.setenv(key, webui_env[key])
    ours = config.from_environment()
    assert (ours["SESSION_COOKIE_SECURE"], ours["API_TOKENS"]) == (code["SESSION_COOKIE_SECURE"], code["API_TOKENS"])
    # The one deliberate change: browsers cannot resolve http://mlflow:5000, so links go to the published port.
    assert webui_env["DATASLAYER_MLFLOW_PUBLIC_URL"] == "http://localhost:5000"


# -- the same commands as the local stack --------------------------------------------------------
def _check(project: dict, raw_services: dict, local: dict, names: list[str]) -> list[str]:
    problems = []
    for name in names:
        problems += compare_with_local_stack(
            name, project["services"][name], raw_services.get(name), local[local_name(name)]
        )
    return problems


def test_the_main_file_runs_what_the_local_stack_runs(env, tmp_path):
    project, raw = load_project([COMPOSE_FILE], env), read_yaml(COMPOSE_FILE)["services"]
    one_gpu, cpu_only = local_services(tmp_path, 1), local_services(tmp_path, 0)
    assert _check(project, raw, one_gpu, ["redis", "mlflow", "worker-gpu0", "webui"]) == []
    assert _check(project, raw, cpu_only, ["worker-cpu0"]) == []
    matched = {"redis", "mlflow", "worker-gpu0", "worker-cpu0", "webui"}
    assert set(project["services"]) - matched == set(DEPLOYMENT_ONLY_SERVICES), (
        "a service is neither local nor explained"
    )
    assert {local_name(n) for n in matched} >= set(one_gpu) | set(cpu_only), (
        "a local service has no compose counterpart"
    )


def test_a_four_gpu_host_runs_the_local_stacks_four_workers(env, overrides, tmp_path):
    project = load_project([overrides / "docker-compose.yml", overrides / "docker-compose.override.yml"], env)
    local = local_services(tmp_path, 4)
    assert _check(project, {}, local, [f"worker-gpu{i}" for i in range(4)]) == []
    assert {n for n in local if n.startswith("gpu")} == {f"gpu{i}" for i in range(4)}


def test_the_basic_auth_override_only_adds_the_auth_flag_and_settings(env, tmp_path):
    project, raw = load_project([COMPOSE_FILE, AUTH], env), read_yaml(AUTH)["services"]
    assert _check(project, raw, local_services(tmp_path, 1, mlflow_auth=True), ["mlflow"]) == []
    cmd = project["services"]["mlflow"]["command"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    main = load_project([COMPOSE_FILE], env)["services"]["mlflow"]["command"]
    assert cmd[: len(main)] == main, "compose.auth.yml's mlflow command drifted from docker-compose.yml's"


def test_another_gpu_host_runs_the_same_workers(env, overrides, tmp_path):
    project = load_project([overrides / "compose.gpu-host.yml", overrides / "compose.gpu-host.override.yml"], env)
    assert (
        _check(project, read_yaml(GPU_HOST)["services"], local_services(tmp_path, 2), ["worker-gpu0", "worker-gpu1"])
        == []
    )
    main = load_project([COMPOSE_FILE], env)["services"]["worker-gpu0"]
    other = project["services"]["worker-gpu0"]
    # The same worker but for where it finds Redis and MLflow, its build context, and its dependencies on them.
    for key in ("image", "deploy", "stop_grace_period", "restart", "init"):
        assert other[key] == main[key], key
    assert other["command"] == main["command"]
    assert {k: v for k, v in environment(other).items() if k not in ("REDIS_URL", "MLFLOW_TRACKING_URI")} == {
        k: v for k, v in environment(main).items() if k not in ("REDIS_URL", "MLFLOW_TRACKING_URI")
    }
    assert environment(other)["REDIS_URL"] == GPU_HOST_ENV["DATASLAYER_REDIS_URL"]
    assert environment(other)["MLFLOW_TRACKING_URI"] == GPU_HOST_ENV["DATASLAYER_TRACKING_URI"]
    assert [v.split(":", 1)[1] for v in other["volumes"]] == [v.split(":", 1)[1] for v in main["volumes"]]
    assert (GPU_HOST.parent / other["build"]["context"] / other["build"]["dockerfile"]).resolve() == (
        ROOT / main["build"]["context"] / main["build"]["dockerfile"]
    ).resolve()
    assert "depends_on" not in other and other["healthcheck"]["test"][-1] == "gpu0@host2"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda s: s["redis"]["command"].__setitem__(s["redis"]["command"].index("--appendonly") + 1, "no"),
            "--appendonly",
        ),
        (lambda s: s["redis"]["command"].remove("--protected-mode"), "--protected-mode"),
        (lambda s: s["mlflow"]["command"].append("--dev"), "--dev"),
        (
            lambda s: s["mlflow"]["environment"].__setitem__("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true"),
            "JOB_EXECUTION",
        ),
        (lambda s: s["worker-gpu0"]["command"].__setitem__(3, "gpu1@${DATASLAYER_WORKER_HOST:-host1}"), "--name"),
        (lambda s: s["webui"]["environment"].__setitem__("SECRET_KEY", "hard-coded"), "SECRET_KEY"),
        (lambda s: s["redis"]["command"].extend(["--requirepass", "${REDIS_PASSWORD}"]), "--requirepass"),
        (lambda s: s["redis"]["environment"].__setitem__("REDIS_PASSWORD", "hard-coded"), "REDIS_PASSWORD"),
        (lambda s: s["redis"]["command"].remove("/tmp/dataslayer/redis.conf"), "redis.conf"),
        (lambda s: s["webui"]["environment"].__setitem__("FLASK_DEBUG", "1"), "FLASK_DEBUG"),
    ],
    ids=[
        "value",
        "missing-flag",
        "extra-flag",
        "env-value",
        "node-name",
        "literal-secret-env",
        "secret-on-the-command-line",
        "literal-secret-in-the-config-file",
        "no-config-file",
        "extra-env",
    ],
)
def test_the_rule_reports_any_drift(env, tmp_path, mutate, expected):
    raw = read_yaml(COMPOSE_FILE)
    mutate(raw["services"])
    path = tmp_path / "docker-compose.yml"
    path.write_text(json.dumps(raw))
    project = load_project([path], env)
    problems = _check(
        project, raw["services"], local_services(tmp_path, 1), ["redis", "mlflow", "worker-gpu0", "webui"]
    )
    assert any(expected in p for p in problems), problems


# -- what the issue asks of each service ----------------------------------------------------------
def _duration_s(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value))


def test_services_are_reachable_only_where_they_should_be(env):
    services = load_project([COMPOSE_FILE], env)["services"]
    assert "ports" not in services["redis"] and "ports" not in services["postgres"] and "ports" not in services["minio"]
    for name in ("mlflow", "flower", "webui"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    central = load_project([COMPOSE_FILE, CENTRAL], env)["services"]
    assert central["redis"]["ports"] == ["10.0.0.5:6379:6379"]
    assert set(central["mlflow"]["ports"]) == {"127.0.0.1:5000:5000", "10.0.0.5:5000:5000"}
    hosts = services["mlflow"]["command"][services["mlflow"]["command"].index("--allowed-hosts") + 1].split(",")
    assert {"mlflow:5000", "localhost:5000", "127.0.0.1:5000"} <= set(hosts)
    extra = load_project([COMPOSE_FILE], {**env, "MLFLOW_EXTRA_ALLOWED_HOSTS": "10.0.0.5:5000"})["services"]["mlflow"][
        "command"
    ]
    assert extra[extra.index("--allowed-hosts") + 1].split(",")[-1] == "10.0.0.5:5000"
    assert (
        environment(services["flower"])["FLOWER_BASIC_AUTH"]
        == f"{env['DATASLAYER_ADMIN_USER']}:{env['DATASLAYER_ADMIN_PASSWORD']}"
    )


def test_workers_own_a_gpu_keep_state_on_volumes_and_stop_gracefully(env):
    services = load_project([COMPOSE_FILE], env)["services"]
    gpu, cpu = services["worker-gpu0"], services["worker-cpu0"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and gpu["profiles"] == ["gpu"]
    assert "deploy" not in cpu and cpu["profiles"] == ["cpu"] and cpu["build"]["dockerfile"] == "infra/app.Dockerfile"
    for worker in (gpu, cpu):
        worker_env, mounts = environment(worker), {v.split(":")[1]: v for v in worker["volumes"]}
        assert mounts[worker_env["DATASLAYER_STATE_DIR"]].startswith("state:")  # checkpoints survive a new container
        assert mounts[worker_env["DATASLAYER_CACHE_DIR"]].startswith("cache:")
        assert mounts[worker_env["DATASLAYER_DATA_ROOT"]].endswith(":ro")
        assert (
            _duration_s(worker["stop_grace_period"]) >= 600 and worker["restart"] == "unless-stopped" and worker["init"]
        )
        node = worker["command"][worker["command"].index("--name") + 1]
        assert (
            worker["healthcheck"]["test"][-2:] == ["--destination", node] and "inspect" in worker["healthcheck"]["test"]
        )
        assert {"redis", "mlflow"} <= set(worker["depends_on"])
    assert gpu["command"][-2:] == ["--gpu", "0"]
    for name, svc in services.items():
        if name != "createbucket":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
            assert svc.get("restart") == "unless-stopped", name
    assert services["mlflow"]["depends_on"]["createbucket"]["condition"] == "service_completed_successfully"


def test_gpu_workers_script_needs_two_gpus_or_more():
    with pytest.raises(SystemExit):
        gpu_workers.render(1, "docker-compose.yml")
    rendered = json.loads(gpu_workers.render(3, "docker-compose.yml").split("\n", 3)[3])
    assert list(rendered["services"]) == ["worker-gpu1", "worker-gpu2"]
