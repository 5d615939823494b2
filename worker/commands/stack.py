"""Local stack commands: `up` starts and supervises Redis, MLflow, the workers and the web UI; `down`; `status`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from mlcore.cli import emit, handle_errors

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _ready_block(cfg, login: dict) -> str:
    """What a newcomer needs once the stack is up: where everything is, how to log in, a first command."""
    from worker.settings import (
        MLFLOW_ADMIN_PASSWORD_FILE,
        MLFLOW_ADMIN_USER,
        MLFLOW_WORKER_PASSWORD_FILE,
        MLFLOW_WORKER_USER,
        REDIS_PASSWORD_FILE,
    )

    venv_bin = Path(sys.executable).parent
    env = f"export REDIS_URL={cfg.redis_address} MLFLOW_TRACKING_URI={cfg.tracking_uri}"
    if cfg.redis_password:  # named, never printed
        env += f' REDIS_PASSWORD="$(cat {cfg.state_dir / REDIS_PASSWORD_FILE})"'
    mlflow_login = "no log-in"
    if cfg.mlflow_auth:  # the files are named, the passwords never printed
        env += (
            f" MLFLOW_TRACKING_USERNAME={MLFLOW_WORKER_USER}"
            f' MLFLOW_TRACKING_PASSWORD="$(cat {cfg.state_dir / MLFLOW_WORKER_PASSWORD_FILE})"'
        )
        mlflow_login = f"log in as {MLFLOW_ADMIN_USER}, password in {cfg.state_dir / MLFLOW_ADMIN_PASSWORD_FILE}"
    redis = cfg.redis_address + (" (password in the state directory)" if cfg.redis_password else " (no password)")
    return (
        f"\n  web UI     {cfg.webui_url}   "
        f"(log in as {login['DATASLAYER_ADMIN_USER']} / {login['DATASLAYER_ADMIN_PASSWORD']})\n"
        f"  MLflow UI  {cfg.webui_url}/mlflow   (the runs table)\n"
        f'             the server itself: {cfg.tracking_uri} (its "Model training" toggle shows the runs)\n'
        f"             {mlflow_login}\n"
        f"  Redis      {redis}\n"
        f"  datasets   {cfg.data_root}\n  logs       {cfg.state_dir / 'logs'}\n\n"
        f"  from another terminal in this folder (the settings come from the same environment):\n"
        f"    {venv_bin / 'dataslayer'} queue train --data {cfg.data_root / 'demo'} --preset quick --wait\n"
        f"  or `source {venv_bin / 'activate'}` first, then plain `dataslayer ...`; elsewhere: {env}\n"
    )


@click.command()
@click.option(
    "--detach",
    is_flag=True,
    help="run the stack (and its supervisor) in the background; stop it with `dataslayer down`",
)
@handle_errors
def up(detach):
    """Start Redis, the MLflow server, the workers and the web UI on this machine, and keep them running."""
    from worker.stack import Stack, StackConfig, StackError, refuse_open_host
    from worker.supervisor import Supervisor, already_running

    cfg = StackConfig.from_settings()
    refuse_open_host(cfg)
    if already_running(cfg.state_dir):
        raise StackError(f"a stack is already running from {cfg.state_dir}; stop it with `dataslayer down`")
    if detach:
        return _detach(cfg)
    out = lambda line: click.echo(line, err=True)  # noqa: E731
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    supervisor = Supervisor(Stack(cfg, out=out), out=out)
    try:
        out(f"starting the stack (state in {cfg.state_dir}, logs in {cfg.state_dir / 'logs'})")
        supervisor.start(stop)
        click.echo(_ready_block(cfg, supervisor.stack.webui_env()), err=True)
        emit({"webui": cfg.webui_url, "mlflow": cfg.tracking_uri, "state_dir": str(cfg.state_dir)})
        out("supervising: a service that exits is restarted; Ctrl-C (or `dataslayer down`) stops the stack")
        supervisor.run(stop)
    finally:
        why = signal.Signals(received[0]).name if received else "an error"
        out(f"stopping the stack ({why}) ...")
        supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        out("stopped")


def _detach(cfg) -> None:
    """Start `dataslayer up` as a background process and return once its stack is up."""
    from worker.stack import Stack, StackError
    from worker.supervisor import read_state

    log = cfg.state_dir / "logs" / "supervisor.log"  # its output; restarts also go to logs/stack.log
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "up"], stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    click.echo(f"starting the stack in the background (pid {proc.pid}, log {log}) ...", err=True)
    while not (read_state(cfg.state_dir) or {}).get("ready"):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise StackError("the stack did not start:\n" + "\n".join(tail))
        time.sleep(0.5)
    doc = read_state(cfg.state_dir)
    cfg.webui_port = int(doc["config"]["webui_url"].rsplit(":", 1)[1])
    cfg.mlflow_port = int(doc["config"]["tracking_uri"].rsplit(":", 1)[1])
    cfg.redis_port = int(doc["config"]["redis_url"].rsplit(":", 1)[1].split("/")[0])
    if doc["config"].get("redis_auth") and not cfg.redis_password:
        from worker.settings import REDIS_PASSWORD_FILE, read_secret

        cfg.redis_password = read_secret(cfg.state_dir / REDIS_PASSWORD_FILE)
    cfg.mlflow_auth = bool(doc["config"].get("mlflow_auth"))
    click.echo(_ready_block(cfg, Stack(cfg).webui_env()), err=True)
    emit({"webui": cfg.webui_url, "mlflow": cfg.tracking_uri, "state_dir": str(cfg.state_dir), "supervisor": proc.pid})


@click.command()
@handle_errors
def down():
    """Stop the stack started from this state directory (foreground or `up --detach`)."""
    from worker.settings import get_settings
    from worker.supervisor import down as stop_stack

    emit({"stopped": stop_stack(get_settings().state_dir)})


@click.command()
@handle_errors
def status():
    """Each service of the local stack: state, pid, restarts, last exit; exit status 1 if one is not running."""
    from worker.processes import pid_alive
    from worker.settings import get_settings
    from worker.supervisor import read_state

    state_dir = get_settings().state_dir
    doc = read_state(state_dir)
    if doc is None:
        click.echo(f"no stack is running from {state_dir}", err=True)
        emit({"running": False, "services": {}})
        sys.exit(1)
    supervised = bool(doc.get("supervisor")) and pid_alive(doc["supervisor"])
    rows = {}
    for name, s in doc.get("services", {}).items():
        state = s["state"] if supervised else ("running" if s.get("pid") and pid_alive(s["pid"]) else "stopped")
        rows[name] = {**s, "state": state}
        up_for = time.time() - s.get("since", time.time())
        click.echo(
            f"{name:<8} {state:<10} pid {s.get('pid') or '-':<8} restarts {s.get('restarts', 0):<3} "
            f"last exit {s.get('last_exit') if s.get('last_exit') is not None else '-':<5} for {up_for:,.0f} s"
        )
    if not supervised:
        click.echo("the supervisor is not running: nothing restarts a service that exits", err=True)
    healthy = supervised and all(r["state"] == "running" for r in rows.values())
    emit({"running": healthy, "supervised": supervised, "services": rows})
    if not healthy:
        sys.exit(1)


COMMANDS = (up, down, status)
