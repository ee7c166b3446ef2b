"""The one mapping from a Doitong error or job outcome to Airflow's answer, as a table."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_provider_doitong.client.errors import (
    DoitongBadImage,
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongTimeout,
    DoitongUnauthorized,
    DoitongUntrustedOutput,
    DoitongValidationError,
)
from airflow_provider_doitong.outcomes import Answer, Role, airflow_error, answer_for, describe

R, F, S = Answer.RETRY, Answer.FAIL, Answer.SKIP


def _daily() -> DoitongRateLimited:
    return DoitongRateLimited("daily", status=429, code="DAILY_LIMIT", retry_at=1_767_225_600.0)


# Each row: the error, the answer for a task that submits its job, for one that watches a job.
TABLE: list[tuple[str, DoitongError, Answer, Answer]] = [
    ("validation", DoitongValidationError("width 13", field="width"), F, F),
    ("400", DoitongBadRequest("bad", status=400, code="BAD_USER_INPUT"), F, F),
    ("401", DoitongUnauthorized("no", status=401, code="UNAUTHENTICATED"), F, F),
    ("402", DoitongInsufficientCredits("poor", status=402, code="INSUFFICIENT_CREDITS"), F, F),
    ("job-failed", DoitongJobFailed("job x failed", code="GENERATION_FAILED"), R, F),
    ("job-not-found", DoitongNotFound("job x does not exist", status=404), R, F),
    ("deadline", DoitongTimeout("job x still running"), R, F),
    ("429-rate", DoitongRateLimited("slow", status=429, code="RATE_LIMITED"), R, R),
    ("429-concurrency", DoitongRateLimited("busy", status=429, code="CONCURRENCY_LIMIT"), R, R),
    ("429-daily", _daily(), F, F),
    ("500", DoitongServerError("oops", status=500), R, R),
    ("503", DoitongServerError("down", status=503), R, R),
    ("refused", DoitongConnectionError("refused", request_sent=False), R, R),
    ("dropped", DoitongConnectionError("dropped", request_sent=True), R, R),
    ("malformed", DoitongProtocolError("not JSON", status=200), R, R),
    ("untrusted-output-host", DoitongUntrustedOutput("elsewhere.example is not allowed"), F, F),
    ("download-too-large", DoitongDownloadTooLarge("over 64 MiB"), F, F),
    ("not-an-image", DoitongBadImage("an HTML page"), R, R),
    ("download-time-limit", DoitongDownloadTimeout("60 s"), R, R),
    ("other", DoitongError("?"), R, R),
]


@pytest.mark.parametrize(
    ("error", "submitter", "watcher"), [pytest.param(e, s, w, id=name) for name, e, s, w in TABLE]
)
def test_answer_for(error: DoitongError, submitter: Answer, watcher: Answer) -> None:
    assert answer_for(error, role=Role.SUBMITTER) is submitter
    assert answer_for(error, role=Role.WATCHER) is watcher


@pytest.mark.parametrize(("choice", "answer"), [("fail", F), ("skip", S), ("wait", R)])
def test_daily_limit_follows_the_tasks_choice(choice: str, answer: Answer) -> None:
    assert answer_for(_daily(), on_daily_limit=choice) is answer
    other = DoitongRateLimited("slow", status=429, code="RATE_LIMITED")
    assert answer_for(other, on_daily_limit=choice) is R


def test_unknown_daily_limit_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="on_daily_limit"):
        answer_for(_daily(), on_daily_limit="ignore")


@pytest.mark.parametrize(
    ("answer", "exception"),
    [(R, AirflowException), (F, AirflowFailException), (S, AirflowSkipException)],
)
def test_airflow_error_builds_the_exception_of_the_answer(
    answer: Answer, exception: type[AirflowException]
) -> None:
    error = {R: DoitongServerError("oops", status=500), F: DoitongUnauthorized("no"), S: _daily()}[answer]
    built = airflow_error(error, on_daily_limit="skip", doing="Doitong submission failed")
    assert type(built) is exception
    assert str(built).startswith("Doitong submission failed: ")


def test_messages_carry_the_numbers() -> None:
    poor = DoitongInsufficientCredits(
        "poor",
        status=402,
        code="INSUFFICIENT_CREDITS",
        extensions={"creditsRequired": 50, "creditsAvailable": 5},
    )
    assert "needs 50, the account has 5" in describe(poor)
    assert "daily limit is reached; it resets at 2026-01-01T00:00:00+00:00" in describe(_daily())
    assert describe(DoitongServerError("oops", status=500)) == "oops | HTTP 500"
