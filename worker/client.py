"""The one client the CLI, the web UI and the tests use: submit, cancel, inspect and list jobs.

Submitting validates the parameters (the same pydantic models as the CLI), creates the job's
MLflow run in status SCHEDULED with its tags and params, and enqueues a task carrying the run id
and the parameters as JSON. Nothing is created when the queue is unavailable, and a failed
enqueue deletes the run it created, so a submit never leaves a job half-way.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Param, ViewType

from mlcore.errors import ParamsError
from mlcore.params import PredictParams, TrainParams, build
from worker.settings import Settings, get_settings
from worker.state import PREFIX, JobState, connect
from worker.sweep import SweepParams, sweep_params

PRIORITIES = ("high", "normal", "low")
STATUSES = ("SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED")
JOB_TYPES = ("train", "predict", "sweep")
RUN_ID = re.compile(r"[0-9a-f]{32}")
TERMINAL = ("FINISHED", "FAILED", "KILLED")
TAG = "dataslayer."
PARAMS_TAG = TAG + "params_json"  # the job's parameters as the task received them: lets the reconciler requeue it


class QueueUnavailable(ConnectionError):
    """Redis cannot be reached; nothing was queued."""


class TrackingUnavailable(ConnectionError):
    """The MLflow server cannot be reached; nothing was queued."""


@dataclass
class Job:
    """What a UI shows about one job: its MLflow run plus live progress from Redis."""

    run_id: str
    name: str
    job_type: str
    status: str
    experiment_id: str
    priority: str = "normal"
    submitted_by: str = ""
    parent_run_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    progress: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """Whether the job has ended (finished, failed or cancelled)."""
        return self.status in TERMINAL

    @property
    def failure(self) -> str | None:
        """Why the job failed or was cancelled."""
        return self.tags.get(TAG + "failure")

    @property
    def warning(self) -> str | None:
        """A note the job left for its user (e.g. a batch too large for the dataset)."""
        return self.tags.get(TAG + "warning")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the API and `--wait` print this)."""
        return {**asdict(self), "done": self.done, "failure": self.failure, "warning": self.warning}


class JobClient:
    """Talks to the queue (Redis) and the state of record (MLflow)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.mlflow = MlflowClient(tracking_uri=self.settings.tracking_uri)
        self.redis = connect(self.settings.redis_url)

    # -- submitting ----------------------------------------------------------------------------
    def submit_train(self, values: dict | TrainParams, **kwargs) -> str:
        """Queue one training job; returns its run id."""
        params = values if isinstance(values, TrainParams) else build(TrainParams, values)
        return self._submit("train", params, params.experiment_name, **kwargs)

    def submit_predict(self, values: dict | PredictParams, **kwargs) -> str:
        """Queue one prediction job; returns its run id."""
        params = values if isinstance(values, PredictParams) else build(PredictParams, values)
        return self._submit("predict", params, params.experiment_name, **kwargs)

    def submit_sweep(
        self,
        values: dict | SweepParams,
        *,
        priority: str = "normal",
        submitted_by: str = "cli",
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a sweep: a parent run and one child run per combination; returns the parent's run id."""
        sweep = values if isinstance(values, SweepParams) else sweep_params(values)
        children = sweep.children()  # every child validated before anything is created
        self._check_priority(priority)

        def create() -> str:
            experiment = children[0].experiment_name
            parent = self._create_run(
                experiment,
                "sweep",
                f"sweep of {len(children)}",
                priority,
                submitted_by,
                {
                    TAG + "sweep_size": str(len(children)),
                    TAG + "max_concurrent": str(sweep.max_concurrent),
                    TAG + "promote_best": str(sweep.promote_best).lower(),
                    PARAMS_TAG: sweep.model_dump_json(),
                },
            )
            spec = {
                "strategy": sweep.strategy,
                "runs": len(children),
                "max_concurrent": sweep.max_concurrent,
                "promote_best": sweep.promote_best,
                "grid": json.dumps(sweep.grid),
                "samples": sweep.samples,
                "seed": sweep.seed,
                "ranges": json.dumps({k: r.model_dump() for k, r in sweep.ranges.items()}),
            }
            self.mlflow.log_batch(parent, params=[Param(k, str(v)[:6000]) for k, v in spec.items()])
            for i, child in enumerate(children):
                run_id = self._create_run(
                    experiment,
                    "train",
                    f"sweep child {i + 1}",
                    priority,
                    submitted_by,
                    {"mlflow.parentRunId": parent, TAG + "sweep_index": str(i)},
                )
                self._record_params(run_id, child)
            self._send("sweep", parent, {}, "high", on_error=lambda: self._delete([parent]))
            return parent

        return self._once(idempotency_key, create)

    def _submit(
        self,
        job_type: str,
        params,
        experiment: str,
        *,
        priority: str = "normal",
        submitted_by: str = "cli",
        idempotency_key: str | None = None,
        run_name: str | None = None,
    ) -> str:
        self._check_priority(priority)

        def create() -> str:
            run_id = self._create_run(experiment, job_type, run_name, priority, submitted_by, {})
            self._record_params(run_id, params)
            self._send(
                job_type, run_id, params.model_dump(mode="json"), priority, on_error=lambda: self._delete([run_id])
            )
            return run_id

        return self._once(idempotency_key, create)

    def _once(self, key: str | None, create: Callable[[], str]) -> str:
        """Run `create` once per idempotency key (a double-clicked form queues one job)."""
        self.check_queue()
        if not key:
            return create()
        slot = f"{PREFIX}:submit:{key}"
        if self.redis.set(slot, "pending", nx=True, ex=24 * 3600):
            try:
                run_id = create()
            except BaseException:
                self.redis.delete(slot)
                raise
            self.redis.set(slot, run_id, ex=24 * 3600)
            return run_id
        for _ in range(100):  # the first submit is still creating its run
            value = self.redis.get(slot)
            if value and value != "pending":
                return value
            time.sleep(0.1)
        raise QueueUnavailable("a submit with the same key is still in progress")

    def _check_priority(self, priority: str) -> None:
        if priority not in PRIORITIES:
            raise ParamsError("priority", f"expected one of {', '.join(PRIORITIES)}")

    def check_queue(self) -> None:
        """Raise QueueUnavailable unless Redis answers."""
        try:
            self.redis.ping()
        except Exception as exc:  # noqa: BLE001 - any connection error
            raise QueueUnavailable(f"the queue (Redis at {self.settings.redis_url}) is unavailable: {exc}") from None

    def _experiment_id(self, name: str) -> str:
        exp = self.mlflow.get_experiment_by_name(name)
        return exp.experiment_id if exp else self.mlflow.create_experiment(name)

    def _create_run(
        self,
        experiment: str,
        job_type: str,
        run_name: str | None,
        priority: str,
        submitted_by: str,
        tags: dict[str, str],
    ) -> str:
        from mlcore.tracking import base_tags

        try:
            run = self.mlflow.create_run(
                self._experiment_id(experiment),
                run_name=run_name,
                tags={
                    **base_tags(),
                    TAG + "job_type": job_type,
                    TAG + "queue": self.settings.queue,
                    TAG + "priority": priority,
                    TAG + "submitted_by": submitted_by,
                    TAG + "submitted_at": f"{time.time():.3f}",
                    "mlflow.user": submitted_by,
                    **tags,
                },
            )
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, server errors
            raise TrackingUnavailable(
                f"the tracking server ({self.settings.tracking_uri}) is unavailable: {exc}"
            ) from None
        if job_type != "sweep":
            self.mlflow.update_run(run.info.run_id, status="SCHEDULED")
        return run.info.run_id

    def _record_params(self, run_id: str, params) -> None:
        self.mlflow.log_batch(run_id, params=[Param(k, v) for k, v in params.to_log().items()])
        self.mlflow.set_tag(run_id, PARAMS_TAG, params.model_dump_json())

    def _send(self, job_type: str, run_id: str, params: dict, priority: str, on_error: Callable[[], None]) -> None:
        try:
            enqueue(job_type, run_id, params, priority, self.settings)
        except Exception as exc:  # noqa: BLE001
            on_error()
            raise QueueUnavailable(f"could not queue the job: {exc}") from None

    def _delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self.mlflow.delete_run(run_id)
            except Exception:  # noqa: BLE001 - best effort: the run is SCHEDULED and never started
                pass

    # -- cancelling ----------------------------------------------------------------------------
    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one never starts; a running one stops within seconds; a sweep cancels its children."""
        job = self.job(run_id, with_progress=False)
        if job.done:
            return {"run_id": run_id, "status": job.status, "cancelled": False}
        self.check_queue()
        JobState(self.redis, run_id).request_cancel()
        if job.job_type == "sweep":
            for child in self.list_jobs(sweep=run_id):
                if not child.done:
                    self.cancel(child.run_id)
            enqueue("sweep", run_id, {}, "high", self.settings)  # the scheduler ends the parent
        elif job.status == "SCHEDULED" and not JobState(self.redis, run_id).lease_owner():
            self.mlflow.set_tag(run_id, TAG + "failure", "cancelled before it started")
            self.mlflow.set_terminated(run_id, "KILLED")
        return {"run_id": run_id, "status": self.job(run_id, with_progress=False).status, "cancelled": True}

    # -- reading -------------------------------------------------------------------------------
    def job(self, run_id: str, *, with_progress: bool = True) -> Job:
        """One job by run id."""
        return self._to_job(self.mlflow.get_run(run_id), with_progress)

    def _to_job(self, run, with_progress: bool) -> Job:
        tags = run.data.tags
        progress = None
        if with_progress:
            try:
                progress = JobState(self.redis, run.info.run_id).progress()
            except Exception:  # noqa: BLE001 - progress is optional when Redis is down
                progress = None
        return Job(
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            job_type=tags.get(TAG + "job_type", "train"),
            status=run.info.status,
            experiment_id=run.info.experiment_id,
            priority=tags.get(TAG + "priority", "normal"),
            submitted_by=tags.get(TAG + "submitted_by", ""),
            parent_run_id=tags.get("mlflow.parentRunId"),
            start_time=run.info.start_time,
            end_time=run.info.end_time,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(tags),
            progress=progress,
        )

    def list_jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        sweep: str | None = None,
        limit: int = 200,
        with_progress: bool = False,
    ) -> list[Job]:
        """Jobs newest first, filtered by MLflow status, job type or sweep parent."""
        # Values go into an MLflow filter string: accept only known words and run ids.
        if status is not None and status not in STATUSES:
            raise ParamsError("status", f"expected one of {', '.join(STATUSES)}")
        if job_type is not None and job_type not in JOB_TYPES:
            raise ParamsError("job_type", f"expected one of {', '.join(JOB_TYPES)}")
        if sweep is not None and not RUN_ID.fullmatch(sweep):
            raise ParamsError("sweep", "expected a run id (32 hexadecimal digits)")
        filters = [f"tags.`{TAG}job_type` != ''"]
        if status:
            filters.append(f"attributes.status = '{status}'")
        if job_type:
            filters.append(f"tags.`{TAG}job_type` = '{job_type}'")
        if sweep:
            filters.append(f"tags.`mlflow.parentRunId` = '{sweep}'")
        experiments = [e.experiment_id for e in self.mlflow.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        if not experiments:
            return []
        runs = self.mlflow.search_runs(
            experiments, " and ".join(filters), max_results=limit, order_by=["attributes.start_time DESC"]
        )
        return [self._to_job(r, with_progress) for r in runs]

    def log_tail(self, run_id: str, n: int = 200) -> list[str]:
        """The last lines of the job's log."""
        return JobState(self.redis, run_id).log_tail(n)

    def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Block until the job ends (or the timeout passes), reporting progress on the way."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(run_id)
            if on_progress is not None:
                on_progress(job)
            if job.done or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(poll)


def enqueue(
    job_type: str, run_id: str, params: dict, priority: str = "normal", settings: Settings | None = None
) -> None:
    """Send the task of a job (by name, so no task code is imported here) to the queue of `settings`."""
    from worker.celery_app import PRIORITIES as STEPS

    settings = settings or get_settings()
    args = [run_id] if job_type == "sweep" else [run_id, params]
    _producer(settings.redis_url).send_task(
        f"dataslayer.{job_type}", args=args, priority=STEPS[priority], queue=settings.queue
    )


@lru_cache(maxsize=8)
def _producer(redis_url: str):
    """A Celery app for sending, per broker URL (settings may change between tests, or per tenant)."""
    from worker.celery_app import make_app

    app = make_app()
    app.conf.broker_url = app.conf.result_backend = redis_url
    return app
