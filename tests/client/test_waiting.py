"""The pure next step of a wait for a job."""

from __future__ import annotations

import random

import pytest

from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongTimeout,
    DoitongUnauthorized,
)
from airflow_provider_doitong.client.models import Job
from airflow_provider_doitong.client.pacing import RESET_MARGIN
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.retry import RetryPolicy
from airflow_provider_doitong.client.waiting import JobWait, after_poll_error, next_step

NOW = 1_800_000_000.0


def _job(status: str, **kwargs: object) -> Job:
    return Job.from_api({"id": "j", "status": status, **kwargs})


@pytest.mark.parametrize(
    ("job", "deadline", "outcome", "sleep"),
    [
        pytest.param(_job("completed", url="https://cdn/x.jpg"), None, "job", 0.0, id="completed"),
        pytest.param(
            _job("failed", error={"code": "GENERATION_FAILED", "message": "nsfw"}),
            None,
            DoitongJobFailed,
            0.0,
            id="failed",
        ),
        pytest.param(None, None, DoitongNotFound, 0.0, id="unknown-job"),
        pytest.param(_job("processing"), None, None, 5.0, id="processing"),
        pytest.param(_job("queued"), NOW + 100, None, 5.0, id="queued-before-deadline"),
        pytest.param(_job("upscaling"), None, None, 5.0, id="unknown-status-keeps-waiting"),
        pytest.param(_job("processing"), NOW + 2, None, 2.0, id="sleep-capped-by-deadline"),
        pytest.param(_job("processing"), NOW, DoitongTimeout, 0.0, id="deadline-reached"),
        pytest.param(_job("completed", url="u"), NOW - 10, "job", 0.0, id="completed-after-deadline-wins"),
    ],
)
def test_next_step(job: Job | None, deadline: float | None, outcome: object, sleep: float) -> None:
    step = next_step("j", job, now=NOW, deadline=deadline, poll_interval=5.0)
    if outcome == "job":
        assert step.job is job and step.error is None
    elif outcome is None:
        assert step.job is None and step.error is None
    else:
        assert isinstance(step.error, outcome)  # type: ignore[arg-type]
        assert step.job is None
    assert step.sleep == pytest.approx(sleep)


def test_failed_job_error_carries_the_job() -> None:
    job = _job("failed", error={"code": "GENERATION_FAILED", "message": "the model failed"})
    error = next_step("j", job, now=NOW, deadline=None, poll_interval=1.0).error
    assert isinstance(error, DoitongJobFailed)
    assert error.job is job and error.code == "GENERATION_FAILED"
    assert "the model failed" in str(error) and "GENERATION_FAILED" in str(error)


def test_timeout_says_the_job_keeps_running() -> None:
    error = next_step("j", _job("processing"), now=NOW, deadline=NOW - 1, poll_interval=1.0).error
    assert isinstance(error, DoitongTimeout)
    assert error.job is not None and error.job.status is JobStatus.PROCESSING
    assert "keeps running" in str(error)


@pytest.mark.parametrize(
    ("remaining", "reset_in", "expected"),
    [(0, 20.0, 20.0 + RESET_MARGIN), (4, 20.0, 5.0), (50, 20.0, 1.0), (None, 20.0, 1.0)],
)
def test_polls_are_paced_by_the_rate_limit(remaining: int | None, reset_in: float, expected: float) -> None:
    rate = RateLimitInfo(limit=60, remaining=remaining, reset_at=NOW + reset_in, retry_at=None)
    step = next_step("j", _job("processing"), now=NOW, deadline=None, poll_interval=1.0, rate_limit=rate)
    assert step.sleep == pytest.approx(expected)


# --- after a failed poll -------------------------------------------------------------------------
POLICY = RetryPolicy(backoff_base=0.5, backoff_max=30.0)
_503 = DoitongServerError("Doitong job status: down", status=503)
_REFUSED = DoitongConnectionError("Doitong job status: could not connect", request_sent=False)
_DROPPED = DoitongConnectionError("Doitong job status: no answer", request_sent=True)
_429 = DoitongRateLimited("slow down", status=429, code="RATE_LIMITED", retry_at=NOW + 20)
_401 = DoitongUnauthorized("bad key", status=401, code="UNAUTHENTICATED")
_ODD = DoitongProtocolError("not JSON", status=200)


@pytest.mark.parametrize(
    ("error", "failures", "reauthed", "deadline", "outcome"),
    [
        pytest.param(_503, 1, False, None, "sleep", id="503-waits"),
        pytest.param(_503, 400, False, None, "sleep", id="503-waits-without-end-without-deadline"),
        pytest.param(_503, 30, False, NOW + 1, "sleep", id="503-waits-until-the-deadline"),
        pytest.param(_503, 1, False, NOW, DoitongTimeout, id="503-at-the-deadline-times-out"),
        pytest.param(_REFUSED, 9, False, NOW + 60, "sleep", id="refused-waits"),
        pytest.param(_DROPPED, 9, False, NOW + 60, "sleep", id="dropped-waits"),
        pytest.param(_429, 3, False, NOW + 60, "sleep", id="429-waits"),
        pytest.param(_401, 1, False, None, "reauth", id="401-rereads-the-connection"),
        pytest.param(_401, 2, True, None, DoitongUnauthorized, id="401-again-fails"),
        pytest.param(_ODD, 4, False, None, "sleep", id="odd-answer-waits-a-little"),
        pytest.param(_ODD, 5, False, None, DoitongProtocolError, id="odd-answers-end-the-wait"),
        pytest.param(DoitongBadRequest("bad", status=400), 1, False, None, DoitongBadRequest, id="400"),
    ],
)
def test_after_poll_error(
    error: Exception, failures: int, reauthed: bool, deadline: float | None, outcome: object
) -> None:
    step = after_poll_error(
        "j",
        error,
        failures=failures,
        reauthed=reauthed,
        now=NOW,
        deadline=deadline,
        policy=POLICY,  # type: ignore[arg-type]
    )
    if outcome == "sleep":
        assert not step.done and not step.reauth and step.sleep >= 0
    elif outcome == "reauth":
        assert step.reauth and not step.done
    else:
        assert isinstance(step.error, outcome)  # type: ignore[arg-type]


@pytest.mark.parametrize("failures", [1, 3, 8, 20])
def test_outage_backoff_grows_and_stops_at_the_deadline(failures: int) -> None:
    rng = random.Random(failures)
    for _ in range(50):
        step = after_poll_error(
            "j", _503, failures=failures, reauthed=False, now=NOW, deadline=None, policy=POLICY, rng=rng
        )
        assert 0 <= step.sleep <= min(30.0, 0.5 * 2 ** (failures - 1))
    capped = after_poll_error(
        "j", _503, failures=20, reauthed=False, now=NOW, deadline=NOW + 0.25, policy=POLICY, rng=rng
    )
    assert capped.sleep <= 0.25


def test_429_while_waiting_sleeps_until_the_reset() -> None:
    step = after_poll_error("j", _429, failures=1, reauthed=False, now=NOW, deadline=None, policy=POLICY)
    assert 20.0 <= step.sleep <= 21.0


def test_a_wait_that_hands_over_ends_at_a_429_whose_reset_is_past_its_deadline() -> None:
    handing = JobWait(
        job_id="j", poll_interval=1.0, deadline=NOW + 5, clock=lambda: NOW, policy=POLICY, hand_over=True
    )
    step = handing.observe_error(_429)  # reset 20 s away: no read at the deadline into a spent window
    assert isinstance(step.error, DoitongTimeout)
    keeping = JobWait(job_id="j", poll_interval=1.0, deadline=NOW + 5, clock=lambda: NOW, policy=POLICY)
    assert keeping.observe_error(_429).sleep == 5.0  # the sync wait reads once more at its deadline
    sooner = JobWait(
        job_id="j", poll_interval=1.0, deadline=NOW + 60, clock=lambda: NOW, policy=POLICY, hand_over=True
    )
    assert 20.0 <= sooner.observe_error(_429).sleep <= 21.0  # a reset before the deadline is waited for


def test_job_wait_rereads_once_per_streak_and_forgets_after_a_good_poll() -> None:
    wait = JobWait(job_id="j", poll_interval=1.0, clock=lambda: NOW, policy=POLICY)
    assert wait.observe_error(_401).reauth
    assert isinstance(wait.observe_error(_401).error, DoitongUnauthorized)
    wait.observe(_job("processing"))
    assert wait.failures == 0 and wait.observe_error(_401).reauth


def test_deadline_error_names_the_outage() -> None:
    wait = JobWait(job_id="j", poll_interval=1.0, deadline=NOW - 1, clock=lambda: NOW, policy=POLICY)
    error = wait.observe_error(_REFUSED).error
    assert isinstance(error, DoitongTimeout)
    assert "did not finish by its deadline: the API did not answer" in str(error)
    assert "could not connect" in str(error)
