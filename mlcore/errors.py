"""The errors a job raises on purpose; importing them costs nothing (no torch), so entrances can catch them."""

from __future__ import annotations


class DataError(ValueError):
    """The data on disk cannot be used; the message names the path."""


class BadImage(Exception):
    """An image file that cannot be used; the message says why."""


class WeightsUnavailable(RuntimeError):
    """Pretrained weights cannot be found or fetched; the message says where they go."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely."""


class OutOfMemory(RuntimeError):
    """The job ran out of memory; the message names the device and the parameters to lower."""


class DiskFull(OSError):
    """A disk filled up while the job wrote to it; the message names the path and how much was needed."""


class Cancelled(Exception):
    """The caller asked the job to stop."""


class Suspended(Exception):
    """The job stopped early and continues elsewhere; `status` is what its run becomes (None: leave it alone)."""

    status: str | None = "SCHEDULED"


class ParamsError(ValueError):
    """Invalid parameters; `field` names the first offending field."""

    def __init__(self, field: str, message: str, errors: list[dict] | None = None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.errors = errors or [{"field": field, "message": message}]


# Failures a user can fix from the message alone: entrances show them as one line, no traceback.
USER_ERRORS = (
    DataError,
    WeightsUnavailable,
    CheckpointError,
    OutOfMemory,
    DiskFull,
    LookupError,
    FileNotFoundError,
    ConnectionError,
)
