"""Durations as parameters take them, and instants as messages show them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_doitong.client.times import seconds, utc_iso


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (90, 90.0), (2.5, 2.5), (timedelta(minutes=2), 120.0), (timedelta(0), 0.0)],
)
def test_a_duration_in_seconds(value: float | timedelta | None, expected: float | None) -> None:
    assert seconds(value) == expected


@pytest.mark.parametrize(
    ("unix_time", "shown"),
    [
        (0, "1970-01-01T00:00:00+00:00"),
        (1_764_806_400.6, "2025-12-04T00:00:00+00:00"),
        (1e20, "Unix time 100000000000000000000"),  # a reset header no calendar holds
        (-1e20, "Unix time -100000000000000000000"),
    ],
)
def test_an_instant_as_a_message_shows_it(unix_time: float, shown: str) -> None:
    assert utc_iso(unix_time) == shown
