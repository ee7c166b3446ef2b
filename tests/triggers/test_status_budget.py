"""The status polls' share of the rate-limit window holds across triggerers (pure decision, no I/O).

Each triggerer runs its own poller; all of them read the account-wide ``X-RateLimit-Remaining``.
The simulation below lets several pollers poll as fast as their pacing allows through one window
and counts what they used, each pacing on the headers of its own last answer, as in a triggerer.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from airflow_provider_doitong.client.pacing import MIN_POLL_GAP, STATUS_SHARE, status_budget
from airflow_provider_doitong.client.ratelimit import RateLimitInfo

LIMIT = 60
WINDOW = 60.0


def polls_in_one_window(pollers: int) -> int:
    """Status requests ``pollers`` eager pollers send in one window (each wanting a poll every 0.25 s)."""
    remaining = LIMIT
    next_at = [0.01 * i for i in range(pollers)]
    used = 0
    while True:
        i = min(range(pollers), key=next_at.__getitem__)
        now = next_at[i]
        if now >= WINDOW or remaining <= 0:
            return used
        remaining -= 1
        used += 1
        seen = RateLimitInfo(limit=LIMIT, remaining=remaining, reset_at=WINDOW, retry_at=None)
        usable = dataclasses.replace(seen, remaining=status_budget(seen))
        next_at[i] = now + usable.pace_delay(now=now, min_interval=MIN_POLL_GAP)


@pytest.mark.parametrize("pollers", [1, 2, 3, 5])
def test_pollers_together_leave_the_submissions_share(pollers: int) -> None:
    used = polls_in_one_window(pollers)
    # Each poller may overshoot by one poll: it paces on its own last answer, not the others'.
    assert used <= math.ceil(LIMIT * STATUS_SHARE) + pollers
    assert used >= LIMIT * STATUS_SHARE - 1, "the status polls should still get their share"


def test_budget_is_what_remains_above_the_reserve() -> None:
    def info(remaining: int, limit: int | None = LIMIT) -> RateLimitInfo:
        return RateLimitInfo(limit=limit, remaining=remaining, reset_at=None, retry_at=None)

    assert status_budget(info(60)) == 30
    assert status_budget(info(31)) == 1
    assert status_budget(info(30)) == 0
    assert status_budget(info(3)) == 0
    assert status_budget(info(9, limit=None)) == 4  # no limit header: half of what remains
