"""The gpu-check's `stack` stage: Redis, an MLflow server and one worker on this machine, one tiny CUDA train job."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll `check()` until true, failing early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s")
        time.sleep(0.3)


def answers(url: str) -> bool:
    """Whether `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a service in its own process group, its output in `log`."""
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env)


def main() -> int:
    """Start the services, run one job to its end, write its figures and stop everything."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="the job's device (cpu tries the stage without a GPU)")
    args = parser.parse_args()
    # The check's timeout sends SIGTERM: exit through `finally`, which stops the services started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import redis

    from mlcore.demo_data import generate_demo_dataset
    from mlcore.names import TERMINAL
    from worker.stack import redis_server_binary
    from worker.state import ready_key

    root = Path(tempfile.mkdtemp(prefix="gpu-check-stack-"))
    redis_url, mlflow_url = f"redis://127.0.0.1:{free_port()}/0", f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "DATASLAYER_DATA_ROOT": str(root),
        "DATASLAYER_STATE_DIR": str(root / "state"),
        "DATASLAYER_CACHE_DIR": str(root / "cache"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    os.environ.update(env)
    py, procs, figures = sys.executable, [], {"root": str(root)}
    t0 = time.monotonic()
    try:
        port = redis_url.split(":")[2].split("/")[0]
        procs.append(start([redis_server_binary(), "--port", port, "--save", ""], root / "redis.log", env))
        client = redis.Redis.from_url(redis_url, socket_timeout=1)
        wait_for(lambda: _ping(client), "redis-server", procs[-1], 20)
        mlflow_port = mlflow_url.rsplit(":", 1)[1]
        server = [py, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", mlflow_port, "--workers", "1"]
        server += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "a")]
        procs.append(start(server, root / "mlflow.log", env))
        wait_for(lambda: answers(mlflow_url + "/health"), "mlflow server", procs[-1], 90)
        procs.append(start([py, "-m", "worker", "worker", "--name", "gpu@check"], root / "worker.log", env))
        wait_for(lambda: client.exists(ready_key("gpu@check")), "worker", procs[-1], 90)
        figures["services_ready_s"] = round(time.monotonic() - t0, 1)

        from worker.client import JobClient

        generate_demo_dataset(root / "data", subjects=3, images_per_class=16, test_images=8, seed=1)
        values = dict(data_dir=str(root / "data"), arch="resnet18", pretrained="none", image_size=64)
        values.update(epochs=args.epochs, batch_size=16, device=args.device, experiment_name="gpu-check")
        jobs = JobClient()
        submitted = time.monotonic()
        run_id = jobs.submit_train(values)
        job = jobs.job(run_id)
        while job.status not in TERMINAL and time.monotonic() - submitted < 80:
            time.sleep(1)
            job = jobs.job(run_id)
        figures.update(run_id=run_id, status=job.status, submit_to_end_s=round(time.monotonic() - submitted, 1))
        figures["metrics"] = dict(getattr(job, "metrics", {}) or {})
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    if figures.get("status") != "FINISHED":
        print((root / "worker.log").read_text()[-3000:], file=sys.stderr)
        return 1
    return 0


def _ping(client) -> bool:
    """Whether Redis answers PING."""
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - any error means not ready yet
        return False


if __name__ == "__main__":
    sys.exit(main())
