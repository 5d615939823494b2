"""An operator's bad day against the supervised local stack (`dataslayer up --detach`, 2 CPU workers), counted.

12 jobs; a worker SIGKILLed while a job decodes, another mid-epoch, another while a job logs its
model; Redis SIGKILLed with jobs queued and running; the MLflow server SIGKILLed while a job logs
its model; one job whose checkpoint folder is a 20 MB disk. The supervisor restarts each service it
loses. Afterwards: every job FINISHED once (the disk-full one FAILED, saying so), one registered
version per training run, every metric point logged once per step, no run left RUNNING or
SCHEDULED, no service left dead, and `dataslayer down` stops it all (SIGTERM to the supervisor, as Ctrl-C).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from queue_helpers import epoch_steps, versions_of, wait_until
from services import SupervisedStack

from mlcore.names import TERMINAL, Tag

EPOCHS = 2
END_METRICS = ("best_epoch", "best_val_f1_weighted", "best_val_f1", "threshold", "val_f1_at_threshold", "skipped_files")
STACK_ENV = {
    "DATASLAYER_WORKERS": "2",
    "DATASLAYER_LEASE_TTL": "4",
    "DATASLAYER_HEARTBEAT_S": "1",
    "DATASLAYER_RECONCILE_S": "2",
    "DATASLAYER_MAX_ATTEMPTS": "4",
    "DATASLAYER_SYSTEM_METRICS": "0",
    "DATASLAYER_TRACKING_OUTAGE_S": "180",
}


def _hd_dataset(root, copies: int = 32):
    """1,584 frames of 1280x720 (48 drawn, hard-linked): decoding them takes seconds, long enough to kill in."""
    from mlcore.demo_data import generate_demo_dataset

    generate_demo_dataset(root, subjects=3, images_per_class=8, test_images=2, seed=3, image_size=(1280, 720))
    for frame in list((root / "train").rglob("*.jpg")):
        for k in range(copies):
            os.link(frame, frame.with_name(f"{frame.stem}-copy{k:02d}.jpg"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, demo_root):
    root = tmp_path_factory.mktemp("fault-suite")
    data = root / "data"
    shutil.copytree(demo_root, data / "demo")
    _hd_dataset(data / "hd")
    stack = SupervisedStack(root, data, {**STACK_ENV, "DATASLAYER_CACHE_DIR": str(root / "cache")}).start()
    yield stack
    stack.command("down")


@pytest.fixture(scope="module")
def client(stack):
    from worker.client import JobClient
    from worker.settings import get_settings

    settings = replace(
        get_settings(),
        redis_url=stack.redis_url,
        tracking_uri=stack.tracking_uri,
        tracking_username=stack.tracking_username,  # the stack's worker user: its MLflow server asks for a log-in
        tracking_password=stack.tracking_password,
        state_dir=stack.state_dir,
        data_root=Path(stack.env["DATASLAYER_DATA_ROOT"]),
        lease_ttl=4,
        queue="dataslayer",
    )
    return JobClient(settings)


def _progress(client, run_id) -> dict:
    return client.job(run_id).progress or {}


def _worker_of(client, run_id) -> str:
    """The stack's service name of the worker running a job (its Celery node is cpuN@host)."""
    return _progress(client, run_id)["worker"].split("@")[0]


def _kill_worker_when(stack, client, run_id, what: str, predicate) -> tuple[str, int]:
    """SIGKILL the worker running a job once its progress matches; returns (service, old pid) to wait on."""
    wait_until(lambda: predicate(_progress(client, run_id)), 240, 0.05, f"{run_id[:8]} {what}")
    service = _worker_of(client, run_id)
    return service, stack.kill(service)


def _wait_restarted(stack, killed: list[tuple[str, int]]) -> None:
    for service, old in killed:
        stack.wait_running(service, not_pid=old)


def test_an_operators_bad_day_loses_and_repeats_nothing(stack, client, small_disk, request, tiny_train_values):
    name = "fault-suite"
    job = {**tiny_train_values, "epochs": EPOCHS, "eval_batch_size": 64}
    job.update(experiment_name=name, registered_model_name=name)
    data = stack.env["DATASLAYER_DATA_ROOT"]
    hd = {**job, "data_dir": f"{data}/hd", "batch_size": 64}  # seconds per phase: wide enough to kill in
    runs = [client.submit_train({**hd, "epochs": 1}), client.submit_train(hd)]
    runs += [client.submit_train({**job, "data_dir": f"{data}/demo"}) for _ in range(9)]
    disk_full = client.submit_train({**job, "data_dir": f"{data}/demo"})  # last in line: starts after the rest
    checkpoints = stack.state_dir / "checkpoints" / disk_full
    checkpoints.mkdir(parents=True)
    tiny = small_disk(20)
    subprocess.run(["mount", "--bind", str(tiny), str(checkpoints)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(checkpoints)], capture_output=True))

    # 1-3: three worker kills, in three phases of three jobs. The first two run side by side on the two workers:
    # the mid-epoch one is watched while the first kill's worker restarts, so it cannot finish unseen meanwhile.
    killed = [_kill_worker_when(stack, client, runs[0], "decoding", lambda p: p.get("phase") == "decoding")]
    killed.append(
        _kill_worker_when(
            stack, client, runs[1], "mid-epoch", lambda p: p.get("phase") == "training" and (p.get("epoch") or 0) >= 2
        )
    )
    _wait_restarted(stack, killed)
    killed = [_kill_worker_when(stack, client, runs[2], "logging its model", lambda p: p.get("phase") == "logging")]
    _wait_restarted(stack, killed)
    # 4: Redis dies with jobs queued and running; the supervisor brings it back on its append-only file.
    wait_until(lambda: _progress(client, runs[4]).get("phase") not in (None, "done"), 240, 0.05, "run 4 running")
    old = stack.kill("redis")
    stack.wait_running("redis", not_pid=old)
    # 5: the tracking server dies while a job logs its model; the job waits for it and goes on.
    wait_until(lambda: _progress(client, runs[6]).get("phase") == "logging", 300, 0.05, "run 6 logging")
    outage = time.monotonic()
    old = stack.kill("mlflow")
    stack.wait_running("mlflow", not_pid=old)
    outage = time.monotonic() - outage

    everything = [*runs, disk_full]
    wait_until(
        lambda: all(client.job(r, with_progress=False).status in TERMINAL for r in everything),
        600,
        1.0,
        "every job to end",
    )
    finished = [client.job(r, with_progress=False) for r in runs]
    assert [j.status for j in finished] == ["FINISHED"] * len(runs), [j.failure for j in finished]
    failed = client.job(disk_full, with_progress=False)
    assert failed.status == "FAILED"
    assert "no space left on device writing" in failed.failure and str(checkpoints) in failed.failure
    assert "MB needed" in failed.failure

    # One version per training run, each registered once.
    assert sorted(v.run_id for v in versions_of(client, name)) == sorted(runs)
    for j in finished:
        epochs = 1 if j.run_id == runs[0] else EPOCHS
        assert epoch_steps(client, j.run_id) == list(range(1, epochs + 1)), j.run_id
        assert epoch_steps(client, j.run_id, "train_loss") == list(range(1, epochs + 1)), j.run_id
        for key in END_METRICS:  # the end of a job logged once, even when it ran twice
            assert len(client.mlflow.get_metric_history(j.run_id, key)) == 1, (j.run_id, key)
    for killed in runs[:3]:
        tags = client.job(killed, with_progress=False).tags
        assert int(tags[Tag.RECOVERED]) >= 1 and int(tags[Tag.ATTEMPT]) >= 2, tags
    assert client.list_jobs(status="RUNNING") == [] and client.list_jobs(status="SCHEDULED") == []

    # No service left dead, and each restart is counted.
    services = stack.state()["services"]
    assert {n: s["state"] for n, s in services.items()} == dict.fromkeys(services, "running")
    assert sum(s["restarts"] for n, s in services.items() if n.startswith("cpu")) == 3
    assert services["redis"]["restarts"] == 1 and services["mlflow"]["restarts"] == 1
    status = stack.command("status")
    assert status.returncode == 0 and "restarts 1" in status.stdout
    print(f"\nfault suite: MLflow outage {outage:.1f} s; restarts {[(n, s['restarts']) for n, s in services.items()]}")


def test_down_stops_the_supervisor_and_every_service(stack):
    pids = [stack.state()["supervisor"], *(s["pid"] for s in stack.state()["services"].values())]
    done = stack.command("down")
    assert done.returncode == 0, done.stderr
    assert not (stack.state_dir / "stack.json").exists()
    for pid in pids:
        wait_until(lambda p=pid: not _alive(p), 30, 0.2, f"pid {pid} to exit")
    assert stack.command("status").returncode == 1
    # `down` signals the supervisor (a foreground `dataslayer up`), which stops the stack as Ctrl-C does.
    log = (stack.state_dir / "logs" / "supervisor.log").read_text()
    assert "stopping the stack (SIGTERM)" in log and "exited; stopping" not in log and log.rstrip().endswith("stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie waiting for its parent counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
