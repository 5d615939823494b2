"""The OpenAPI 3 document of /api; the parameter schemas come from the pydantic models themselves."""

from __future__ import annotations

from typing import Any

from mlcore.names import IDEMPOTENCY_KEY_RE, JOB_TYPES, PRIORITIES, RUN_ID_RE, STATUSES
from mlcore.params import TrainParams
from webui.paramforms import WEB_CHOICES
from webui.queueing import SERVER_ONLY
from worker.sweep import MAX_CHILDREN, OBJECTIVES, PRUNERS, STRATEGIES, Range
from worker.users import ROLES


def _train_schema() -> dict:
    """TrainParams as a request may send it: no data_dir (a dataset is chosen by name), web-only choices."""
    schema = TrainParams.model_json_schema()
    for key in SERVER_ONLY:
        schema["properties"].pop(key, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in SERVER_ONLY]
    for key, allowed in WEB_CHOICES.items():
        schema["properties"][key] = {**schema["properties"][key], "enum": list(allowed)}
    return schema


def _json(schema: dict | str) -> dict:
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"content": {"application/json": {"schema": ref}}}


def _op(
    summary: str,
    *,
    body: dict | str | None = None,
    ok: int = 200,
    params: list | None = None,
    csv: bool = False,
    conflict: str | None = None,
) -> dict:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(ok): {
                "description": "OK",
                **({"content": {"text/csv": {"schema": {"type": "string"}}}} if csv else _json({"type": "object"})),
            },
            "400": {"description": "invalid input; `field` names it", **_json("Error")},
            "401": {"description": "missing or wrong token", **_json("Error")},
            "403": {"description": "your role or a limit does not allow it; `limit` names which", **_json("Error")},
            "429": {
                "description": "too many missing or wrong tokens from this address (Retry-After says when to try "
                "again), or you have as many queued and running jobs as your limit allows (`limit`: max_jobs)",
                **_json("Error"),
            },
            "503": {
                "description": "the queue (Redis) or the tracking server (MLflow) is unavailable; nothing was queued",
                **_json("Error"),
            },
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    if conflict:
        op["responses"]["409"] = {"description": conflict, **_json("Error")}
    return op


def _path_param(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


RUN_ID = _path_param("run_id", "the job's MLflow run id", {"type": "string", "pattern": RUN_ID_RE.pattern})
IDEMPOTENCY = {
    "idempotency_key": {
        "type": "string",
        "pattern": IDEMPOTENCY_KEY_RE.pattern,
        "description": "the same key twice queues one job (also as the Idempotency-Key header)",
    }
}
PRIORITY = {"priority": {"type": "string", "enum": list(PRIORITIES), "default": "normal"}}
DATASET = {"dataset": {"type": "string", "description": "a dataset's name from GET /api/datasets (never a path)"}}


def document(server: str) -> dict:
    """The whole document, with `server` as the base URL."""
    schemas = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "field": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}},
                "limit": {"type": "string", "description": "the role or limit a refusal names (role, max_jobs, ...)"},
            },
        },
        "TrainParams": _train_schema(),
        "Range": Range.model_json_schema(),
        "RunRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["dataset"],
            "properties": {
                **DATASET,
                "params": {"$ref": "#/components/schemas/TrainParams"},
                "name": {
                    "type": "string",
                    "maxLength": 100,
                    "description": "the run's name (default: from what it is, e.g. `r18 64px lr1e-3`)",
                },
                **PRIORITY,
                **IDEMPOTENCY,
            },
        },
        "SweepRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["dataset"],
            "properties": {
                **DATASET,
                "name": {
                    "type": "string",
                    "maxLength": 100,
                    "description": "the sweep's name (default: e.g. `grid lr×bs (4)`; children: `#3 lr1e-3 bs16`)",
                },
                "base": {"$ref": "#/components/schemas/TrainParams"},
                "strategy": {"type": "string", "enum": list(STRATEGIES)},
                "grid": {"type": "object", "additionalProperties": {"type": "array"}, "description": "field -> values"},
                "ranges": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Range"}},
                "samples": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_CHILDREN,
                    "description": "random and tpe: number of trials",
                },
                "seed": {"type": "integer", "minimum": 0},
                "objective": {
                    "type": "string",
                    "enum": list(OBJECTIVES),
                    "default": "val_f1_weighted",
                    "description": "the validation metric trials are ranked by (val_loss is minimized)",
                },
                "pruner": {
                    "type": "string",
                    "enum": list(PRUNERS),
                    "default": "none",
                    "description": "stop unpromising trials early (any strategy)",
                },
                "pruning_warmup_epochs": {
                    "type": "integer",
                    "minimum": 0,
                    "default": 1,
                    "description": "epochs a trial always runs before it is judged",
                },
                "max_concurrent": {"type": "integer", "minimum": 1},
                "promote_best": {"type": "boolean"},
                **PRIORITY,
                **IDEMPOTENCY,
            },
        },
        "RerunRequest": {
            "type": "object",
            "additionalProperties": False,
            "description": "which ended trials to re-run; none chosen: failed and killed",
            "properties": {
                "failed": {"type": "boolean", "default": False, "description": "the trials that failed"},
                "killed": {"type": "boolean", "default": False, "description": "the trials that were cancelled"},
                "pruned": {"type": "boolean", "default": False, "description": "the trials the pruner stopped"},
            },
        },
        "ExtendRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["samples"],
            "properties": {
                "samples": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_CHILDREN,
                    "description": f"trials to add (random and tpe; a sweep holds at most {MAX_CHILDREN} runs)",
                }
            },
        },
        "TokenRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "label": {"type": "string", "maxLength": 100},
                "expires_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 3650},
                "user": {"type": "string", "description": "admins: issue the token for this user"},
            },
        },
        "UserChange": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "role": {"type": "string", "enum": list(ROLES)},
                "max_jobs": {"type": "integer", "minimum": -1, "description": "-1: the role's default"},
                "max_sweep": {"type": "integer", "minimum": -1, "description": "-1: the role's default"},
            },
        },
        "SubmissionRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["dataset"],
            "properties": {
                **DATASET,
                "model_version": {"type": "string", "description": "a version number, or 'champion' (the default)"},
                "threshold": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "default: the version's tuned threshold",
                },
                **PRIORITY,
                **IDEMPOTENCY,
            },
        },
    }
    paths = {
        "/api/datasets": {"get": _op("Datasets under the data root with image counts")},
        "/api/jobs": {
            "get": _op(
                "Jobs, newest first",
                params=[
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": [*STATUSES, *(s.lower() for s in STATUSES)]},
                        "description": "upper or lower case (the web UI shows lower case)",
                    },
                    {
                        "name": "type",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(JOB_TYPES)},
                    },
                    {
                        "name": "sweep",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "a sweep's run id: its children",
                    },
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}},
                ],
            )
        },
        "/api/jobs/{run_id}": {"get": _op("One job with live progress", params=[RUN_ID])},
        "/api/jobs/{run_id}/log": {"get": _op("The tail of the job's log", params=[RUN_ID])},
        "/api/jobs/{run_id}/metrics": {"get": _op("Per-epoch metric history", params=[RUN_ID])},
        "/api/jobs/{run_id}/cancel": {
            "post": _op(
                "Cancel a job (a sweep cancels its children)",
                params=[RUN_ID],
                conflict="the job has ended already: nothing to cancel (`status` says how it ended)",
            )
        },
        "/api/runs": {"post": _op("Queue a training job", body="RunRequest", ok=201)},
        "/api/sweeps": {"post": _op("Queue a sweep", body="SweepRequest", ok=201)},
        "/api/sweeps/preview": {"post": _op("Count (and validate) the runs a sweep makes", body="SweepRequest")},
        "/api/sweeps/{run_id}/rerun": {
            "post": _op(
                "Re-run an ended sweep's failed and killed (or the chosen) trials as new children of it; "
                "404: no such sweep, 409: it is still running, 400: nothing to re-run",
                body="RerunRequest",
                params=[RUN_ID],
            )
        },
        "/api/sweeps/{run_id}/extend": {
            "post": _op(
                "Add trials to an ended random or tpe sweep (tpe proposes them from the whole history); "
                "400 naming `samples` for a grid or over the sweep cap, 409 while it runs",
                body="ExtendRequest",
                params=[RUN_ID],
            )
        },
        "/api/models": {
            "get": _op(
                "Versions of the registered model",
                params=[{"name": "name", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/api/models/{name}/{version}/promote": {
            "post": _op(
                "Point the champion alias at a version",
                params=[
                    _path_param("name", "registered model"),
                    _path_param("version", "version number", {"type": "integer"}),
                ],
            )
        },
        "/api/submissions": {
            "get": _op("Prediction jobs with the model version each used"),
            "post": _op("Queue a prediction (a submission)", body="SubmissionRequest", ok=201),
        },
        "/api/tokens": {
            "get": _op("Your API tokens (an admin: everyone's): id, label, created, expires; never the secret"),
            "post": _op("A new API token, shown once in the answer", body="TokenRequest", ok=201),
        },
        "/api/tokens/{token_id}": {
            "delete": _op("Revoke a token (yours; an admin: anyone's)", params=[_path_param("token_id", "its id")])
        },
        "/api/users": {"get": _op("Users with role and limits (admins)")},
        "/api/users/{name}": {
            "post": _op(
                "Change a user's role or limits (admins)", body="UserChange", params=[_path_param("name", "user")]
            )
        },
        "/api/submissions/{run_id}/{kind}.csv": {
            "get": _op(
                "Download submission.csv or the probabilities",
                csv=True,
                params=[
                    RUN_ID,
                    _path_param("kind", "which file", {"type": "string", "enum": ["submission", "probabilities"]}),
                ],
            )
        },
    }
    for path in ("/api/sweeps/{run_id}/rerun", "/api/sweeps/{run_id}/extend"):
        paths[path]["post"]["responses"].update(
            {
                "404": {"description": "no sweep with this run id", **_json("Error")},
                "409": {"description": "the sweep is still running: wait until it ends", **_json("Error")},
            }
        )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "dataslayer web UI API",
            "version": "1",
            "description": "Queue training runs, sweeps and submissions, watch them, promote models. "
            "Authenticate with 'Authorization: Bearer TOKEN' (make one on the profile page). Bodies are strict: "
            "unknown fields are refused by name, numbers must be JSON numbers and booleans JSON booleans.",
        },
        "servers": [{"url": server}],
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
