"""What a refused or lost submission means for a batch, decided as a pure function.

Whether an error is worth another submission or final is :mod:`~airflow_provider_doitong.client.outcomes`'
(the same table as a single job's answer); this module only says how far a final one reaches: the
item (its request was refused), the submissions (the balance or the day's limit is spent) or the
whole batch (the key was refused).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from airflow_provider_doitong.client import (
    DoitongError,
    DoitongInsufficientCredits,
    DoitongRateLimited,
    RetryPolicy,
)
from airflow_provider_doitong.client.contract import ErrorCode
from airflow_provider_doitong.client.errors import was_held
from airflow_provider_doitong.client.outcomes import (
    Answer,
    Kind,
    answer_for,
    describe,
    kind_of,
    resubmit_after_wait,
)
from airflow_provider_doitong.client.retry import backoff, rate_limit_resume_at


class Verdict(str, enum.Enum):
    """The kinds of answer to a failed submission."""

    #: No job was created; submit the item again once ``until`` has passed.
    LATER = "later"
    #: No job was created, and no more items may be submitted in this try.
    STOP = "stop"
    #: Nothing more can be done (the key was refused).
    FATAL = "fatal"
    #: The API refused this item's request for good.
    ITEM_FAILED = "item_failed"
    #: The request may have created a job whose answer was lost.
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class SubmitVerdict:
    """The answer to one failed submission.

    :param verdict: what it means.
    :param message: for the log and, for ``stop``/``fatal``/``item_failed``, the task's answer.
    :param until: for ``later`` and ``ambiguous``, when the next submission may go out.
    :param all_requests: the whole rate-limit window is spent, so status reads wait too.
    :param error: for ``stop`` and ``fatal``, the error the task's answer is decided from
        (:mod:`~airflow_provider_doitong.client.outcomes`).
    """

    verdict: Verdict
    message: str
    until: float | None = None
    all_requests: bool = False
    error: DoitongError | None = None


def judge_submit_error(
    exc: DoitongError,
    *,
    now: float,
    item: int,
    policy: RetryPolicy,
    refusals: int = 1,
    on_daily_limit: str = "fail",
) -> SubmitVerdict:
    """Judge a submission the client could not complete.

    :param exc: what the client raised (it never resends a request that may have created a job).
    :param now: the Unix time.
    :param item: the item's number (from 1), for messages.
    :param policy: the client's own retry policy, whose backoff spaces the submissions after one is refused.
    :param refusals: 429s in a row, this one included: the wait after one is bounded below by a
        backoff that grows with them (``retry.rate_limit_resume_at``).
    :param on_daily_limit: ``wait`` turns a 429 ``DAILY_LIMIT`` into a wait for its reset; ``fail``
        and ``skip`` stop submitting, and the task ends as :mod:`~airflow_provider_doitong.client.outcomes`
        says.
    """
    pause = now + backoff(policy, 2)
    if resubmit_after_wait(exc, on_daily_limit=on_daily_limit):
        if isinstance(exc, DoitongRateLimited):
            until = rate_limit_resume_at(exc, attempt=max(1, refusals), policy=policy, now=now)
            what = "A submission was held unsent" if was_held(exc) else "Doitong refused a submission"
            return SubmitVerdict(
                Verdict.LATER,
                f"{what} ({exc.code}); the next one waits {until - now:.1f}s",
                until=until,
                all_requests=exc.code in (ErrorCode.RATE_LIMITED.value, ErrorCode.DAILY_LIMIT.value),
            )
        return SubmitVerdict(
            Verdict.LATER,
            f"Could not reach Doitong to submit item {item}: {exc}",
            until=pause,
            all_requests=True,
        )
    if answer_for(exc, on_daily_limit=on_daily_limit) is not Answer.RETRY:
        return _final(exc, kind_of(exc), item)
    return SubmitVerdict(
        Verdict.AMBIGUOUS,
        f"the submission's answer was lost ({exc})",
        until=pause,
        all_requests=True,
    )


#: How far a final answer reaches, by kind; any other final kind stops the submissions.
_FINAL_REACH: dict[Kind, Verdict] = {
    Kind.INVALID_REQUEST: Verdict.ITEM_FAILED,
    Kind.REFUSED_OUTPUT: Verdict.ITEM_FAILED,
    Kind.REFUSED_KEY: Verdict.FATAL,
}


def _final(exc: DoitongError, kind: Kind, item: int) -> SubmitVerdict:
    """The verdict on a submission whose error is final: the item, the submissions or everything."""
    verdict = _FINAL_REACH.get(kind, Verdict.STOP)
    if verdict is Verdict.ITEM_FAILED:
        return SubmitVerdict(verdict, f"refused by the API: {exc.message}")
    if verdict is Verdict.FATAL:
        return SubmitVerdict(verdict, str(exc), error=exc)
    message = describe(exc)
    if isinstance(exc, DoitongInsufficientCredits):
        message = (
            f"Not enough Doitong credits: item {item} needs {exc.credits_required}, the account has "
            f"{exc.credits_available}"
        )
    return SubmitVerdict(verdict, message, error=exc)
