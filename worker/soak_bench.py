"""`python -m worker.soak_bench`: many tiny jobs through the supervised stack while workers keep getting killed.

It starts its own stack (`dataslayer up --detach` in a temporary state folder, on free ports),
generates a tiny dataset, submits `--jobs` tiny training jobs, SIGKILLs a random worker every
`--kill-every` seconds (the supervisor restarts it), waits for every job to end and prints: jobs
lost (not FINISHED), jobs duplicated (more than one registered version, or an epoch logged twice),
restarts, and the p50/p95 time from submit to finish. Printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mlcore.names import SELECTION_METRIC, TERMINAL, Tag


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def run_soak(jobs: int, workers: int, kill_every: float, seed: int, root: Path, say) -> dict:
    """Run the soak and return its figures."""
    from mlcore.demo_data import generate_demo_dataset
    from worker.client import JobClient
    from worker.settings import (
        MLFLOW_WORKER_PASSWORD_FILE,
        MLFLOW_WORKER_USER,
        REDIS_PASSWORD_FILE,
        get_settings,
        read_secret,
        with_password,
    )
    from worker.supervisor import read_state

    bin_dir = Path(sys.executable).parent
    data = root / "data"
    generate_demo_dataset(data / "demo", subjects=3, images_per_class=8, test_images=2, seed=1, image_size=(96, 72))
    env = {
        **os.environ,
        "DATASLAYER_STATE_DIR": str(root / "state"),
        "DATASLAYER_DATA_ROOT": str(data),
        "DATASLAYER_WORKERS": str(workers),
        "DATASLAYER_REDIS_PORT": str(_free_port()),
        "DATASLAYER_MLFLOW_PORT": str(_free_port()),
        "DATASLAYER_WEBUI_PORT": str(_free_port()),
        "DATASLAYER_LEASE_TTL": "6",
        "DATASLAYER_HEARTBEAT_S": "2",
        "DATASLAYER_RECONCILE_S": "3",
        "DATASLAYER_MAX_ATTEMPTS": "10",  # a job may be hit by several kills; none should fail for it
        "DATASLAYER_SYSTEM_METRICS": "0",
    }
    for name in ("REDIS_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    say(f"starting the stack with {workers} workers in {root}")
    subprocess.run([str(bin_dir / "dataslayer"), "up", "--detach"], env=env, cwd=root, check=True, capture_output=True)
    state_dir = root / "state"
    config = read_state(state_dir)["config"]
    settings = replace(
        get_settings(),
        redis_url=with_password(config["redis_url"], read_secret(state_dir / REDIS_PASSWORD_FILE)),
        tracking_uri=config["tracking_uri"],
        tracking_username=MLFLOW_WORKER_USER,  # the stack's MLflow server asks for a log-in
        tracking_password=read_secret(state_dir / MLFLOW_WORKER_PASSWORD_FILE),
        state_dir=state_dir,
        data_root=data,
    )
    client = JobClient(settings)
    rng = random.Random(seed)
    name = f"soak-{seed}"
    job = dict(
        data_dir=str(data / "demo"),
        arch="resnet18",
        pretrained="none",
        image_size=32,
        epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        device="cpu",
        eval_batch_size=64,
        experiment_name=name,
        registered_model_name=name,
    )
    kills: list[str] = []
    try:
        submitted = {client.submit_train(job): time.time() for _ in range(jobs)}
        say(f"submitted {jobs} jobs; killing a random worker every {kill_every:.0f} s")
        next_kill = time.monotonic() + kill_every
        while True:
            ended = [r for r in submitted if client.job(r, with_progress=False).status in TERMINAL]
            if len(ended) == jobs:
                break
            if time.monotonic() >= next_kill:
                services = read_state(state_dir)["services"]
                victim = rng.choice(sorted(n for n in services if n.startswith(("cpu", "gpu"))))
                try:
                    os.killpg(services[victim]["pid"], signal.SIGKILL)
                    kills.append(victim)
                    say(f"killed {victim} ({len(ended)}/{jobs} ended)")
                except ProcessLookupError:
                    pass
                next_kill += kill_every
            time.sleep(2)
        finals = {r: client.job(r, with_progress=False) for r in submitted}
        versions: dict[str, int] = {}
        for v in client.mlflow.search_model_versions(f"name='{name}'"):
            versions[v.run_id] = versions.get(v.run_id, 0) + 1
        twice = [r for r in submitted if len(client.mlflow.get_metric_history(r, SELECTION_METRIC)) > 1]
        latencies = [f.end_time / 1000 - submitted[r] for r, f in finals.items() if f.status == "FINISHED"]
        restarts = {n: s["restarts"] for n, s in read_state(state_dir)["services"].items()}
        return {
            "jobs": jobs,
            "workers": workers,
            "kills": len(kills),
            "finished": sum(f.status == "FINISHED" for f in finals.values()),
            "lost": sum(f.status != "FINISHED" for f in finals.values()),
            "duplicated": len({r for r, n in versions.items() if n > 1} | set(twice)),
            "recovered": sum(Tag.RECOVERED in f.tags for f in finals.values()),
            "restarts": restarts,
            "submit_to_finish_p50_s": round(_percentile(latencies, 50), 1) if latencies else None,
            "submit_to_finish_p95_s": round(_percentile(latencies, 95), 1) if latencies else None,
            "wall_s": round(max(f.end_time / 1000 for f in finals.values()) - min(submitted.values()), 1),
        }
    finally:
        subprocess.run([str(bin_dir / "dataslayer"), "down"], env=env, cwd=root, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    """Run the soak benchmark and print its table."""
    p = argparse.ArgumentParser(prog="python -m worker.soak_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200, help="tiny training jobs to submit (default 200)")
    p.add_argument("--workers", type=int, default=2, help="CPU workers of the stack (default 2)")
    p.add_argument("--kill-every", type=float, default=30.0, help="seconds between worker kills (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of worker to kill")
    p.add_argument("--json", dest="json_path", help="write the figures here")
    args = p.parse_args(argv)
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[soak {time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="dataslayer-soak-") as tmp:
        figures = run_soak(args.jobs, args.workers, args.kill_every, args.seed, Path(tmp), say)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2))
    print("| figure | value |\n|---|---:|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
