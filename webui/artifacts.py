"""Reading a run's artifacts through the MLflow server, by fixed names only.

A request names a plot or a download by a key from the tables below, never by a path, so no
user text reaches the artifact store. Artifacts of ended runs do not change: they are kept in a
small in-memory cache so a page with four plots costs four downloads once.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from webui.jobqueue import jobs

PLOTS = {
    "learning_curve": ("plots/learning_curve.png", "Learning curve"),
    "confusion_matrix": ("plots/confusion_matrix.png", "Confusion matrix (argmax)"),
    "confusion_matrix_at_threshold": (
        "plots/confusion_matrix_at_threshold.png",
        "Confusion matrix at the tuned threshold",
    ),
    "f1_vs_threshold": ("plots/f1_vs_threshold.png", "F1 vs threshold"),
}
# The job page draws the learning curve (SVG) and the confusion matrix at the threshold (a table) itself;
# of the PNGs it shows only the one it has no live view of. All of them stay in MLflow and at the route.
PAGE_PLOTS = ("f1_vs_threshold",)
REPORTS = {
    "classification_report": "reports/classification_report_at_threshold.json",
    "classification_report_argmax": "reports/classification_report.json",
    "confusion_matrix": "reports/confusion_matrix_at_threshold.json",
    "skipped_files": "reports/skipped_files.json",
    "dataset_counts": "reports/dataset_counts.json",
    "prediction": "reports/prediction.json",
}
TEXTS = {"log": "logs/job.log", "traceback": "error/traceback.txt"}
SUBMISSION_DIR = "submission"
MAX_BYTES = 50 * 1024 * 1024  # a submission of a few hundred thousand rows; refuse anything absurd
CACHE_BYTES = 64 * 1024 * 1024

_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_cache_lock = threading.Lock()


def listing(run_id: str, folder: str) -> dict[str, int]:
    """Files directly in an artifact folder: name -> size (empty when the folder does not exist)."""
    return jobs().artifact_listing(run_id, folder)


def fetch(run_id: str, path: str, *, cache: bool) -> bytes | None:
    """The bytes of one artifact, or None when the run does not have it."""
    key = (run_id, path)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    folder, _, name = path.rpartition("/")
    size = listing(run_id, folder).get(name)
    if size is None or size > MAX_BYTES:
        return None
    data = jobs().artifact_bytes(run_id, path)
    if cache:
        with _cache_lock:
            _cache[key] = data
            while sum(len(v) for v in _cache.values()) > CACHE_BYTES and len(_cache) > 1:
                _cache.popitem(last=False)
    return data


def report(run_id: str, key: str, *, cache: bool = True):
    """A JSON report of the run by its key in REPORTS, or None."""
    data = fetch(run_id, REPORTS[key], cache=cache)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def text(run_id: str, key: str, *, cache: bool = True) -> str | None:
    """A text artifact of the run by its key in TEXTS, or None."""
    data = fetch(run_id, TEXTS[key], cache=cache)
    return None if data is None else data.decode("utf-8", "replace")


def submission_files(run_id: str) -> dict[str, str]:
    """{'submission': path, 'probabilities': path} for what a prediction run logged under submission/."""
    out = {}
    for name in sorted(listing(run_id, SUBMISSION_DIR)):
        if not name.endswith(".csv"):
            continue
        kind = "probabilities" if name.endswith("_probabilities.csv") else "submission"
        out.setdefault(kind, f"{SUBMISSION_DIR}/{name}")
    return out
