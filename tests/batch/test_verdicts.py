"""What a failed submission means for a batch: a pure decision per error."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.batch.verdicts import Verdict, judge_submit_error
from airflow_provider_doitong.client import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongInsufficientCredits,
    DoitongRateLimited,
    DoitongServerError,
    DoitongUnauthorized,
)

NOW = 1_000.0


def limited(code: str, retry_at: float | None) -> DoitongRateLimited:
    return DoitongRateLimited("limited", retry_at=retry_at, status=429, code=code)


def test_a_429_waits_for_its_reset_and_never_less_than_a_growing_floor() -> None:
    verdict = judge_submit_error(limited("CONCURRENCY_LIMIT", NOW + 7), now=NOW, item=1)
    assert verdict.verdict is Verdict.LATER and not verdict.all_requests
    assert NOW + 7 <= (verdict.until or 0) <= NOW + 8
    stale = judge_submit_error(limited("RATE_LIMITED", NOW - 5), now=NOW, item=1, refusals=4)
    assert stale.all_requests and (stale.until or 0) >= NOW + 4  # a past reset still backs off


@pytest.mark.parametrize(
    ("policy", "verdict"), [("fail", Verdict.STOP), ("skip", Verdict.STOP), ("wait", Verdict.LATER)]
)
def test_the_daily_limit_follows_on_daily_limit(policy: str, verdict: Verdict) -> None:
    got = judge_submit_error(limited("DAILY_LIMIT", NOW + 3_600), now=NOW, item=2, on_daily_limit=policy)
    assert got.verdict is verdict
    if verdict is Verdict.LATER:
        assert (got.until or 0) >= NOW + 3_600 and got.all_requests
    else:
        assert isinstance(got.error, DoitongRateLimited) and "daily limit" in got.message


def test_refusals_that_made_no_job_and_answers_that_were_lost() -> None:
    credits = DoitongInsufficientCredits(
        "no",
        status=402,
        code="INSUFFICIENT_CREDITS",
        extensions={"creditsRequired": 10, "creditsAvailable": 3},
    )
    got = judge_submit_error(credits, now=NOW, item=4)
    assert got.verdict is Verdict.STOP and "item 4 needs 10, the account has 3" in got.message
    assert (
        judge_submit_error(DoitongUnauthorized("key", status=401), now=NOW, item=1).verdict is Verdict.FATAL
    )
    assert (
        judge_submit_error(DoitongBadRequest("bad", status=400), now=NOW, item=1).verdict
        is Verdict.ITEM_FAILED
    )
    never_sent = DoitongConnectionError("refused", request_sent=False)
    assert judge_submit_error(never_sent, now=NOW, item=1).verdict is Verdict.LATER
    for lost in (
        DoitongConnectionError("dropped", request_sent=True),
        DoitongServerError("boom", status=500),
    ):
        got = judge_submit_error(lost, now=NOW, item=1)
        assert got.verdict is Verdict.UNCONFIRMED and (got.until or 0) > NOW
