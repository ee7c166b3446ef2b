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
from airflow_provider_doitong.client.outcomes import (
    Answer,
    Kind,
    Role,
    answer_for,
    describe,
    kind_of,
    resubmit_after_wait,
)
from airflow_provider_doitong.operators.airflow_errors import airflow_error, output_error
from airflow_provider_doitong.storage import UnsafeOutputPath
from airflow_provider_doitong.triggers.events import InvalidBatchEvent, InvalidTriggerEvent

R, F, S = Answer.RETRY, Answer.FAIL, Answer.SKIP


def _daily() -> DoitongRateLimited:
    return DoitongRateLimited("daily", status=429, code="DAILY_LIMIT", retry_at=1_767_225_600.0)


# Each row: the error, its kind, the answer for a task that submits its job, for one that watches a
# job, and for a task fetching a job's output (where an HTTP error is the output host's answer).
TABLE: list[tuple[str, BaseException, Kind, Answer, Answer, Answer]] = [
    ("validation", DoitongValidationError("width 13", field="width"), Kind.INVALID_REQUEST, F, F, R),
    ("400", DoitongBadRequest("bad", status=400, code="BAD_USER_INPUT"), Kind.INVALID_REQUEST, F, F, R),
    ("401", DoitongUnauthorized("no", status=401, code="UNAUTHENTICATED"), Kind.REFUSED_KEY, F, F, R),
    (
        "402",
        DoitongInsufficientCredits("poor", status=402, code="INSUFFICIENT_CREDITS"),
        Kind.NO_CREDITS,
        F,
        F,
        R,
    ),
    ("job-failed", DoitongJobFailed("job x failed", code="GENERATION_FAILED"), Kind.JOB_FAILED, R, F, R),
    ("job-not-found", DoitongNotFound("job x does not exist", status=404), Kind.JOB_UNKNOWN, R, F, R),
    ("deadline", DoitongTimeout("job x still running"), Kind.DEADLINE, R, F, R),
    ("429-rate", DoitongRateLimited("slow", status=429, code="RATE_LIMITED"), Kind.RATE_LIMITED, R, R, R),
    (
        "429-concurrency",
        DoitongRateLimited("busy", status=429, code="CONCURRENCY_LIMIT"),
        Kind.RATE_LIMITED,
        R,
        R,
        R,
    ),
    ("429-daily", _daily(), Kind.DAILY_LIMIT, F, F, R),
    ("500", DoitongServerError("oops", status=500), Kind.UNAVAILABLE, R, R, R),
    ("503", DoitongServerError("down", status=503), Kind.UNAVAILABLE, R, R, R),
    ("refused", DoitongConnectionError("refused", request_sent=False), Kind.UNAVAILABLE, R, R, R),
    ("dropped", DoitongConnectionError("dropped", request_sent=True), Kind.UNAVAILABLE, R, R, R),
    ("malformed", DoitongProtocolError("not JSON", status=200), Kind.UNAVAILABLE, R, R, R),
    (
        "untrusted-output-host",
        DoitongUntrustedOutput("elsewhere.example is not allowed"),
        Kind.REFUSED_OUTPUT,
        F,
        F,
        F,
    ),
    ("download-too-large", DoitongDownloadTooLarge("over 64 MiB"), Kind.REFUSED_OUTPUT, F, F, F),
    ("unsafe-output-path", UnsafeOutputPath("'../x' would leave /out"), Kind.REFUSED_OUTPUT, F, F, F),
    ("not-an-image", DoitongBadImage("an HTML page"), Kind.UNAVAILABLE, R, R, R),
    ("download-time-limit", DoitongDownloadTimeout("60 s"), Kind.UNAVAILABLE, R, R, R),
    ("bad-trigger-event", InvalidTriggerEvent("unexpected"), Kind.BAD_EVENT, R, R, R),
    ("bad-batch-event", InvalidBatchEvent("unexpected"), Kind.BAD_EVENT, R, R, R),
    ("other", DoitongError("?"), Kind.OTHER, R, R, R),
    ("not-doitong", RuntimeError("?"), Kind.OTHER, R, R, R),
]


@pytest.mark.parametrize(
    ("error", "kind", "submitter", "watcher", "downloading"),
    [pytest.param(e, k, s, w, d, id=name) for name, e, k, s, w, d in TABLE],
)
def test_answer_for(
    error: BaseException, kind: Kind, submitter: Answer, watcher: Answer, downloading: Answer
) -> None:
    assert kind_of(error) is kind
    assert answer_for(error, role=Role.SUBMITTER) is submitter
    assert answer_for(error, role=Role.WATCHER) is watcher
    assert answer_for(error, downloading=True) is downloading
    if kind is not Kind.REFUSED_OUTPUT:
        assert kind_of(error, downloading=True) is Kind.DOWNLOAD_FAILED


def test_every_kind_has_a_row() -> None:
    assert {kind for _, _, kind, *_ in TABLE} == set(Kind) - {Kind.DOWNLOAD_FAILED}


@pytest.mark.parametrize(
    ("error", "choice", "wait"),
    [
        (DoitongRateLimited("slow", status=429, code="RATE_LIMITED"), "fail", True),
        (DoitongRateLimited("busy", status=429, code="CONCURRENCY_LIMIT"), "fail", True),
        (_daily(), "wait", True),
        (_daily(), "fail", False),
        (_daily(), "skip", False),
        (DoitongConnectionError("refused", request_sent=False), "fail", True),
        (DoitongConnectionError("dropped", request_sent=True), "fail", False),
        (DoitongServerError("oops", status=500), "wait", False),
        (DoitongBadRequest("bad", status=400), "wait", False),
        (DoitongUnauthorized("no", status=401), "wait", False),
        (DoitongInsufficientCredits("poor", status=402), "wait", False),
    ],
)
def test_which_refused_submissions_are_waited_out(error: DoitongError, choice: str, wait: bool) -> None:
    assert resubmit_after_wait(error, on_daily_limit=choice) is wait


@pytest.mark.parametrize(
    ("error", "exception", "start"),
    [
        (DoitongUntrustedOutput("elsewhere.example"), AirflowFailException, "Not storing the image"),
        (UnsafeOutputPath("would leave"), AirflowFailException, "Not storing the image"),
        (DoitongUnauthorized("cdn 401", status=401), AirflowException, "Downloading the image"),
        (DoitongBadImage("an HTML page"), AirflowException, "Downloading the image"),
    ],
)
def test_output_errors(error: BaseException, exception: type[AirflowException], start: str) -> None:
    built = output_error(error, job_id="j1")
    assert type(built) is exception
    assert str(built).startswith(f"{start} of Doitong job j1")


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
