"""What a failed submission means for a batch: a pure decision per error, from the outcome table."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.batch.verdicts import Verdict, judge_submit_error
from airflow_provider_doitong.client import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongUnauthorized,
    DoitongValidationError,
    RetryPolicy,
)
from airflow_provider_doitong.client.outcomes import Answer, Role, answer_for

NOW = 1_000.0
POLICY = RetryPolicy()


def limited(code: str, retry_at: float | None) -> DoitongRateLimited:
    return DoitongRateLimited("limited", retry_at=retry_at, status=429, code=code)


def test_a_429_waits_for_its_reset_and_never_less_than_a_growing_floor() -> None:
    verdict = judge_submit_error(limited("CONCURRENCY_LIMIT", NOW + 7), now=NOW, policy=POLICY, item=1)
    assert verdict.verdict is Verdict.LATER and not verdict.all_requests
    assert NOW + 7 <= (verdict.until or 0) <= NOW + 8
    stale = judge_submit_error(limited("RATE_LIMITED", NOW - 5), now=NOW, policy=POLICY, item=1, refusals=4)
    assert stale.all_requests and (stale.until or 0) >= NOW + 4  # a past reset still backs off


def test_a_submission_held_for_a_window_seen_spent_waits_for_its_reset_and_says_it_was_not_sent() -> None:
    held = DoitongRateLimited("spent", retry_at=NOW + 7, code="RATE_LIMITED", held=True)
    verdict = judge_submit_error(held, now=NOW, policy=POLICY, item=1)
    assert verdict.verdict is Verdict.LATER and verdict.all_requests
    assert NOW + 7 <= (verdict.until or 0) <= NOW + 8
    assert verdict.message.startswith("A submission was held unsent")


@pytest.mark.parametrize(
    ("policy", "verdict"), [("fail", Verdict.STOP), ("skip", Verdict.STOP), ("wait", Verdict.LATER)]
)
def test_the_daily_limit_follows_on_daily_limit(policy: str, verdict: Verdict) -> None:
    got = judge_submit_error(
        limited("DAILY_LIMIT", NOW + 3_600), now=NOW, policy=POLICY, item=2, on_daily_limit=policy
    )
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
    got = judge_submit_error(credits, now=NOW, policy=POLICY, item=4)
    assert got.verdict is Verdict.STOP and "item 4 needs 10, the account has 3" in got.message
    assert (
        judge_submit_error(DoitongUnauthorized("key", status=401), now=NOW, policy=POLICY, item=1).verdict
        is Verdict.FATAL
    )
    assert (
        judge_submit_error(DoitongBadRequest("bad", status=400), now=NOW, policy=POLICY, item=1).verdict
        is Verdict.ITEM_FAILED
    )
    never_sent = DoitongConnectionError("refused", request_sent=False)
    assert judge_submit_error(never_sent, now=NOW, policy=POLICY, item=1).verdict is Verdict.LATER
    for lost in (
        DoitongConnectionError("dropped", request_sent=True),
        DoitongServerError("boom", status=500),
    ):
        got = judge_submit_error(lost, now=NOW, policy=POLICY, item=1)
        assert got.verdict is Verdict.AMBIGUOUS and (got.until or 0) > NOW


# One row per kind of error a submission can meet: the batch's verdict, under on_daily_limit="fail".
VERDICTS: list[tuple[str, DoitongError, Verdict]] = [
    ("validation", DoitongValidationError("width 13", field="width"), Verdict.ITEM_FAILED),
    ("400", DoitongBadRequest("bad", status=400, code="BAD_USER_INPUT"), Verdict.ITEM_FAILED),
    ("401", DoitongUnauthorized("key", status=401, code="UNAUTHENTICATED"), Verdict.FATAL),
    ("402", DoitongInsufficientCredits("poor", status=402, code="INSUFFICIENT_CREDITS"), Verdict.STOP),
    ("429-daily", limited("DAILY_LIMIT", NOW + 3_600), Verdict.STOP),
    ("429-rate", limited("RATE_LIMITED", NOW + 3), Verdict.LATER),
    ("429-concurrency", limited("CONCURRENCY_LIMIT", NOW + 3), Verdict.LATER),
    ("refused", DoitongConnectionError("refused", request_sent=False), Verdict.LATER),
    ("dropped", DoitongConnectionError("dropped", request_sent=True), Verdict.AMBIGUOUS),
    ("500", DoitongServerError("boom", status=500), Verdict.AMBIGUOUS),
    ("malformed", DoitongProtocolError("not JSON", status=200), Verdict.AMBIGUOUS),
    ("other", DoitongError("?", status=418), Verdict.AMBIGUOUS),
]


@pytest.mark.parametrize(("error", "verdict"), [pytest.param(e, v, id=n) for n, e, v in VERDICTS])
def test_each_kind_of_error_has_its_verdict(error: DoitongError, verdict: Verdict) -> None:
    assert judge_submit_error(error, now=NOW, policy=POLICY, item=1).verdict is verdict


@pytest.mark.parametrize("policy", ["fail", "skip", "wait"])
@pytest.mark.parametrize(("error", "_verdict"), [pytest.param(e, v, id=n) for n, e, v in VERDICTS])
def test_the_verdict_is_final_exactly_where_the_outcome_table_is(
    error: DoitongError, _verdict: Verdict, policy: str
) -> None:
    """The batch decides nothing of its own about retrying: a verdict that gives the item no other
    submission comes from an answer that is final for a single job too, and the other way round."""
    got = judge_submit_error(error, now=NOW, policy=POLICY, item=1, on_daily_limit=policy)
    final = answer_for(error, role=Role.SUBMITTER, on_daily_limit=policy) is not Answer.RETRY
    assert (got.verdict in (Verdict.ITEM_FAILED, Verdict.STOP, Verdict.FATAL)) is final
    if got.verdict in (Verdict.STOP, Verdict.FATAL):
        assert got.error is error  # the task's answer is then airflow_error(error)


def test_the_wait_after_a_refusal_is_the_clients_own_backoff() -> None:
    """A refused submission is spaced by the client's retry policy (here 30 s), not a default's."""
    slow = RetryPolicy(backoff_base=30.0, backoff_max=30.0)
    got = judge_submit_error(limited("RATE_LIMITED", NOW - 5), now=NOW, policy=slow, item=1)
    assert got.verdict is Verdict.LATER and (got.until or 0) >= NOW + 30
