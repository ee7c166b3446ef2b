"""What the client and the batch tell a metrics and traces sink, free of Airflow.

The client and the batch core call an :class:`Observer` at a few central points (a request
answered, a submission made or refused, a job ended, an image stored); the Airflow layer
(:mod:`airflow_provider_doitong.hooks.observers`) passes the figures on to Airflow's own metrics and to
OpenTelemetry. Without one, :data:`NO_OBSERVER` drops everything. The metric names are the
constants below; ``docs/metrics.md`` lists them with their types and tags.

An observer must never raise into the code that calls it, and never sees the API key: it is given
figures, a model name and an error's kind only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

#: Counters (Airflow adds its ``[metrics] statsd_prefix``/``otel_prefix``, ``airflow`` by default).
JOBS_SUBMITTED = "doitong.jobs.submitted"
JOBS_REFUSED = "doitong.jobs.refused"
JOBS_COMPLETED = "doitong.jobs.completed"
JOBS_FAILED = "doitong.jobs.failed"
CREDITS_ESTIMATED = "doitong.credits.estimated"
CREDITS_CHARGED = "doitong.credits.charged"
IMAGES_STORED = "doitong.images.stored"
IMAGES_BYTES = "doitong.images.bytes"
STATUS_REQUESTS = "doitong.status_requests"
RATE_LIMITED = "doitong.rate_limited"
REQUESTS_HELD = "doitong.requests.held"
#: Timers, in milliseconds.
JOB_TURNAROUND = "doitong.job.turnaround"
JOB_END_TO_STORED = "doitong.job.end_to_stored"

COUNTERS = (
    JOBS_SUBMITTED,
    JOBS_REFUSED,
    JOBS_COMPLETED,
    JOBS_FAILED,
    CREDITS_ESTIMATED,
    CREDITS_CHARGED,
    IMAGES_STORED,
    IMAGES_BYTES,
    STATUS_REQUESTS,
    RATE_LIMITED,
    REQUESTS_HELD,
)
TIMERS = (JOB_TURNAROUND, JOB_END_TO_STORED)


@dataclass(frozen=True, kw_only=True)
class JobTrace:
    """One job's life, from its submission to its stored image, for a span.

    :param submitted_at: Unix time the job's id was known.
    :param ended_at: Unix time the job ended (submission plus its turnaround), if known.
    :param stored_at: Unix time its image was written.
    :param events: ``(name, Unix time)`` of the steps between: ``downloaded``...
    """

    job_id: str
    model: str
    credits: int | None
    submitted_at: float
    ended_at: float | None
    stored_at: float
    item: int | None = None
    events: tuple[tuple[str, float], ...] = field(default=())


class Observer(Protocol):
    """Where the client and the batch report what they did."""

    def count(self, name: str, value: int = 1, *, model: str | None = None, kind: str | None = None) -> None:
        """Add ``value`` to the counter ``name`` (one of :data:`COUNTERS`)."""

    def timing(self, name: str, seconds: float, *, model: str | None = None) -> None:
        """Record a duration for the timer ``name`` (one of :data:`TIMERS`)."""

    def job_stored(self, trace: JobTrace) -> None:
        """A job's image is stored: its whole life is known (a span, where traces are on)."""


class NoObserver:
    """Drops everything: the default of every client."""

    def count(self, name: str, value: int = 1, *, model: str | None = None, kind: str | None = None) -> None:
        return None

    def timing(self, name: str, seconds: float, *, model: str | None = None) -> None:
        return None

    def job_stored(self, trace: JobTrace) -> None:
        return None


NO_OBSERVER: Observer = NoObserver()

_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def refusal_kind(exc: BaseException) -> str:
    """A short, bounded label for why a submission was refused: the error's class in snake case
    (``DoitongRateLimited`` is ``rate_limited``, ``DoitongInsufficientCredits`` is
    ``insufficient_credits``); never the message, which may quote what was sent.
    """
    name = type(exc).__name__.removeprefix("Doitong") or "error"
    return _WORD.sub("_", name).lower()


def stored(
    observer: Observer,
    *,
    trace: JobTrace,
    size: int,
) -> None:
    """Report a stored image: its count, bytes, the time from its job's end, and the job's span.

    The one place both operators report a stored image through.
    """
    observer.count(IMAGES_STORED, model=trace.model)
    observer.count(IMAGES_BYTES, size, model=trace.model)
    if trace.ended_at is not None:
        observer.timing(JOB_END_TO_STORED, max(0.0, trace.stored_at - trace.ended_at), model=trace.model)
    observer.job_stored(trace)


def completed(observer: Observer, *, model: str, credits: int | None, turnaround: float | None) -> None:
    """Report a completed job (paid for in this run): its count, credits charged and turnaround.

    The one place both operators report a completed job through.
    """
    observer.count(JOBS_COMPLETED, model=model)
    if credits is not None:
        observer.count(CREDITS_CHARGED, credits, model=model)
    if turnaround is not None:
        observer.timing(JOB_TURNAROUND, turnaround, model=model)
