"""Queue benchmark: submit-to-start latency and jobs per minute for N tiny jobs through the real stack.

Run it against a running stack (`dataslayer up --detach`, then export the printed REDIS_URL and
MLFLOW_TRACKING_URI): `python -m worker.queue_bench --data DATASET --jobs 100`. It prints a
table last and writes JSON; nothing is asserted (the test suite runs it with 2 jobs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mlcore.names import Tag


def run(data: str, jobs: int, *, experiment: str = "queue-bench", timeout: float = 3600) -> dict:
    """Submit `jobs` one-epoch ResNet18 jobs at 32 px, wait for all, return latency and throughput figures."""
    from worker.client import JobClient

    client = JobClient()
    values = {
        "data_dir": data,
        "arch": "resnet18",
        "pretrained": "none",
        "image_size": 32,
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "experiment_name": experiment,
        "registered_model_name": experiment,
    }
    t0 = time.time()
    run_ids = [client.submit_train(values, submitted_by="queue-bench") for _ in range(jobs)]
    submit_s = time.time() - t0
    deadline = time.monotonic() + timeout
    finished = {}
    while len(finished) < jobs and time.monotonic() < deadline:
        for run_id in run_ids:
            if run_id not in finished:
                job = client.job(run_id, with_progress=False)
                if job.done:
                    finished[run_id] = job
        time.sleep(0.5)
    wall = time.time() - t0
    latencies = sorted(
        float(j.tags[Tag.STARTED_AT]) - float(j.tags[Tag.SUBMITTED_AT])
        for j in finished.values()
        if Tag.STARTED_AT in j.tags
    )
    first = min(
        (float(j.tags[Tag.STARTED_AT]) for j in finished.values() if Tag.STARTED_AT in j.tags),
        default=t0,
    )
    return {
        "jobs": jobs,
        "finished": sum(j.status == "FINISHED" for j in finished.values()),
        "submit_s": round(submit_s, 3),
        "submit_per_s": round(jobs / submit_s, 1) if submit_s else None,
        "wall_s": round(wall, 1),
        "jobs_per_min": round(60 * len(finished) / wall, 2) if wall else None,
        "first_start_latency_s": round(first - t0, 2),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_max_s": round(latencies[-1], 2) if latencies else None,
        "job_s_mean": round(
            statistics.mean(
                j.end_time / 1000 - float(j.tags[Tag.STARTED_AT]) for j in finished.values() if Tag.STARTED_AT in j.tags
            ),
            2,
        )
        if latencies
        else None,
    }


def table(r: dict) -> str:
    """The figures as a two-column table."""
    return "\n".join(f"{k:<24} {v}" for k, v in r.items())


def main(argv: list[str] | None = None) -> None:
    """Command line: --data DIR --jobs N [--json PATH]."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset root (with train/) or train folder")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.data, args.jobs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(table(result), file=sys.stdout)


if __name__ == "__main__":
    main()
