"""`dataslayer users ...`: the web UI's users, roles, limits and API tokens in the users file (worker/users.py)."""

from __future__ import annotations

import sys

import click

from mlcore.cli import emit
from worker.users import LIMITS, ROLES, Refused, UsersFileError, UserStore, default_path

LIMIT_HELP = "{}; -1: back to the role's default"


def _store(path: str | None) -> UserStore:
    return UserStore(path or default_path())


def _fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _guarded(fn):
    """One line and status 1 for a refusal or a bad value, as the other commands do."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Refused as exc:
            _fail(f"refused ({exc.status}, {exc.limit}): {exc.message}")
        except (ValueError, LookupError, UsersFileError) as exc:
            _fail(str(exc).strip("'\""))

    return wrapper


def _password(value: str | None) -> str:
    if value is not None:
        return value
    # Prompted twice on a terminal; from a pipe the first line (twice) is read, so scripts can set it.
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


def _row(user) -> dict:
    return {"name": user.name, "role": user.role, "max_jobs": user.max_jobs, "max_sweep": user.max_sweep}


@click.group()
@click.option(
    "--file", "path", default=None, help="the users file [default: $DATASLAYER_USERS_FILE or STATE/users.json]"
)
@click.pass_context
def users(ctx, path):
    """Manage the web UI's users: roles viewer, trainer and admin, per-user limits, API tokens."""
    ctx.obj = _store(path)


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="trainer", show_default=True)
@click.option("--max-jobs", type=int, default=None, help="queued + running jobs at most [default: the role's]")
@click.option("--max-sweep", type=int, default=None, help="runs in one sweep at most [default: the role's]")
@click.option("--password", default=None, help="the password (prompted when not given; avoid it on shared machines)")
@click.pass_obj
@_guarded
def add(store, name, role, max_jobs, max_sweep, password):
    """Create a user who logs in to the web UI."""
    user = store.add(name, role, _password(password), max_jobs=max_jobs, max_sweep=max_sweep)
    click.echo(f"added {user.name} ({user.role}) to {store.path}", err=True)
    emit(_row(user))


@users.command("passwd")
@click.argument("name")
@click.option("--password", default=None, help="the new password (prompted when not given)")
@click.pass_obj
@_guarded
def passwd(store, name, password):
    """Set a user's password."""
    store.set_password(name, _password(password))
    emit({"name": name, "password": "changed"})


@users.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default=None)
@click.option("--max-jobs", type=int, default=None, help=LIMIT_HELP.format("queued + running jobs at most"))
@click.option("--max-sweep", type=int, default=None, help=LIMIT_HELP.format("runs in one sweep at most"))
@click.pass_obj
@_guarded
def set_user(store, name, role, max_jobs, max_sweep):
    """Change a user's role or limits."""
    emit(_row(store.update(name, role=role, max_jobs=max_jobs, max_sweep=max_sweep)))


@users.command("remove")
@click.argument("name")
@click.pass_obj
@_guarded
def remove(store, name):
    """Delete a user and revoke every token of theirs."""
    emit({"removed": name, "tokens_revoked": store.remove(name)})


@users.command("list")
@click.pass_obj
@_guarded
def list_users(store):
    """Every user with role and limits."""
    rows = [_row(u) for u in store.users().values()]
    for r in rows:
        limits = "  ".join(f"{k} {'-' if r[k] is None else r[k]}" for k in LIMITS)
        click.echo(f"{r['name']:<20} {r['role']:<8} {limits}")
    emit({"users": len(rows)})


@users.command("token")
@click.argument("name")
@click.option("--label", default="", help="what the token is for")
@click.option("--expires-days", type=float, default=None, help="the token stops working after this many days")
@click.pass_obj
@_guarded
def token(store, name, label, expires_days):
    """Issue an API token for a user (printed once; only its hash is kept)."""
    if store.get(name) is None:
        raise LookupError(f"no user {name!r} in the users file")
    secret, record = store.issue_token(name, label=label, expires_days=expires_days)
    click.echo("the token is shown once; keep it secret", err=True)
    emit({**record, "token": secret})


@users.command("tokens")
@click.argument("name", required=False)
@click.pass_obj
@_guarded
def tokens(store, name):
    """List API tokens (of one user, or everyone's): id, label, created, expiry; never the secret."""
    rows = store.tokens(name)
    for t in rows:
        click.echo(f"{t['id']}  {t['user']:<20} {t['label'] or '-':<20} expires {t['expires'] or 'never'}")
    emit({"tokens": len(rows)})


@users.command("revoke")
@click.argument("token_id")
@click.pass_obj
@_guarded
def revoke(store, token_id):
    """Revoke an API token by its id (`dataslayer users tokens` lists them)."""
    record = store.revoke(token_id)
    if record is None:
        raise LookupError(f"no token with id {token_id!r}")
    emit({"revoked": record["id"], "user": record["user"]})


COMMANDS = (users,)
