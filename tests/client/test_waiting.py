"""The pure next step of a wait for a job."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.client.errors import DoitongJobFailed, DoitongNotFound, DoitongTimeout
from airflow_provider_doitong.client.models import Job
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.waiting import next_step
from airflow_provider_doitong.contract import JobStatus

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
    [(0, 20.0, 20.0), (4, 20.0, 5.0), (50, 20.0, 1.0), (None, 20.0, 1.0)],
)
def test_polls_are_paced_by_the_rate_limit(remaining: int | None, reset_in: float, expected: float) -> None:
    rate = RateLimitInfo(
        limit=60, remaining=remaining, reset_at=NOW + reset_in, retry_at=None, observed_at=NOW
    )
    step = next_step("j", _job("processing"), now=NOW, deadline=None, poll_interval=1.0, rate_limit=rate)
    assert step.sleep == pytest.approx(expected)
