"""What the UIs show about one job: its MLflow run (the state of record) plus live progress from Redis."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mlcore.names import TERMINAL, Tag


@dataclass
class Job:
    """One job: its run's status, tags, params and metrics, and the latest progress snapshot."""

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

    @classmethod
    def from_run(cls, run, progress: dict[str, Any] | None = None) -> Job:
        """A Job from an MLflow run."""
        tags = run.data.tags
        return cls(
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            job_type=tags.get(Tag.JOB_TYPE, "train"),
            status=run.info.status,
            experiment_id=run.info.experiment_id,
            priority=tags.get(Tag.PRIORITY, "normal"),
            submitted_by=tags.get(Tag.SUBMITTED_BY, ""),
            parent_run_id=tags.get(Tag.PARENT_RUN_ID),
            start_time=run.info.start_time,
            end_time=run.info.end_time,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(tags),
            progress=progress,
        )

    @property
    def done(self) -> bool:
        """Whether the job has ended (finished, failed or cancelled)."""
        return self.status in TERMINAL

    @property
    def pruned(self) -> bool:
        """Whether a sweep's pruner stopped this trial early (it ended FINISHED, tagged with the epoch)."""
        return self.status == "FINISHED" and Tag.PRUNED in self.tags

    @property
    def state(self) -> str:
        """The status as listed: PRUNED for a pruned trial, else the MLflow status."""
        return "PRUNED" if self.pruned else self.status

    @property
    def failure(self) -> str | None:
        """Why the job failed or was cancelled."""
        return self.tags.get(Tag.FAILURE)

    @property
    def cancelled(self) -> tuple[str, str] | None:
        """(who, when) for a cancelled job whose cancel was asked for by someone; None otherwise."""
        if self.status != "KILLED" or Tag.CANCELLED_BY not in self.tags:
            return None
        return self.tags[Tag.CANCELLED_BY], self.tags.get(Tag.CANCELLED_AT, "")

    @property
    def warning(self) -> str | None:
        """A note the job left for its user (e.g. a batch too large for the dataset)."""
        return self.tags.get(Tag.WARNING)

    @property
    def typed_params(self) -> dict[str, Any]:
        """The parameters with their types (MLflow keeps params as strings; the job's JSON copy keeps numbers)."""
        if Tag.PARAMS_JSON in self.tags:
            try:
                return json.loads(self.tags[Tag.PARAMS_JSON])
            except ValueError:
                pass
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the API and `--wait` print this), parameters with their types."""
        body = {**asdict(self), "done": self.done, "failure": self.failure, "warning": self.warning}
        return {**body, "params": self.typed_params}
