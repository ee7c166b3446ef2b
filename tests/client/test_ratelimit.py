"""Reading ``X-RateLimit-*`` and ``Retry-After`` in every shape services send them."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from requests.structures import CaseInsensitiveDict

from airflow_provider_doitong.client.ratelimit import RateLimitInfo, parse_time_value

NOW = 1_800_000_000.0  # a fixed "current" Unix time
HTTP_DATE = formatdate(NOW + 90, usegmt=True)  # e.g. "Fri, 15 Jan 2027 08:01:30 GMT"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(str(int(NOW + 42)), NOW + 42, id="unix-seconds"),
        pytest.param(f"{NOW + 1.25:.3f}", NOW + 1.25, id="fractional-unix"),
        pytest.param("30", NOW + 30, id="seconds-until"),
        pytest.param("0.5", NOW + 0.5, id="fractional-seconds-until"),
        pytest.param("0", NOW, id="zero-seconds"),
        pytest.param(" 12 ", NOW + 12, id="padded"),
        pytest.param(HTTP_DATE, NOW + 90, id="http-date"),
        pytest.param("garbage", None, id="garbage"),
        pytest.param("12abc", None, id="number-then-garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="inf"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_parse_time_value(value: str | None, expected: float | None) -> None:
    _check_parse(value, expected)


@pytest.mark.parametrize(
    "value",
    [
        HTTP_DATE,
        HTTP_DATE.replace("GMT", "+0000"),
        HTTP_DATE.replace("GMT", "-0000"),
        HTTP_DATE.replace(" GMT", ""),
    ],
    ids=["gmt", "plus-zero", "minus-zero", "no-zone"],
)
@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_http_dates_are_utc_whatever_the_local_zone(
    value: str, tz: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        _check_parse(value, NOW + 90)
    finally:
        monkeypatch.undo()
        time.tzset()


def _check_parse(value: str | None, expected: float | None) -> None:
    result = parse_time_value(value, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("headers", "limit", "remaining", "reset_at", "retry_at", "resume_at"),
    [
        pytest.param(
            {
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(NOW + 20)),
            },
            60,
            0,
            NOW + 20,
            None,
            NOW + 20,
            id="reset-unix",
        ),
        pytest.param(
            {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "7", "x-ratelimit-reset": "15"},
            60,
            7,
            NOW + 15,
            None,
            NOW + 15,
            id="lowercase-reset-seconds-until",
        ),
        pytest.param(
            {"X-RateLimit-Reset": str(int(NOW + 20)), "Retry-After": "3"},
            None,
            None,
            NOW + 20,
            NOW + 3,
            NOW + 3,
            id="retry-after-seconds-wins",
        ),
        pytest.param(
            {"X-RateLimit-Reset": "garbage", "Retry-After": HTTP_DATE},
            None,
            None,
            None,
            NOW + 90,
            NOW + 90,
            id="retry-after-http-date",
        ),
        pytest.param(
            {"X-RateLimit-Limit": "abc", "X-RateLimit-Remaining": "inf", "X-RateLimit-Reset": "inf"},
            None,
            None,
            None,
            None,
            None,
            id="garbage-everywhere",
        ),
        pytest.param({"X-RateLimit-Remaining": "5.0"}, None, 5, None, None, None, id="float-remaining"),
        pytest.param({}, None, None, None, None, None, id="missing"),
    ],
)
def test_rate_limit_info_from_headers(
    headers: dict[str, str],
    limit: int | None,
    remaining: int | None,
    reset_at: float | None,
    retry_at: float | None,
    resume_at: float | None,
) -> None:
    info = RateLimitInfo.from_headers(CaseInsensitiveDict(headers), now=NOW)
    assert (info.limit, info.remaining) == (limit, remaining)
    assert info.reset_at == (pytest.approx(reset_at) if reset_at is not None else None)
    assert info.retry_at == (pytest.approx(retry_at) if retry_at is not None else None)
    assert info.resume_at == (pytest.approx(resume_at) if resume_at is not None else None)


@pytest.mark.parametrize(
    ("remaining", "reset_in", "min_interval", "expected"),
    [
        pytest.param(None, 30.0, 2.0, 2.0, id="no-headers"),
        pytest.param(0, 30.0, 2.0, 30.0, id="exhausted-waits-for-reset"),
        pytest.param(0, -5.0, 2.0, 2.0, id="exhausted-reset-past"),
        pytest.param(10, 30.0, 2.0, 3.0, id="spread-over-window"),
        pytest.param(100, 30.0, 2.0, 2.0, id="never-faster-than-min"),
    ],
)
def test_pace_delay(remaining: int | None, reset_in: float, min_interval: float, expected: float) -> None:
    info = RateLimitInfo(limit=60, remaining=remaining, reset_at=NOW + reset_in, retry_at=None)
    assert info.pace_delay(now=NOW, min_interval=min_interval) == pytest.approx(expected)
