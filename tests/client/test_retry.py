"""The one retry policy: what is retried, how long it waits, and tenacity driving it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pytest
from tenacity import AsyncRetrying, Retrying

from airflow_provider_doitong.client.errors import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongTimeout,
    DoitongUnauthorized,
    DoitongValidationError,
)
from airflow_provider_doitong.client.retry import (
    RetryPolicy,
    backoff,
    backoff_ceiling,
    compute_wait,
    is_retryable,
    is_transient,
    rate_limit_resume_at,
    rate_limit_wait,
    retry_args,
)

NOW = 1_800_000_000.0
POLICY = RetryPolicy(max_attempts=5, backoff_base=0.5, backoff_max=30.0, max_rate_limit_wait=120.0)


def _rate_limited(code: str = "RATE_LIMITED", retry_in: float | None = 10.0) -> DoitongRateLimited:
    return DoitongRateLimited(
        "Doitong request: slow down",
        status=429,
        code=code,
        retry_at=None if retry_in is None else NOW + retry_in,
    )


# Each row: the error, then whether it is retried for a read (safe) and for a submission (unsafe).
RETRY_TABLE: list[tuple[str, BaseException, bool, bool]] = [
    ("400", DoitongBadRequest("bad", status=400, code="BAD_USER_INPUT"), False, False),
    ("validation", DoitongValidationError("bad width", field="width"), False, False),
    ("401", DoitongUnauthorized("no", status=401, code="UNAUTHENTICATED"), False, False),
    ("402", DoitongInsufficientCredits("poor", status=402, code="INSUFFICIENT_CREDITS"), False, False),
    ("404", DoitongNotFound("gone", status=404, code="NOT_FOUND"), False, False),
    ("429-rate-limited", _rate_limited(), True, True),
    ("429-no-reset-given", _rate_limited(retry_in=None), True, True),
    ("429-reset-at-the-limit", _rate_limited(retry_in=120.0), True, True),
    ("429-concurrency", _rate_limited("CONCURRENCY_LIMIT", 5.0), True, True),
    ("429-beyond-max-wait", _rate_limited(retry_in=121.0), False, False),
    ("429-daily-limit-tomorrow", _rate_limited("DAILY_LIMIT", 8 * 3600.0), False, False),
    ("500", DoitongServerError("oops", status=500, code="INTERNAL_SERVER_ERROR"), True, False),
    ("502", DoitongServerError("bad gateway", status=502), True, False),
    ("malformed-body", DoitongProtocolError("not JSON", status=200), True, False),
    ("connection-request-sent", DoitongConnectionError("reset", request_sent=True), True, False),
    ("connection-never-made", DoitongConnectionError("refused", request_sent=False), True, True),
    ("job-failed", DoitongJobFailed("failed"), False, False),
    ("wait-timeout", DoitongTimeout("deadline"), False, False),
    ("generic-doitong", DoitongError("?"), False, False),
    ("foreign-exception", KeyError("bug"), False, False),
]


@pytest.mark.parametrize("safe_to_resend", [True, False], ids=["read", "submission"])
@pytest.mark.parametrize(
    ("error", "retried_read", "retried_submission"),
    [pytest.param(e, r, s, id=name) for name, e, r, s in RETRY_TABLE],
)
def test_is_retryable(
    error: BaseException, retried_read: bool, retried_submission: bool, safe_to_resend: bool
) -> None:
    expected = retried_read if safe_to_resend else retried_submission
    assert is_retryable(error, safe_to_resend=safe_to_resend, policy=POLICY, now=NOW) is expected


@pytest.mark.parametrize("safe_to_resend", [True, False])
def test_rate_limit_waiting_can_be_disabled(safe_to_resend: bool) -> None:
    policy = RetryPolicy(max_rate_limit_wait=0)
    assert not is_retryable(
        _rate_limited(retry_in=0.1), safe_to_resend=safe_to_resend, policy=policy, now=NOW
    )


def test_rate_limit_wait() -> None:
    assert rate_limit_wait(_rate_limited(retry_in=7.5), now=NOW) == pytest.approx(7.5)
    assert rate_limit_wait(_rate_limited(retry_in=-3.0), now=NOW) == 0.0
    assert rate_limit_wait(_rate_limited(retry_in=None), now=NOW) is None


@pytest.mark.parametrize("attempt", range(1, 11))
def test_backoff_full_jitter_bounds(attempt: int) -> None:
    ceiling = min(POLICY.backoff_max, POLICY.backoff_base * 2 ** (attempt - 1))
    rng = random.Random(attempt)
    waits = [
        compute_wait(DoitongServerError("x"), attempt=attempt, policy=POLICY, now=NOW, rng=rng)
        for _ in range(500)
    ]
    assert all(0.0 <= w <= ceiling for w in waits)
    # Full jitter spreads over the whole range, not a band near the ceiling.
    assert min(waits) < 0.1 * ceiling
    assert max(waits) > 0.9 * ceiling
    # The same seed gives the same waits.
    again = random.Random(attempt)
    assert waits[:5] == [backoff(POLICY, attempt, again) for _ in range(5)]


def test_backoff_is_capped() -> None:
    rng = random.Random(0)
    policy = RetryPolicy(backoff_base=1.0, backoff_max=4.0)
    assert max(backoff(policy, 30, rng) for _ in range(200)) <= 4.0


@pytest.mark.parametrize("retry_in", [0.0, 2.0, 60.0])
def test_compute_wait_on_429_waits_for_the_reset(retry_in: float) -> None:
    rng = random.Random(7)
    floor = backoff_ceiling(POLICY, 3)  # 2 s after three refusals in a row
    for _ in range(200):
        wait = compute_wait(_rate_limited(retry_in=retry_in), attempt=3, policy=POLICY, now=NOW, rng=rng)
        assert max(retry_in, floor) <= wait <= max(retry_in, floor) + 1.0


@pytest.mark.parametrize("retry_in", [None, -3600.0, -1.0, 0.0])
@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_a_past_or_missing_reset_still_backs_off(retry_in: float | None, attempt: int) -> None:
    """A stale reset header (already past) or none at all: the exponential floor still spaces attempts."""
    rng = random.Random(attempt)
    floor = backoff_ceiling(POLICY, attempt)
    for _ in range(100):
        resume = rate_limit_resume_at(
            _rate_limited(retry_in=retry_in), attempt=attempt, policy=POLICY, now=NOW, rng=rng
        )
        assert NOW + floor <= resume <= NOW + floor + min(1.0, floor)


def test_stale_resets_cannot_make_a_tight_loop() -> None:
    """Twenty refusals in a row with a reset already past take minutes, not milliseconds."""
    rng = random.Random(1)
    waited = sum(
        compute_wait(_rate_limited(retry_in=-5.0), attempt=n, policy=POLICY, now=NOW, rng=rng)
        for n in range(1, 21)
    )
    assert waited >= sum(backoff_ceiling(POLICY, n) for n in range(1, 21)) > 400


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (DoitongServerError("x", status=503), True),
        (DoitongConnectionError("x", request_sent=True), True),
        (DoitongConnectionError("x", request_sent=False), True),
        (_rate_limited(), True),
        (_rate_limited("DAILY_LIMIT"), False),
        (DoitongUnauthorized("x", status=401), False),
        (DoitongProtocolError("x"), False),
        (DoitongNotFound("x"), False),
        (KeyError("bug"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def _raising(errors: list[BaseException], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return call, calls


@pytest.mark.parametrize(
    ("errors", "safe_to_resend", "attempts", "outcome"),
    [
        pytest.param([DoitongServerError("x")] * 2, True, 3, "ok", id="read-500-then-ok"),
        pytest.param([DoitongServerError("x")] * 9, True, 4, DoitongServerError, id="read-500-exhausts"),
        pytest.param([DoitongServerError("x")], False, 1, DoitongServerError, id="submit-500-once"),
        pytest.param([DoitongUnauthorized("x")], True, 1, DoitongUnauthorized, id="401-once"),
        pytest.param(
            [DoitongConnectionError("x", request_sent=False)] * 2, False, 3, "ok", id="submit-refused-then-ok"
        ),
        pytest.param([_rate_limited(retry_in=0.0)], False, 2, "ok", id="submit-429-then-ok"),
        pytest.param([_rate_limited(retry_in=1000.0)], True, 1, DoitongRateLimited, id="429-too-far"),
    ],
)
def test_tenacity_sync_and_async_apply_the_same_policy(
    errors: list[BaseException], safe_to_resend: bool, attempts: int, outcome: object
) -> None:
    policy = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.02, max_rate_limit_wait=5.0)
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    call, calls = _raising(errors)

    def run_sync() -> str:
        for attempt in Retrying(
            sleep=fake_sleep, **retry_args(policy, safe_to_resend=safe_to_resend, clock=lambda: NOW)
        ):
            with attempt:
                return call()
        raise AssertionError("unreachable")

    async def async_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    acall, acalls = _raising(errors)

    async def run_async() -> str:
        async for attempt in AsyncRetrying(
            sleep=async_sleep, **retry_args(policy, safe_to_resend=safe_to_resend, clock=lambda: NOW)
        ):
            with attempt:
                return acall()
        raise AssertionError("unreachable")

    for runner, counter in ((run_sync, calls), (lambda: asyncio.run(run_async()), acalls)):
        if isinstance(outcome, type):
            with pytest.raises(outcome):
                runner()
        else:
            assert runner() == outcome
        assert len(counter) == attempts
    assert len(sleeps) == 2 * (attempts - 1)
    assert all(0.0 <= s <= 0.02 for s in sleeps)


def test_retry_logs_a_warning_per_retry(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base=0.0)
    call, calls = _raising([DoitongServerError("Doitong job status: boom", status=500)] * 5)
    caplog.set_level(logging.WARNING, logger="airflow_provider_doitong")
    with pytest.raises(DoitongServerError):
        for attempt in Retrying(sleep=lambda s: None, **retry_args(policy, safe_to_resend=True)):
            with attempt:
                call()
    assert len(calls) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "attempt 1 of 3" in warnings[0] and "attempt 2 of 3" in warnings[1]
    assert "HTTP 500" in warnings[0]
