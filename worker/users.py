"""Users, roles, per-user limits and API tokens: one JSON file (mode 600) that the web UI and the CLI share.

The file is `DATASLAYER_USERS_FILE`, else `users.json` in the state directory. `dataslayer users ...`
edits it and the web UI rereads it when it changes, so a new user, a role change or a revoked token
applies to the next request without a restart. Passwords are stored as werkzeug-format scrypt
hashes; API tokens are random (`secrets.token_urlsafe`) and only their SHA-256 is stored, so the
file never holds anything that logs in by itself.

Roles: a viewer reads everything and queues nothing; a trainer queues runs, sweeps and predictions
and cancels their own jobs; an admin also cancels anyone's, promotes models, uses high priority
and manages users and tokens. Every refusal is a `Refused` (HTTP status, the limit or role it
names, one message) raised by the checks below, so the pages, the API and the CLI say the same.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import string
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlcore.names import USER_NAME_RE

ROLES = ("viewer", "trainer", "admin")
# Limits a user gets unless the file sets their own: None is no limit beyond the service's.
DEFAULT_LIMITS: dict[str, dict[str, int | None]] = {
    "viewer": {"max_jobs": 0, "max_sweep": 0},
    "trainer": {"max_jobs": 20, "max_sweep": 32},
    "admin": {"max_jobs": None, "max_sweep": None},
}
LIMITS = ("max_jobs", "max_sweep")
HASH_PREFIXES = ("scrypt:", "pbkdf2:")
TOKEN_PREFIX = "ds_"
MIN_PASSWORD = 8
_SCRYPT = (2**15, 8, 1)  # werkzeug's default parameters, so its check_password_hash verifies these


class UsersFileError(ValueError):
    """The users file cannot be read or holds something it must not (a plain-text password)."""


class Refused(Exception):
    """A request the caller's role or limits do not allow: HTTP `status`, the `limit` it names, one message."""

    def __init__(self, status: int, limit: str, message: str):
        super().__init__(message)
        self.status, self.limit, self.message = status, limit, message


@dataclass(frozen=True)
class User:
    """One user as the checks see them."""

    name: str
    role: str
    password: str | None = None  # werkzeug hash; None for a token-only (service) user
    max_jobs: int | None = None
    max_sweep: int | None = None

    @property
    def is_admin(self) -> bool:
        """Whether this user may do everything."""
        return self.role == "admin"


def default_path() -> Path:
    """Where the users file is: DATASLAYER_USERS_FILE, else users.json in the state directory."""
    from worker.settings import get_settings

    return Path(os.environ.get("DATASLAYER_USERS_FILE") or get_settings().state_dir / "users.json")


def hash_password(password: str) -> str:
    """A werkzeug-compatible scrypt hash (`scrypt:N:r:p$salt$hex`); the worker layer does not import werkzeug."""
    n, r, p = _SCRYPT
    salt = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))
    digest = hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p).hex()
    return f"scrypt:{n}:{r}:{p}${salt}${digest}"


def token_hash(token: str) -> str:
    """What is stored for a token: its SHA-256 (tokens are 256 random bits, so no slow hash is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """A user name: letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit."""
    if not isinstance(name, str) or not USER_NAME_RE.match(name):
        raise ValueError(f"user name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    return name


def check_role(role: str) -> str:
    """One of viewer, trainer, admin."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def _limit(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected a whole number >= 0, or none")
    return value


def make_user(name: str, entry: dict) -> User:
    """A User from a file entry, with the role's default limits where the entry sets none."""
    role = check_role(entry.get("role", "trainer"))
    defaults = DEFAULT_LIMITS[role]
    limits = {k: _limit(entry[k], k) if k in entry else defaults[k] for k in LIMITS}
    return User(name=name, role=role, password=entry.get("password"), **limits)


class UserStore:
    """The users file: read when it changed, written whole under a lock (atomically, mode 600)."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_path()
        self._stamp: tuple | None = None
        self._doc: dict = {"users": {}, "tokens": {}}

    # -- reading ---------------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"users": {}, "tokens": {}}
        except OSError as exc:
            raise UsersFileError(f"{self.path}: cannot read it ({exc})") from None
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise UsersFileError(f"{self.path}: cannot read it as JSON ({exc})") from None
        return _normalise(doc, self.path)

    def doc(self) -> dict:
        """The file's content, reread only when its size or modification time changed."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._doc, self._stamp = self._read(), stamp
        return self._doc

    def users(self) -> dict[str, User]:
        """Every user in the file, by name."""
        return {name: make_user(name, entry) for name, entry in self.doc()["users"].items()}

    def get(self, name: str) -> User | None:
        """One user, or None."""
        entry = self.doc()["users"].get(name)
        return make_user(name, entry) if entry is not None else None

    # -- writing ---------------------------------------------------------------------------------
    @contextmanager
    def _editing(self):
        """The file's content to change in place; written back atomically, mode 600, under an exclusive lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            doc = self._read()
            yield doc
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # 600 from the start: no window
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 2, **doc}, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._stamp = None
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

    def add(self, name: str, role: str, password: str, **limits: int | None) -> User:
        """Create a user; ValueError if the name is taken or invalid."""
        check_name(name)
        check_role(role)
        _check_password(password)
        with self._editing() as doc:
            if name in doc["users"]:
                raise ValueError(f"user {name!r} exists already (change it with `dataslayer users set`)")
            entry = {"role": role, "password": hash_password(password)}
            entry.update({k: _limit(v, k) for k, v in limits.items() if v is not None})
            doc["users"][name] = entry
        return make_user(name, entry)

    def update(self, name: str, *, role: str | None = None, **limits: int | None) -> User:
        """Change a user's role or limits (a limit of -1 goes back to the role's default)."""
        if role is not None:
            check_role(role)
        with self._editing() as doc:
            entry = _existing(doc, name)
            if role is not None:
                entry["role"] = role
            for key, value in limits.items():
                if value is None:
                    continue
                if value == -1:
                    entry.pop(key, None)
                else:
                    entry[key] = _limit(value, key)
        return make_user(name, entry)

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password."""
        _check_password(password)
        with self._editing() as doc:
            _existing(doc, name)["password"] = hash_password(password)

    def remove(self, name: str) -> int:
        """Delete a user and every token of theirs; returns how many tokens went with them."""
        with self._editing() as doc:
            _existing(doc, name)
            del doc["users"][name]
            gone = [h for h, t in doc["tokens"].items() if t["user"] == name]
            for h in gone:
                del doc["tokens"][h]
        return len(gone)

    # -- API tokens ------------------------------------------------------------------------------
    def issue_token(self, user: str, *, label: str = "", expires_days: float | None = None) -> tuple[str, dict]:
        """A new random token for `user`: (the token, shown once; its record without the secret)."""
        check_name(user)
        if expires_days is not None and not (0 < expires_days <= 3650):
            raise ValueError("expires_days: expected more than 0 and at most 3650 days")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = token_hash(token)
        now = time.time()
        record = {
            "id": digest[:12],
            "user": user,
            "label": label[:100],
            "created": round(now, 3),
            "expires": round(now + expires_days * 86400, 3) if expires_days else None,
        }
        with self._editing() as doc:
            doc["tokens"][digest] = record
        return token, dict(record)

    def token_record(self, token: str) -> dict | None:
        """The record of a valid (known, unexpired) token, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = token_hash(token)
        tokens = self.doc()["tokens"]
        # The lookup is by a hash of the secret, so timing says nothing about the token; compare anyway.
        record = tokens.get(digest)
        if record is None or not hmac.compare_digest(digest[:12], record["id"]):
            return None
        if record.get("expires") and record["expires"] < time.time():
            return None
        return record

    def tokens(self, user: str | None = None) -> list[dict]:
        """Token records (of `user`, or everyone's), newest first; never the secrets."""
        now = time.time()
        rows = [
            {**t, "expired": bool(t.get("expires") and t["expires"] < now)}
            for t in self.doc()["tokens"].values()
            if user is None or t["user"] == user
        ]
        return sorted(rows, key=lambda t: t["created"], reverse=True)

    def revoke(self, token_id: str) -> dict | None:
        """Delete the token with this id; returns its record, or None when there is none."""
        with self._editing() as doc:
            for digest, record in list(doc["tokens"].items()):
                if record["id"] == token_id:
                    del doc["tokens"][digest]
                    return dict(record)
        return None


def _existing(doc: dict, name: str) -> dict:
    entry = doc["users"].get(name)
    if entry is None:
        raise LookupError(f"no user {name!r} in the users file")
    return entry


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValueError(f"the password needs at least {MIN_PASSWORD} characters")


def _normalise(doc: Any, path: Path) -> dict:
    """The current layout from either layout: {users: {name: {role, password, limits}}, tokens: {hash: record}}."""
    if not isinstance(doc, dict):
        raise UsersFileError(f"{path}: expected a JSON object")
    if "users" not in doc and "tokens" not in doc:
        # The first layout: {name: password hash}. Those users become trainers (admins are made explicitly).
        doc = {"users": {name: {"role": "trainer", "password": hashed} for name, hashed in doc.items()}, "tokens": {}}
    users, tokens = doc.get("users") or {}, doc.get("tokens") or {}
    if not isinstance(users, dict) or not isinstance(tokens, dict):
        raise UsersFileError(f"{path}: `users` and `tokens` must be objects")
    for name, entry in users.items():
        if not isinstance(entry, dict):
            raise UsersFileError(f"{path}: user {name!r} must be an object with role and password")
        hashed = entry.get("password")
        # Plain-text passwords in a file are refused rather than silently accepted.
        if hashed is not None and (not isinstance(hashed, str) or not hashed.startswith(HASH_PREFIXES)):
            raise UsersFileError(
                f"{path}: the password of {name!r} is not a werkzeug hash (set one with `dataslayer users passwd NAME`)"
            )
        try:
            check_name(name)
            make_user(name, entry)
        except ValueError as exc:
            raise UsersFileError(f"{path}: {exc}") from None
    return {"users": users, "tokens": tokens}


# -- the checks every entrance makes ---------------------------------------------------------------
def require_role(user: User, action: str, *roles: str) -> None:
    """Refuse (403) unless the user has one of `roles`."""
    if user.role not in roles:
        needed = " or ".join(roles)
        raise Refused(403, "role", f"{action} needs the {needed} role; {user.name} is a {user.role}")


def check_queueing(user: User, priority: str) -> None:
    """Refuse (403) queueing by a viewer, and high priority for anyone but an admin."""
    require_role(user, "queueing jobs", "trainer", "admin")
    if priority == "high" and not user.is_admin:
        raise Refused(403, "priority", f"priority high needs the admin role; {user.name} is a {user.role}")


def check_limits(user: User, *, runs: int, active: Callable[[], int], sweep: bool = False) -> None:
    """Refuse `runs` more jobs beyond the user's sweep size (403) or queued + running jobs (429) limit."""
    if sweep and user.max_sweep is not None and runs > user.max_sweep:
        raise Refused(
            403, "max_sweep", f"a sweep of {runs} runs is more than {user.name}'s limit of {user.max_sweep} (max_sweep)"
        )
    if user.max_jobs is not None:
        have = active()
        if have + runs > user.max_jobs:
            raise Refused(
                429,
                "max_jobs",
                f"{user.name} has {have} queued or running jobs and may have at most {user.max_jobs} (max_jobs): "
                f"{runs} more would exceed it; wait for some to finish or cancel them",
            )


def check_submit(user: User, *, priority: str, runs: int, active: Callable[[], int], sweep: bool = False) -> None:
    """Both checks of a submission: role and priority, then the limits."""
    check_queueing(user, priority)
    check_limits(user, runs=runs, active=active, sweep=sweep)


def check_cancel(user: User, owner: str) -> None:
    """Refuse (403) cancelling someone else's job unless the user is an admin."""
    require_role(user, "cancelling jobs", "trainer", "admin")
    if owner != user.name and not user.is_admin:
        raise Refused(
            403, "owner", f"{user.name} may cancel only their own jobs; this one is {owner}'s (admins cancel any)"
        )


def check_sweep_owner(user: User, owner: str) -> None:
    """Refuse (403) re-running or extending someone else's sweep unless the user is an admin."""
    require_role(user, "re-running or extending sweeps", "trainer", "admin")
    if owner != user.name and not user.is_admin:
        raise Refused(
            403,
            "owner",
            f"{user.name} may re-run or extend only their own sweeps; this one is {owner}'s (admins change any)",
        )


def check_sweep_change(user: User, owner: str, *, runs: int, total: int, active: Callable[[], int]) -> None:
    """The owner rule, then the limits: `total` trials against max_sweep (403), `runs` new jobs against max_jobs
    (429)."""
    check_sweep_owner(user, owner)
    if user.max_sweep is not None and total > user.max_sweep:
        raise Refused(
            403,
            "max_sweep",
            f"a sweep of {total} runs is more than {user.name}'s limit of {user.max_sweep} (max_sweep)",
        )
    check_limits(user, runs=runs, active=active)


def check_token_owner(user: User, owner: str) -> None:
    """Refuse (403) managing someone else's token unless the user is an admin."""
    if owner != user.name and not user.is_admin:
        raise Refused(403, "owner", f"{user.name} may revoke only their own tokens (admins revoke any)")
