"""Queue commands: `worker` (one per GPU), `queue train|predict` (comma lists or ranges make a sweep), `jobs`, `cancel`,
`sweep rerun|extend` (change an ended sweep).

CUDA is never touched in these processes: jobs run in the worker's pool children.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import click

from mlcore import mlflow_ui
from mlcore.cli import ProgressBars, emit, handle_errors, params_options
from mlcore.names import (
    BEST_SELECTION_METRIC,
    GPU_FRACTION_ENV,
    JOB_TYPES,
    PRIORITIES,
    SELECTION_METRIC,
    STATUSES,
    Tag,
)
from mlcore.params import PRESETS, PredictParams, TrainParams, build, train_params
from worker.settings import MAX_SLOTS_PER_GPU

RANGE = re.compile(r"^(-?[\d.eE+-]+):(-?[\d.eE+-]+)(:log)?$")
NUMERIC = {
    name for name, f in TrainParams.model_fields.items() if f.annotation in (int, float, int | None, float | None)
}


@click.command()
@click.option("--gpu", type=int, default=None, help="GPU index this worker owns (sets CUDA_VISIBLE_DEVICES)")
@click.option(
    "--gpu-slots",
    type=click.IntRange(1, MAX_SLOTS_PER_GPU),
    default=1,
    show_default=True,
    help="workers sharing this GPU (DATASLAYER_SLOTS_PER_GPU): each job may use 1/N of its memory",
)
@click.option("--name", default=None, help="Celery node name [default: gpuN@host, or cpu@host]")
@click.option("--queues", default=None, help="queues to consume [default: $DATASLAYER_QUEUE or dataslayer]")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(gpu, gpu_slots, name, queues, loglevel):
    """Run one worker: one job at a time, each in a fresh process (one per GPU job slot)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # before any job process can initialise CUDA
        # Each job process caps its CUDA allocator (and its image cache) at its slot's share (mlcore/engine.py).
        os.environ[GPU_FRACTION_ENV] = repr(1 / gpu_slots)
    # A tracking outage must not stall a job for minutes inside one call: fail fast, the tracker
    # keeps the records and sends them later (mlcore/tracking.py).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    if os.environ.get("DATASLAYER_JOB_MEMORY_MB"):
        # pyarrow's default allocator (mimalloc) reserves 1 GiB of address space at first use (MLflow's
        # dataset digests), all of which the job memory cap counts; it reads this before its first import.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    name = name or (f"gpu{gpu}@{socket.gethostname()}" if gpu is not None else f"cpu@{socket.gethostname()}")
    from worker.celery_app import app
    from worker.reconciler import reconcile_once
    from worker.settings import get_settings

    try:
        reconcile_once()  # runs left RUNNING by a worker that died before this one started
    except Exception as exc:  # noqa: BLE001 - Redis or MLflow not up yet: the reconciler process retries
        click.echo(f"reconcile at start skipped: {exc}", err=True)
    reconciler = subprocess.Popen([sys.executable, "-m", "worker.reconciler", "--parent-pid", str(os.getpid())])
    try:
        app.worker_main(
            [
                "worker",
                "--hostname",
                name,
                "--queues",
                queues or get_settings().queue,
                "--loglevel",
                loglevel,
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--without-mingle",
                "--without-gossip",
            ]
        )
    finally:
        reconciler.terminate()


@click.group()
def queue():
    """Submit jobs to the workers (the in-process commands have the same flags)."""


def _split_sweep(values: dict) -> tuple[dict, dict, dict]:
    """Separate plain values from comma lists (grid) and low:high[:log] ranges (random search)."""
    base, grid, ranges = {}, {}, {}
    for key, value in values.items():
        if isinstance(value, str) and "," in value and key not in ("data_dir", "pretrained"):
            grid[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, str) and key in NUMERIC and (m := RANGE.match(value)):
            ranges[key] = {"low": float(m[1]), "high": float(m[2]), "log": bool(m[3])}
        else:
            base[key] = value
    return base, grid, ranges


def _as_user(client, user: str, priority: str, runs: int, sweep: bool = False) -> None:
    """A web UI user (one the users file knows) gets the same role and limit checks here, with the same words."""
    from worker.users import Refused, UserStore, check_submit

    account = UserStore().get(user)
    if account is None:
        return  # an operator holding the queue's credentials, not a UI user
    try:
        check_submit(account, priority=priority, runs=runs, sweep=sweep, active=lambda: client.active_jobs(user))
    except Refused as exc:
        click.echo(f"error: {exc.message}", err=True)
        emit({"error": exc.message, "limit": exc.limit, "status": exc.status})
        sys.exit(1)


def _follow(client, run_id: str, sweep: bool) -> dict:
    """Draw the job's progress until it ends; return its summary."""
    bars = ProgressBars()

    def show(job):
        if sweep:
            children = client.list_jobs(sweep=run_id)
            done = sum(c.done for c in children)
            bars({"phase": "decoding", "done": done, "total": len(children)})  # a plain counter bar
        elif job.progress and job.progress.get("phase") in ("decoding", "predicting", "training"):
            bars(job.progress)

    try:
        job = client.wait(run_id, on_progress=show, poll=1.0)
    finally:
        bars.close()
    summary = (job.progress or {}).get("summary") or {"run_id": run_id}
    summary.update(status=job.status)
    if job.job_type == "sweep":
        summary.update(
            best_child_run_id=job.tags.get(Tag.BEST_CHILD_RUN_ID),
            score=job.metrics.get(BEST_SELECTION_METRIC),
        )
    if job.status != "FINISHED":
        click.echo(f"error: job {run_id} ended {job.status}: {job.failure or 'see its MLflow run'}", err=True)
        emit(summary)
        sys.exit(1)
    return summary


@queue.command("train")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None, help="start from a preset")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.option(
    "--name", default=None, help="the run's (or sweep's) name [default: from its settings, e.g. 'r18 64px lr1e-3']"
)
@click.option(
    "--search",
    type=click.Choice(["grid", "random", "tpe"]),
    default=None,
    help="sweep strategy (default: lists make a grid, ranges a random search)",
)
@click.option(
    "--samples", type=int, default=8, show_default=True, help="random search and tpe: number of runs (trial budget)"
)
@click.option("--sweep-seed", type=int, default=0, show_default=True, help="random search and tpe: seed")
@click.option(
    "--pruner",
    type=click.Choice(["none", "median", "asha"]),
    default="none",
    show_default=True,
    help="sweep: stop unpromising runs early",
)
@click.option("--pruning-warmup-epochs", type=int, default=1, show_default=True, help="sweep: epochs before pruning")
@click.option(
    "--objective", default="val_f1_weighted", show_default=True, help="sweep: the validation metric runs are ranked by"
)
@click.option("--max-concurrent", type=int, default=2, show_default=True, help="sweep: runs at the same time")
@click.option("--promote-best", is_flag=True, help="sweep: promote the best run if it beats the champion")
@click.option("--wait", is_flag=True, help="follow the job with a progress bar until it ends")
@params_options(TrainParams)
@handle_errors
def queue_train(
    preset,
    priority,
    name,
    search,
    samples,
    sweep_seed,
    pruner,
    pruning_warmup_epochs,
    objective,
    max_concurrent,
    promote_best,
    wait,
    **values,
):
    """Queue a training job; `--learning-rate 1e-4,3e-4` (lists) or `1e-5:1e-3:log` (ranges) make a sweep."""
    from worker.client import JobClient

    base, grid, ranges = _split_sweep({k: v for k, v in values.items() if v is not None})
    client = JobClient()
    user = os.environ.get("USER", "cli")
    if grid or ranges:
        from worker.sweep import sweep_params

        sweep = sweep_params(
            {
                "base": {**PRESETS.get(preset or "", {}), **base},
                "name": name,
                "strategy": search or ("random" if ranges else "grid"),
                "grid": grid,
                "ranges": ranges,
                "samples": samples,
                "seed": sweep_seed,
                "pruner": pruner,
                "pruning_warmup_epochs": pruning_warmup_epochs,
                "objective": objective,
                "max_concurrent": max_concurrent,
                "promote_best": promote_best,
            }
        )
        _as_user(client, user, priority, sweep.check(), sweep=True)
        run_id = client.submit_sweep(sweep, priority=priority, submitted_by=user)
    else:
        params = train_params(preset, **base)
        if params.cv_folds is not None:
            from mlcore.split import check_folds

            check_folds(params)  # before a run exists
        _as_user(client, user, priority, 1)
        run_id = client.submit_train(params, priority=priority, submitted_by=user, run_name=name)
    link = mlflow_ui.run_url(client.settings.tracking_uri, client.experiment_of(run_id), run_id)
    click.echo(f"queued {run_id}; follow it with `dataslayer jobs` or in the MLflow UI: {link}", err=True)
    emit(_follow(client, run_id, bool(grid or ranges)) if wait else {"run_id": run_id, "status": "SCHEDULED"})


@queue.command("predict")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.option("--wait", is_flag=True, help="follow the job until it ends")
@params_options(PredictParams)
@handle_errors
def queue_predict(priority, wait, **values):
    """Queue a prediction job (the submission is written by the worker and logged to its run)."""
    from worker.client import JobClient

    params = build(PredictParams, {k: v for k, v in values.items() if v is not None})
    client = JobClient()
    user = os.environ.get("USER", "cli")
    _as_user(client, user, priority, 1)
    run_id = client.submit_predict(params, priority=priority, submitted_by=user)
    emit(_follow(client, run_id, False) if wait else {"run_id": run_id, "status": "SCHEDULED"})


@click.command()
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), default=None)
@click.option("--type", "job_type", type=click.Choice(JOB_TYPES), default=None)
@click.option("--sweep", default=None, help="children of this sweep's run id")
@click.option("--limit", default=30, show_default=True)
@handle_errors
def jobs(status, job_type, sweep, limit):
    """List queued, running and finished jobs (from MLflow) with their live progress."""
    from worker.client import JobClient

    status = status.upper() if status else None
    listed = JobClient().list_jobs(status=status, job_type=job_type, sweep=sweep, limit=limit, with_progress=True)
    for j in listed:
        p = j.progress or {}
        where = f"epoch {p.get('epoch')}/{p.get('epochs')}" if p.get("phase") == "training" else p.get("phase", "")
        f1 = j.metrics.get(BEST_SELECTION_METRIC, j.metrics.get(SELECTION_METRIC))
        click.echo(
            f"{j.run_id}  {j.job_type:<7} {j.state:<9} {where:<14} val_f1w {'-' if f1 is None else f'{f1:.4f}':<7} "
            f"{j.priority:<6} {j.submitted_by:<10} {j.name}"
        )
    emit({"jobs": len(listed)})


@click.command()
@click.argument("run_id")
@handle_errors
def cancel(run_id):
    """Cancel a job: a queued one never starts, a running one stops within seconds and frees its GPU."""
    from worker.client import JobClient

    emit(JobClient().cancel(run_id, by=os.environ.get("USER", "cli")))


@click.group()
def sweep():
    """Change an ended sweep: re-run its failed or killed trials, or extend it by more trials."""


def _sweep_change(client, parent: str, change, wait: bool) -> None:
    """Run a re-run or extend with the caller's role and limits (a web UI user's), report it, follow it if asked."""
    from worker.rerun import SweepRefused, find_sweep
    from worker.users import Refused, UserStore, check_sweep_change

    user = os.environ.get("USER", "cli")
    account = UserStore().get(user)

    def check(runs: int, trials: int) -> None:
        if account is not None:  # else an operator holding the queue's credentials
            owner = find_sweep(client, parent).submitted_by
            check_sweep_change(account, owner, runs=runs, total=trials, active=lambda: client.active_jobs(user))

    try:
        result = change(check)
    except (SweepRefused, Refused) as exc:
        click.echo(f"error: {exc.message}", err=True)
        emit({"error": exc.message, "status": exc.status})
        sys.exit(1)
    click.echo(f"sweep {parent} runs again; follow it with `dataslayer jobs --sweep {parent}`", err=True)
    emit({**result, **_follow(client, parent, True)} if wait else result)


@sweep.command("rerun")
@click.argument("parent")
@click.option("--failed", is_flag=True, help="re-run the trials that failed")
@click.option("--killed", is_flag=True, help="re-run the trials that were cancelled (killed)")
@click.option(
    "--pruned", is_flag=True, help="re-run the trials the pruner stopped (the pruner judges their re-runs again)"
)
@click.option("--wait", is_flag=True, help="follow the sweep until it ends again")
@handle_errors
def sweep_rerun(parent, failed, killed, pruned, wait):
    """Re-run an ended sweep's failed and killed trials (default) as new children of the same sweep."""
    from worker.client import JobClient

    states = [s for s, chosen in (("failed", failed), ("killed", killed), ("pruned", pruned)) if chosen]
    client = JobClient()
    _sweep_change(client, parent, lambda check: client.rerun_sweep(parent, states or None, check), wait)


@sweep.command("extend")
@click.argument("parent")
@click.option("--samples", type=int, required=True, help="trials to add (random search and tpe)")
@click.option("--wait", is_flag=True, help="follow the sweep until it ends again")
@handle_errors
def sweep_extend(parent, samples, wait):
    """Add N trials to an ended random or tpe sweep (tpe proposes them from the whole history)."""
    from worker.client import JobClient

    client = JobClient()
    _sweep_change(client, parent, lambda check: client.extend_sweep(parent, samples, check), wait)


COMMANDS = (worker, queue, jobs, cancel, sweep)
