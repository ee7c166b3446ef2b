"""The events a Doitong trigger sends, and their checking on the worker: plain JSON, an allow-list."""

from __future__ import annotations

from typing import Any

from airflow_provider_doitong.client import Job

SUCCESS = "success"
FAILED = "failed"
TIMEOUT = "timeout"
NOT_FOUND = "not_found"
ERROR = "error"
#: Every status an event may carry.
EVENT_STATUSES = frozenset({SUCCESS, FAILED, TIMEOUT, NOT_FOUND, ERROR})
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
