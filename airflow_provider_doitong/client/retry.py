"""The one retry policy: what is retried, and how long to wait, as pure functions.

Both clients hand :func:`retry_args` to tenacity (``Retrying`` and ``AsyncRetrying``), so the sync and
async paths retry exactly alike.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState

from airflow_provider_doitong.client.contract import RATE_LIMIT_WINDOW_SECONDS
from airflow_provider_doitong.client.errors import (
    DoitongConnectionError,
    DoitongError,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    was_held,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard the client tries, and how a wait for a job backs off while the API is unavailable.

    :param max_attempts: attempts per request in all, the first included.
    :param backoff_base: the first backoff ceiling in seconds; it doubles each attempt.
    :param backoff_max: the largest backoff ceiling.
    :param max_rate_limit_wait: the longest wait for a rate-limit reset; a 429 whose reset is
        further away is not waited for (0 disables waiting on 429s).
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_rate_limit_wait: float = 120.0


def backoff_ceiling(policy: RetryPolicy, attempt: int) -> float:
    """The exponential ceiling after ``attempt`` failed attempts (from 1): ``base * 2**(attempt-1)``, capped."""
    return min(policy.backoff_max, policy.backoff_base * float(2 ** max(0, attempt - 1)))


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform between 0 and :func:`backoff_ceiling`.

    :param attempt: the attempt that just failed, from 1.
    """
    return (rng or random).uniform(0, backoff_ceiling(policy, attempt))


def rate_limit_wait(error: DoitongRateLimited, *, now: float) -> float | None:
    """Seconds until the reset a 429 named, or ``None`` if the answer did not say (0 if it is past)."""
    if error.retry_at is None:
        return None
    return max(0.0, error.retry_at - now)


def refusal_floor(error: DoitongRateLimited, *, attempt: int, policy: RetryPolicy, now: float) -> float:
    """The shortest wait after a 429: the backoff ceiling for ``attempt`` refusals in a row and,
    when the answer named no reset still ahead (none, or a stale one), at least one request's share
    of the plan's window (``RATE_LIMIT_WINDOW_SECONDS / X-RateLimit-Limit``), so refusals stay
    under the plan's rate even while every reset header is already past.

    The single path (the operators' refusal waits, a wait's failed polls) and a batch's planner all
    take their floor from here.
    """
    floor = backoff_ceiling(policy, attempt)
    if error.retry_at is not None and error.retry_at > now:  # a reset still ahead is believed
        return floor
    limit = getattr(error, "window_limit", None)
    share = RATE_LIMIT_WINDOW_SECONDS / limit if isinstance(limit, int) and limit > 0 else 0.0
    return max(floor, min(share, RATE_LIMIT_WINDOW_SECONDS))


def rate_limit_resume_at(
    error: DoitongRateLimited,
    *,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random | None = None,
) -> float:
    """When to try again after a 429: never before the reset it named, never sooner than the backoff.

    The wait is bounded below by ``max(reset, now + refusal_floor(attempt))``, so a reset that is
    already past (a stale header, a server clock behind ours) or missing still spaces the attempts
    out (exponentially, and at the plan's pace at least) instead of resending at once. Jitter (up to a second) follows, so callers
    refused together do not all return together. ``attempt`` counts the 429s in a row, across
    deferrals. A request held unsent for a window seen spent (``error.held``) goes at the reset it
    was held for, exactly: there was no refusal.

    :param attempt: the attempt that was refused, from 1.
    :returns: a Unix time.
    """
    if was_held(error) and error.retry_at is not None:
        return error.retry_at  # never sent: no refusal to back off from, only the reset to wait for
    floor = now + refusal_floor(error, attempt=attempt, policy=policy, now=now)
    resume = floor if error.retry_at is None else max(error.retry_at, floor)
    return resume + (rng or random).uniform(0, min(1.0, backoff_ceiling(policy, attempt)))


def is_transient(error: BaseException) -> bool:
    """Whether the API is unavailable rather than refusing: a 5xx, no answer, or a (non-daily) 429.

    A wait for a job rides these out until its deadline: the job keeps running at Doitong whatever
    the API answers meanwhile.
    """
    if isinstance(error, DoitongRateLimited):
        return not error.is_daily_limit
    return isinstance(error, DoitongServerError | DoitongConnectionError)


def is_retryable(error: BaseException, *, safe_to_resend: bool, policy: RetryPolicy, now: float) -> bool:
    """Whether another attempt may help, and cannot create a job twice.

    A submission is resent only where it cannot have created a job: a 429 (refused before any job
    exists) or a connection never made. 400, 401, 402 and 404 are never retried. A 429 is waited for
    only when its reset is within ``policy.max_rate_limit_wait``.

    :param safe_to_resend: the request can never create a job (status and account reads).
    :param now: the current Unix time.
    """
    if isinstance(error, DoitongRateLimited):
        if policy.max_rate_limit_wait <= 0:
            return False
        wait = rate_limit_wait(error, now=now)
        return wait is None or wait <= policy.max_rate_limit_wait
    if isinstance(error, DoitongConnectionError):
        return safe_to_resend or not error.request_sent
    if isinstance(error, DoitongServerError | DoitongProtocolError):
        return safe_to_resend
    return False


def compute_wait(
    error: BaseException | None,
    *,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt: :func:`rate_limit_resume_at` for a 429, else :func:`backoff`.

    :param attempt: the attempt that failed, from 1.
    :param now: the current Unix time.
    """
    if isinstance(error, DoitongRateLimited):
        return max(0.0, rate_limit_resume_at(error, attempt=attempt, policy=policy, now=now, rng=rng) - now)
    return backoff(policy, attempt, rng)


def retry_args(
    policy: RetryPolicy,
    *,
    safe_to_resend: bool,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` alike.

    :param safe_to_resend: the request can never create a job.
    :param clock: the source of the current Unix time.
    """

    held: set[int] = set()  # the attempts held unsent for a spent window: not counted

    def _stop(state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if error is not None and was_held(error):
            held.add(state.attempt_number)
        return state.attempt_number - len(held) >= policy.max_attempts

    def _retry(state: RetryCallState) -> bool:
        if state.outcome is None or not state.outcome.failed:
            return False
        error = state.outcome.exception()
        return error is not None and is_retryable(
            error, safe_to_resend=safe_to_resend, policy=policy, now=clock()
        )

    def _wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return compute_wait(error, attempt=state.attempt_number, policy=policy, now=clock(), rng=rng)

    def _before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None and was_held(error):
            log.info("%s; sending it in %.2fs", error, state.upcoming_sleep)
            return
        log.warning(
            "Doitong request failed (attempt %d of %d): %s; retrying in %.2fs",
            state.attempt_number,
            policy.max_attempts,
            error if isinstance(error, DoitongError) else type(error).__name__,
            state.upcoming_sleep,
        )

    return {
        "stop": _stop,
        "retry": _retry,
        "wait": _wait,
        "before_sleep": _before_sleep,
        "reraise": True,
    }
