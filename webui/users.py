"""The UI's accounts: the first admin from the environment plus the users file (worker/users.py), read live."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from flask import current_app, g

from worker.users import DEFAULT_LIMITS, User, UserStore


class Accounts(Mapping):
    """User name -> password hash for log-in, and `account(name)` for the checks; the file is reread when it changes."""

    def __init__(self, env_users: dict[str, str], store: UserStore, token_users: set[str] = frozenset()):
        self.env_users, self.store, self.token_users = env_users, store, set(token_users)

    def _file_users(self) -> dict[str, User]:
        return {n: u for n, u in self.store.users().items() if n not in self.env_users}

    def __getitem__(self, name: str) -> str:
        if name in self.env_users:
            return self.env_users[name]
        user = self.store.get(name)
        if user is None or user.password is None:
            raise KeyError(name)
        return user.password

    def __iter__(self) -> Iterator[str]:
        yield from self.env_users
        yield from (n for n, u in self._file_users().items() if u.password)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def account(self, name: str | None) -> User | None:
        """The User behind a session or token: the environment's admin, a file user, or a configured-token user."""
        if not name:
            return None
        if name in self.env_users:
            return User(name=name, role="admin", password=self.env_users[name], **DEFAULT_LIMITS["admin"])
        user = self.store.get(name)
        if user is not None:
            return user
        if name in self.token_users:  # DATASLAYER_API_TOKENS names a user the file does not know: a trainer
            return User(name=name, role="trainer", **DEFAULT_LIMITS["trainer"])
        return None


def accounts() -> Accounts:
    """The current app's accounts."""
    return current_app.config["USERS"]


def store() -> UserStore:
    """The current app's users file."""
    return accounts().store


def current() -> User:
    """The signed-in caller (the view runs only with one)."""
    return g.account
