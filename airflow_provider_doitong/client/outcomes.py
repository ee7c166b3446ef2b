"""How a try ends after a Doitong error or job outcome, decided in one place, without Airflow.

Every task that talks to Doitong (the operators, the sensor, a trigger's event handled on the worker,
a batch's items, the example DAGs) ends a try the same way: retried (the task's ``retries`` apply),
failed for good (no retry can help), or skipped.

Two tables decide it. :func:`kind_of` names what an error says (:class:`Kind`: the request is
invalid, the key is refused, the job failed, the API is unavailable...), one row per error class;
:func:`answer_for` gives each kind its :class:`Answer`;
:func:`~airflow_provider_doitong.operators.airflow_errors.airflow_error` builds Airflow's exception.
A batch judges its items from the same two (:mod:`~airflow_provider_doitong.batch.verdicts`): an
error whose answer is final fails the item (or stops the batch), any other is tried again.

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

from airflow_provider_doitong.client.errors import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongDownloadTooLarge,
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
    InvalidTriggerEvent,
    UnsafeOutputPath,
)
from airflow_provider_doitong.client.submission import may_have_created_job
from airflow_provider_doitong.client.times import utc_iso


class Answer(str, enum.Enum):
    """How a try ends."""

    #: Retried: the task's retries apply (Airflow's ``AirflowException``).
    RETRY = "retry"
    #: Final, whatever ``retries`` says (``AirflowFailException``).
    FAIL = "fail"
    #: Skipped (``AirflowSkipException``).
    SKIP = "skip"


class Role(str, enum.Enum):
    """What a retry of the task does with its job."""

    #: The task submitted the job: a retry reattaches to it, or submits afresh after a failed job.
    SUBMITTER = "submitter"
    #: The task waits for a job submitted elsewhere: a retry watches the same job again.
    WATCHER = "watcher"


class Kind(str, enum.Enum):
    """What an error says, whoever met it."""

    #: The request breaks the contract, or the API refused its parameters (400).
    INVALID_REQUEST = "invalid_request"
    #: The API key is missing or refused (401).
    REFUSED_KEY = "refused_key"
    #: The balance does not cover the job (402).
    NO_CREDITS = "no_credits"
    #: The plan's submissions for the UTC day are spent (429 ``DAILY_LIMIT``).
    DAILY_LIMIT = "daily_limit"
    #: A rate or concurrency limit (429): it passes.
    RATE_LIMITED = "rate_limited"
    #: An output the download policy or the folder refuses (a host not allowed, an over-large body,
    #: an unsafe file name): the same output would be refused again.
    REFUSED_OUTPUT = "refused_output"
    #: Fetching an output failed otherwise (any answer of the output's host, a broken image, no answer).
    DOWNLOAD_FAILED = "download_failed"
    #: The job ended ``failed`` (refunded).
    JOB_FAILED = "job_failed"
    #: The API does not know the job.
    JOB_UNKNOWN = "job_unknown"
    #: A wait passed its deadline; the job keeps running at Doitong.
    DEADLINE = "deadline"
    #: The API failed (5xx), did not answer, or answered outside the contract.
    UNAVAILABLE = "unavailable"
    #: A trigger event no Doitong trigger sends.
    BAD_EVENT = "bad_event"
    #: Any other error.
    OTHER = "other"


#: ``on_daily_limit`` values and the answer each gives (``wait`` is handled before any error).
DAILY_LIMIT_ANSWERS: dict[str, Answer] = {"fail": Answer.FAIL, "skip": Answer.SKIP, "wait": Answer.RETRY}

#: (error class, its kind); the first matching row wins, so subclasses come before their bases.
#: A 429 is :attr:`Kind.RATE_LIMITED` unless its code is ``DAILY_LIMIT``.
_KINDS: tuple[tuple[type[BaseException], Kind], ...] = (
    (DoitongValidationError, Kind.INVALID_REQUEST),
    (DoitongBadRequest, Kind.INVALID_REQUEST),
    (DoitongUnauthorized, Kind.REFUSED_KEY),
    (DoitongInsufficientCredits, Kind.NO_CREDITS),
    (DoitongRateLimited, Kind.RATE_LIMITED),
    (DoitongUntrustedOutput, Kind.REFUSED_OUTPUT),
    (DoitongDownloadTooLarge, Kind.REFUSED_OUTPUT),
    (UnsafeOutputPath, Kind.REFUSED_OUTPUT),
    (DoitongJobFailed, Kind.JOB_FAILED),
    (DoitongNotFound, Kind.JOB_UNKNOWN),
    (DoitongTimeout, Kind.DEADLINE),
    (DoitongServerError, Kind.UNAVAILABLE),
    (DoitongConnectionError, Kind.UNAVAILABLE),
    (DoitongProtocolError, Kind.UNAVAILABLE),
    (InvalidTriggerEvent, Kind.BAD_EVENT),
)

#: Each kind's answer: (for a task that submits its job, for one that watches a job).
#: :attr:`Kind.DAILY_LIMIT` answers as the task's ``on_daily_limit`` says.
_ANSWERS: dict[Kind, tuple[Answer, Answer]] = {
    Kind.INVALID_REQUEST: (Answer.FAIL, Answer.FAIL),
    Kind.REFUSED_KEY: (Answer.FAIL, Answer.FAIL),
    Kind.NO_CREDITS: (Answer.FAIL, Answer.FAIL),
    Kind.REFUSED_OUTPUT: (Answer.FAIL, Answer.FAIL),
    Kind.JOB_FAILED: (Answer.RETRY, Answer.FAIL),
    Kind.JOB_UNKNOWN: (Answer.RETRY, Answer.FAIL),
    Kind.DEADLINE: (Answer.RETRY, Answer.FAIL),
    Kind.RATE_LIMITED: (Answer.RETRY, Answer.RETRY),
    Kind.DOWNLOAD_FAILED: (Answer.RETRY, Answer.RETRY),
    Kind.UNAVAILABLE: (Answer.RETRY, Answer.RETRY),
    Kind.BAD_EVENT: (Answer.RETRY, Answer.RETRY),
    Kind.OTHER: (Answer.RETRY, Answer.RETRY),
}


def kind_of(error: BaseException, *, downloading: bool = False) -> Kind:
    """What ``error`` says.

    :param downloading: the error came from fetching a job's output, where an HTTP error is the
        output host's answer about that URL (a 401 there says nothing of the API key): anything
        but a refused output is :attr:`Kind.DOWNLOAD_FAILED`.
    """
    kind = next((k for cls, k in _KINDS if isinstance(error, cls)), Kind.OTHER)
    if kind is Kind.RATE_LIMITED and isinstance(error, DoitongRateLimited) and error.is_daily_limit:
        kind = Kind.DAILY_LIMIT
    if downloading and kind is not Kind.REFUSED_OUTPUT:
        return Kind.DOWNLOAD_FAILED
    return kind


def answer_for(
    error: BaseException,
    *,
    role: Role = Role.SUBMITTER,
    on_daily_limit: str = "fail",
    downloading: bool = False,
) -> Answer:
    """How a try that ended with ``error`` ends in Airflow.

    :param role: whether a retry of the task submits (or reattaches to) its own job, or only
        watches one submitted elsewhere.
    :param on_daily_limit: ``fail``, ``skip`` or ``wait``: the task's choice for a 429 ``DAILY_LIMIT``.
    :param downloading: see :func:`kind_of`.
    :raises ValueError: for an unknown ``on_daily_limit``.
    """
    if on_daily_limit not in DAILY_LIMIT_ANSWERS:
        raise ValueError(
            f"on_daily_limit must be one of {tuple(DAILY_LIMIT_ANSWERS)}, got {on_daily_limit!r}"
        )
    kind = kind_of(error, downloading=downloading)
    if kind is Kind.DAILY_LIMIT:
        return DAILY_LIMIT_ANSWERS[on_daily_limit]
    submitter, watcher = _ANSWERS[kind]
    return submitter if role is Role.SUBMITTER else watcher


def resubmit_after_wait(error: BaseException, *, on_daily_limit: str = "fail") -> bool:
    """Whether a failed submission proved that no job was made and passes with time.

    True for a connection never made and for a 429 the task waits out (a rate or concurrency
    limit; the daily limit under ``on_daily_limit="wait"``): submit the same request again once its
    wait is over. Whether a job may exist is
    :func:`~airflow_provider_doitong.client.submission.may_have_created_job`'s; the wait itself is
    :mod:`~airflow_provider_doitong.client.retry`'s.
    """
    if may_have_created_job(error):
        return False
    kind = kind_of(error)
    if kind is Kind.UNAVAILABLE:  # and no job: a connection never made
        return True
    return kind in (Kind.RATE_LIMITED, Kind.DAILY_LIMIT) and (
        answer_for(error, on_daily_limit=on_daily_limit) is Answer.RETRY
    )


def describe(error: BaseException, *, conn_id: str | None = None) -> str:
    """The task-log message for ``error``: the error itself, with the numbers a reader needs.

    :param conn_id: the Airflow connection the request used, named when its API key was refused.
    """
    if conn_id and kind_of(error) is Kind.REFUSED_KEY:
        return f"{error} (the API key of the Airflow connection {conn_id!r})"
    if isinstance(error, DoitongInsufficientCredits):
        return (
            f"Not enough Doitong credits: this image needs {error.credits_required}, the account has "
            f"{error.credits_available} ({error})"
        )
    if isinstance(error, DoitongRateLimited) and error.is_daily_limit:
        resets = utc_iso(error.retry_at) if error.retry_at is not None else "the next UTC midnight"
        return f"The Doitong daily limit is reached; it resets at {resets}: {error.message}"
    return str(error)
