"""When the next status read happens: the one schedule, as a table, and its three callers agreeing.

Pure decisions on a fake clock (plain Unix times): no server, no Airflow database.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.client import pacing
from airflow_provider_doitong.client.models import Job, parse_api_time
from airflow_provider_doitong.client.pacing import (
    DUE_GROUP_FRACTION,
    DUE_MARGIN,
    MIN_POLL_GAP,
    MIN_SHORT_JOB_GAP,
    RESET_MARGIN,
    YOUNG_JOB_GAP,
    next_read_at,
    next_read_delay,
)
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.waiting import next_step
from airflow_provider_doitong.triggers import poller as poller_module

NOW = 1_000.0


def _rate(remaining: int, reset_in: float, limit: int = 60) -> RateLimitInfo:
    return RateLimitInfo(limit=limit, remaining=remaining, reset_at=NOW + reset_in, retry_at=None)


# (started, typical duration, last read, poll_interval) -> the next read, a Unix time
ROWS: list[Any] = [
    pytest.param([], None, NOW, 5.0, NOW + 5.0, id="nothing-known-reads-every-interval"),
    pytest.param([], None, NOW, 0.01, NOW + MIN_POLL_GAP, id="never-sooner-than-the-gap"),
    pytest.param([NOW], None, NOW, 30.0, NOW + YOUNG_JOB_GAP, id="young-job-first-read"),
    pytest.param([980.0], None, NOW, 5.0, NOW + 2.0, id="no-duration-yet-a-tenth-of-its-age"),
    pytest.param([900.0], None, NOW, 5.0, NOW + 5.0, id="old-job-at-most-the-interval"),
    pytest.param([NOW], None, NOW, 0.5, NOW + 0.5, id="young-gap-never-beyond-the-interval"),
    pytest.param([990.0], 12.0, NOW, 5.0, 1_002.0 + DUE_MARGIN, id="due-in-2s"),
    pytest.param([990.0, 995.0], 12.0, NOW, 5.0, 1_002.0 + DUE_MARGIN, id="earliest-due-wins"),
    pytest.param([990.0, 991.0], 12.0, NOW, 5.0, 1_003.0 + DUE_MARGIN, id="one-read-for-a-wave"),
    pytest.param([990.0, 991.5], 12.0, NOW, 5.0, 1_002.0 + DUE_MARGIN, id="wave-within-a-tenth-of-typical"),
    pytest.param([999.0], 30.0, NOW, 5.0, NOW + 5.0, id="due-after-the-interval"),
    pytest.param([985.0], 12.0, NOW, 5.0, NOW + 1.5, id="overdue-already-read-a-tenth-of-its-age"),
    pytest.param([999.95], 0.0, 999.9, 5.0, 999.9 + MIN_SHORT_JOB_GAP, id="due-at-once-still-a-gap"),
    pytest.param([999.95], None, 999.9, 5.0, 999.95 + YOUNG_JOB_GAP, id="unknown-durations-the-young-gap"),
    pytest.param([998.0], 0.4, 998.2, 5.0, 998.4 + 0.004, id="short-job-due-margin-a-hundredth"),
    pytest.param([998.0], 0.4, 998.41, 5.0, 998.41 + 0.1, id="short-job-overdue-a-quarter-of-it"),
    pytest.param([997.0], 3.0, NOW + 0.05, 5.0, NOW + 0.05 + 0.305, id="overdue-short-job-read-again-soon"),
]


@pytest.mark.parametrize(("started", "typical", "last", "interval", "expected"), ROWS)
def test_next_read_at(
    started: list[float], typical: float | None, last: float, interval: float, expected: float
) -> None:
    at = next_read_at(last_read_at=last, poll_interval=interval, started=started, typical_duration=typical)
    assert at == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "share", "expected"),
    [
        pytest.param(None, False, 5.0, id="no-headers"),
        pytest.param(_rate(remaining=60, reset_in=30.0), False, 5.0, id="plenty-left"),
        pytest.param(_rate(remaining=3, reset_in=30.0), False, 10.0, id="stretched-to-the-window"),
        pytest.param(
            _rate(remaining=0, reset_in=30.0), False, 30.0 + RESET_MARGIN, id="spent-waits-for-reset"
        ),
        # half the window ahead: the submissions keep half of its even share, 15 requests
        # ... spent now, but the reserve shrinks by half a request a second: 14 of the 15 left are
        # the polls' again 2 s later (before: at the reset, 30 s later, the jobs that ended unseen)
        pytest.param(_rate(remaining=15, reset_in=30.0), True, 2.0, id="status-share-spent-opens-again"),
        pytest.param(
            _rate(remaining=1, reset_in=30.0), True, 30.0 + RESET_MARGIN, id="status-share-last-one"
        ),
        pytest.param(_rate(remaining=21, reset_in=30.0), True, 5.0, id="status-share-6-left"),
        pytest.param(_rate(remaining=18, reset_in=30.0), True, 10.0, id="status-share-3-left"),
        # half the limit spent halfway through: the polls go on (a fixed reserve of 30 stopped them)
        pytest.param(
            _rate(remaining=30, reset_in=30.0), True, 5.0, id="status-share-shrinks-with-the-window"
        ),
    ],
)
def test_rate_limit_stretches_the_interval(rate: RateLimitInfo | None, share: bool, expected: float) -> None:
    delay = next_read_delay(now=NOW, last_read_at=NOW, poll_interval=5.0, rate_limit=rate, status_share=share)
    assert delay == pytest.approx(expected)


def test_early_reads_keep_to_the_paced_gap() -> None:
    # A job due in 0.5 s, but the window allows a read only every 10 s: the due read waits.
    delay = next_read_delay(
        now=NOW,
        last_read_at=NOW,
        poll_interval=30.0,
        started=[NOW - 11.5],
        typical_duration=12.0,
        rate_limit=_rate(remaining=3, reset_in=30.0),
    )
    assert delay == pytest.approx(10.0)


def test_one_set_of_constants() -> None:
    """The poller and the planner take their constants from the pacing module, not copies of their own."""
    from airflow_provider_doitong.batch import planner as planner_module

    for module in (poller_module, planner_module):
        for name in ("MIN_POLL_GAP", "DUE_MARGIN", "DUE_WINDOW", "POLL_FRACTION", "DURATION_SAMPLES"):
            value = getattr(module, name, None)
            assert value is None or value is getattr(pacing, name), f"{module.__name__}.{name}"


# --- the three callers agree -------------------------------------------------------------------


def test_the_sync_wait_never_polls_sooner_than_the_gap() -> None:
    job = Job.from_api({"id": "j", "status": "processing"})
    assert next_step("j", job, now=NOW, deadline=None, poll_interval=0.005).sleep == pytest.approx(
        MIN_POLL_GAP
    )
    assert next_step("j", job, now=NOW, deadline=None, poll_interval=5.0).sleep == pytest.approx(5.0)


def test_the_planner_reads_on_the_shared_schedule() -> None:
    planner = Planner(
        limits=Limits(concurrency=10, requests_per_window=None, window_s=60.0), poll_interval=5.0
    )
    planner.learn(12.0)
    planner.polled(999.9)
    # a job due right after the last read: no read sooner than the gap
    assert planner.next_poll_at([999.95 - 12.0 + 0.1]) == pytest.approx(999.9 + MIN_POLL_GAP)


def test_the_poller_reads_young_jobs_on_the_shared_schedule() -> None:
    """Before any duration is learned, the triggerer's poller reads a job at a tenth of its age, as
    the batch does, not only every ``poll_interval``."""

    async def _unused_factory() -> Any:
        raise AssertionError("no client is made")

    poller_module._DURATIONS.pop("pacing-test", None)
    poller = poller_module.JobPoller(key="pacing-test", client_factory=_unused_factory)
    now = time.time()
    poller._watchers = {"j": [poller_module._Watcher(poll_interval=30.0)]}
    poller._created_at = {"j": now - 20.0}
    poller._last_poll_at = now
    delay = poller._interval()
    assert 1.5 < delay <= 2.0  # a tenth of the job's 20 s, not the 30 s interval
    poller_module._DURATIONS.pop("pacing-test", None)


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
    """The poller's job starts come from the API's ``createdAt``."""
    assert parse_api_time(value) == expected


def test_a_batch_reads_the_jobs_due_together_and_nothing_before_the_next_due() -> None:
    started = [990.0, 990.15, 990.3, 990.45]  # due at 1,006.05 to 1,006.5 (16-s jobs)
    wave = next_read_at(last_read_at=NOW, poll_interval=5.0, started=started, typical_duration=16.0)
    assert wave == pytest.approx(NOW + 5.0)  # the poller's rule: poll_interval caps it
    kw: Any = {"last_read_at": NOW, "poll_interval": 5.0, "started": started, "typical_duration": 16.0}
    # a batch: the whole wave in one read, at its expected end, no read at the interval before it
    assert next_read_at(**kw, predicted_cap=False) == pytest.approx(1_006.45 + DUE_MARGIN)
    # a batch with items waiting for slots: the jobs due within 2 % of 16 s of the first (0.32 s)
    assert next_read_at(**kw, predicted_cap=False, group=DUE_GROUP_FRACTION) == pytest.approx(
        1_006.3 + DUE_MARGIN
    )


def test_a_spent_status_share_reopens_as_the_reserve_shrinks_whatever_the_headers_say() -> None:
    from airflow_provider_doitong.client.pacing import status_budget_opens_at

    reset = NOW + 30.0
    # 60 a minute: the reserve shrinks by half a request a second; 14 of 15 are the polls' at reset - 28
    assert status_budget_opens_at(RateLimitInfo(limit=60, remaining=15, reset_at=reset, retry_at=None)) == (
        pytest.approx(reset - 28.0)
    )
    for limit, remaining in ((60, 1), (60, 0), (0, 15), (None, 15)):  # nothing left, or no reserve said
        info = RateLimitInfo(limit=limit, remaining=remaining, reset_at=reset, retry_at=None)
        assert status_budget_opens_at(info) == reset
    assert status_budget_opens_at(RateLimitInfo(limit=60, remaining=15, reset_at=None, retry_at=None)) is None


def test_the_status_share_delays_the_read_of_jobs_due_by_one_of_their_durations_at_most() -> None:
    # 20 left and 49 s to the reset: the reserve for submissions (half the plan's rate until the
    # reset, 24.5) is more than what is left; it shrinks below 19 only 11 s from now
    rate = RateLimitInfo(limit=60, remaining=20, reset_at=NOW + 49.0, retry_at=None)
    kw = {"now": NOW, "last_read_at": NOW, "poll_interval": 5.0, "rate_limit": rate, "status_share": True}
    # two jobs of 4 s started 1.4 s ago are due 2.6 s from now: read then, or 4 s later at most
    delay = next_read_delay(**kw, started=[NOW - 1.4] * 2, typical_duration=4.0)
    assert 2.6 < delay <= 2.64 + 4.0
    # a share nearly spent (3 reads left of it, spread over the 53 s to the reset) holds it back no longer
    nearly = dict(kw, rate_limit=RateLimitInfo(limit=60, remaining=30, reset_at=NOW + 53.0, retry_at=None))
    assert next_read_delay(**nearly, started=[NOW - 1.4] * 2) > 15.0
    assert 2.6 < next_read_delay(**nearly, started=[NOW - 1.4] * 2, typical_duration=4.0) <= 2.64 + 4.0
    # a job already read past its expected end (a slow one, or durations an answer put at 0) waits
    # for the share: the share gives way once a job, for its first read after its expected end
    for started, typical in (([NOW - 10.0], 4.0), ([NOW - 1.4], 0.0)):
        assert next_read_delay(**nearly, started=started, typical_duration=typical) > 15.0
    # the window itself spent: nothing before its reset, whatever is due
    spent = dict(kw, rate_limit=RateLimitInfo(limit=60, remaining=0, reset_at=NOW + 49.0, retry_at=None))
    assert next_read_delay(**spent, started=[NOW - 1.4] * 2, typical_duration=4.0) >= 49.0
    # jobs whose end is not predicted yet wait for the share to reopen
    assert next_read_delay(**kw, started=[NOW - 1.4] * 2) == pytest.approx(11.0)
    # with the share open, the read comes when they are due
    open_share = dict(
        kw, rate_limit=RateLimitInfo(limit=60, remaining=55, reset_at=NOW + 49.0, retry_at=None)
    )
    assert next_read_delay(**open_share, started=[NOW - 1.4] * 2, typical_duration=4.0) == pytest.approx(2.64)
