"""Fixtures of the deployment tests: the settings a team's .env holds."""

from __future__ import annotations

import pytest
from compose_model import read_env_file

# Stand-ins for the secrets .env.example leaves empty (URL-safe, as the guide asks).
TEST_SECRETS = {
    "REDIS_PASSWORD": "test-redis-password-0123",
    "POSTGRES_PASSWORD": "test-postgres-password-0123",
    "MINIO_ROOT_PASSWORD": "test-minio-password-0123",
    "SECRET_KEY": "test-secret-key-0123456789abcdef",
    "DATASLAYER_ADMIN_PASSWORD": "test-admin-password-0123",
    "MLFLOW_SECRET_KEY": "test-mlflow-secret-key-0123",
}


@pytest.fixture(scope="session")
def compose_env() -> dict[str, str]:
    """What a team's .env holds: .env.example's values with its empty secrets filled in."""
    active, _ = read_env_file()
    return {**active, **TEST_SECRETS}
