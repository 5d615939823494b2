"""Everything MLflow: runs, metrics, artifacts, the model registry. The only module importing mlflow.

One run per job, at the edge (the mlflow `examples/pytorch` pattern): the job calls a `Tracker`,
this module turns the calls into MLflow records. A tracking-server outage does not kill a job:
epoch metrics and tags that fail to log are kept and sent with the next call that succeeds, and
the end of the run waits (bounded) for the server to come back.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import mlcore
from mlcore import plots
from mlcore.disk import disk_full
from mlcore.errors import Cancelled, Suspended
from mlcore.names import BEST_SELECTION_METRIC, DEFAULT_EXPERIMENT, SELECTION_METRIC, Tag

log = logging.getLogger(__name__)
RETRY_EVERY_S = 2.0


def outage_s() -> float:
    """How long the end of a job waits through a tracking-server outage: DATASLAYER_TRACKING_OUTAGE_S (600 s)."""
    return float(os.environ.get("DATASLAYER_TRACKING_OUTAGE_S") or 600)


def unreachable(exc: BaseException) -> bool:
    """Whether an error from MLflow's client means the server could not be reached (rather than a refusal)."""
    import requests

    for err in (exc, exc.__context__, exc.__cause__):
        if isinstance(err, (requests.exceptions.RequestException, ConnectionError)):
            return True
    if not isinstance(exc, MlflowException):
        return False
    # MLflow wraps connection failures after its own retries in a plain MlflowException.
    text = str(exc)
    return "failed with exception" in text or any(f"error code {code}" in text for code in (500, 502, 503, 504))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(mlcore.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def base_tags() -> dict[str, str]:
    """Tags every run carries: project version and git commit where known."""
    tags = {Tag.VERSION: mlcore.__version__}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


class TrackingOutage(ConnectionError):
    """The tracking server stayed unreachable past DATASLAYER_TRACKING_OUTAGE_S at the end of a job."""


class MlflowTracker:
    """A job's MLflow run: new, or an existing one (scheduled by the queue, or resumed after a crash)."""

    def __init__(
        self,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        run_id: str | None = None,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        system_metrics: bool | None = None,
    ):
        self.experiment, self.run_id, self.run_name = experiment, run_id, run_name
        self.parent_run_id, self.tags = parent_run_id, tags or {}
        if system_metrics is None:
            system_metrics = os.environ.get("DATASLAYER_SYSTEM_METRICS", "1") == "1"
        self.system_metrics = system_metrics
        self.client = MlflowClient()
        self.pending: list[tuple[str, Any]] = []
        self.failures = 0
        self._logged_steps: set[int] = set()
        self._has_params = False

    # -- run lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> MlflowTracker:
        if self.run_id is None:
            mlflow.set_experiment(self.experiment)
        else:
            run = self.client.get_run(self.run_id)
            self._has_params = bool(run.data.params)
            self._logged_steps = {m.step for m in self.client.get_metric_history(self.run_id, SELECTION_METRIC)}
        run = mlflow.start_run(
            run_id=self.run_id,
            run_name=self.run_name,
            parent_run_id=self.parent_run_id,
            # A child started inside its parent's process (a cross-validation fold) nests under the active run.
            nested=self.parent_run_id is not None and mlflow.active_run() is not None,
            tags={**base_tags(), **self.tags} if self.run_id is None else None,
            log_system_metrics=self.system_metrics,
        )
        self.run_id = run.info.run_id
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED"
        if exc_type is not None and issubclass(exc_type, Suspended):
            # Preempted (back to SCHEDULED, resumed from its checkpoint) or lease lost (another
            # worker owns the run now: leave it alone; this process is about to exit).
            if exc.status is not None:
                self._retry(self.flush, "the kept metrics")
                self._retry(lambda: mlflow.end_run(exc.status), "the run's status")
            return
        if exc_type is not None:
            status = "KILLED" if issubclass(exc_type, (Cancelled, KeyboardInterrupt, SystemExit)) else "FAILED"
            reason = "cancelled" if status == "KILLED" else f"{exc_type.__name__}: {exc}"
            self._retry(lambda: self.client.set_tag(self.run_id, Tag.FAILURE, reason[:5000]), "the failure reason")
            if status == "FAILED":
                text = "".join(traceback.format_exception(exc_type, exc, tb))
                self._retry(lambda: mlflow.log_text(text, "error/traceback.txt"), "the traceback")
        self._retry(self.flush, "the kept metrics")
        if self.failures:
            failures = str(self.failures)
            self._retry(lambda: self.client.set_tag(self.run_id, Tag.TRACKING_FAILURES, failures), "a tag")
        self._retry(lambda: mlflow.end_run(status), "the run's status")

    def _retry(self, fn, what: str = "the tracking call"):
        """Call fn until it succeeds, through a server outage of up to DATASLAYER_TRACKING_OUTAGE_S; return its result.

        Only an unreachable server is waited for: a refusal (a bad request) or a full local disk
        fails at once, with its own reason.
        """
        limit = outage_s()
        deadline = time.monotonic() + limit
        waited = False
        while True:
            try:
                result = fn()
                if waited:
                    log.warning("the tracking server is back; %s went through", what)
                return result
            except Exception as exc:  # noqa: BLE001 - sorted below
                full = disk_full(exc)
                if full is not None:
                    raise full from exc
                if not unreachable(exc):
                    raise
                if time.monotonic() > deadline:
                    log.error("giving up on the tracking server after %.0f s: %s", limit, exc)
                    raise TrackingOutage(
                        f"the tracking server stayed unreachable for {limit:.0f} s (DATASLAYER_TRACKING_OUTAGE_S) "
                        f"while the job logged {what}: {str(exc).splitlines()[0][:300]}"
                    ) from exc
                if not waited:
                    log.warning("the tracking server is unreachable; %s waits for it (up to %.0f s)", what, limit)
                    waited = True
                time.sleep(RETRY_EVERY_S)

    def _send(self, kind: str, payload: Any) -> None:
        """Queue a record and try to send everything queued; keep it for later when the server is down."""
        self.pending.append((kind, payload))
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001
            self.failures += 1
            log.warning("tracking server unavailable, %d records kept for later: %s", len(self.pending), exc)

    def flush(self) -> None:
        """Send queued metrics and tags in order."""
        while self.pending:
            kind, payload = self.pending[0]
            if kind == "metrics":
                self.client.log_batch(self.run_id, metrics=payload)
            else:
                self.client.log_batch(self.run_id, tags=payload)
            self.pending.pop(0)

    # -- the Tracker protocol ------------------------------------------------------------------
    def child(self, run_name: str, tags: dict[str, str]) -> MlflowTracker:
        """A child run of this one in the same experiment (a cross-validation fold), to use as a context manager."""
        return MlflowTracker(
            experiment=self.experiment,
            run_name=run_name,
            parent_run_id=self.run_id,
            tags=tags,
            system_metrics=False,  # the parent's process samples them already
        )

    def log_cv(self, cv: dict) -> None:
        """A cross-validation's parent records: the out-of-fold predictions CSV, the folds report, mean and std."""
        self._await_server()
        self._retry(lambda: mlflow.log_text(cv["oof_csv"], "tables/oof_predictions.csv"), "the out-of-fold table")
        self._retry(lambda: mlflow.log_dict(cv["report"], "reports/cv_folds.json"), "the folds report")
        self._log_once(cv["metrics"], "the cross-validation metrics")
        self._retry(lambda: self.client.set_tag(self.run_id, Tag.THRESHOLD, repr(float(cv["threshold"]))), "a tag")

    def log_params(self, params: dict[str, str]) -> None:
        """Log the job's parameters once (a resumed run already has them)."""
        if not self._has_params:
            mlflow.log_params(params)
            self._has_params = True

    def log_dataset(self, dataset, train_idx, val_idx, context: str = "training") -> None:
        """Dataset lineage: one row per image (path, label, subject, split); the digest fingerprints the file list."""
        split = np.full(len(dataset.samples), "", dtype=object)
        split[np.asarray(train_idx, dtype=int)] = "train"
        split[np.asarray(val_idx, dtype=int)] = "val"
        df = pd.DataFrame(
            {
                "path": [s.rel for s in dataset.samples],
                "label": dataset.labels,
                "subject": dataset.subjects,
                "split": split,
            }
        )
        with warnings.catch_warnings():  # schema-inference hints about integer columns and source guessing
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(
                df, source=str(dataset.root), name=dataset.root.parent.name or "dataset", targets="label"
            )
            for attempt in range(3):
                try:
                    mlflow.log_input(ds, context=context)
                    break
                except MlflowException as exc:
                    # Two jobs registering the same new dataset at once race inside the server (a
                    # UNIQUE constraint on experiment, name, digest); the retry finds it registered.
                    # Lineage is worth a retry, not a failed job.
                    if attempt == 2:
                        log.warning("dataset input not logged: %s", exc)
                        self.set_tags({Tag.DATASET_INPUT: "not logged: " + str(exc)[:200]})
                    time.sleep(0.5 * (attempt + 1))
        self.set_tags({Tag.DATASET_FINGERPRINT: dataset.fingerprint, Tag.DATASET_IMAGES: str(len(df))})

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch metrics with step=epoch, exactly once per epoch even across resumes."""
        if epoch in self._logged_steps:
            return
        now = int(time.time() * 1000)
        self._send("metrics", [Metric(k, float(v), now, epoch) for k, v in metrics.items() if np.isfinite(v)])
        self._send("tags", [RunTag(Tag.EPOCH, str(epoch))])
        self._logged_steps.add(epoch)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags (queued while the server is down)."""
        self._send("tags", [RunTag(k, str(v)) for k, v in tags.items()])

    def _await_server(self) -> None:
        """Before the end-of-job records: wait (bounded) for the server, then send what was kept."""
        self._retry(lambda: self.client.get_run(self.run_id), "the end of the job")
        self._retry(self.flush, "the kept metrics")

    def _log_once(self, metrics: dict[str, float], what: str) -> None:
        """Log end-of-job metrics the run does not have yet (a job ending a second time logs none twice)."""
        have = self._retry(lambda: self.client.get_run(self.run_id).data.metrics, what)
        missing = {k: float(v) for k, v in metrics.items() if k not in have}
        if missing:
            self._retry(lambda: mlflow.log_metrics(missing), what)

    def log_evaluation(self, ev: dict) -> None:
        """Plots, reports, the validation predictions table and the skipped-files list of the best model."""
        self._await_server()
        figures = (
            ("plots/learning_curve.png", lambda: plots.learning_curve(ev["history"])),
            ("plots/confusion_matrix.png", lambda: plots.confusion_matrix_figure(ev["report"]["confusion_matrix"])),
            (
                "plots/confusion_matrix_at_threshold.png",
                lambda: plots.confusion_matrix_figure(
                    ev["report_at_threshold"]["confusion_matrix"], f"Confusion Matrix (threshold {ev['threshold']:.2f})"
                ),
            ),
            (
                "plots/f1_vs_threshold.png",
                lambda: plots.f1_threshold_figure(ev["thresholds"], ev["f1_curve"], ev["threshold"]),
            ),
        )
        for name, draw in figures:
            fig = draw()
            try:
                self._retry(lambda f=fig, n=name: mlflow.log_figure(f, n), name)  # the same path overwrites next time
            finally:
                plots.close(fig)
        documents = {
            "reports/f1_vs_threshold.json": {
                "thresholds": ev["thresholds"],
                "f1": ev["f1_curve"],
                "best": ev["threshold"],
            },
            "reports/skipped_files.json": {"count": len(ev["skipped"]), "files": ev["skipped"]},
            "reports/dataset_counts.json": ev["dataset"],
        }
        for key, rep in (("", ev["report"]), ("_at_threshold", ev["report_at_threshold"])):
            documents[f"reports/confusion_matrix{key}.json"] = {
                "labels": rep["labels"],
                "matrix": rep["confusion_matrix"],
                "threshold": rep["threshold"],
            }
            documents[f"reports/classification_report{key}.json"] = rep["report"]
            text = rep["text"]
            path = f"reports/classification_report{key}.txt"
            self._retry(lambda t=text, p=path: mlflow.log_text(t, p), path)
        for path, doc in documents.items():
            self._retry(lambda d=doc, p=path: mlflow.log_dict(d, p), path)
        table = pd.DataFrame({"path": ev["files"], "label": ev["labels"], "probability": ev["probs"]})
        self._retry(lambda: mlflow.log_table(table, "tables/val_predictions.json"), "the validation predictions")
        best = ev["history"][ev["best_epoch"] - 1]
        self._log_once(
            {
                "best_epoch": ev["best_epoch"],
                BEST_SELECTION_METRIC: best[SELECTION_METRIC],
                "best_val_f1": best["val_f1"],
                "threshold": ev["threshold"],
                "val_f1_at_threshold": ev["threshold_f1"],
                "val_accuracy_at_threshold": ev["threshold_accuracy"],
                "skipped_files": len(ev["skipped"]),
            },
            "the end-of-run metrics",
        )
        self._retry(lambda: self.client.set_tag(self.run_id, Tag.THRESHOLD, repr(float(ev["threshold"]))), "a tag")

    def log_model(self, model, info: dict) -> dict:
        """Log the best model and register it with its threshold as version tags, once per run.

        The artifact holds a torch.export program (for MLflow's own tools) and the state dict that
        `mlcore.registry` loads with `weights_only=True`. A job ending a second time (resumed after a
        kill during its end) finds the version it registered before instead of registering another.
        """
        import torch

        self._await_server()
        name = info["registered_model_name"]
        # One attempt = look for this run's version, register one if there is none: a retry after an
        # outage in the middle of registering finds the version the lost response had created.
        version = self._retry(
            lambda: self._registered_version(name) or self._log_and_register(model, info, name), "the model"
        )
        size = int(info["image_size"])
        tags = {
            "threshold": repr(float(info["threshold"])),  # exact: prediction applies the tuned value itself
            "val_f1": f"{info['val_f1']:.6f}",
            SELECTION_METRIC: f"{info['val_f1_weighted']:.6f}",
            "run_id": self.run_id,
            "arch": info["arch"],
            "image_size": str(size),
            "torch": torch.__version__.split("+")[0],
            "precision": info["precision"],  # prediction runs in it unless the job overrides it
        }
        if info.get("cv_folds"):
            tags["cv_folds"] = str(int(info["cv_folds"]))  # a fold ensemble: Registry.load builds K members
        for key, value in tags.items():
            self._retry(
                lambda k=key, v=value: self.client.set_model_version_tag(name, version, k, v), "the version tags"
            )
        self._retry(lambda: self.client.set_tag(self.run_id, Tag.MODEL_VERSION, version), "a tag")
        self._retry(lambda: self.client.set_tag(self.run_id, Tag.REGISTERED_MODEL, name), "a tag")
        return {"model_name": name, "model_version": version, "model_uri": f"models:/{name}/{version}"}

    def _registered_version(self, name: str) -> str | None:
        """The version this run registered already, if any."""
        try:
            found = self.client.search_model_versions(f"name='{name}' and run_id='{self.run_id}'")
        except MlflowException as exc:
            if is_not_found(exc):
                return None
            raise
        return str(min(int(v.version) for v in found)) if found else None

    def _log_and_register(self, model, info: dict, name: str) -> str:
        import torch

        size = int(info["image_size"])
        example = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)  # batch 2: dynamic batch
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2))]),
        )
        with tempfile.TemporaryDirectory(prefix="dataslayer-weights-") as tmp:
            weights = Path(tmp) / "state_dict.pt"
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch.export's notes on CPU-only weights
                logged = mlflow.pytorch.log_model(
                    model,
                    name="model",
                    serialization_format="pt2",
                    input_example=example,
                    signature=signature,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                    registered_model_name=name,
                    extra_files=[str(weights)],
                    metadata={k: info[k] for k in ("arch", "image_size", "threshold", "cv_folds") if k in info},
                    # MLflow would reload the program and run the example through it (1.7 s a job on 2
                    # cores); the program comes from torch.export of this very model, and prediction
                    # loads the state dict, which the prediction tests run on every registered version.
                    validate_serving_input=False,
                )
        return str(logged.registered_model_version)

    def log_prediction(self, result: dict, files: list[str]) -> None:
        """The submission, probabilities and report of a prediction job."""
        self._await_server()
        for f in files:
            self._retry(lambda f=f: mlflow.log_artifact(f, "submission"), Path(f).name)
        self._retry(lambda: mlflow.log_dict(result, "reports/prediction.json"), "the prediction report")
        self._log_once(
            {k: result[k] for k in ("rows", "positives", "bad_files", "threshold")}, "the prediction metrics"
        )

    def log_summary(self, summary: dict) -> None:
        """The job's one-line summary as `summary.json` (the same path overwrites on a second end)."""
        self._retry(lambda: mlflow.log_dict(summary, "summary.json"), "the summary")

    def log_text(self, text: str, path: str) -> None:
        """A text artifact (e.g. the job's log tail), waiting through an outage like every end-of-job record."""
        self._retry(lambda: mlflow.log_text(text, path), path)


# -- what the registry module needs from MLflow ----------------------------------------------------
def mlflow_client(tracking_uri: str | None = None) -> MlflowClient:
    """A client of `tracking_uri` (None: MLFLOW_TRACKING_URI or MLflow's default)."""
    return MlflowClient(tracking_uri=tracking_uri)


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says the run, model, version or alias does not exist."""
    return isinstance(exc, MlflowException) and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _model_repository(uri: str):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(uri)


def model_artifact_files(uri: str) -> dict[str, int]:
    """Every file of a model artifact (models:/ or runs:/ URI): relative path -> size; nothing is downloaded."""
    repo = _model_repository(uri)
    found: dict[str, int] = {}

    def walk(path: str | None) -> None:
        for info in repo.list_artifacts(path):
            if info.is_dir:
                walk(info.path)
            else:
                found[info.path] = int(info.file_size or 0)

    walk(None)
    return found


def download_model_file(uri: str, path: str, dst: Path) -> Path:
    """Download one file of a model artifact into `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(_model_repository(uri).download_artifacts(path, str(dst)))
