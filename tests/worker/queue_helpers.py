"""Helpers for tests that run real workers (plain functions; fixtures live in tests/conftest.py)."""

import time


def wait_until(predicate, timeout: float = 120, every: float = 0.5, what: str = "condition"):
    """Poll predicate() until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def epoch_steps(client, run_id: str, key: str = "val_f1_weighted") -> list[int]:
    """Steps at which a metric was logged (each epoch must appear once)."""
    return sorted(m.step for m in client.mlflow.get_metric_history(run_id, key))


def versions_of(client, name: str) -> list:
    """Registered versions of a model."""
    return client.mlflow.search_model_versions(f"name='{name}'")
