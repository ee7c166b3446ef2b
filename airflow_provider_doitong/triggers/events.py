"""The events the Doitong triggers send, and their checking on the worker: plain JSON, an allow-list.

A job's trigger (:class:`~airflow_provider_doitong.triggers.doitong.DoitongTrigger`) sends a
:class:`JobEvent` (:func:`make_event`, :func:`read_event`); a batch's trigger
(:class:`~airflow_provider_doitong.triggers.batch.DoitongBatchTrigger`) sends a :class:`BatchEvent`
(:func:`make_batch_event`, :func:`read_batch_event`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from airflow_provider_doitong.client import (
    DoitongError,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongTimeout,
    DoitongUnauthorized,
    Job,
)
from airflow_provider_doitong.client.errors import InvalidTriggerEvent as InvalidTriggerEvent

SUCCESS = "success"
FAILED = "failed"
TIMEOUT = "timeout"
NOT_FOUND = "not_found"
UNAUTHORIZED = "unauthorized"
ERROR = "error"
#: Every status an event may carry.
EVENT_STATUSES = frozenset({SUCCESS, FAILED, TIMEOUT, NOT_FOUND, UNAUTHORIZED, ERROR})
#: The error each status stands for, in both directions; anything else is :data:`ERROR`.
_ERRORS: dict[str, type[DoitongError]] = {
    FAILED: DoitongJobFailed,
    TIMEOUT: DoitongTimeout,
    NOT_FOUND: DoitongNotFound,
    UNAUTHORIZED: DoitongUnauthorized,
}
_KEYS = frozenset({"status", "job_id", "job", "message"})


class JobEvent(NamedTuple):
    """A job trigger's event, checked."""

    status: str
    job_id: str
    #: The job as last read, if any (always, for a success).
    job: Job | None
    message: str


def make_event(*, status: str, job_id: str, job: Job | None = None, message: str = "") -> dict[str, Any]:
    """An event payload of plain JSON values (never a response object, never a secret).

    :param status: one of :data:`EVENT_STATUSES`.
    :param job: the job as last read, if any.
    :param message: what happened, for the task log.
    """
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    return {"status": status, "job_id": job_id, "job": job.to_dict() if job else None, "message": message}


def read_event(event: Any) -> JobEvent:
    """Check an event against the allow-list and read it back.

    :raises InvalidTriggerEvent: for anything a Doitong trigger does not send.
    """
    if not isinstance(event, dict) or set(event) != _KEYS:
        raise InvalidTriggerEvent(f"unexpected Doitong trigger event: {event!r:.200}")
    status, job_id, job, message = event["status"], event["job_id"], event["job"], event["message"]
    if status not in EVENT_STATUSES or not isinstance(job_id, str) or not isinstance(message, str):
        raise InvalidTriggerEvent(f"unexpected Doitong trigger event: {event!r:.200}")
    if job is not None and not isinstance(job, dict):
        raise InvalidTriggerEvent("unexpected Doitong trigger event: 'job' is not an object")
    try:
        parsed = Job.from_dict(job) if job is not None else None
    except (TypeError, ValueError) as exc:
        raise InvalidTriggerEvent(f"unexpected Doitong trigger event: bad job ({exc})") from None
    if status == SUCCESS and (parsed is None or parsed.id != job_id):
        raise InvalidTriggerEvent("a success event must carry its completed job")
    return JobEvent(status, job_id, parsed, message)


def event_for(job_id: str, outcome: Job | BaseException, *, last: Job | None = None) -> dict[str, Any]:
    """The event for how a wait ended: the completed job, or the error that ended it.

    :param outcome: the completed job, or the error (from the wait's core or the poller).
    :param last: the job as last read, carried by error events.
    """
    if isinstance(outcome, Job):
        return make_event(
            status=SUCCESS, job_id=job_id, job=outcome, message=f"Doitong job {job_id} completed"
        )
    status = next((s for s, cls in _ERRORS.items() if isinstance(outcome, cls)), ERROR)
    job = outcome.job if isinstance(outcome, DoitongError) and outcome.job is not None else last
    return make_event(status=status, job_id=job_id, job=job, message=str(outcome))


def error_of(status: str, job_id: str, job: Job | None, message: str) -> DoitongError | None:
    """The error an event (as :func:`read_event` returns it) stands for; ``None`` for a success.

    The worker hands it to :func:`~airflow_provider_doitong.operators.airflow_errors.airflow_error`, as it would an
    error raised in the worker.
    """
    if status == SUCCESS:
        return None
    cls = _ERRORS.get(status, DoitongError)
    return cls(message, job=job, code=job.error_code if job is not None and status == FAILED else None)


# --- the batch trigger's events -------------------------------------------------------------------

BATCH_ENDED = "ended"
BATCH_WAKE = "wake"
BATCH_TIMEOUT = "timeout"
BATCH_ERROR = "error"
BATCH_EVENT_STATUSES = frozenset({BATCH_ENDED, BATCH_WAKE, BATCH_TIMEOUT, BATCH_ERROR})
_BATCH_KEYS = frozenset({"status", "ended", "fired_at", "message"})
#: Keys an event may carry besides :data:`_BATCH_KEYS` (absent from events of earlier releases).
_OPTIONAL_BATCH_KEYS = frozenset({"read_at"})


class BatchEvent(NamedTuple):
    """A batch trigger's event, checked."""

    status: str
    ended: list[str]
    fired_at: float
    message: str
    #: When every watched job's status was last known (``None``: not said).
    read_at: float | None


class InvalidBatchEvent(InvalidTriggerEvent):
    """An event no :class:`~airflow_provider_doitong.triggers.batch.DoitongBatchTrigger` sends."""


def make_batch_event(
    *, status: str, ended: Sequence[str], fired_at: float, message: str, read_at: float | None = None
) -> dict[str, Any]:
    """A batch trigger's event payload: plain JSON.

    :param status: one of :data:`BATCH_EVENT_STATUSES`.
    :param ended: the job ids seen ended.
    :param fired_at: the Unix time the trigger fired (the task measures its resume time from it).
    :param message: why, for the task log.
    :param read_at: the Unix time every watched job's status was last known, if known.
    """
    if status not in BATCH_EVENT_STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    return {
        "status": status,
        "ended": [str(j) for j in ended],
        "fired_at": float(fired_at),
        "message": message,
        "read_at": None if read_at is None else float(read_at),
    }


def _is_time(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def read_batch_event(event: Any) -> BatchEvent:
    """Check an event against the allow-list and read it back.

    :param event: what the task's resume method received.
    :raises InvalidBatchEvent: for anything the trigger does not send.
    """
    if (
        not isinstance(event, dict)
        or not _BATCH_KEYS <= set(event)
        or not set(event) <= _BATCH_KEYS | _OPTIONAL_BATCH_KEYS
    ):
        raise InvalidBatchEvent(f"unexpected Doitong batch event: {event!r:.200}")
    status, ended, fired_at, message = event["status"], event["ended"], event["fired_at"], event["message"]
    read_at = event.get("read_at")
    if (
        status not in BATCH_EVENT_STATUSES
        or not isinstance(ended, list)
        or not all(isinstance(j, str) for j in ended)
        or not _is_time(fired_at)
        or not isinstance(message, str)
        or not (read_at is None or _is_time(read_at))
    ):
        raise InvalidBatchEvent(f"unexpected Doitong batch event: {event!r:.200}")
    return BatchEvent(
        status, list(ended), float(fired_at), message, None if read_at is None else float(read_at)
    )
