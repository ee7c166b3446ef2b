"""Airflow's answer to a Doitong error or job outcome, decided in one place.

Every task that talks to Doitong (the operators, the sensor, a trigger's event handled on the worker,
the example DAGs) ends a try the same way: a retryable :class:`AirflowException` (the task's
``retries`` apply), a final :class:`AirflowFailException` (no retry can help), or a skip.
:func:`answer_for` decides which, from one table; :func:`airflow_error` builds the exception.

Job outcomes come in as errors too: the sans-IO wait (:func:`~airflow_provider_doitong.client.waiting.next_step`)
turns a failed job into :class:`DoitongJobFailed`, an unknown one into :class:`DoitongNotFound` and
a job past its deadline into :class:`DoitongTimeout`.

What a retry can change depends on the task's :class:`Role`: a task that *submits* its job
(``FluxGenerateOperator``, a batch) submits afresh after a failed job (refunded) and reattaches after
a deadline, so both are worth a retry; a task that *watches* a job submitted elsewhere
(``DoitongJobSensor``) would only see the same failed job again.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from airflow_provider_doitong._compat import AirflowException, AirflowFailException, AirflowSkipException
from airflow_provider_doitong.client.errors import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongDownloadTooLarge,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongTimeout,
    DoitongUnauthorized,
    DoitongUntrustedOutput,
    DoitongValidationError,
)


class Answer(str, enum.Enum):
    """How a try ends."""

    #: ``AirflowException``: the task's retries apply.
    RETRY = "retry"
    #: ``AirflowFailException``: final, whatever ``retries`` says.
    FAIL = "fail"
    #: ``AirflowSkipException``.
    SKIP = "skip"


class Role(str, enum.Enum):
    """What a retry of the task does with its job."""

    #: The task submitted the job: a retry reattaches to it, or submits afresh after a failed job.
    SUBMITTER = "submitter"
    #: The task waits for a job submitted elsewhere: a retry watches the same job again.
    WATCHER = "watcher"


#: ``on_daily_limit`` values and the answer each gives (``wait`` is handled before any error).
DAILY_LIMIT_ANSWERS: dict[str, Answer] = {"fail": Answer.FAIL, "skip": Answer.SKIP, "wait": Answer.RETRY}

#: (error class, submitter's answer, watcher's answer); the first matching row wins, so subclasses
#: come before their bases.
_TABLE: tuple[tuple[type[BaseException], Answer, Answer], ...] = (
    (DoitongValidationError, Answer.FAIL, Answer.FAIL),
    (DoitongBadRequest, Answer.FAIL, Answer.FAIL),
    (DoitongUnauthorized, Answer.FAIL, Answer.FAIL),
    (DoitongInsufficientCredits, Answer.FAIL, Answer.FAIL),
    # A download the policy refuses would be refused again: an unlisted host, an over-large body.
    (DoitongUntrustedOutput, Answer.FAIL, Answer.FAIL),
    (DoitongDownloadTooLarge, Answer.FAIL, Answer.FAIL),
    (DoitongJobFailed, Answer.RETRY, Answer.FAIL),
    (DoitongNotFound, Answer.RETRY, Answer.FAIL),
    (DoitongTimeout, Answer.RETRY, Answer.FAIL),
    (DoitongRateLimited, Answer.RETRY, Answer.RETRY),
    (DoitongServerError, Answer.RETRY, Answer.RETRY),
    (DoitongConnectionError, Answer.RETRY, Answer.RETRY),
    (DoitongProtocolError, Answer.RETRY, Answer.RETRY),
    (DoitongError, Answer.RETRY, Answer.RETRY),
)

_EXCEPTIONS: dict[Answer, type[AirflowException]] = {
    Answer.RETRY: AirflowException,
    Answer.FAIL: AirflowFailException,
    Answer.SKIP: AirflowSkipException,
}


def answer_for(error: DoitongError, *, role: Role = Role.SUBMITTER, on_daily_limit: str = "fail") -> Answer:
    """How a try that ended with ``error`` ends in Airflow.

    :param role: whether a retry of the task submits (or reattaches to) its own job, or only
        watches one submitted elsewhere.
    :param on_daily_limit: ``fail``, ``skip`` or ``wait``: the task's choice for a 429 ``DAILY_LIMIT``.
    :raises ValueError: for an unknown ``on_daily_limit``.
    """
    if on_daily_limit not in DAILY_LIMIT_ANSWERS:
        raise ValueError(
            f"on_daily_limit must be one of {tuple(DAILY_LIMIT_ANSWERS)}, got {on_daily_limit!r}"
        )
    if isinstance(error, DoitongRateLimited) and error.is_daily_limit:
        return DAILY_LIMIT_ANSWERS[on_daily_limit]
    for cls, submitter, watcher in _TABLE:
        if isinstance(error, cls):
            return submitter if role is Role.SUBMITTER else watcher
    return Answer.RETRY


def describe(error: DoitongError) -> str:
    """The task-log message for ``error``: the error itself, with the numbers a reader needs."""
    if isinstance(error, DoitongInsufficientCredits):
        return (
            f"Not enough Doitong credits: this image needs {error.credits_required}, the account has "
            f"{error.credits_available} ({error})"
        )
    if isinstance(error, DoitongRateLimited) and error.is_daily_limit:
        resets = _iso(error.retry_at) if error.retry_at is not None else "the next UTC midnight"
        return f"The Doitong daily limit is reached; it resets at {resets}: {error.message}"
    return str(error)


def airflow_error(
    error: DoitongError,
    *,
    role: Role = Role.SUBMITTER,
    on_daily_limit: str = "fail",
    doing: str | None = None,
) -> AirflowException:
    """The exception a task raises for ``error`` (raise it ``from None``: the message says it all).

    :param role: see :func:`answer_for`.
    :param on_daily_limit: see :func:`answer_for`.
    :param doing: a few words put before the message, e.g. ``"Doitong submission failed"``.
    """
    answer = answer_for(error, role=role, on_daily_limit=on_daily_limit)
    message = describe(error)
    if doing:
        message = f"{doing}: {message}"
    return _EXCEPTIONS[answer](message)


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, tz=timezone.utc).isoformat(timespec="seconds")
