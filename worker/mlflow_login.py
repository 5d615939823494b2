"""The local stack's MLflow log-in: MLflow's basic-auth app, its config file, and the worker user.

`dataslayer up` starts `mlflow server --app-name basic-auth` with MLFLOW_AUTH_CONFIG_PATH naming a
600 ini file in the 700 state folder (`auth_config`): MLflow creates the admin user from it the
first time it starts on an empty auth database. Once the server answers, `ensure_worker_user`
makes the stack's own user through MLflow's users API, as the admin: created the first time,
kept afterwards with its password set to the kept one, and granted MANAGE on every experiment and
registered model. That one user is what the workers, the web UI and the CLI log in as; people log
into the MLflow UI as the admin, or as a user the admin creates for them.

Why `default_permission = READ`: a teammate's user sees every run and model without grants, but
writes only what it creates or is granted; the registry's versions (which the workers load) stay
writable by the worker and the admin alone.
"""

from __future__ import annotations

from pathlib import Path

from worker.settings import MLFLOW_ADMIN_USER, MLFLOW_WORKER_USER

DEFAULT_PERMISSION = "READ"
# MLflow checks a basic-auth password with scrypt on every request (0.15 s of CPU idle, over 1 s beside two
# training workers: a job's status took 1.5 s to read): a successful check is cached this long instead
# (MLflow's own `auth_cache_ttl_seconds`; a password changed through its API is dropped from the cache at once).
AUTH_CACHE_TTL_S = 60
# What the worker user may do everywhere: create runs, log models, register versions, set aliases,
# and delete the run of a job that could not be queued (delete needs MANAGE, not EDIT).
WORKER_GRANTS = (("experiment", "*", "MANAGE"), ("registered_model", "*", "MANAGE"))
# MLflow 3.17's users API (mlflow/server/auth/routes.py; importing that module loads the whole server).
GET_USER, CREATE_USER = "/api/2.0/mlflow/users/get", "/api/2.0/mlflow/users/create"
UPDATE_USER_PASSWORD = "/api/2.0/mlflow/users/update-password"
GRANT, GET_GRANT, REVOKE = (f"/api/3.0/mlflow/users/permissions/{verb}" for verb in ("grant", "get", "revoke"))


def auth_config(database: Path, admin_password: str) -> str:
    """The basic-auth app's ini file: where its users live, the admin's name and first password, the default."""
    escaped = admin_password.replace("%", "%%")  # configparser's interpolation reads % specially
    return (
        "# written by `dataslayer up` (worker/mlflow_login.py); mode 600: it holds the admin's password\n"
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{database}\n"
        f"admin_username = {MLFLOW_ADMIN_USER}\n"
        f"admin_password = {escaped}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )


def _call(tracking_uri: str, password: str, endpoint: str, method: str, **kwargs):
    """One request to the server's users API as the admin (explicit credentials: none go into the environment)."""
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    creds = MlflowHostCreds(tracking_uri, username=MLFLOW_ADMIN_USER, password=password)
    return http_request(creds, endpoint, method, max_retries=2, backoff_factor=1, timeout=30, **kwargs)


def ensure_worker_user(tracking_uri: str, admin_password: str, worker_password: str, *, admin_file: Path) -> bool:
    """Create the worker user (or keep it, with the kept password) and its grants; True when it was created.

    A ConnectionError names what to do when the kept admin password no longer opens the auth database.
    """
    from mlflow.utils.rest_utils import verify_rest_response

    found = _call(tracking_uri, admin_password, GET_USER, "GET", params={"username": MLFLOW_WORKER_USER})
    if found.status_code == 401:
        raise ConnectionError(
            f"the MLflow server refused the admin password kept in {admin_file}: it is not the one its auth "
            "database was created with. Put the old file back, or remove the auth database "
            "(<state>/mlflow/auth.db: its users go, runs and models stay) and start the stack again"
        )
    created = found.status_code == 404
    if created:
        body = {"username": MLFLOW_WORKER_USER, "password": worker_password}
        verify_rest_response(_call(tracking_uri, admin_password, CREATE_USER, "POST", json=body), CREATE_USER)
    else:
        verify_rest_response(found, GET_USER)
        body = {"username": MLFLOW_WORKER_USER, "password": worker_password}  # the kept file is the truth
        done = _call(tracking_uri, admin_password, UPDATE_USER_PASSWORD, "PATCH", json=body)
        verify_rest_response(done, UPDATE_USER_PASSWORD)
    for resource_type, resource_id, permission in WORKER_GRANTS:
        _grant(tracking_uri, admin_password, resource_type, resource_id, permission)
    return created


def _grant(tracking_uri: str, admin_password: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give the worker `permission` on a resource: kept when it has it, replaced when someone changed it."""
    from mlflow.utils.rest_utils import verify_rest_response

    which = {"username": MLFLOW_WORKER_USER, "resource_type": resource_type, "resource_id": resource_id}
    done = _call(tracking_uri, admin_password, GRANT, "POST", json={**which, "permission": permission})
    if done.status_code == 200:
        return
    if "RESOURCE_ALREADY_EXISTS" not in done.text:
        verify_rest_response(done, GRANT)
    held = verify_rest_response(_call(tracking_uri, admin_password, GET_GRANT, "GET", params=which), GET_GRANT)
    if held.json().get("permission") != permission:
        verify_rest_response(_call(tracking_uri, admin_password, REVOKE, "POST", json=which), REVOKE)
        done = _call(tracking_uri, admin_password, GRANT, "POST", json={**which, "permission": permission})
        verify_rest_response(done, GRANT)
