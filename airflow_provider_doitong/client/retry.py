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

from tenacity import RetryCallState, stop_after_attempt

from airflow_provider_doitong.client.errors import (
    DoitongConnectionError,
    DoitongError,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard the client tries.

    :param max_attempts: attempts in all, the first included.
    :param backoff_base: the first backoff ceiling in seconds; it doubles each attempt.
    :param backoff_max: the largest backoff ceiling.
    :param max_rate_limit_wait: the longest wait for a rate-limit reset; a 429 whose reset is
        further away is not waited for (0 disables waiting on 429s).
    """

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_rate_limit_wait: float = 120.0


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform between 0 and ``base * 2**(attempt-1)``, capped.

    :param policy: the policy.
    :param attempt: the attempt that just failed, from 1.
    :param rng: the random source.
    """
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling)


def rate_limit_wait(error: DoitongRateLimited, *, now: float) -> float | None:
    """Seconds until a refused request may succeed, or ``None`` if the answer did not say.

    :param error: the 429.
    :param now: the current Unix time.
    """
    if error.retry_at is None:
        return None
    return max(0.0, error.retry_at - now)


def is_retryable(error: BaseException, *, safe_to_resend: bool, policy: RetryPolicy, now: float) -> bool:
    """Whether another attempt may help, and cannot create a job twice.

    A submission is resent only where it cannot have created a job: a 429 (refused before any job
    exists) or a connection never made. 400, 401, 402 and 404 are never retried.

    :param error: what the attempt raised.
    :param safe_to_resend: the request can never create a job (status and account reads).
    :param policy: the policy.
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
    """How long to wait before the next attempt.

    :param error: what the attempt raised.
    :param attempt: the attempt that failed, from 1.
    :param policy: the policy.
    :param now: the current Unix time.
    :param rng: the random source.
    """
    if isinstance(error, DoitongRateLimited):
        wait = rate_limit_wait(error, now=now)
        if wait is not None:
            # A little jitter after the reset, so waiting callers don't all return at once.
            return wait + (rng or random).uniform(0, min(1.0, policy.backoff_base))
    return backoff(policy, attempt, rng)


def retry_args(
    policy: RetryPolicy,
    *,
    safe_to_resend: bool,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` alike.

    :param policy: the policy.
    :param safe_to_resend: the request can never create a job.
    :param clock: the source of the current Unix time.
    :param rng: the random source for jitter.
    """

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
        log.warning(
            "Doitong request failed (attempt %d of %d): %s; retrying in %.2fs",
            state.attempt_number,
            policy.max_attempts,
            error if isinstance(error, DoitongError) else type(error).__name__,
            state.upcoming_sleep,
        )

    return {
        "stop": stop_after_attempt(policy.max_attempts),
        "retry": _retry,
        "wait": _wait,
        "before_sleep": _before_sleep,
        "reraise": True,
    }
