"""Running one queued job inside a worker process: checks, lease, heartbeat, the mlcore job, the end.

A task may be delivered more than once (Celery on Redis is at-least-once), so before any work
the job checks its MLflow run: a finished run, a run another live worker holds, or a cancelled
job does nothing. The lease is held for the whole job and renewed by a heartbeat thread, which
also publishes progress and turns cancel and drain requests into events the training loop reads.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from mlcore.errors import Cancelled, ParamsError, Suspended
from mlcore.hooks import JobHooks
from mlcore.names import QUEUE_WAIT_METRIC, TERMINAL, Tag
from worker.settings import get_settings, worker_identity
from worker.state import Heartbeat, JobState, connect

log = logging.getLogger(__name__)


class Preempted(Suspended):
    """The worker is shutting down: the job goes back to the queue and resumes from its checkpoint."""

    status = "SCHEDULED"


class LeaseLost(Suspended):
    """Another worker may own the job now: stop without touching its run."""

    status = None


class _LogToRedis(logging.Handler):
    """Copies the job's log records into its Redis log tail (the UI shows it live)."""

    def __init__(self, state: JobState):
        super().__init__(logging.INFO)
        self.state = state
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.state.append_log(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the job
            pass


def _progress_logger(heartbeat: Heartbeat):
    def on_progress(event: dict[str, Any]) -> None:
        heartbeat.publish(event)
        if event["phase"] == "epoch_end":
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in event.get("metrics", {}).items())
            log.info("epoch %s/%s: %s", event["epoch"], event["epochs"], metrics)
        elif event["phase"] in ("decoding", "predicting") and event.get("done") == event.get("total"):
            log.info("%s: %s images", event["phase"], event.get("total"))

    return on_progress


def _stop_check(heartbeat: Heartbeat):
    def should_stop() -> bool:
        if heartbeat.lease_lost.is_set():
            raise LeaseLost("the job's lease expired; another worker may run it now")
        if heartbeat.preempted.is_set():
            raise Preempted("the worker is shutting down")
        return heartbeat.cancelled.is_set()

    return should_stop


def _quietly(fn, default=None):
    """Call fn, tolerating a Redis outage: the job's result lives in MLflow, these keys only help."""
    try:
        return fn()
    except redis.RedisError as exc:
        log.warning("redis unavailable: %s", exc)
        return default


def _end_run(client: MlflowClient, run_id: str, status: str, reason: str) -> None:
    client.set_tag(run_id, Tag.FAILURE, reason)
    client.set_terminated(run_id, status)


def _data_bytes() -> int:
    """This process's data segment (heap and private writable mappings): what RLIMIT_DATA counts."""
    with open("/proc/self/status") as f:
        return int(re.search(r"^VmData:\s+(\d+) kB", f.read(), re.M)[1]) * 1024


def _cap_memory(params: dict) -> None:
    """Apply DATASLAYER_JOB_MEMORY_MB to this pool child (one per job) before the job allocates; CPU jobs only."""
    cap_mb = get_settings().job_memory_mb
    if not cap_mb:
        return
    import torch

    device = str(params.get("device") or "auto")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        log.warning("DATASLAYER_JOB_MEMORY_MB ignored: the job runs on CUDA, whose driver maps host memory of its own")
        return
    # RLIMIT_DATA (Linux >= 4.7) counts the heap and private writable mappings: tensors, arrays, the
    # image cache. RLIMIT_AS would also count shared libraries and reserved address space: 3.5 GB
    # against 0.9 GB of data once torch is imported, tens of GB once CUDA starts. The limit is the
    # usage now (what this child inherited from the worker, and torch) plus the cap, so the cap is
    # what the job itself adds, whatever the installation's imports take.
    used = _data_bytes()
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = used + cap_mb * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    log.info("job memory capped at %d MB above the %d MB in use (DATASLAYER_JOB_MEMORY_MB)", cap_mb, used >> 20)


def _execute(job_type: str, run_id: str, params: dict, hooks: JobHooks, state: JobState) -> dict:
    """Run the mlcore job inside the run's tracker; the log tail is attached to the run whatever happens."""
    import mlflow

    from mlcore.tracking import MlflowTracker

    s = get_settings()
    run = MlflowClient().get_run(run_id)
    experiment = mlflow.get_experiment(run.info.experiment_id).name
    with MlflowTracker(experiment=experiment, run_id=run_id) as tracker:
        try:
            summary = _dispatch(job_type, run_id, params, hooks, tracker)
            tracker.log_summary(summary)
            return summary
        except SoftTimeLimitExceeded:
            limit = s.train_time_limit if job_type == "train" else s.predict_time_limit
            raise TimeoutError(
                f"the job ran past its time limit ({limit} s; DATASLAYER_{job_type.upper()}_TIME_LIMIT)"
            ) from None
        finally:
            _attach_log(tracker, state)


def _attach_log(tracker, state: JobState) -> None:
    """Attach the job's log tail to its run; a failure here is logged, never raised over the job's own error."""
    try:
        tail = _quietly(lambda: state.log_tail(500), [])
        if tail:
            tracker.log_text("\n".join(tail) + "\n", "logs/job.log")
    except Exception as exc:  # noqa: BLE001 - the first error is the one the run records
        log.warning("the job's log tail was not attached to its run: %s", exc)


def _dispatch(job_type: str, run_id: str, params: dict, hooks: JobHooks, tracker) -> dict:
    """Validate the parameters again (every entrance does) and call the job function."""
    from mlcore.cache import default_cache_dir
    from mlcore.params import PredictParams, TrainParams, build

    if job_type == "train":
        from mlcore.train import run_training

        return run_training(
            build(TrainParams, params),
            tracker=tracker,
            hooks=hooks,
            checkpoint_dir=get_settings().checkpoint_root / run_id,
            cache_dir=default_cache_dir(),
        )
    if job_type == "predict":
        from mlcore.predict import run_prediction
        from mlcore.registry import Registry

        # The submission's home is the run's artifacts; on the worker it is written to a folder of its own,
        # so concurrent predictions never overwrite each other whatever `output` says.
        pred = build(PredictParams, params)
        pred = pred.model_copy(update={"output": get_settings().state_dir / "submissions" / run_id / pred.output.name})
        model, info = Registry(get_settings().tracking_uri).load(pred.model_uri)
        tracker.set_tags({Tag.MODEL_NAME: str(info["name"]), Tag.MODEL_VERSION: str(info["version"])})
        return run_prediction(pred, model, info, tracker=tracker, hooks=hooks, cache_dir=default_cache_dir())
    raise ValueError(f"unknown job type {job_type!r}")


def _sweep_pruner(client: MlflowClient, run_id: str, parent_id: str, params: dict):
    """The should_prune hook of a sweep child whose sweep has a pruner (worker/pruning.py), else never prune."""
    from worker.client import JobClient
    from worker.pruning import should_prune_hook
    from worker.sweep import SweepParams

    parent = client.get_run(parent_id)
    sweep = SweepParams.model_validate_json(parent.data.tags[Tag.PARAMS_JSON])
    if sweep.pruner == "none":
        return JobHooks().should_prune
    return should_prune_hook(JobClient(), run_id, parent_id, sweep, int(params.get("epochs", 1)))


def check_locations(params, settings=None) -> None:
    """The data-root rule: datasets only under DATASLAYER_DATA_ROOT, weights files only from there or STATE/weights."""
    s = settings or get_settings()
    root = s.data_root.resolve()
    data_dir = Path(params.data_dir).resolve()
    if not data_dir.is_relative_to(root):
        raise ParamsError("data_dir", f"{data_dir} lies outside the data root {root} (DATASLAYER_DATA_ROOT)")
    pretrained = getattr(params, "pretrained", "none")
    if pretrained not in ("imagenet", "none"):
        allowed = (root, (s.state_dir / "weights").resolve())
        if not any(Path(pretrained).resolve().is_relative_to(d) for d in allowed):
            raise ParamsError(
                "pretrained", f"weights are read only from {allowed[0]} or {allowed[1]}, not {pretrained}"
            )
    output = getattr(params, "output", None)
    if output is not None and output.name in ("", ".", ".."):
        raise ParamsError("output", "expected a file name")


def validate_message(job_type: str, params: Any, run) -> Any:
    """A queued message checked again as its entrance checked it: the parameter model, the data-root rule, and the
    parameters recorded on its run at submission (a message pushed straight into Redis carries others)."""
    from mlcore.params import PredictParams, TrainParams, build

    models = {"train": TrainParams, "predict": PredictParams}
    if job_type not in models:
        raise ParamsError("job_type", f"expected one of {', '.join(models)}")
    if not isinstance(params, dict):
        raise ParamsError("params", "expected an object of parameters")
    validated = build(models[job_type], params)
    check_locations(validated)
    recorded = json.loads(run.data.tags.get(Tag.PARAMS_JSON) or "null")
    if recorded != params:
        changed = sorted(k for k in set(params) | set(recorded or {}) if params.get(k) != (recorded or {}).get(k))
        raise ParamsError((changed or ["params"])[0], "differs from the parameters recorded on the run at submission")
    return validated


def run_job(job_type: str, run_id: str, params: dict, *, requeue, worker: str) -> dict:
    """Run one delivery of a job on `worker` (its Celery node name); `requeue()` puts it back after a preemption."""
    s = get_settings()
    client = MlflowClient()
    state = JobState(connect(s.redis_url), run_id)
    run = client.get_run(run_id)
    if run.info.status in TERMINAL:
        return {"run_id": run_id, "skipped": f"run already {run.info.status}"}
    try:
        validate_message(job_type, params, run)
    except ParamsError as exc:  # never run: fail the run, naming the field
        reason = f"refused message: invalid parameters: {exc}"
        log.warning("job %s %s", run_id, reason)
        _end_run(client, run_id, "FAILED", reason)
        _quietly(lambda: state.append_log(reason))
        return {"run_id": run_id, "failed": reason}
    if state.cancel_requested():
        _end_run(client, run_id, "KILLED", "cancelled before it started")
        return {"run_id": run_id, "skipped": "cancelled"}
    owner = f"{worker_identity()}:{uuid.uuid4().hex[:8]}"
    if not state.acquire_lease(owner, s.lease_ttl):
        return {"run_id": run_id, "skipped": f"running under {state.lease_owner()}"}
    heartbeat = Heartbeat(state, owner, ttl=s.lease_ttl, every=s.heartbeat_s, worker=worker)
    handler = _LogToRedis(state)
    logging.getLogger().addHandler(handler)
    # SIGTERM (a deploy, or Celery cancelling jobs when the broker connection is lost) checkpoints
    # the job out and puts it back on the queue instead of killing it mid-step.
    previous = signal.signal(signal.SIGTERM, lambda *_: heartbeat.preempted.set())
    try:
        attempt = state.next_attempt()
        if attempt > s.max_attempts:
            reason = (
                f"gave up after {s.max_attempts} attempts: the job's process died each time (out of memory? a crash?)"
            )
            _end_run(client, run_id, "FAILED", reason)
            return {"run_id": run_id, "failed": reason}
        now = time.time()
        # MLflow's run duration counts from submission; the queue wait is recorded on its own (once).
        waited = [Metric(QUEUE_WAIT_METRIC, round(now - run.info.start_time / 1000, 3), int(now * 1000), 0)]
        client.log_batch(
            run_id,
            metrics=waited if attempt == 1 else [],
            tags=[
                RunTag(Tag.ATTEMPT, str(attempt)),
                RunTag(Tag.WORKER, owner),
                RunTag(Tag.STARTED_AT, f"{now:.3f}"),
            ],
        )
        # RUNNING from the moment the lease is ours: if this process dies before the job's own
        # tracker starts, the reconciler still finds the run (it looks for RUNNING runs without a lease).
        client.update_run(run_id, status="RUNNING")
        heartbeat.attempt = attempt
        heartbeat.publish({"phase": "starting"})  # replaces the snapshot an earlier attempt left
        heartbeat.start()
        log.info("%s job %s started on %s (attempt %d)", job_type, run_id, owner, attempt)
        _cap_memory(params)
        hooks = JobHooks(progress=_progress_logger(heartbeat), should_stop=_stop_check(heartbeat))
        if job_type == "train" and run.data.tags.get(Tag.PARENT_RUN_ID):
            hooks.should_prune = _sweep_pruner(client, run_id, run.data.tags[Tag.PARENT_RUN_ID], params)
        t0 = time.time()
        summary = _execute(job_type, run_id, params, hooks, state)
        heartbeat.publish({"phase": "done", "summary": summary, "seconds": round(time.time() - t0, 1)})
        shutil.rmtree(s.checkpoint_root / run_id, ignore_errors=True)
        return summary
    except Preempted:
        _quietly(state.forgive_attempt)
        heartbeat.publish({"phase": "queued", "note": "preempted by a worker shutdown; resumes from its checkpoint"})
        # The lease goes first: a worker that takes the requeued message at once must not find it held.
        heartbeat.stop()
        _quietly(lambda: state.release_lease(owner))
        try:
            requeue()
        except Exception as exc:  # noqa: BLE001 - the broker is down: the reconciler requeues it later
            client.set_tag(run_id, Tag.REQUEUE_PENDING, "1")
            log.warning("job %s preempted; requeue failed (%s), left to the reconciler", run_id, exc)
            return {"run_id": run_id, "requeued": False}
        log.info("job %s preempted and requeued", run_id)
        return {"run_id": run_id, "requeued": True}
    except LeaseLost as exc:
        log.warning("job %s stopped: %s", run_id, exc)
        return {"run_id": run_id, "stopped": str(exc)}
    except Cancelled:
        heartbeat.publish({"phase": "cancelled"})
        return {"run_id": run_id, "cancelled": True}
    except ParamsError as exc:
        _end_run(client, run_id, "FAILED", f"invalid parameters: {exc}")
        return {"run_id": run_id, "failed": str(exc)}
    except Exception as exc:  # the run is already FAILED with its traceback; report, do not crash the child
        log.exception("job %s failed", run_id)
        heartbeat.publish({"phase": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
        return {"run_id": run_id, "failed": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        signal.signal(signal.SIGTERM, previous)
        heartbeat.stop()
        logging.getLogger().removeHandler(handler)
        _quietly(lambda: state.release_lease(owner))  # with Redis down, the lease simply expires
