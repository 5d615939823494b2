"""The layering rules of docs/ARCHITECTURE.md, checked on every import statement (module level or inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mlcore", "worker", "webui")
# What each package may not import: the layers above it and the libraries of those layers.
FORBIDDEN = {
    "mlcore": {"worker", "webui", "celery", "flask", "flask_wtf", "flask_limiter", "redis", "kombu", "werkzeug"},
    "worker": {"webui", "flask", "flask_wtf", "flask_limiter", "werkzeug"},
    "webui": set(),
}
MLFLOW_IN_MLCORE = {"mlcore/tracking.py"}  # the one module of mlcore that talks to MLflow


def imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports (absolute imports only; relative ones stay in the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_layer_above_it(package):
    bad = {str(f.relative_to(ROOT)): sorted(imports(f) & FORBIDDEN[package]) for f in files(package)}
    assert {f: names for f, names in bad.items() if names} == {}


def test_mlflow_is_imported_by_one_mlcore_module_only():
    importing = {str(f.relative_to(ROOT)) for f in files("mlcore") if "mlflow" in imports(f)}
    assert importing == MLFLOW_IN_MLCORE


def test_the_rules_see_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from worker.client import JobClient\n    import flask.json\n")
    assert imports(bad) == {"worker", "flask"}
