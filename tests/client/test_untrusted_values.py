"""The one parser for untrusted values: times, credits, statuses and job fields, with their bounds."""

from __future__ import annotations

import logging
import math

import pytest
from requests.structures import CaseInsensitiveDict

from airflow_provider_doitong.client import untrusted
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import DoitongProtocolError, DoitongRateLimited
from airflow_provider_doitong.client.models import Account, Job
from airflow_provider_doitong.client.protocol import build_jobs_query, interpret
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.retry import RetryPolicy, compute_wait

NOW = 1_800_000_000.0
WINDOW = 60.0
DAY = 86_400.0


@pytest.mark.parametrize(
    ("value", "max_ahead", "expected"),
    [
        pytest.param(str(int((NOW + 20) * 1000)), WINDOW, NOW + 20, id="epoch-ms"),
        pytest.param(f"{(NOW + 20) * 1000:.0f}", DAY, NOW + 20, id="epoch-ms-retry-after"),
        pytest.param(str(int(NOW + 20)), WINDOW, NOW + 20, id="epoch-seconds"),
        pytest.param("20000", WINDOW, NOW + 20, id="relative-ms-in-window"),
        pytest.param("20", WINDOW, NOW + 20, id="relative-seconds"),
        pytest.param("20000", DAY, NOW + 20000, id="relative-seconds-for-a-day"),
        pytest.param("999999999999999999", WINDOW, NOW + WINDOW, id="absurd-epoch-capped"),
        pytest.param("1e300", DAY, NOW + DAY, id="absurd-relative-capped"),
        pytest.param(str(int(NOW + 7200)), WINDOW, NOW + WINDOW, id="two-hours-capped-to-window"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", DAY, NOW + DAY, id="far-http-date-capped"),
        pytest.param(str(int(NOW - 30)), WINDOW, NOW - 30, id="stale-kept"),
        pytest.param("1e400", DAY, None, id="overflow"),
        pytest.param("-1", DAY, None, id="negative"),
        pytest.param("x" * 1000, DAY, None, id="long-garbage"),
    ],
)
def test_time_values_are_read_and_bounded(value: str, max_ahead: float, expected: float | None) -> None:
    got = untrusted.read_time_value(value, now=NOW, max_ahead=max_ahead)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-3))


def test_an_absurd_value_is_logged_once_with_its_raw_value(caplog: pytest.LogCaptureFixture) -> None:
    untrusted._WARNED.discard("X-Test")
    with caplog.at_level(logging.DEBUG, logger=untrusted.__name__):
        for _ in range(3):
            untrusted.read_time_value("999999999999999999", now=NOW, max_ahead=WINDOW, name="X-Test")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "999999999999999999" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("headers", "code", "wait_at_most"),
    [
        pytest.param({"X-RateLimit-Reset": str(int((NOW + 30) * 1000))}, "RATE_LIMITED", 31.0, id="ms-reset"),
        pytest.param({"Retry-After": "1e300"}, "CONCURRENCY_LIMIT", WINDOW + 1, id="absurd-retry-after"),
        pytest.param({"Retry-After": "999999999999999999"}, "RATE_LIMITED", WINDOW + 1, id="absurd-epoch"),
        pytest.param({"Retry-After": "1e300"}, "DAILY_LIMIT", DAY + 1, id="daily-capped-to-a-day"),
    ],
)
def test_a_refusal_never_waits_past_its_limit(
    headers: dict[str, str], code: str, wait_at_most: float
) -> None:
    body = b'{"errors": [{"message": "no", "extensions": {"code": "%s"}}]}' % code.encode()
    with pytest.raises(DoitongRateLimited) as info:
        interpret(
            build_jobs_query(["j"]), status=429, headers=CaseInsensitiveDict(headers), content=body, now=NOW
        )
    assert info.value.retry_at is not None and info.value.retry_at <= NOW + wait_at_most
    wait = compute_wait(info.value, attempt=1, policy=RetryPolicy(), now=NOW)
    assert math.isfinite(wait) and wait <= wait_at_most + 1


def test_the_window_reset_is_capped_to_the_window() -> None:
    info = RateLimitInfo.from_headers(CaseInsensitiveDict({"X-RateLimit-Reset": "99999999999999"}), now=NOW)
    assert info.reset_at == pytest.approx(NOW + WINDOW)
    assert info.pace_delay(now=NOW, min_interval=1.0) <= WINDOW


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (50, 50),
        (None, None),
        ("50", None),
        (-20, None),
        (True, None),
        (1.5, None),
        (10**30, None),
        ([], None),
    ],
)
def test_credit_cost_is_a_non_negative_integer_or_unknown(value: object, expected: int | None) -> None:
    assert untrusted.read_credit_cost(value) == expected


@pytest.mark.parametrize("value", ["100", -5, True, None, 1.0])
def test_account_credits_must_be_a_non_negative_integer(value: object) -> None:
    with pytest.raises(DoitongProtocolError, match="credits"):
        Account.from_api({"plan": "pro", "credits": value})


def test_account_credits() -> None:
    assert Account.from_api({"plan": "pro", "credits": 120}) == Account(plan="pro", credits=120)


@pytest.mark.parametrize("status", [None, 3, ["completed"], {"s": 1}, "", "x" * 1000])
def test_a_status_that_is_not_a_string_is_a_protocol_error(status: object) -> None:
    with pytest.raises(DoitongProtocolError, match="status"):
        Job.from_api({"id": "abc", "status": status})


def test_an_unknown_status_string_is_still_running() -> None:
    job = Job.from_api({"id": "abc", "status": "warming_up"})
    assert job.status is JobStatus.UNKNOWN and not job.is_terminal and job.raw_status == "warming_up"


@pytest.mark.parametrize("job_id", [123, "", "x" * 1000, None, ["a"]])
def test_a_job_id_is_a_bounded_string(job_id: object) -> None:
    with pytest.raises(DoitongProtocolError, match="id"):
        Job.from_api({"id": job_id, "status": "queued"})


def test_a_url_that_is_not_a_string_is_a_protocol_error() -> None:
    with pytest.raises(DoitongProtocolError, match="url"):
        Job.from_api({"id": "abc", "status": "completed", "url": {"href": "x"}})


def test_job_fields_out_of_type_or_bounds_are_dropped() -> None:
    job = Job.from_api(
        {
            "id": "abc",
            "status": "completed",
            "url": "https://cdn.doitong.com/a.jpg",
            "width": "1024",
            "height": True,
            "duration": float("nan"),
            "creditCost": "30",
            "createdAt": 5,
            "completedAt": "x" * 1000,
            "provider": ["flux-dev"],
            "error": {"code": 7, "message": "m" * 5000},
            "metadata": {"width": 512, "duration": -1},
        }
    )
    assert (job.width, job.height, job.duration, job.credit_cost) == (512, None, None, None)
    assert (job.created_at, job.completed_at, job.provider, job.error_code) == (None, None, None, None)
    assert job.error_message is not None and len(job.error_message) <= untrusted.MAX_MESSAGE_CHARS + 3


def test_a_well_formed_job_is_read_as_sent() -> None:
    job = Job.from_api(
        {
            "id": "abc",
            "status": "COMPLETED",
            "url": "https://cdn.doitong.com/a.jpg",
            "width": 1024,
            "height": 768,
            "duration": 3,
            "creditCost": 30,
            "createdAt": "2026-01-01T00:00:00Z",
            "completedAt": "2026-01-01T00:00:05Z",
            "provider": "flux-krea",
        }
    )
    assert job.status is JobStatus.COMPLETED and (job.width, job.height, job.duration) == (1024, 768, 3.0)
    assert job.credit_cost == 30 and job.turnaround == 5.0


def test_a_submission_answer_over_the_cap_is_ambiguous_and_a_status_read_is_retried() -> None:
    from airflow_provider_doitong.client.errors import DoitongAnswerTooLarge
    from airflow_provider_doitong.client.outcomes import Kind, kind_of
    from airflow_provider_doitong.client.retry import is_retryable
    from airflow_provider_doitong.client.submission import may_have_created_job

    body = untrusted.CappedBody(what="submission", limit=10)
    with pytest.raises(DoitongAnswerTooLarge) as info:
        body.feed(b"x" * 11, status=200)
    assert may_have_created_job(info.value)
    assert not is_retryable(info.value, safe_to_resend=False, policy=RetryPolicy(), now=NOW)
    assert is_retryable(info.value, safe_to_resend=True, policy=RetryPolicy(), now=NOW)
    assert kind_of(info.value) is Kind.UNAVAILABLE
    with pytest.raises(DoitongAnswerTooLarge, match="declares 11 bytes"):
        untrusted.CappedBody(what="status", limit=10).declared("11", status=200)


@pytest.mark.parametrize(
    ("limit", "attempt", "floor"),
    [(10, 1, 6.0), (60, 1, 1.0), (600, 1, 0.5), (None, 1, 0.5), (10, 7, 30.0), (0, 2, 1.0)],
)
def test_the_refusal_floor_keeps_to_the_plan_rate(limit: int | None, attempt: int, floor: float) -> None:
    from airflow_provider_doitong.client.retry import rate_limit_resume_at, refusal_floor

    stale = DoitongRateLimited("refused", retry_at=NOW - 30, window_limit=limit)
    assert refusal_floor(stale, attempt=attempt, policy=RetryPolicy(), now=NOW) == pytest.approx(floor)
    resume = rate_limit_resume_at(stale, attempt=attempt, policy=RetryPolicy(), now=NOW)
    assert NOW + floor <= resume <= NOW + floor + 1.0
    missing = DoitongRateLimited("refused", window_limit=limit)
    assert refusal_floor(missing, attempt=attempt, policy=RetryPolicy(), now=NOW) == pytest.approx(floor)


def test_a_reset_still_ahead_is_believed_without_the_plan_share() -> None:
    from airflow_provider_doitong.client.retry import rate_limit_resume_at

    fresh = DoitongRateLimited("refused", retry_at=NOW + 0.3, window_limit=1)
    assert rate_limit_resume_at(fresh, attempt=1, policy=RetryPolicy(), now=NOW) <= NOW + 1.5
