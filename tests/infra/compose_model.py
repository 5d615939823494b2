"""The compose files as Compose reads them, and the rule that ties them to the local stack.

Loading follows the Compose Specification (https://docs.docker.com/reference/compose-file/):
`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`,
`${VAR+alt}` (nestable) and `$$` interpolation; `extends` within or across files; several `-f`
files merged in order (mappings merged, `command`/`entrypoint` replaced, `ports`/`expose`/
`profiles` appended without duplicates, `volumes` merged by container path).

`compare_with_local_stack` is THE consistency rule: a compose service runs the same program,
subcommand and flags as `worker.stack.service_commands`, with the same environment; values may
differ only as the tables below say, each with its reason.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- interpolation -------------------------------------------------------------------------------
class MissingVariable(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty (Compose refuses to start)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


@dataclass(frozen=True)
class Reference:
    """One `${NAME<op>arg}` (or `$NAME`) in a compose file."""

    name: str
    op: str = ""  # "", ":-", "-", ":?", "?", ":+", "+"
    arg: str = ""  # the raw default, message or replacement


def _braced_end(s: str, start: int) -> int:
    """Index just past the `}` closing the `${` at `start`, allowing nested `${...}`."""
    depth, j = 1, start + 2
    while j < len(s):
        if s.startswith("${", j):
            depth, j = depth + 1, j + 2
            continue
        if s[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ValueError(f"unclosed ${{ in {s!r}")


def _split(expr: str) -> Reference:
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:-|-|:\?|\?|:\+|\+)?(.*)\Z", expr, re.S)
    if not m or (m[2] is None and m[3]):
        raise ValueError(f"invalid interpolation ${{{expr}}}")
    return Reference(m[1], m[2] or "", m[3] or "")


def interpolate(s: str, env: dict[str, str]) -> str:
    """`s` with every variable replaced as Compose does (unset without default: empty)."""
    out, i = [], 0
    while i < len(s):
        if s[i] != "$":
            out.append(s[i])
            i += 1
        elif s.startswith("$$", i):
            out.append("$")
            i += 2
        elif s.startswith("${", i):
            end = _braced_end(s, i)
            out.append(_resolve(_split(s[i + 2 : end - 1]), env))
            i = end
        elif m := NAME.match(s, i + 1):
            out.append(env.get(m[0], ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _resolve(ref: Reference, env: dict[str, str]) -> str:
    value = env.get(ref.name)
    if ref.op == ":-":
        return value if value else interpolate(ref.arg, env)
    if ref.op == "-":
        return value if value is not None else interpolate(ref.arg, env)
    if ref.op == ":?" and not value or ref.op == "?" and value is None:
        raise MissingVariable(ref.name, interpolate(ref.arg, env))
    if ref.op == ":+":
        return interpolate(ref.arg, env) if value else ""
    if ref.op == "+":
        return interpolate(ref.arg, env) if value is not None else ""
    return value or ""


def references(s: str) -> list[Reference]:
    """Every variable `s` refers to, nested ones included."""
    found, i = [], 0
    while i < len(s):
        if s.startswith("$$", i):
            i += 2
        elif s.startswith("${", i):
            end = _braced_end(s, i)
            ref = _split(s[i + 2 : end - 1])
            found += [ref, *references(ref.arg)]
            i = end
        elif s[i] == "$" and (m := NAME.match(s, i + 1)):
            found.append(Reference(m[0]))
            i = m.end()
        else:
            i += 1
    return found


def walk_strings(tree, path=()):
    """(path, string) for every string value of a YAML tree (keys are never interpolated)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from walk_strings(v, (*path, str(k)))
    elif isinstance(tree, list):
        for k, v in enumerate(tree):
            yield from walk_strings(v, (*path, k))
    elif isinstance(tree, str):
        yield path, tree


def interpolate_tree(tree, env: dict[str, str]):
    """A copy of the tree with every string value interpolated."""
    if isinstance(tree, dict):
        return {k: interpolate_tree(v, env) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate_tree(v, env) for v in tree]
    return interpolate(tree, env) if isinstance(tree, str) else tree


# -- loading and merging -------------------------------------------------------------------------
def read_yaml(path: Path) -> dict:
    """The file as YAML (anchors and `<<` merge keys resolved)."""
    return yaml.safe_load(path.read_text())


APPENDED = ("ports", "expose", "profiles", "cap_add", "cap_drop", "security_opt")
REPLACED = ("command", "entrypoint")


def _volume_target(spec) -> str:
    if isinstance(spec, dict):
        return spec["target"]
    parts = spec.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge_service(base: dict, over: dict) -> dict:
    """`over` on top of `base` by the Compose merge rules (used for `extends` and for `-f a -f b`)."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if key in REPLACED or key not in merged:
            merged[key] = copy.deepcopy(value)
        elif key in APPENDED:
            merged[key] = merged[key] + [v for v in value if v not in merged[key]]
        elif key == "volumes":
            by_target = {_volume_target(v): v for v in merged[key]}
            by_target.update({_volume_target(v): v for v in value})
            merged[key] = list(by_target.values())
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _merge_mapping(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_mapping(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge_mapping(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_file(path: Path, env: dict[str, str]) -> dict:
    """One compose file, interpolated, with its `extends` resolved."""
    model = interpolate_tree(read_yaml(path), env)
    services = model.get("services", {})

    def resolve(name: str, seen: tuple = ()) -> dict:
        svc = services[name]
        ext = svc.get("extends")
        if not ext:
            return svc
        if name in seen:
            raise ValueError(f"circular extends at {name}")
        if ext.get("file"):
            base = load_file(path.parent / ext["file"], env)["services"][ext["service"]]
        else:
            base = resolve(ext["service"], (*seen, name))
        return merge_service(base, {k: v for k, v in svc.items() if k != "extends"})

    model["services"] = {name: resolve(name) for name in services}
    return model


def load_project(files: list[Path], env: dict[str, str]) -> dict:
    """Several `-f` files merged in order, as `docker compose -f a -f b config` would."""
    project: dict = {}
    for path in files:
        model = load_file(path, env)
        for section, entries in model.items():
            if section == "services":
                services = project.setdefault("services", {})
                for name, svc in entries.items():
                    services[name] = merge_service(services[name], svc) if name in services else svc
            elif isinstance(entries, dict):
                project.setdefault(section, {}).update({k: v for k, v in entries.items()})
            else:
                project[section] = entries
    return project


def environment(svc: dict) -> dict[str, str]:
    """A service's environment as a dict (Compose allows a list of NAME=value too)."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def read_env_file(path: Path = ENV_EXAMPLE) -> tuple[dict[str, str], set[str]]:
    """(settings given a value, settings only mentioned as `# NAME=...`) of a .env file."""
    active, mentioned = {}, set()
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line):
            quoted = re.fullmatch(r"(['\"])(.*)\1", m[2])  # Compose unquotes "..." and '...' values
            active[m[1]] = quoted[2] if quoted else m[2]
        elif m := re.match(r"^#\s*([A-Z_][A-Z0-9_]*)=", line):
            mentioned.add(m[1])
    return active, mentioned


# -- command lines -------------------------------------------------------------------------------
@dataclass
class CommandLine:
    """A command split into program, positional words and --flags (with their values)."""

    program: str
    positionals: list[str] = field(default_factory=list)
    flags: dict[str, str | None] = field(default_factory=dict)


def parse_command(argv: list[str]) -> CommandLine:
    """Split argv: `--flag value`, `--flag=value`, bare `--flag`, everything else positional.

    A bare flag followed by a positional would be read as flag + value; both sides of a
    comparison are read the same way, so the comparison stays exact.
    """
    cmd = CommandLine(Path(argv[0]).name)
    i = 1
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and len(token) > 1:
            name, eq, value = token.partition("=")
            if eq:
                cmd.flags[name] = value
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                cmd.flags[name] = argv[i + 1]
                i += 1
            else:
                cmd.flags[name] = None
        else:
            cmd.positionals.append(token)
        i += 1
    return cmd


# -- THE rule: what may differ between a compose service and the local stack ----------------------
# Flags whose VALUE is a location: where a process listens or keeps its data, or which names reach
# it. Containers listen on the compose network at fixed ports and keep data on volumes; the local
# stack listens on loopback at free ports and keeps data under its state folder.
LOCATION_FLAGS = {
    "--bind": "listen address: the compose network instead of loopback",
    "--host": "listen address: the compose network instead of loopback",
    "--port": "fixed container port instead of a free local one",
    "--dir": "Redis data on its volume",
    "--backend-store-uri": "PostgreSQL for a team instead of SQLite (docs/MLFLOW.md)",
    "--artifacts-destination": "the S3 bucket instead of a local folder",
    "--allowed-hosts": "the Host headers clients send: compose service name and published port",
}
# Flags whose value is a secret: never on a command line (`ps` shows it to every user of the host).
SECRET_FLAGS = {"--requirepass": "REDIS_PASSWORD"}
# Secrets in a mode-600 config file named by the first argument, on both sides: the local stack writes
# <state>/redis.conf, the compose service's entrypoint (infra/redis-entrypoint.sh) writes it from this
# environment variable, which the compose service must take from .env.
CONFIG_FILE_SECRETS = {"redis": ("redis.conf", "REDIS_PASSWORD")}
# Flags whose value names a Celery node `<role>@<host>`: the role must match, the host may differ.
NODE_NAME_FLAGS = {"--name"}
# Flags only the deployment has, per service (MLflow's `--app-name basic-auth` is on both sides: the local
# stack always runs it, the deployment with infra/compose.auth.yml; tests/infra compares each pair).
DEPLOYMENT_ONLY_FLAGS: dict[str, dict[str, str]] = {}
# Environment variables whose value is a location (as above) or a secret.
LOCATION_ENV = {
    "REDIS_URL": "the redis service (password from REDIS_PASSWORD) instead of loopback",
    "MLFLOW_TRACKING_URI": "the mlflow service instead of loopback",
    "DATASLAYER_STATE_DIR": "the state volume",
    "DATASLAYER_DATA_ROOT": "the datasets, mounted read-only",
    "DATASLAYER_CACHE_DIR": "the cache volume",
    "MLFLOW_AUTH_CONFIG_PATH": "the basic-auth ini: the image's instead of the state folder's",
}
SECRET_ENV = {
    "SECRET_KEY": "SECRET_KEY",
    "DATASLAYER_ADMIN_PASSWORD": "DATASLAYER_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "MLFLOW_SECRET_KEY",
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",  # the local stack's worker user; .env's for a team
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}
# Settings the local stack's processes inherit from the shell (Stack.start passes os.environ on);
# containers get them explicitly, passed through from .env under the same name, with the code's
# defaults (tests/infra checks the defaults against worker/settings.py).
PASSTHROUGH_ENV = (
    "DATASLAYER_TRAIN_TIME_LIMIT",
    "DATASLAYER_PREDICT_TIME_LIMIT",
    "DATASLAYER_MAX_ATTEMPTS",
    "DATASLAYER_LEASE_TTL",
    "DATASLAYER_HEARTBEAT_S",
    "DATASLAYER_RECONCILE_S",
    "DATASLAYER_QUEUE",
    "DATASLAYER_JOB_MEMORY_MB",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    # the web UI's (webui/config.py)
    "DATASLAYER_MLFLOW_PUBLIC_URL",
    "DATASLAYER_SECURE_COOKIES",
    "DATASLAYER_API_TOKENS",
    "DATASLAYER_LOGIN_RATE_LIMIT",
    "DATASLAYER_API_RATE_LIMIT",
    "DATASLAYER_TRUSTED_PROXIES",
)
# Environment only the deployment has, per service, with the reason.
_S3 = {
    "MLFLOW_S3_ENDPOINT_URL": "the S3 endpoint (MinIO)",
    "AWS_ACCESS_KEY_ID": "the bucket's credentials",
    "AWS_SECRET_ACCESS_KEY": "the bucket's credentials",
    "AWS_DEFAULT_REGION": "MinIO's region for the S3 client",
}
DEPLOYMENT_ONLY_ENV = {
    "redis": {
        "REDISCLI_AUTH": "the password for the health check's redis-cli",
        "REDIS_PASSWORD": "rendered into the config file by infra/redis-entrypoint.sh",
    },
    "mlflow": {
        "PGPASSWORD": "the PostgreSQL password, kept out of the store URI and so out of `ps`",
        **_S3,
        "MLFLOW_AUTH_ADMIN_USERNAME": "basic-auth's first admin (the local stack writes it into its ini)",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "basic-auth's first admin (the local stack writes it into its ini)",
    },
}
# Compose services with no local-stack counterpart, and why they exist.
DEPLOYMENT_ONLY_SERVICES = {
    "postgres": "MLflow's backend store for a team (the local stack uses SQLite)",
    "minio": "the artifact store for a team (the local stack uses a folder)",
    "createbucket": "creates the artifact bucket once",
    "flower": "Celery monitoring for the team",
}


def local_name(compose_service: str) -> str:
    """The local stack's name for a compose service: `worker-gpu0` -> `gpu0`."""
    return compose_service.removeprefix("worker-")


def _is_reference(raw: str, var: str) -> bool:
    return any(r.name == var for r in references(raw))


def compare_with_local_stack(name: str, compose_svc: dict, raw_svc: dict | None, local) -> list[str]:
    """Every way compose service `name` differs from the local stack's `local` beyond the rule (empty: same).

    `compose_svc` is interpolated, `raw_svc` the same service before interpolation (to check
    that secrets are references), `local` a worker.stack.Service.
    """
    problems: list[str] = []
    ours, theirs = parse_command(compose_svc["command"]), parse_command(local.cmd)
    if name in CONFIG_FILE_SECRETS:
        conf, var = CONFIG_FILE_SECRETS[name]
        for side, who in ((ours, "compose"), (theirs, "local")):
            if side.positionals and Path(side.positionals[0]).name == conf:
                side.positionals.pop(0)
            else:
                problems.append(f"{name}: the {who} command does not start from its {conf} (the password's file)")
        raw_env = environment(raw_svc or {})
        if raw_svc is not None and not _is_reference(raw_env.get(var, ""), var):
            problems.append(f"{name}: {var} (written into {conf}) must come from ${{{var}}}, not a literal")
    for flag in SECRET_FLAGS:
        if flag in ours.flags:
            problems.append(f"{name}: {flag} puts a secret on the command line; write it into a config file")
    raw_cmd = (raw_svc or {}).get("command")
    if ours.program != theirs.program:
        problems.append(f"{name}: runs {ours.program!r}, the local stack {theirs.program!r}")
    if ours.positionals != theirs.positionals:
        problems.append(f"{name}: arguments {ours.positionals} != local {theirs.positionals}")
    extra_ok = DEPLOYMENT_ONLY_FLAGS.get(name, {})
    for flag in sorted(set(ours.flags) | set(theirs.flags)):
        if flag not in theirs.flags:
            if flag not in extra_ok:
                problems.append(f"{name}: flag {flag} is not in the local stack's command")
            continue
        if flag not in ours.flags:
            problems.append(f"{name}: flag {flag} of the local stack is missing")
            continue
        a, b = ours.flags[flag], theirs.flags[flag]
        if flag in LOCATION_FLAGS or a == b:
            continue
        if flag in NODE_NAME_FLAGS and a and b and a.split("@")[0] == b.split("@")[0]:
            continue
        if flag in SECRET_FLAGS:
            raw = raw_cmd[raw_cmd.index(flag) + 1] if raw_cmd and flag in raw_cmd else ""
            if not _is_reference(raw, SECRET_FLAGS[flag]):
                problems.append(f"{name}: {flag} must come from ${{{SECRET_FLAGS[flag]}}}, not a literal")
            continue
        problems.append(f"{name}: {flag} {a!r} != local {b!r}")
    env, local_env = environment(compose_svc), local.env
    raw_env = environment(raw_svc or {})
    extra_env = {**DEPLOYMENT_ONLY_ENV.get(name, {}), **dict.fromkeys(PASSTHROUGH_ENV, "passed through from .env")}
    for key in sorted(set(env) | set(local_env)):
        if key not in local_env:
            if key not in extra_env:
                problems.append(f"{name}: environment {key} is not in the local stack's")
            elif key in PASSTHROUGH_ENV and raw_svc is not None and not _is_reference(raw_env.get(key, ""), key):
                problems.append(f"{name}: {key} must be passed through as ${{{key}...}}")
            continue
        if key not in env:
            problems.append(f"{name}: environment {key} of the local stack is missing")
            continue
        if key in SECRET_ENV:
            if raw_svc is not None and not _is_reference(raw_env.get(key, ""), SECRET_ENV[key]):
                problems.append(f"{name}: {key} must come from ${{{SECRET_ENV[key]}}}, not a literal")
            continue
        if key not in LOCATION_ENV and env[key] != local_env[key]:
            problems.append(f"{name}: environment {key}={env[key]!r} != local {local_env[key]!r}")
    return problems
