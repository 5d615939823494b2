"""The project's shared vocabulary: job statuses, types and priorities, run tags, metric and alias names.

Every layer (`mlcore`, `worker`, `webui`) imports these names from here, so a status, a tag or the
selection metric is spelled once; the OpenAPI enums and the UI filters are built from the same lists.
"""

from __future__ import annotations

import re

# An MLflow run's status is the job's status (a queued job is a SCHEDULED run).
STATUSES = ("SCHEDULED", "RUNNING", "FINISHED", "FAILED", "KILLED")
TERMINAL = ("FINISHED", "FAILED", "KILLED")
JOB_TYPES = ("train", "sweep", "predict")
PRIORITIES = ("high", "normal", "low")

# The notebook's selection metric (weighted F1 at argmax), per epoch and of the best epoch.
QUEUE_WAIT_METRIC = "queue_wait_s"  # submission to the first start of training, logged once per run
SELECTION_METRIC = "val_f1_weighted"
BEST_SELECTION_METRIC = "best_" + SELECTION_METRIC
CHAMPION = "champion"  # the registry alias a submission is generated from
DEFAULT_MODEL_NAME = "fall-detector"
DEFAULT_EXPERIMENT = "dataslayer"
PREDICTION_EXPERIMENT = "dataslayer-predictions"  # kept apart: predictions would clutter the comparison of trainings
DEFAULT_STATE_DIR = ".state"
# The share of its GPU's memory a job process may take (a worker of DATASLAYER_SLOTS_PER_GPU sets 1/slots).
GPU_FRACTION_ENV = "DATASLAYER_GPU_FRACTION"

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # DATASLAYER_QUEUE: a Redis key and a tag value
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Web UI and API user names (they go into MLflow filter strings as the submitter).
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Tag:
    """Run tags the project writes (MLflow's own tags keep their `mlflow.` names)."""

    PREFIX = "dataslayer."
    # what the job is and who asked for it
    JOB_TYPE = PREFIX + "job_type"
    QUEUE = PREFIX + "queue"
    PRIORITY = PREFIX + "priority"
    SUBMITTED_BY = PREFIX + "submitted_by"
    SUBMITTED_AT = PREFIX + "submitted_at"
    PARAMS_JSON = PREFIX + "params_json"  # the parameters as the task received them: lets the reconciler requeue
    PRESET = PREFIX + "preset"
    VERSION = PREFIX + "version"
    # a delivery of the job
    STARTED_AT = PREFIX + "started_at"
    ATTEMPT = PREFIX + "attempt"
    WORKER = PREFIX + "worker"
    EPOCH = PREFIX + "epoch"
    RESUMED_FROM_EPOCH = PREFIX + "resumed_from_epoch"
    RECOVERED = PREFIX + "recovered"
    REQUEUE_PENDING = PREFIX + "requeue_pending"
    ENQUEUED = PREFIX + "enqueued"
    # how it ended
    FAILURE = PREFIX + "failure"
    CANCELLED_BY = PREFIX + "cancelled_by"  # who asked, and when (ISO 8601, UTC): the job page says so
    CANCELLED_AT = PREFIX + "cancelled_at"
    WARNING = PREFIX + "warning"
    TRACKING_FAILURES = PREFIX + "tracking_failures"
    # what it produced
    THRESHOLD = PREFIX + "threshold"
    MODEL_NAME = PREFIX + "model_name"
    MODEL_VERSION = PREFIX + "model_version"
    MODEL_URI = PREFIX + "model_uri"
    REGISTERED_MODEL = PREFIX + "registered_model"
    DATASET_FINGERPRINT = PREFIX + "dataset_fingerprint"
    DATASET_IMAGES = PREFIX + "dataset_images"
    DATASET_INPUT = PREFIX + "dataset_input"
    # sweeps
    SWEEP_SIZE = PREFIX + "sweep_size"
    SWEEP_INDEX = PREFIX + "sweep_index"
    MAX_CONCURRENT = PREFIX + "max_concurrent"
    PROMOTE_BEST = PREFIX + "promote_best"
    BEST_CHILD_RUN_ID = PREFIX + "best_child_run_id"
    PRUNED = PREFIX + "pruned"  # the epoch a sweep's pruner stopped the trial at (the run ends FINISHED)
    # cross-validation: the parent's fold count, a child's fold
    CV_FOLDS = PREFIX + "cv_folds"
    CV_FOLD = PREFIX + "cv_fold"
    # MLflow's own
    PARENT_RUN_ID = "mlflow.parentRunId"
    USER = "mlflow.user"
