"""Deciding, as a pure function, what a wait for a job does next."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_doitong.client.errors import DoitongJobFailed, DoitongNotFound, DoitongTimeout
from airflow_provider_doitong.client.models import Job
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.contract import JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaitStep:
    """What to do next: finish with :attr:`job`, raise :attr:`error`, or sleep :attr:`sleep` seconds.

    :param job: the completed job.
    :param error: the reason the wait ends without a result.
    :param sleep: seconds until the next poll.
    """

    job: Job | None = None
    error: Exception | None = None
    sleep: float = 0.0

    @property
    def done(self) -> bool:
        return self.job is not None or self.error is not None

    def result(self) -> Job:
        """The completed job, or raise why the wait ended without one."""
        if self.error is not None:
            raise self.error
        assert self.job is not None
        return self.job


def job_failed_error(job: Job) -> DoitongJobFailed:
    """The error a failed job ends a wait with.

    :param job: the failed job.
    """
    detail = job.error_message or "no reason given"
    code = f" ({job.error_code})" if job.error_code else ""
    return DoitongJobFailed(f"Doitong job {job.id} failed{code}: {detail}", code=job.error_code, job=job)


def next_step(
    job_id: str,
    job: Job | None,
    *,
    now: float,
    deadline: float | None,
    poll_interval: float,
    rate_limit: RateLimitInfo | None = None,
) -> WaitStep:
    """Judge one poll of a job.

    :param job_id: the job waited for.
    :param job: what the poll read; ``None`` if the API does not know the job.
    :param now: the current Unix time.
    :param deadline: the Unix time the wait gives up at, if any.
    :param poll_interval: the wait between polls.
    :param rate_limit: the last rate-limit headers seen, to pace polls within the plan.
    """
    if job is None:
        return WaitStep(error=DoitongNotFound(f"Doitong job {job_id} does not exist", status=404))
    if job.status is JobStatus.COMPLETED:
        return WaitStep(job=job)
    if job.status is JobStatus.FAILED:
        return WaitStep(error=job_failed_error(job))
    if deadline is not None and now >= deadline:
        return WaitStep(
            error=DoitongTimeout(
                f"Doitong job {job_id} is still {job.raw_status or 'running'} at the deadline; "
                "it keeps running at Doitong (the API has no cancel)",
                job=job,
            )
        )
    sleep = rate_limit.pace_delay(now=now, min_interval=poll_interval) if rate_limit else poll_interval
    if deadline is not None:
        sleep = min(sleep, max(0.0, deadline - now))
    return WaitStep(sleep=sleep)


@dataclass
class JobWait:
    """One wait for a job, shared by the sync and async clients: judges polls, logs status changes.

    :param job_id: the job.
    :param poll_interval: the wait between polls.
    :param deadline: the Unix time the wait gives up at, if any.
    :param clock: the source of the current Unix time.
    """

    job_id: str
    poll_interval: float
    deadline: float | None = None
    clock: Callable[[], float] = time.time
    started: float = field(default_factory=time.monotonic)
    last_status: str | None = None

    def observe(self, job: Job | None, *, rate_limit: RateLimitInfo | None = None) -> WaitStep:
        """Judge one poll's answer.

        :param job: what the poll read (``None``: the API does not know the job).
        :param rate_limit: the last rate-limit headers seen.
        """
        if job is not None and job.raw_status != self.last_status:
            self.last_status = job.raw_status
            log.info(
                "Doitong job %s is %s (%.1fs waited)",
                self.job_id,
                job.raw_status,
                time.monotonic() - self.started,
            )
        return next_step(
            self.job_id,
            job,
            now=self.clock(),
            deadline=self.deadline,
            poll_interval=self.poll_interval,
            rate_limit=rate_limit,
        )
