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


def polls_in_one_window(pollers: int, *, checkpoints: tuple[float, ...] = ()) -> tuple[int, list[int]]:
    """Status requests ``pollers`` eager pollers send in one window (each wanting a poll every 0.25 s),
    and what was left of the window at each of ``checkpoints`` (seconds into it)."""
    remaining = LIMIT
    next_at = [0.01 * i for i in range(pollers)]
    used = 0
    left_at: list[int] = []
    marks = list(checkpoints)
    while True:
        i = min(range(pollers), key=next_at.__getitem__)
        now = next_at[i]
        while marks and now >= marks[0]:
            left_at.append(remaining)
            marks.pop(0)
        if now >= WINDOW or remaining <= 0:
            return used, left_at
        remaining -= 1
        used += 1
        seen = RateLimitInfo(limit=LIMIT, remaining=remaining, reset_at=WINDOW, retry_at=None)
        usable = dataclasses.replace(seen, remaining=status_budget(seen, now=now))
        next_at[i] = now + usable.pace_delay(now=now, min_interval=MIN_POLL_GAP)


@pytest.mark.parametrize("pollers", [1, 2, 3, 5])
def test_pollers_together_leave_the_submissions_their_share_of_the_rest(pollers: int) -> None:
    checkpoints = (1.0, 15.0, 30.0, 45.0, 55.0)
    used, left_at = polls_in_one_window(pollers, checkpoints=checkpoints)
    for at, left in zip(checkpoints, left_at, strict=True):
        # Each poller may overshoot by one poll: it paces on its own last answer, not the others'.
        kept = math.ceil(LIMIT * (1 - STATUS_SHARE) * (WINDOW - at) / WINDOW)
        assert left >= kept - pollers, (at, left, kept)
    assert used >= LIMIT * STATUS_SHARE - 1, "the status polls should still get their share"


def test_budget_keeps_half_the_even_share_of_the_rest_of_the_window() -> None:
    def info(remaining: int, limit: int | None = LIMIT) -> RateLimitInfo:
        return RateLimitInfo(limit=limit, remaining=remaining, reset_at=WINDOW, retry_at=None)

    assert status_budget(info(60), now=0.0) == 30
    assert status_budget(info(31), now=0.0) == 1
    assert status_budget(info(30), now=0.0) == 0
    # halfway through the window, half its limit spent: 15 kept, 15 for the polls (a fixed reserve
    # of half the limit left them none until the reset)
    assert status_budget(info(30), now=30.0) == 15
    assert status_budget(info(3), now=57.0) == 1
    assert status_budget(info(9, limit=None)) == 4  # no limit header: half of what remains
