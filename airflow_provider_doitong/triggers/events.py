"""The events a Doitong trigger sends, and their checking on the worker: plain JSON, an allow-list."""

from __future__ import annotations

from typing import Any

from airflow_provider_doitong.client import (
    DoitongError,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongTimeout,
    DoitongUnauthorized,
    Job,
)

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


class InvalidTriggerEvent(ValueError):
    """An event that no Doitong trigger sends."""


def make_event(*, status: str, job_id: str, job: Job | None = None, message: str = "") -> dict[str, Any]:
    """An event payload of plain JSON values (never a response object, never a secret).

    :param status: one of :data:`EVENT_STATUSES`.
    :param job: the job as last read, if any.
    :param message: what happened, for the task log.
    """
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    return {"status": status, "job_id": job_id, "job": job.to_dict() if job else None, "message": message}


def read_event(event: Any) -> tuple[str, str, Job | None, str]:
    """Check an event against the allow-list and read it back.

    :returns: ``(status, job_id, job, message)``.
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
    return status, job_id, parsed, message


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

    The worker hands it to :func:`~airflow_provider_doitong.client.outcomes.airflow_error`, as it would an
    error raised in the worker.
    """
    if status == SUCCESS:
        return None
    cls = _ERRORS.get(status, DoitongError)
    return cls(message, job=job, code=job.error_code if job is not None and status == FAILED else None)
