"""Deciding, as pure functions, what a wait for a job does next: after each poll, and after each failed one.

A wait ends with the completed job, or with the error that ends it: :class:`DoitongJobFailed`,
:class:`DoitongNotFound`, :class:`DoitongTimeout` (the deadline passed, the job keeps running), or
an error the API gave that waiting cannot cure (a 401 after the connection was re-read once, a 400,
answers that keep breaking the contract). While the API is unavailable (5xx, no answer, 429) the
wait keeps going, backing off, until its deadline: the job runs on at Doitong meanwhile.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import (
    DoitongError,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongTimeout,
    DoitongUnauthorized,
    was_held,
)
from airflow_provider_doitong.client.models import Job
from airflow_provider_doitong.client.pacing import MIN_POLL_GAP, next_read_delay
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.retry import RetryPolicy, compute_wait, is_transient

log = logging.getLogger(__name__)


#: Failed polls in a row, of a kind that is neither an outage nor a final refusal (answers that do
#: not follow the contract), after which a wait gives up.
MAX_ODD_ERRORS = 5


@dataclass(frozen=True)
class WaitStep:
    """What to do next: finish with :attr:`job`, raise :attr:`error`, re-read the connection and
    poll again at once (:attr:`reauth`), or sleep :attr:`sleep` seconds.

    :param job: the completed job.
    :param error: the reason the wait ends without a result.
    :param sleep: seconds until the next poll.
    :param reauth: the API refused the key: read the connection again (a rotated key) and retry.
    """

    job: Job | None = None
    error: Exception | None = None
    sleep: float = 0.0
    reauth: bool = False

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


def timeout_error(job_id: str, job: Job | None, *, cause: BaseException | None = None) -> DoitongTimeout:
    """The error a wait ends with at its deadline.

    :param job: the job as last read, if any poll answered.
    :param cause: the last failed poll's error, if the API was unavailable at the end.
    """
    if cause is not None and was_held(cause):
        return DoitongTimeout(
            f"Doitong job {job_id} did not finish by its deadline: the account's request window was "
            f"spent ({cause}); the job may still be running at Doitong",
            job=job,
        )
    if cause is not None:
        return DoitongTimeout(
            f"Doitong job {job_id} did not finish by its deadline: the API did not answer ({cause}); "
            "the job may still be running at Doitong",
            job=job,
        )
    state = f"still {job.raw_status}" if job is not None else "no status read yet"
    return DoitongTimeout(
        f"Doitong job {job_id} did not finish by its deadline ({state}); it keeps running at Doitong "
        "(the API has no cancel)",
        job=job,
    )


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
    :param poll_interval: the longest wait between polls (see :mod:`~airflow_provider_doitong.client.pacing`).
    :param rate_limit: the last rate-limit headers seen, to pace polls within the plan.
    """
    if job is None:
        return WaitStep(error=DoitongNotFound(f"Doitong job {job_id} does not exist", status=404))
    if job.status is JobStatus.COMPLETED:
        return WaitStep(job=job)
    if job.status is JobStatus.FAILED:
        return WaitStep(error=job_failed_error(job))
    if deadline is not None and now >= deadline:
        return WaitStep(error=timeout_error(job_id, job))
    sleep = next_read_delay(now=now, last_read_at=now, poll_interval=poll_interval, rate_limit=rate_limit)
    if deadline is not None:
        sleep = min(sleep, max(0.0, deadline - now))
    return WaitStep(sleep=sleep)


def after_poll_error(
    job_id: str,
    error: DoitongError,
    *,
    failures: int,
    reauthed: bool,
    now: float,
    deadline: float | None,
    policy: RetryPolicy,
    max_odd_errors: int = MAX_ODD_ERRORS,
    rng: random.Random | None = None,
) -> WaitStep:
    """Judge a poll that raised ``error``.

    - 401: re-read the connection once (``reauth``); a second 401 in a row ends the wait.
    - 5xx, no answer, 429: the API is unavailable, not the job: back off (a 429 no sooner than
      its reset) and poll again, until the deadline, which ends the wait with :class:`DoitongTimeout`.
    - Answers that break the contract: back off, up to ``max_odd_errors`` in a row.
    - Anything else (400, 402, 404...) ends the wait.

    This is the one read-failure rule: the sync wait, the triggerer's shared poller and a batch's
    reads in the worker all follow it, with the client's own :class:`RetryPolicy`. No poll comes
    sooner than :data:`~airflow_provider_doitong.client.pacing.MIN_POLL_GAP` after a failed one.

    :param failures: failed polls in a row, this one included.
    :param reauthed: the connection was already re-read since the last good poll.
    :param now: the current Unix time.
    :param deadline: the Unix time the wait gives up at, if any.
    """
    if isinstance(error, DoitongUnauthorized):
        return WaitStep(error=error) if reauthed else WaitStep(reauth=True)
    transient = is_transient(error)
    if not transient and not (isinstance(error, DoitongProtocolError) and failures < max_odd_errors):
        return WaitStep(error=error)
    if deadline is not None and now >= deadline:
        return WaitStep(error=timeout_error(job_id, None, cause=error))
    sleep = max(MIN_POLL_GAP, compute_wait(error, attempt=failures, policy=policy, now=now, rng=rng))
    if deadline is not None:
        sleep = min(sleep, max(0.0, deadline - now))
    return WaitStep(sleep=sleep)


@dataclass
class JobWait:
    """One wait for a job, shared by the sync and async clients: judges polls, logs status changes.

    :param job_id: the job.
    :param poll_interval: the longest wait between polls.
    :param deadline: the Unix time the wait gives up at, if any.
    :param clock: the source of the current Unix time.
    :param policy: the backoff between failed polls: the client's own (the default is only for
        judging answers, as a sensor's single poke does).
    :param hand_over: the deadline is when the caller hands the wait over (to the triggerer), not
        when it gives up: a failed poll whose backoff reaches it ends the wait at once, instead of
        one more read at the deadline into a window that is still spent.
    """

    job_id: str
    poll_interval: float
    deadline: float | None = None
    clock: Callable[[], float] = time.time
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    hand_over: bool = False
    started: float = field(default_factory=time.monotonic)
    last_status: str | None = None
    failures: int = 0
    reauthed: bool = False

    def observe(self, job: Job | None, *, rate_limit: RateLimitInfo | None = None) -> WaitStep:
        """Judge one poll's answer.

        :param job: what the poll read (``None``: the API does not know the job).
        :param rate_limit: the last rate-limit headers seen.
        """
        if self.failures:
            log.info("Doitong answers again after %d failed polls", self.failures)
        self.failures, self.reauthed = 0, False
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

    def observe_error(self, error: DoitongError) -> WaitStep:
        """Judge a poll that raised ``error`` (see :func:`after_poll_error`); logs what it decided.
        A read held unsent for a window seen spent is no failed poll: it waits for the reset."""
        held = was_held(error)
        self.failures += 0 if held else 1
        step = after_poll_error(
            self.job_id,
            error,
            failures=max(1, self.failures),
            reauthed=self.reauthed,
            now=self.clock(),
            deadline=self.deadline,
            policy=self.policy,
        )
        if step.reauth:
            self.reauthed = True
            log.warning("Doitong refused the API key (%s); reading the connection again", error)
            return step
        if self.hand_over and not step.done and self.deadline is not None:
            if self.clock() + step.sleep >= self.deadline:
                return WaitStep(error=timeout_error(self.job_id, None, cause=error))
        if held and not step.done:
            log.info("Polling Doitong job %s: %s; polling again in %.1fs", self.job_id, error, step.sleep)
        elif not step.done:
            log.warning(
                "Polling Doitong job %s failed (%d in a row): %s; polling again in %.1fs",
                self.job_id,
                self.failures,
                error,
                step.sleep,
            )
        return step
