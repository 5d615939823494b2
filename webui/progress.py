"""What the pages show about a job: progress bar, phase, rate, ETA and latest scores."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from flask import current_app, url_for

from mlcore import mlflow_ui
from mlcore.names import BEST_SELECTION_METRIC, QUEUE_WAIT_METRIC, SELECTION_METRIC, Tag
from worker.job import Job

STATUS_LABELS = {
    "SCHEDULED": "queued",
    "RUNNING": "running",
    "FINISHED": "finished",
    "FAILED": "failed",
    "KILLED": "cancelled",
}
PHASES = {
    "decoding": "decoding images",
    "training": "training",
    "evaluating": "evaluating",
    "epoch_end": "epoch done",
    "logging": "logging the model",
    "predicting": "predicting",
    "queued": "back in the queue",
    "done": "done",
}


DECODE_SPAN = {
    ("train", "decoding"): (0.0, 5.0),
    ("predict", "decoding"): (0.0, 50.0),
    ("predict", "predicting"): (50.0, 50.0),
}


def duration(seconds: float | None) -> str:
    """Seconds as '45 s', '3 min 20 s' or '2 h 05 min'."""
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def timestamp(ms: int | None) -> str:
    """MLflow's epoch milliseconds as ISO 8601 UTC (the browser shows it in local time)."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _score(job: Job) -> tuple[float | None, float | None]:
    """(val F1 of the fall class, val F1 weighted): the best epoch's when finished, else the latest."""
    m = job.metrics
    f1 = m.get("best_val_f1", m.get("val_f1"))
    f1w = m.get(BEST_SELECTION_METRIC, m.get(SELECTION_METRIC))
    return f1, f1w


def _bar(job: Job, children: list[Job] | None) -> tuple[float, str, list[str]]:
    """(percent, label, detail parts) of a job's progress bar."""
    p = job.progress or {}
    phase = p.get("phase")
    if job.job_type == "sweep":
        kids = children or []
        ended = sum(c.done for c in kids)
        total = int(job.tags.get(Tag.SWEEP_SIZE, len(kids)) or 0)
        running = sum(c.status == "RUNNING" for c in kids)
        percent = 100.0 if job.status == "FINISHED" else 100.0 * ended / total if total else 0.0
        return percent, f"{ended}/{total} runs ended", [f"{running} running"] if running else []
    if job.status == "FINISHED":
        return 100.0, "done", []
    if job.status == "SCHEDULED":
        return 0.0, "queued" if phase != "queued" else "back in the queue", []
    if job.done:
        return 0.0, STATUS_LABELS[job.status], []
    details: list[str] = []
    epochs = p.get("epochs") or 0
    epoch = p.get("epoch") or 0
    if phase in ("decoding", "predicting") and p.get("total"):
        share = p.get("done", 0) / p["total"]
        label = f"{PHASES[phase]} {p.get('done', 0)}/{p['total']}"
        # Training spends little time decoding (5 % of the bar); a prediction is half decoding, half predicting.
        start, span = DECODE_SPAN[(job.job_type, phase)] if (job.job_type, phase) in DECODE_SPAN else (0.0, 100.0)
        percent = start + share * span
    elif phase == "training" and epochs:
        within = p.get("step", 0) / max(1, p.get("steps", 1))
        percent = 5.0 + 90.0 * ((epoch - 1) + within) / epochs
        label = f"epoch {epoch}/{epochs}"
        details.append(f"step {p.get('step', 0)}/{p.get('steps', 0)}")
    elif phase in ("evaluating", "epoch_end") and epochs:
        percent = 5.0 + 90.0 * epoch / epochs
        label = f"epoch {epoch}/{epochs} · {PHASES[phase]}"
    elif phase == "logging":
        percent, label = 97.0, PHASES[phase]
    else:
        percent, label = 1.0, PHASES.get(phase, "starting")
    if p.get("img_per_s"):
        details.append(f"{p['img_per_s']:.0f} img/s")
    if p.get("eta_s") is not None and phase == "training":
        details.append(f"ETA {duration(p['eta_s'])}")
    return min(percent, 99.0), label, details


def view(job: Job, children: list[Job] | None = None) -> dict:
    """A JSON-ready summary of a job for the tables and the polling endpoints."""
    percent, label, details = _bar(job, children)
    latest = (job.progress or {}).get("metrics") or {}
    loss = latest.get("train_loss", job.metrics.get("train_loss"))
    f1, f1w = _score(job)
    if latest.get("val_f1") is not None and not job.done:
        f1 = latest["val_f1"]
    if loss is not None and job.job_type == "train":
        details.append(f"loss {loss:.3f}")
    if f1 is not None and job.job_type == "train":
        details.append(f"F1 {f1:.3f}")
    # MLflow's start_time is when the job was submitted; the worker tags when it really started.
    started = float(job.tags[Tag.STARTED_AT]) if Tag.STARTED_AT in job.tags else None
    if started is None and job.job_type == "sweep" and job.start_time:
        started = job.start_time / 1000
    ended = job.end_time / 1000 if job.end_time else None
    elapsed = ((ended or time.time()) - started) if started and job.status != "SCHEDULED" else None
    return {
        "run_id": job.run_id,
        "name": job.name or job.run_id[:8],
        "job_type": job.job_type,
        "status": job.status,
        "status_label": f"pruned at epoch {job.tags[Tag.PRUNED]}"
        if job.pruned
        else STATUS_LABELS.get(job.status, job.status.lower()),
        "done": job.done,
        "percent": round(percent, 1),
        "label": label,
        "detail": " · ".join(details),
        "phase": (job.progress or {}).get("phase"),
        "val_f1": f1,
        "val_f1_weighted": f1w,
        "submitted_by": job.submitted_by,
        "priority": job.priority,
        "submitted": timestamp(job.start_time),
        "elapsed": duration(elapsed),
        "queue_wait": duration(job.metrics[QUEUE_WAIT_METRIC]) if QUEUE_WAIT_METRIC in job.metrics else None,
        "failure": job.failure,
        "parent_run_id": job.parent_run_id,
        "url": url_for("jobs.detail", run_id=job.run_id),
        "mlflow_url": mlflow_run_url(job.experiment_id, job.run_id),
    }


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (its model-training view)."""
    return mlflow_ui.run_url(current_app.config["MLFLOW_PUBLIC_URL"], experiment_id, run_id)


def mlflow_compare_url(runs: list[Job]) -> str:
    """The MLflow UI's compare view of several runs."""
    experiments = sorted({r.experiment_id for r in runs})
    return mlflow_ui.compare_url(current_app.config["MLFLOW_PUBLIC_URL"], [r.run_id for r in runs], experiments)


def by_sweep(jobs: list[Job]) -> dict[str, list[Job]]:
    """Children grouped by their sweep's run id."""
    out: dict[str, list[Job]] = {}
    for j in jobs:
        if j.parent_run_id:
            out.setdefault(j.parent_run_id, []).append(j)
    return out
