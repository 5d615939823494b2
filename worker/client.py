"""The one client the CLI, the web UI and the tests use: submit, cancel, inspect and list jobs, read their records.

Submitting validates the parameters (the same pydantic models as the CLI), creates the job's
MLflow run in status SCHEDULED with its tags and params, and enqueues a task carrying the run id
and the parameters as JSON. Nothing is created when the queue is unavailable, and a failed
enqueue deletes the run it created, so a submit never leaves a job half-way. Every call to Redis
or MLflow is translated here into the two unavailable errors (`worker.errors`).
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Param, ViewType

from mlcore.errors import ParamsError
from mlcore.names import JOB_TYPES, PRIORITIES, QUEUE_NAME_RE, RUN_ID_RE, STATUSES, Tag
from mlcore.params import PredictParams, TrainParams, build
from mlcore.registry import Registry
from mlcore.runname import given_name, run_label, sweep_label
from worker.broker import Broker, enqueue
from worker.errors import QueueUnavailable, TrackingUnavailable, queue_calls, tracking_calls
from worker.job import Job
from worker.jobs import check_locations
from worker.settings import Settings, get_settings, use_tracking_credentials
from worker.state import PREFIX, JobState, connect
from worker.sweep import SweepParams, sweep_params

__all__ = ["Job", "JobClient", "QueueUnavailable", "TrackingUnavailable"]


class JobClient:
    """Talks to the queue (Redis) and the state of record (MLflow)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        use_tracking_credentials(self.settings)  # MLflow's client reads its log-in from the environment only
        self.mlflow = MlflowClient(tracking_uri=self.settings.tracking_uri)
        self.registry = Registry(self.settings.tracking_uri)
        self.redis = connect(self.settings.redis_url)

    def tracking(self):
        """Context for calls to the MLflow server (an outage becomes TrackingUnavailable)."""
        return tracking_calls(self.settings.tracking_uri)

    def queue(self):
        """Context for calls to Redis (an outage becomes QueueUnavailable)."""
        return queue_calls(self.settings.redis_url)

    # -- submitting ----------------------------------------------------------------------------
    def submit_train(self, values: dict | TrainParams, **kwargs) -> str:
        """Queue one training job; returns its run id."""
        params = values if isinstance(values, TrainParams) else build(TrainParams, values)
        check_locations(params, self.settings)  # the workers refuse anything else: say so now
        kwargs["run_name"] = given_name(kwargs.get("run_name")) or run_label(params.model_dump())
        return self._submit("train", params, params.experiment_name, **kwargs)

    def submit_predict(self, values: dict | PredictParams, **kwargs) -> str:
        """Queue one prediction job; returns its run id."""
        params = values if isinstance(values, PredictParams) else build(PredictParams, values)
        check_locations(params, self.settings)
        kwargs["run_name"] = (
            given_name(kwargs.get("run_name")) or f"predict {params.model_uri.removeprefix('models:/')}"
        )
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
        size = sweep.check()  # every child (tpe: the search space) validated before anything is created
        # TPE children are created one by one as slots free up (worker/scheduler.py, worker/tpe.py)
        children = [] if sweep.strategy == "tpe" else sweep.children()
        for child in children or [sweep.child({}, "base")]:
            check_locations(child, self.settings)
        experiment = child.experiment_name  # every child shares the base's experiment
        self._check_priority(priority)

        def create() -> str:
            parent = self._create_run(
                experiment,
                "sweep",
                sweep.name or sweep_label(sweep.strategy, sweep.varied(), size),
                priority,
                submitted_by,
                {
                    Tag.SWEEP_SIZE: str(size),
                    Tag.MAX_CONCURRENT: str(sweep.max_concurrent),
                    Tag.PROMOTE_BEST: str(sweep.promote_best).lower(),
                    Tag.PARAMS_JSON: sweep.model_dump_json(),
                },
            )
            spec = {
                "strategy": sweep.strategy,
                "runs": size,
                "objective": sweep.objective,
                "pruner": sweep.pruner,
                "pruning_warmup_epochs": sweep.pruning_warmup_epochs,
                "max_concurrent": sweep.max_concurrent,
                "promote_best": sweep.promote_best,
                "grid": json.dumps(sweep.grid),
                "samples": sweep.samples,
                "seed": sweep.seed,
                "ranges": json.dumps({k: r.model_dump() for k, r in sweep.ranges.items()}),
            }
            with self.tracking():
                self.mlflow.log_batch(parent, params=[Param(k, str(v)[:6000]) for k, v in spec.items()])
            for i, child in enumerate(children):
                self.create_sweep_child(
                    parent, experiment, i, child, priority, submitted_by, run_name=sweep.child_name(i, child)
                )
            self._send("sweep", parent, {}, "high", on_error=lambda: self._delete([parent]))
            return parent

        return self._once(idempotency_key, create)

    def create_sweep_child(
        self,
        parent: str,
        experiment: str,
        index: int,
        params: TrainParams,
        priority: str,
        submitted_by: str,
        *,
        tags: dict[str, str] | None = None,
        run_name: str | None = None,
    ) -> str:
        """One child run of a sweep, SCHEDULED with its index and parameters (the scheduler enqueues it)."""
        run_id = self._create_run(
            experiment,
            "train",
            run_name or f"#{index + 1}",
            priority,
            submitted_by,
            {Tag.PARENT_RUN_ID: parent, Tag.SWEEP_INDEX: str(index), **(tags or {})},
        )
        self._record_params(run_id, params)
        return run_id

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
        with self.queue():
            claimed = self.redis.set(slot, "pending", nx=True, ex=24 * 3600)
        if claimed:
            try:
                run_id = create()
            except BaseException:
                with self.queue():
                    self.redis.delete(slot)
                raise
            with self.queue():
                self.redis.set(slot, run_id, ex=24 * 3600)
            return run_id
        for _ in range(100):  # the first submit is still creating its run
            with self.queue():
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
        with self.queue():
            self.redis.ping()

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

        with self.tracking():
            run = self.mlflow.create_run(
                self._experiment_id(experiment),
                run_name=run_name,
                tags={
                    **base_tags(),
                    Tag.JOB_TYPE: job_type,
                    Tag.QUEUE: self.settings.queue,
                    Tag.PRIORITY: priority,
                    Tag.SUBMITTED_BY: submitted_by,
                    Tag.SUBMITTED_AT: f"{time.time():.3f}",
                    Tag.USER: submitted_by,
                    **tags,
                },
            )
            if job_type != "sweep":
                self.mlflow.update_run(run.info.run_id, status="SCHEDULED")
        return run.info.run_id

    def _record_params(self, run_id: str, params) -> None:
        with self.tracking():
            self.mlflow.log_batch(run_id, params=[Param(k, v) for k, v in params.to_log().items()])
            self.mlflow.set_tag(run_id, Tag.PARAMS_JSON, params.model_dump_json())

    def _send(self, job_type: str, run_id: str, params: dict, priority: str, on_error: Callable[[], None]) -> None:
        try:
            enqueue(job_type, run_id, params, priority, self.settings)
        except Exception as exc:  # noqa: BLE001 - the broker refused or is gone: undo the run
            on_error()
            raise QueueUnavailable(f"could not queue the job: {str(exc).splitlines()[0][:300]}") from None

    def _delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self.mlflow.delete_run(run_id)
            except Exception:  # noqa: BLE001 - best effort: the run is SCHEDULED and never started
                pass

    # -- cancelling ----------------------------------------------------------------------------
    def cancel(self, run_id: str, *, by: str = "cli") -> dict[str, Any]:
        """Cancel a job: a queued one never starts; a running one stops within seconds; a sweep cancels its children.

        Who asked and when are recorded on the run first, so the job page can say so once it has stopped.
        """
        job = self.job(run_id, with_progress=False)
        if job.done:
            return {"run_id": run_id, "status": job.status, "cancelled": False}
        self.check_queue()
        with self.tracking():
            self.mlflow.set_tag(run_id, Tag.CANCELLED_BY, by)
            self.mlflow.set_tag(run_id, Tag.CANCELLED_AT, datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with self.queue():
            JobState(self.redis, run_id).request_cancel()
        if job.job_type == "sweep":
            for child in self.list_jobs(sweep=run_id):
                if not child.done:
                    self.cancel(child.run_id, by=by)
            enqueue("sweep", run_id, {}, "high", self.settings)  # the scheduler ends the parent
        else:
            with self.queue():
                leased = JobState(self.redis, run_id).lease_owner()
            if job.status == "SCHEDULED" and not leased:
                with self.queue():
                    Broker(self.settings).remove(run_id)  # it never starts, nor holds a place in line
                with self.tracking():
                    self.mlflow.set_tag(run_id, Tag.FAILURE, "cancelled before it started")
                    self.mlflow.set_terminated(run_id, "KILLED")
        return {"run_id": run_id, "status": self.job(run_id, with_progress=False).status, "cancelled": True}

    # -- changing an ended sweep (worker/rerun.py) --------------------------------------------------
    def rerun_sweep(self, parent: str, states=None, check=None) -> dict:
        """Re-run an ended sweep's failed and killed (or the chosen `states`) trials as new children."""
        from worker.rerun import DEFAULT_RERUN, rerun_sweep

        with self.tracking(), self.queue():
            return rerun_sweep(self, parent, states or DEFAULT_RERUN, check)

    def extend_sweep(self, parent: str, samples: int, check=None) -> dict:
        """Add `samples` trials to an ended random or TPE sweep."""
        from worker.rerun import extend_sweep

        with self.tracking(), self.queue():
            return extend_sweep(self, parent, samples, check)

    # -- reading jobs ----------------------------------------------------------------------------
    def job(self, run_id: str, *, with_progress: bool = True) -> Job:
        """One job by run id."""
        with self.tracking():
            run = self.mlflow.get_run(run_id)
        return Job.from_run(run, self._progress(run_id) if with_progress else None)

    def _progress(self, run_id: str) -> dict | None:
        try:
            return JobState(self.redis, run_id).progress()
        except Exception:  # noqa: BLE001 - progress is optional when Redis is down
            return None

    def list_jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        sweep: str | None = None,
        queue: str | None = None,
        limit: int = 200,
        with_progress: bool = False,
    ) -> list[Job]:
        """Jobs newest first, filtered by MLflow status, job type, sweep parent or the queue they were sent to."""
        # Values go into an MLflow filter string: accept only known words and run ids.
        if status is not None and status not in STATUSES:
            raise ParamsError("status", f"expected one of {', '.join(STATUSES)}")
        if job_type is not None and job_type not in JOB_TYPES:
            raise ParamsError("job_type", f"expected one of {', '.join(JOB_TYPES)}")
        if sweep is not None and not RUN_ID_RE.match(sweep):
            raise ParamsError("sweep", "expected a run id (32 hexadecimal digits)")
        if queue is not None and not QUEUE_NAME_RE.match(queue):
            raise ParamsError("queue", "expected a queue name (letters, digits, '.', '_', '-')")
        filters = [f"tags.`{Tag.JOB_TYPE}` != ''"]
        if status:
            filters.append(f"attributes.status = '{status}'")
        if job_type:
            filters.append(f"tags.`{Tag.JOB_TYPE}` = '{job_type}'")
        if sweep:
            filters.append(f"tags.`{Tag.PARENT_RUN_ID}` = '{sweep}'")
        if queue:
            filters.append(f"tags.`{Tag.QUEUE}` = '{queue}'")
        with self.tracking():
            experiments = [e.experiment_id for e in self.mlflow.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
            if not experiments:
                return []
            runs = self.mlflow.search_runs(
                experiments, " and ".join(filters), max_results=limit, order_by=["attributes.start_time DESC"]
            )
        return [Job.from_run(r, self._progress(r.info.run_id) if with_progress else None) for r in runs]

    def active_jobs(self, user: str) -> int:
        """How many training and prediction jobs `user` has queued (SCHEDULED) or running: what their limit counts."""
        from mlcore.names import USER_NAME_RE

        if not USER_NAME_RE.match(user):  # it goes into a filter string
            raise ParamsError("user", "expected a user name")
        base = f"tags.`{Tag.SUBMITTED_BY}` = '{user}' and tags.`{Tag.JOB_TYPE}` != 'sweep'"
        count = 0
        with self.tracking():
            experiments = [e.experiment_id for e in self.mlflow.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
            for status in ("SCHEDULED", "RUNNING"):
                token = None
                while experiments:
                    page = self.mlflow.search_runs(
                        experiments, f"{base} and attributes.status = '{status}'", max_results=1000, page_token=token
                    )
                    count += len(page)
                    token = page.token
                    if not token:
                        break
        return count

    def log_tail(self, run_id: str, n: int = 200) -> list[str]:
        """The last lines of the job's log."""
        with self.queue():
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

    # -- reading a run's records -----------------------------------------------------------------
    def metric_history(self, run_id: str, keys: tuple[str, ...]) -> dict[str, list[list[float]]]:
        """Per-step history of each metric: {key: [[step, value], ...]} in step order."""
        out = {}
        with self.tracking():
            for key in keys:
                history = sorted(self.mlflow.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
                out[key] = [[m.step, m.value] for m in history]
        return out

    def artifact_listing(self, run_id: str, folder: str) -> dict[str, int]:
        """Files directly in one of the run's artifact folders: name -> size ({} when there is no such folder)."""
        from mlcore.tracking import is_not_found

        with self.tracking():
            try:
                infos = self.mlflow.list_artifacts(run_id, folder)
            except Exception as exc:  # noqa: BLE001 - MLflow's not-found carries its own code
                if is_not_found(exc):
                    return {}
                raise
        return {Path(i.path).name: int(i.file_size or 0) for i in infos if not i.is_dir}

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        """The content of one of the run's artifact files."""
        with tempfile.TemporaryDirectory(prefix="dataslayer-artifact-") as tmp, self.tracking():
            return Path(self.mlflow.download_artifacts(run_id, path, tmp)).read_bytes()

    def experiment_named(self, name: str) -> str | None:
        """The id of the experiment called `name`, or None before its first run."""
        with self.tracking():
            exp = self.mlflow.get_experiment_by_name(name)
        return exp.experiment_id if exp else None

    def experiment_of(self, run_id: str) -> str:
        """The id of the experiment a run belongs to."""
        with self.tracking():
            return self.mlflow.get_run(run_id).info.experiment_id

    # -- the registry ------------------------------------------------------------------------------
    def model_versions(self, name: str) -> list[dict]:
        """A registered model's versions, newest first ([] when it has none yet)."""
        from mlcore.tracking import is_not_found

        with self.tracking():
            try:
                return self.registry.versions(name)
            except Exception as exc:  # noqa: BLE001
                if is_not_found(exc):
                    return []
                raise

    def model_names(self) -> list[str]:
        """Every registered model's name."""
        with self.tracking():
            return self.registry.names()

    def promote(self, name: str, version: str | int) -> dict:
        """Point the champion alias at a version."""
        with self.tracking():
            return self.registry.promote(name, version)
