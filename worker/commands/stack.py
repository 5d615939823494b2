"""Local stack commands: `up` starts Redis, the MLflow server, the workers and the web UI; `down` stops them."""

from __future__ import annotations

import time

import click

from mlcore.cli import emit, handle_errors


@click.command()
@click.option("--detach", is_flag=True, help="start in the background; stop with `dataslayer down`")
@handle_errors
def up(detach):
    """Start Redis, the MLflow server, the workers and the web UI on this machine."""
    from worker.stack import Stack, StackConfig

    cfg = StackConfig.from_settings()
    stack = Stack(cfg, out=lambda line: click.echo(line, err=True))
    click.echo(f"starting the stack (state in {cfg.state_dir}, logs in {cfg.state_dir / 'logs'})", err=True)
    stack.start()
    env = (
        f"export REDIS_URL={cfg.redis_url} MLFLOW_TRACKING_URI={cfg.tracking_uri} DATASLAYER_DATA_ROOT={cfg.data_root}"
    )
    login = stack.webui_env()
    click.echo(
        f"\n  web UI     {cfg.webui_url}   "
        f"(log in as {login['DATASLAYER_ADMIN_USER']} / {login['DATASLAYER_ADMIN_PASSWORD']})\n"
        f"  MLflow UI  {cfg.tracking_uri}\n  Redis      {cfg.redis_url}\n"
        f"  datasets   {cfg.data_root}\n\n  to queue from another terminal: {env}\n"
        f"  dataslayer queue train --data {cfg.data_root / 'demo'} --preset quick --wait\n",
        err=True,
    )
    emit({"webui": cfg.webui_url, "mlflow": cfg.tracking_uri, "redis": cfg.redis_url, "state_dir": str(cfg.state_dir)})
    if detach:
        return
    click.echo("press Ctrl-C to stop", err=True)
    try:
        while (failed := stack.failed()) is None:
            time.sleep(1)
        click.echo(f"{failed} exited; stopping the stack (see {cfg.state_dir / 'logs' / (failed + '.log')})", err=True)
    except KeyboardInterrupt:
        click.echo("stopping ...", err=True)
    finally:
        stack.stop()


@click.command()
@handle_errors
def down():
    """Stop a stack started with `dataslayer up --detach`."""
    from worker.settings import get_settings
    from worker.stack import down as stop_stack

    emit({"stopped": stop_stack(get_settings().state_dir)})


COMMANDS = (up, down)
