"""The poller's schedule: at the latest after the interval, just after a job is due when it can tell."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.client.models import parse_api_time
from airflow_provider_doitong.triggers.poller import DUE_MARGIN, MIN_POLL_GAP, next_poll_delay

NOW = 1_000.0


@pytest.mark.parametrize(
    ("created_at", "typical", "last_poll_at", "expected"),
    [
        pytest.param([], None, NOW, 5.0, id="nothing-learned"),
        pytest.param([990.0], None, NOW, 5.0, id="no-duration-yet"),
        pytest.param([990.0], 12.0, NOW, 2.0 + DUE_MARGIN, id="due-in-2s"),
        pytest.param([990.0, 995.0], 12.0, NOW, 2.0 + DUE_MARGIN, id="earliest-due-wins"),
        pytest.param([990.0, 991.5], 12.0, NOW, 3.5 + DUE_MARGIN, id="one-poll-for-a-wave"),
        pytest.param([999.0], 30.0, NOW, 5.0, id="due-after-the-interval"),
        pytest.param([985.0], 12.0, NOW, 5.0, id="overdue-already-polled"),
        pytest.param([985.0], 12.0, 996.0, MIN_POLL_GAP, id="overdue-not-yet-polled"),
        pytest.param([999.95], 0.0, 999.0, MIN_POLL_GAP, id="never-faster-than-the-gap"),
    ],
)
def test_next_poll_delay(
    created_at: list[float], typical: float | None, last_poll_at: float, expected: float
) -> None:
    delay = next_poll_delay(
        now=NOW, last_poll_at=last_poll_at, interval=5.0, created_at=created_at, typical_duration=typical
    )
    assert delay == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1970-01-01T00:00:10Z", 10.0),
        ("1970-01-01T00:00:10+00:00", 10.0),
        ("1970-01-01T01:00:10+01:00", 10.0),
        ("1970-01-01T00:00:10", 10.0),
        ("yesterday", None),
        (None, None),
        ("", None),
    ],
)
def test_parse_api_time(value: str | None, expected: float | None) -> None:
    assert parse_api_time(value) == expected
