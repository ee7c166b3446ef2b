"""FluxGenerateOperator's decisions with a fake client and a fake state store: fast, no server, no DAG.

What a try does with what an earlier try left (reattach, reuse, resubmit, refuse), and how each
submission error ends it. The emulator and ``dag.test()`` tests show the same paths end to end.
"""

from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, TaskDeferred

from airflow_provider_doitong._compat import DEFERRAL_SETTLE_S, deferral_settle_s
from airflow_provider_doitong.client import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongUnauthorized,
    ImageRequest,
    Job,
    RetryPolicy,
    submission,
)
from airflow_provider_doitong.client.downloads import DownloadPolicy
from airflow_provider_doitong.client.fingerprint import fingerprint
from airflow_provider_doitong.client.observability import NO_OBSERVER
from airflow_provider_doitong.operators import flux, image_try
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.operators.submitter import SHORTEST_DEFERRAL_S
from airflow_provider_doitong.triggers import events

PROMPT = "a lighthouse at dawn"
REQUEST = ImageRequest(provider="flux-krea", prompt=PROMPT, width=256, height=256)
FP = fingerprint(REQUEST)


def _job(job_id: str = "job-1", status: str = "completed") -> Job:
    return Job.from_api({"id": job_id, "status": status, "url": f"https://cdn.doitong.com/{job_id}.jpg"})


class FakeStore:
    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.history: list[Any] = []

    def get(self, key: str, default: Any = None) -> Any:
        assert key == submission.STATE_KEY
        return self.value if self.value is not None else default

    def set(self, key: str, value: Any) -> None:
        assert key == submission.STATE_KEY
        self.value = value
        self.history.append(value["state"])

    def delete(self, key: str) -> None:
        self.value = None
        self.history.append("deleted")


class FakeClient:
    """Submissions raise the scripted errors in turn, then succeed; reads and waits answer from ``jobs``."""

    def __init__(
        self, *, jobs: dict[str, Job | None] | None = None, submit_errors: list[Exception] = ()
    ) -> None:
        self.jobs = dict(jobs or {})
        self.submit_errors = list(submit_errors)
        self.submitted: list[ImageRequest] = []
        self.download_policy = DownloadPolicy.for_api("https://api.doitong.com")
        self.observer = NO_OBSERVER
        self.retry_policy = RetryPolicy()  # a client's own, as DoitongClient's default
        self.reads: list[str] = []
        self.waits: list[str] = []
        self.young_waits: list[tuple[str, float]] = []

    def submit(self, request: ImageRequest, *, retry_policy: Any = None) -> Job:
        self.submitted.append(request)
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        job = _job(f"new-{len(self.submitted)}", "queued")
        self.jobs[job.id] = _job(job.id, "completed")
        return job

    def get_job(self, job_id: str) -> Job | None:
        self.reads.append(job_id)
        found = self.jobs.get(job_id)
        if isinstance(found, Exception):
            raise found
        return found

    def wait_for_job(self, job_id: str, **kwargs: Any) -> Job:
        self.waits.append(job_id)
        return _job(job_id, "completed")

    #: what ``wait_while_young`` finds: the job still running at ``until`` (or completed before).
    runs_long = False

    def wait_while_young(self, job_id: str, *, until: float, **kwargs: Any) -> Job | None:
        self.young_waits.append((job_id, until))
        return None if self.runs_long else _job(job_id, "completed")

    def close(self) -> None:
        pass


def _operator(client: FakeClient, **kwargs: Any) -> FluxGenerateOperator:
    op = FluxGenerateOperator(task_id="generate", prompt=PROMPT, width=256, height=256, **kwargs)
    op.__dict__["client"] = client
    op.__dict__["hook"] = SimpleNamespace(
        checked_settings=lambda: SimpleNamespace(secrets=()),
        credit_floor=lambda task_floor: task_floor,
        current_api_key=lambda: "k",
    )
    op._close = lambda: None  # type: ignore[method-assign]
    return op


def _record(state: str, job_id: str | None = "old-job", fp: str = FP) -> dict[str, Any]:
    return submission.Record(state=submission.RecordState(state), fingerprint=fp, job_id=job_id).to_json()


@pytest.fixture(autouse=True)
def _no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(flux.time, "sleep", slept.append)
    return slept


# --- what a try does with what an earlier one left ---------------------------------------------
OTHER_FP = fingerprint(ImageRequest(provider="flux-krea", prompt="another prompt", width=256, height=256))
#: The fingerprint records held before the batch's and the record's were made one: a cleared or
#: retried task still finds the job it paid for.
EARLIER_FP = hashlib.sha256(
    json.dumps(
        {
            "model": "flux-krea",
            "prompt": PROMPT,
            "width": 256,
            "height": 256,
            "quality": "standard",
            "version": "flux-krea",
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
).hexdigest()

# id, stored record, the old job as the API reports it, operator kwargs, then: submissions, reads of
# the old job, waits for a job
RESUME_TABLE: list[tuple[str, Any, Job | None, dict[str, Any], int, int, int]] = [
    ("nothing-stored", None, None, {}, 1, 0, 1),
    ("running-job-reattaches", _record("submitted"), _job("old-job", "processing"), {}, 0, 1, 1),
    ("completed-job-is-reused", _record("submitted"), _job("old-job", "completed"), {}, 0, 1, 0),
    ("failed-job-resubmits", _record("submitted"), _job("old-job", "failed"), {}, 1, 1, 1),
    ("unknown-job-resubmits", _record("submitted"), None, {}, 1, 1, 1),
    ("cleared-after-success-reuses", _record("stored"), _job("old-job"), {}, 0, 1, 0),
    (
        "cleared-after-success-regenerates",
        _record("stored"),
        _job("old-job"),
        {"on_clear": "regenerate"},
        1,
        0,
        1,
    ),
    ("changed-request-never-reuses", _record("stored", fp=OTHER_FP), _job("old-job"), {}, 1, 0, 1),
    (
        "changed-request-while-running",
        _record("submitted", fp=OTHER_FP),
        _job("old-job", "processing"),
        {},
        1,
        0,
        1,
    ),
    ("earlier-form-completed-is-reused", _record("stored", fp=EARLIER_FP), _job("old-job"), {}, 0, 1, 0),
    (
        "earlier-form-running-reattaches",
        _record("submitted", fp=EARLIER_FP),
        _job("old-job", "processing"),
        {},
        0,
        1,
        1,
    ),
    ("lost-answer-resubmits-by-default", _record("submitting", None), None, {}, 1, 0, 1),
    ("unreadable-record-resubmits", {"job": "old-job"}, _job("old-job"), {}, 1, 0, 1),
    ("legacy-plain-job-id-resubmits", "old-job", _job("old-job"), {}, 1, 0, 1),
]


@pytest.mark.parametrize(
    ("stored", "old", "kwargs", "submissions", "reads", "waits"),
    [pytest.param(*row[1:], id=row[0]) for row in RESUME_TABLE],
)
def test_what_a_try_does_with_the_record(
    stored: Any, old: Job | None, kwargs: dict[str, Any], submissions: int, reads: int, waits: int
) -> None:
    client = FakeClient(jobs={"old-job": old})
    store = FakeStore(stored)
    result = _operator(client, **kwargs).execute({"task_state_store": store})
    assert (len(client.submitted), len(client.reads), len(client.waits)) == (submissions, reads, waits)
    assert result["status"] == "completed" and result["prompt"] == PROMPT
    assert result["job_id"] == ("new-1" if submissions else "old-job")
    # Whatever happened, the store ends with this request's stored job.
    assert store.value == {**_record("stored", result["job_id"]), "at": store.value["at"]}
    if submissions:
        assert store.history[:2] == ["submitting", "submitted"]


def test_a_lost_answer_fails_loudly_when_asked_to() -> None:
    client = FakeClient()
    store = FakeStore(_record("submitting", None))
    with pytest.raises(AirflowFailException, match="a job may exist and be charged"):
        _operator(client, on_ambiguous_submission="fail").execute({"task_state_store": store})
    assert client.submitted == [] and store.value == _record("submitting", None)


def test_a_resubmission_after_a_lost_answer_is_logged_as_a_possible_second_charge(
    capfd: pytest.CaptureFixture[str],
) -> None:
    _operator(FakeClient()).execute({"task_state_store": FakeStore(_record("submitting", None))})
    assert "may be a second charge" in capfd.readouterr().out


def test_a_read_during_an_outage_waits_instead_of_failing() -> None:
    client = FakeClient(jobs={"old-job": DoitongServerError("down", status=503)})  # type: ignore[dict-item]
    result = _operator(client).execute({"task_state_store": FakeStore(_record("submitted"))})
    assert client.submitted == [] and client.waits == ["old-job"] and result["job_id"] == "old-job"


def test_without_a_state_store_it_submits_and_says_so(capfd: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    _operator(client).execute({})
    assert len(client.submitted) == 1 and "No task state store" in capfd.readouterr().out


# --- how a submission error ends the try ------------------------------------------------------
def _429(code: str = "RATE_LIMITED", retry_in: float | None = None) -> DoitongRateLimited:
    retry_at = None if retry_in is None else time.time() + retry_in
    return DoitongRateLimited("slow down", status=429, code=code, retry_at=retry_at)


SUBMIT_ERRORS: list[tuple[str, DoitongError, type[Exception], Any]] = [
    ("400", DoitongBadRequest("bad", status=400, code="BAD_USER_INPUT"), AirflowFailException, None),
    ("401", DoitongUnauthorized("no", status=401, code="UNAUTHENTICATED"), AirflowFailException, None),
    (
        "402",
        DoitongInsufficientCredits(
            "poor", status=402, extensions={"creditsRequired": 10, "creditsAvailable": 5}
        ),
        AirflowFailException,
        None,
    ),
    ("daily-limit", _429("DAILY_LIMIT", 3600), AirflowFailException, None),
    # A job may exist: the try fails for a retry, and the record says so.
    ("500", DoitongServerError("oops", status=500), AirflowException, "submitting"),
    ("dropped", DoitongConnectionError("no answer", request_sent=True), AirflowException, "submitting"),
    ("unreadable-answer", DoitongProtocolError("not JSON", status=200), AirflowException, "submitting"),
]


@pytest.mark.parametrize(
    ("error", "raised", "left"), [pytest.param(*row[1:], id=row[0]) for row in SUBMIT_ERRORS]
)
def test_submission_errors(error: DoitongError, raised: type[Exception], left: Any) -> None:
    store = FakeStore()
    with pytest.raises(raised) as info:
        _operator(FakeClient(submit_errors=[error])).execute({"task_state_store": store})
    assert type(info.value) is raised
    assert (store.value or {}).get("state") == left
    if left:
        assert "a job may exist" in str(info.value)


def test_the_daily_limit_can_skip() -> None:
    with pytest.raises(AirflowSkipException, match="daily limit"):
        _operator(FakeClient(submit_errors=[_429("DAILY_LIMIT", 3600)]), on_daily_limit="skip").execute(
            {"task_state_store": FakeStore()}
        )


@pytest.mark.parametrize(
    "refusal",
    [_429(retry_in=-30.0), _429(retry_in=None), DoitongConnectionError("refused", request_sent=False)],
    ids=["429-stale-reset", "429-no-reset", "refused"],
)
def test_refusals_that_prove_no_job_are_waited_out_with_a_growing_floor(
    refusal: DoitongError, _no_sleeping: list[float]
) -> None:
    client = FakeClient(submit_errors=[refusal] * 6)
    store = FakeStore()
    result = _operator(client, timeout=3600).execute({"task_state_store": store})
    assert len(client.submitted) == 7 and result["job_id"] == "new-7"
    # Each refusal proved no job: the marker gives way to the count of refusals so far.
    assert store.history.count("refused") == 6 and "deleted" not in store.history
    if isinstance(refusal, DoitongRateLimited):
        # Never sooner than the exponential floor, whatever the reset said: 0.5, 1, 2, 4, 8, 16 s.
        assert all(s >= 0.5 * 2**n - 0.01 for n, s in enumerate(_no_sleeping)), _no_sleeping


def test_refusals_are_waited_out_with_the_clients_own_backoff(_no_sleeping: list[float]) -> None:
    """The floor after a refusal is the connection's retry policy's (here 4 s), not a default's."""
    client = FakeClient(submit_errors=[_429(retry_in=-30.0)])
    client.retry_policy = RetryPolicy(backoff_base=4.0, backoff_max=4.0)
    _operator(client, timeout=3600).execute({"task_state_store": FakeStore()})
    assert len(_no_sleeping) == 1 and _no_sleeping[0] >= 4.0 - 0.01, _no_sleeping


def test_the_refusal_count_survives_in_the_record_when_deferral_kwargs_are_lost() -> None:
    """``dag.test()`` resumes with the trigger's event only; the record still knows the count."""
    store = FakeStore()
    op = _operator(FakeClient(submit_errors=[_429(retry_in=30.0)] * 2), deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute({"task_state_store": store})
    assert info.value.method_name == "resume_submission" and info.value.kwargs["attempt"] == 1
    assert store.value["state"] == "refused" and store.value["refusals"] == 1
    with pytest.raises(TaskDeferred) as info:  # no attempt kwarg, as dag.test() resumes
        op.resume_submission({"task_state_store": store}, event={})
    assert info.value.kwargs["attempt"] == 2
    assert store.value["state"] == "refused" and store.value["refusals"] == 2
    with pytest.raises(TaskDeferred) as info:  # submitted: now it waits in the triggerer
        op.resume_submission({"task_state_store": store}, event={})
    assert info.value.method_name == "execute_complete"
    assert store.value["state"] == "submitted" and store.value["job_id"] == "new-3"


def test_deferrable_refusals_carry_their_count_across_deferrals() -> None:
    client = FakeClient(submit_errors=[_429(retry_in=-30.0)])
    with pytest.raises(TaskDeferred) as info:
        _operator(client, deferrable=True).resume_submission({"task_state_store": FakeStore()}, attempt=4)
    assert info.value.kwargs["attempt"] == 5 and info.value.method_name == "resume_submission"
    moment = info.value.trigger.moment.timestamp()
    assert moment - time.time() >= 0.5 * 2**4 - 1  # the fifth refusal waits at least 8 s


def test_a_short_refusal_is_slept_in_the_worker_even_when_deferrable(_no_sleeping: list[float]) -> None:
    client = FakeClient(submit_errors=[_429(retry_in=-30.0)])  # the floor: 0.5 s, not worth a deferral
    with pytest.raises(TaskDeferred) as info:  # submitted: the job's wait is deferred
        _operator(client, deferrable=True).execute({"task_state_store": FakeStore()})
    assert info.value.method_name == "execute_complete" and len(client.submitted) == 2
    assert len(_no_sleeping) == 1 and _no_sleeping[0] < SHORTEST_DEFERRAL_S


def test_a_refusal_wait_under_min_defer_seconds_is_slept_in_the_worker(_no_sleeping: list[float]) -> None:
    client = FakeClient(submit_errors=[_429(retry_in=8.0)])
    result = _operator(client, deferrable=True, min_defer_seconds=10).execute(
        {"task_state_store": FakeStore()}
    )
    assert result["job_id"] == "new-2" and len(_no_sleeping) == 1 and 7 <= _no_sleeping[0] <= 8.5
    with pytest.raises(TaskDeferred) as info:  # by default a 9-s wait is deferred
        _operator(FakeClient(submit_errors=[_429(retry_in=9.0)]), deferrable=True).execute(
            {"task_state_store": FakeStore()}
        )
    assert info.value.method_name == "resume_submission"


def test_a_refusal_past_the_deadline_fails_the_try() -> None:
    with pytest.raises(AirflowException, match="past the task's deadline"):
        _operator(FakeClient(submit_errors=[_429(retry_in=600)]), timeout=5).execute(
            {"task_state_store": FakeStore()}
        )


# --- a deferrable task waits in the worker while its job is young -------------------------------
def test_a_job_that_ends_young_is_finished_in_the_worker_without_a_deferral() -> None:
    client = FakeClient()
    before = time.time()
    result = _operator(client, deferrable=True, min_defer_seconds=10).execute(
        {"task_state_store": FakeStore()}
    )
    assert result["job_id"] == "new-1" and result["status"] == "completed"
    [(job_id, until)] = client.young_waits
    assert job_id == "new-1" and before + 10 <= until <= time.time() + 10
    assert client.waits == []  # no wait of the sync kind after it


def test_a_job_still_running_after_min_defer_seconds_is_handed_to_the_triggerer() -> None:
    client = FakeClient()
    client.runs_long = True
    with pytest.raises(TaskDeferred) as info:
        _operator(client, deferrable=True, min_defer_seconds=10).execute({"task_state_store": FakeStore()})
    assert info.value.method_name == "execute_complete" and info.value.trigger.job_id == "new-1"
    assert len(client.young_waits) == 1 and client.waits == []


def test_a_job_an_earlier_try_submitted_is_handed_to_the_triggerer_at_once() -> None:
    client = FakeClient(jobs={"j": _job("j", "processing")})
    with pytest.raises(TaskDeferred):
        _operator(client, deferrable=True, min_defer_seconds=10).execute(
            {"task_state_store": FakeStore(_record("submitted", "j"))}
        )
    assert client.young_waits == [] and client.submitted == []


def test_a_deferred_wait_is_not_resumed_within_the_settle_time_of_its_deferral() -> None:
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        _operator(FakeClient(), deferrable=True).execute({"task_state_store": FakeStore()})
    not_before = info.value.trigger.not_before
    settle = deferral_settle_s()  # the tests' 1 s
    assert before + settle <= not_before <= time.time() + settle
    assert before <= info.value.trigger.started_at <= time.time()  # when this try submitted the job


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2025-01-01T00:00:00Z", 1_735_689_600.0),
        ("9999-12-31T00:00:00Z", "now"),
        ("soon", None),
        (None, None),
    ],
)
def test_a_trigger_is_told_when_an_earlier_trys_job_started_never_later_than_now(
    created: str | None, expected: float | str | None
) -> None:
    job = Job.from_api({"id": "j", "status": "processing", "createdAt": created})
    before = time.time()
    told = image_try.started_at(job, None)
    if expected == "now":
        assert told is not None and before <= told <= time.time()
    else:
        assert told == expected
    assert image_try.started_at(None, None) is None
    assert image_try.started_at(job, 123.0) == 123.0  # this try's own submission comes first


@pytest.mark.parametrize(
    ("setting", "settle"), [(None, 8.0), ("2.5", 2.5), ("0", 0.0), ("-1", 8.0), ("nan", 8.0), ("soon", 8.0)]
)
def test_the_settle_time_is_the_configured_one_within_bounds(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, settle: float
) -> None:
    if setting is None:
        monkeypatch.delenv("AIRFLOW__DOITONG__DEFERRAL_SETTLE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__DOITONG__DEFERRAL_SETTLE_SECONDS", setting)
    assert deferral_settle_s() == settle
    assert DEFERRAL_SETTLE_S == SHORTEST_DEFERRAL_S == 8.0


def test_a_refusal_wait_shorter_than_the_settle_time_is_slept_in_the_worker(
    monkeypatch: pytest.MonkeyPatch, _no_sleeping: list[float]
) -> None:
    monkeypatch.setenv("AIRFLOW__DOITONG__DEFERRAL_SETTLE_SECONDS", "12")
    client = FakeClient(submit_errors=[_429(retry_in=9.0)])
    with pytest.raises(TaskDeferred) as info:  # submitted after the wait: the job's wait is deferred
        _operator(client, deferrable=True).execute({"task_state_store": FakeStore()})
    assert info.value.method_name == "execute_complete" and len(client.submitted) == 2
    assert len(_no_sleeping) == 1 and 8 <= _no_sleeping[0] <= 9.5


def test_min_defer_seconds_zero_defers_at_once_and_a_negative_one_is_refused() -> None:
    client = FakeClient()
    assert _operator(client).min_defer_seconds == 0  # the default: as before, at once
    with pytest.raises(TaskDeferred):
        _operator(client, deferrable=True).execute({"task_state_store": FakeStore()})
    assert client.young_waits == []
    with pytest.raises(ValueError, match="min_defer_seconds"):
        _operator(client, min_defer_seconds=-1)


# --- what the trigger's event becomes ---------------------------------------------------------
EVENTS = [
    ("failed", _job("j", "failed"), AirflowException),
    ("timeout", _job("j", "processing"), AirflowException),
    ("not_found", None, AirflowException),
    ("unauthorized", None, AirflowFailException),
    ("error", None, AirflowException),
]


@pytest.mark.parametrize(("status", "job", "raised"), EVENTS, ids=[e[0] for e in EVENTS])
def test_trigger_events_end_the_try_as_the_table_says(status: str, job: Job | None, raised: type) -> None:
    event = events.make_event(status=status, job_id="j", job=job, message=f"it went {status}")
    with pytest.raises(raised) as info:
        _operator(FakeClient()).execute_complete({}, event)
    assert type(info.value) is raised and f"it went {status}" in str(info.value)


def test_a_success_event_stores_the_record() -> None:
    store = FakeStore(_record("submitted", "j"))
    event = events.make_event(status="success", job_id="j", job=_job("j"), message="")
    result = _operator(FakeClient()).execute_complete({"task_state_store": store}, event)
    assert result["job_id"] == "j" and store.value["state"] == "stored"
