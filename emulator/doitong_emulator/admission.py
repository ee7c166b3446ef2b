"""Whether a submission is admitted (daily limit, concurrency, credits) and the job it becomes."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Mapping

from airflow_provider_doitong.client.contract import (
    JOB_FAILED_ERROR_CODE,
    RATE_LIMIT_WINDOW_SECONDS,
    RETRY_AFTER_HEADER,
    ErrorCode,
    credit_cost,
)
from doitong_emulator.accounts import AccountState
from doitong_emulator.config import EmulatorConfig
from doitong_emulator.errors import ApiError
from doitong_emulator.jobs import OUTCOME_FAILED, OUTCOME_STUCK, Job, JobRequest, iso_utc
from doitong_emulator.limits import format_retry_after, next_utc_midnight


def check_limits(
    account: AccountState,
    now: float,
    *,
    jobs: Mapping[str, Job],
    config: EmulatorConfig,
    held: tuple[int, float] = (0, 0.0),
) -> None:
    """Refuse a submission over the daily or the concurrency limit.

    The concurrency refusal's ``Retry-After`` is the time until the account's first running job
    is due (or one rate-limit window when only stuck jobs run).

    :param held: job slots another client holds, and for how many more real seconds.

    :raises ApiError: 429 ``DAILY_LIMIT`` or ``CONCURRENCY_LIMIT``.
    """
    limits = account.limits
    exact = config.exact_times
    if limits.daily_limit is not None and account.daily.current(now) >= limits.daily_limit:
        reset_at = next_utc_midnight(now)
        raise ApiError(
            ErrorCode.DAILY_LIMIT,
            f"Daily limit of {limits.daily_limit} submissions reached; it resets at {iso_utc(reset_at)}",
            headers={RETRY_AFTER_HEADER: format_retry_after(reset_at - now, exact=exact)},
            dailyLimit=limits.daily_limit,
            resetAt=iso_utc(reset_at),
        )
    slots, held_for = held
    if limits.concurrent_jobs is not None and len(account.active) + slots >= limits.concurrent_jobs:
        finishes = [jobs[job_id].finish_at for job_id in account.active if jobs[job_id].finish_at is not None]
        if slots:
            finishes.append(now + held_for)
        wait = (
            min(finishes) - now  # type: ignore[type-var,operator]
            if finishes
            else RATE_LIMIT_WINDOW_SECONDS * config.time_scale
        )
        retry_after = format_retry_after(wait, exact=exact)
        raise ApiError(
            ErrorCode.CONCURRENCY_LIMIT,
            f"{len(account.active) + slots} jobs are still running; the plan allows {limits.concurrent_jobs} at once",
            headers={RETRY_AFTER_HEADER: retry_after},
            concurrentJobs=limits.concurrent_jobs,
            retryAfter=float(retry_after),
        )


def charge(account: AccountState, request: JobRequest, *, factor: float = 1.0) -> int:
    """The credits a submission costs, if the account has them.

    :param factor: the price multiplier (``FaultConfig.charge_factor``; 1: the contract's price).
    :raises ApiError: 402 ``INSUFFICIENT_CREDITS``.
    """
    cost = credit_cost(
        provider=request.provider, width=request.width, height=request.height, quality=request.quality
    )
    if factor != 1.0:
        cost = math.ceil(cost * factor)
    if account.credits < cost:
        raise ApiError(
            ErrorCode.INSUFFICIENT_CREDITS,
            "Insufficient credits for this operation",
            creditsRequired=cost,
            creditsAvailable=account.credits,
        )
    return cost


def new_job(
    *,
    account: AccountState,
    request: JobRequest,
    cost: int,
    now: float,
    outcome: str,
    config: EmulatorConfig,
    rng: random.Random,
    job_id: str | None = None,
) -> Job:
    """The job a submission becomes: its id (``job_id``, or 20 random hex digits), timeline and
    (drawn) outcome."""
    seconds = config.job_seconds
    if config.job_seconds_spread:
        seconds += rng.uniform(-config.job_seconds_spread, config.job_seconds_spread)
    started = now + config.queue_seconds * config.time_scale
    finish = None if outcome == OUTCOME_STUCK else started + max(seconds, 0.0) * config.time_scale
    job = Job(
        id=job_id or uuid.uuid4().hex[:20],
        account=account.name,
        provider=request.provider,
        prompt=request.prompt,
        width=request.width,
        height=request.height,
        quality=request.quality,
        webhook_url=request.webhook_url,
        credit_cost=cost,
        created_at=now,
        started_at=started,
        finish_at=finish,
        outcome=outcome,
    )
    if outcome == OUTCOME_FAILED:
        job.error_code = JOB_FAILED_ERROR_CODE
        job.error_message = "The model failed to generate an image"
    return job
