"""Both clients against the emulator over real loopback HTTP: one test body each, run sync and async.

Attempt counts come from the emulator's own request log, so "retried" and "not retried" are what the
server saw, not what the client says it did.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.client import (
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongInsufficientCredits,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongRateLimited,
    DoitongServerError,
    DoitongTimeout,
    DoitongUnauthorized,
    ImageRequest,
    JobStatus,
    RetryPolicy,
    contract,
    protocol,
)
from airflow_provider_doitong.client.board import WindowBoard
from airflow_provider_doitong.client.slots import SlotBoard
from doitong_emulator import FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory

from .doitong_support import (
    FAST,
    JOB_SECONDS,
    TIME_SCALE,
    WINDOW_SECONDS,
    AsyncApi,
    MakeApi,
    SyncApi,
    key_of,
    log_of,
    statuses,
)

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


REQUEST = ImageRequest(provider="flux-krea", prompt="A futuristic city at dusk", width=512, height=384)
POLL = 0.01


# --- the happy paths ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("transport", "path", "auth_header"),
    [("graphql", "/graphql", "authorization"), ("rest", "/v1/text_to_image", "x-api-key")],
)
def test_submit(emu: Any, make_api: MakeApi, transport: str, path: str, auth_header: str) -> None:
    api = make_api(transport=transport)
    job = api.submit(REQUEST)
    assert job.status in (JobStatus.QUEUED, JobStatus.PROCESSING)
    assert job.url is None
    assert job.id and emu.job(job.id) is not None
    assert job.credit_cost == REQUEST.estimated_credits == 10
    assert statuses(emu, "submit") == [200]
    assert emu.credits() == 100_000 - 10
    method, seen_path, headers = api.requests_seen[-1]
    assert (method, seen_path) == ("POST", path)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert auth_header in lowered
    assert ("authorization" in lowered) is (transport == "graphql")


@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_get_account(emu: Any, make_api: MakeApi, transport: str) -> None:
    api = make_api(transport=transport)
    account = api.get_account()
    assert (account.plan, account.credits) == ("pro", 100_000)
    assert statuses(emu, "account") == [200]
    assert api.last_rate_limit is not None and api.last_rate_limit.limit == 60


def test_get_jobs_reads_many_jobs_in_one_request(emu: Any, make_api: MakeApi) -> None:
    api = make_api()
    ids = [api.submit(dataclasses.replace(REQUEST, prompt=f"image {n}")).id for n in range(5)]
    jobs = api.get_jobs([*ids, "no-such-job", ids[0]])
    assert statuses(emu, "status") == [200]  # one request for all of them
    assert emu.stats()["jobs_read"] == 6
    assert list(jobs) == [*ids, "no-such-job"]
    assert jobs["no-such-job"] is None
    for job_id in ids:
        job = jobs[job_id]
        assert job is not None and job.id == job_id and job.provider == "flux-krea"


def test_get_jobs_batches_past_the_alias_limit(emu: Any, make_api: MakeApi) -> None:
    api = make_api(timeout=60.0)  # a read of 100 jobs on a loaded machine: no retry to count
    ids = [f"missing-{n}" for n in range(protocol.MAX_JOBS_PER_QUERY + 1)]
    jobs = api.get_jobs(ids)
    assert statuses(emu, "status") == [200, 200]
    assert len(jobs) == len(ids) and all(job is None for job in jobs.values())


def test_get_job_unknown_is_none(emu: Any, make_api: MakeApi) -> None:
    assert make_api().get_job("no-such-job") is None
    assert statuses(emu, "status") == [200]
    assert make_api().get_jobs([]) == {}
    assert statuses(emu, "status") == [200]


def test_wait_and_download(emu: Any, make_api: MakeApi) -> None:
    api = make_api()
    job = api.submit(REQUEST)
    done = api.wait_for_job(job.id, poll_interval=POLL, deadline=time.time() + 10)
    assert done.status is JobStatus.COMPLETED
    assert done.url and done.url.startswith(emu.base_url + "/outputs/")
    assert (done.width, done.height) == (512, 384)
    assert done.completed_at is not None
    polls = statuses(emu, "status")
    assert polls and set(polls) == {200}
    # A job of 20 emulated seconds, polled every POLL: never more polls than the time allows.
    assert len(polls) <= JOB_SECONDS * TIME_SCALE / POLL + 5

    image = api.download(done.url)
    assert image[:3] == b"\xff\xd8\xff"  # JPEG
    assert statuses(emu, "download") == [200]
    download_headers = {k.lower() for k in api.requests_seen[-1][2]}
    assert "authorization" not in download_headers and "x-api-key" not in download_headers
    pil = pytest.importorskip("PIL.Image")
    with pil.open(io.BytesIO(image)) as img:
        assert img.format == "JPEG"
        assert img.size == (512, 384)


def test_download_of_an_unknown_output_is_not_found(emu: Any, make_api: MakeApi) -> None:
    with pytest.raises(DoitongNotFound):
        make_api().download(emu.base_url + "/outputs/nothing.jpg")
    assert statuses(emu, "download") == [404]


def test_wait_for_a_failed_job(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(fail_job_rate=1.0))
    api = make_api()
    job = api.submit(REQUEST)
    with pytest.raises(DoitongJobFailed) as info:
        api.wait_for_job(job.id, poll_interval=POLL, deadline=time.time() + 10)
    assert info.value.job is not None and info.value.job.id == job.id
    assert info.value.code == "GENERATION_FAILED"
    assert emu.credits() == 100_000  # [A] a failed job is refunded


def test_wait_for_a_stuck_job_times_out(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(stuck_job_rate=1.0))
    api = make_api()
    job = api.submit(REQUEST)
    started = time.monotonic()
    with pytest.raises(DoitongTimeout) as info:
        api.wait_for_job(job.id, poll_interval=0.02, deadline=time.time() + 0.3)
    assert 0.25 <= time.monotonic() - started < 3
    assert info.value.job is not None and info.value.job.status is JobStatus.PROCESSING


def test_wait_for_an_unknown_job(emu: Any, make_api: MakeApi) -> None:
    with pytest.raises(DoitongNotFound):
        make_api().wait_for_job("no-such-job", poll_interval=POLL)
    assert statuses(emu, "status") == [200]


# --- errors that are never retried ----------------------------------------------------------
@pytest.mark.parametrize("transport", ["graphql", "rest"])
@pytest.mark.parametrize(
    ("call", "kind"),
    [("submit", "submit"), ("get_job", "status"), ("get_account", "account")],
)
def test_401_is_not_retried(emu: Any, make_api: MakeApi, transport: str, call: str, kind: str) -> None:
    api = make_api(api_key="wrong-key-123456", transport=transport)
    args: tuple[Any, ...] = {"submit": (REQUEST,), "get_job": ("x",), "get_account": ()}[call]
    with pytest.raises(DoitongUnauthorized) as info:
        getattr(api, call)(*args)
    assert info.value.status == 401 and info.value.code == "UNAUTHENTICATED"
    assert statuses(emu) == [401]
    assert log_of(emu)[0]["kind"] == kind


@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_400_from_the_server_is_not_retried(emu: Any, make_api: MakeApi, transport: str) -> None:
    api = make_api(transport=transport)
    request = protocol.build_submit(REQUEST, transport=transport)
    body = dict(request.json_body or {})
    if transport == "rest":
        body["width"] = 13
    else:
        variables = {"input": {**body["variables"]["input"]}}
        variables["input"]["options"] = {**variables["input"]["options"], "width": 13}
        body["variables"] = variables
    with pytest.raises(DoitongBadRequest) as info:
        api.send(dataclasses.replace(request, json_body=body))
    assert info.value.status == 400 and info.value.code == "BAD_USER_INPUT"
    assert "width" in str(info.value.extensions.get("field"))
    assert statuses(emu, "submit") == [400]


@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_402_insufficient_credits(emu: Any, make_api: MakeApi, transport: str) -> None:
    api = make_api(api_key=key_of("poor"), transport=transport)
    with pytest.raises(DoitongInsufficientCredits) as info:
        api.submit(REQUEST)
    assert info.value.status == 402
    assert (info.value.credits_required, info.value.credits_available) == (10, 5)
    assert statuses(emu, "submit") == [402]
    assert emu.credits("poor") == 5


def test_404_rest_job_status_is_not_retried(emu: Any, make_api: MakeApi) -> None:
    # The client reads jobs through GraphQL; the REST status endpoint answers an unknown id with 404.
    request = protocol.ApiRequest(
        method="GET",
        path=contract.REST_JOB_PATH.format(job_id="no-such-job"),
        auth="rest",
        kind="status",
        what="job status",
        job_ids=("no-such-job",),
    )
    with pytest.raises(DoitongNotFound) as info:
        make_api().send(request)
    assert info.value.status == 404 and info.value.code == "NOT_FOUND"
    assert statuses(emu, "status") == [404]


# --- rate limits ----------------------------------------------------------------------------
@pytest.mark.parametrize("second", ["get_account", "submit"])
def test_429_rate_limited_waits_for_the_reset(emu: Any, make_api: MakeApi, second: str) -> None:
    api = make_api(api_key=key_of("slow"))  # one request per window
    assert api.get_account().plan == "pro"
    started = time.monotonic()
    # Refused once, then resent after the reset: a 429 is refused before any job exists.
    result = api.get_account() if second == "get_account" else api.submit(REQUEST)
    elapsed = time.monotonic() - started
    assert result is not None
    entries = log_of(emu)
    assert [(e["kind"], e["status"]) for e in entries] == [
        ("account", 200),
        ("account" if second == "get_account" else "submit", 429),
        ("account" if second == "get_account" else "submit", 200),
    ]
    assert entries[2]["t"] >= entries[0]["t"] + WINDOW_SECONDS - 0.01  # not before the window reset
    assert elapsed < WINDOW_SECONDS + 1.5
    assert emu.stats()["jobs"]["total"] == (1 if second == "submit" else 0)


def test_429_beyond_max_rate_limit_wait_gives_up_at_once(emu: Any, make_api: MakeApi) -> None:
    policy = dataclasses.replace(FAST, max_rate_limit_wait=WINDOW_SECONDS / 10)
    api = make_api(api_key=key_of("slow"), retry_policy=policy)
    api.get_account()
    started = time.monotonic()
    with pytest.raises(DoitongRateLimited) as info:
        api.get_account()
    assert time.monotonic() - started < WINDOW_SECONDS / 2
    assert info.value.code == "RATE_LIMITED"
    assert info.value.retry_at is not None and info.value.retry_at > time.time()
    assert statuses(emu, "account") == [200, 429]


def test_a_window_another_process_saw_spent_is_waited_for_without_a_request(
    emu: Any, make_api: MakeApi, tmp_path: Path
) -> None:
    def board() -> WindowBoard | None:  # each client's own, as each process makes it
        return WindowBoard.for_account(base_url=emu.base_url, api_key=key_of("slow"), directory=tmp_path)

    first = make_api(api_key=key_of("slow"), board=board())  # one request per window
    assert first.get_account().plan == "pro"  # the window's last request: the board is told
    impatient = make_api(
        api_key=key_of("slow"),
        board=board(),
        retry_policy=dataclasses.replace(FAST, max_rate_limit_wait=WINDOW_SECONDS / 10),
    )
    with pytest.raises(DoitongRateLimited) as info:
        impatient.get_account()
    assert info.value.status is None and info.value.code == "RATE_LIMITED" and "not sent" in str(info.value)
    # held until the reset, then sent once: no 429 at all, and the hold is no attempt of the policy's
    second = make_api(
        api_key=key_of("slow"), board=board(), retry_policy=dataclasses.replace(FAST, max_attempts=1)
    )
    job = second.submit(REQUEST)
    entries = log_of(emu)
    assert [(e["kind"], e["status"]) for e in entries] == [("account", 200), ("submit", 200)]
    assert entries[1]["t"] >= entries[0]["t"] + WINDOW_SECONDS - 0.01
    assert emu.job(job.id) is not None and emu.stats()["jobs"]["total"] == 1


def test_a_refusal_for_the_window_is_told_to_the_others(emu: Any, make_api: MakeApi, tmp_path: Path) -> None:
    def board() -> WindowBoard | None:
        return WindowBoard.for_account(base_url=emu.base_url, api_key=key_of("slow"), directory=tmp_path)

    make_api(api_key=key_of("slow")).get_account()  # a process that keeps no board spends the window
    refused = make_api(
        api_key=key_of("slow"),
        board=board(),
        retry_policy=dataclasses.replace(FAST, max_rate_limit_wait=WINDOW_SECONDS / 10),
    )
    with pytest.raises(DoitongRateLimited):
        refused.get_account()  # answered 429: the board is told
    third = make_api(api_key=key_of("slow"), board=board())
    assert third.get_account().plan == "pro"
    assert statuses(emu, "account") == [200, 429, 200]


def test_job_slots_another_process_holds_are_waited_for_without_a_request(
    emu: Any, make_api: MakeApi, tmp_path: Path
) -> None:
    def slots() -> SlotBoard | None:  # each client's own, as each process makes it
        return SlotBoard.for_account(
            base_url=emu.base_url, api_key=key_of("single"), concurrency=1, directory=tmp_path
        )

    first = make_api(api_key=key_of("single"), slots=slots())
    job = first.submit(REQUEST)  # the account's one job slot, taken
    other = make_api(
        api_key=key_of("single"),
        slots=slots(),
        retry_policy=dataclasses.replace(FAST, max_rate_limit_wait=0),
    )
    with pytest.raises(DoitongRateLimited) as info:
        other.submit(REQUEST)
    assert info.value.held and info.value.code == "CONCURRENCY_LIMIT" and info.value.status is None
    assert statuses(emu, "submit") == [200]  # held, not sent
    first.wait_for_job(job.id, poll_interval=POLL, deadline=time.time() + 10)  # seen ended: told
    second = other.submit(REQUEST)
    assert statuses(emu, "submit") == [200, 200] and emu.job(second.id) is not None


def test_429_injected_with_retry_after_is_retried(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(error_429_rate=1.0))
    with pytest.raises(DoitongRateLimited):
        make_api().get_account()
    assert statuses(emu, "account") == [429] * FAST.max_attempts


def test_concurrency_limit_waits_for_a_slot(emu: Any, make_api: MakeApi) -> None:
    api = make_api(api_key=key_of("single"))
    first = api.submit(REQUEST)
    second = api.submit(REQUEST)  # refused until the first job ends, then accepted
    assert first.id != second.id
    assert statuses(emu, "submit") == [200, 429, 200]
    assert emu.stats()["jobs"]["total"] == 2
    assert emu.stats()["max_in_flight"]["by_account"]["single"] == 1


def test_concurrency_limit_without_waiting(emu: Any, make_api: MakeApi) -> None:
    api = make_api(api_key=key_of("single"), retry_policy=dataclasses.replace(FAST, max_rate_limit_wait=0))
    api.submit(REQUEST)
    with pytest.raises(DoitongRateLimited) as info:
        api.submit(REQUEST)
    assert info.value.code == "CONCURRENCY_LIMIT" and not info.value.is_daily_limit
    assert info.value.retry_at is not None
    assert statuses(emu, "submit") == [200, 429]


def test_daily_limit_is_not_waited_for(emu: Any, make_api: MakeApi) -> None:
    now = datetime.now(timezone.utc)
    midnight = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)
    if (midnight - now).total_seconds() < FAST.max_rate_limit_wait + 5:
        pytest.skip("too close to UTC midnight for a daily-limit test")
    api = make_api(api_key=key_of("daily"))
    api.submit(REQUEST)
    with pytest.raises(DoitongRateLimited) as info:
        api.submit(REQUEST)
    assert info.value.code == "DAILY_LIMIT" and info.value.is_daily_limit
    assert info.value.retry_at == pytest.approx(midnight.timestamp(), abs=2)
    assert statuses(emu, "submit") == [200, 429]


# --- server errors and lost connections -----------------------------------------------------
@pytest.mark.parametrize(
    ("call", "kind", "attempts"),
    [
        ("get_job", "status", FAST.max_attempts),
        ("get_account", "account", FAST.max_attempts),
        ("submit", "submit", 1),
    ],
)
def test_500(emu: Any, make_api: MakeApi, call: str, kind: str, attempts: int) -> None:
    emu.set_faults(FaultConfig(error_500_rate=1.0))
    args: tuple[Any, ...] = {"submit": (REQUEST,), "get_job": ("x",), "get_account": ()}[call]
    with pytest.raises(DoitongServerError) as info:
        getattr(make_api(), call)(*args)
    assert info.value.status == 500
    assert statuses(emu) == [500] * attempts
    assert {entry["kind"] for entry in log_of(emu)} == {kind}
    assert emu.stats()["jobs"]["total"] == 0


def test_500_on_a_read_then_success(emu: Any, make_api: MakeApi, caplog: pytest.LogCaptureFixture) -> None:
    seed = _seed_with_failures_first(rate=0.5, failures=2)
    emu.set_faults(FaultConfig(error_500_rate=0.5, seed=seed))
    caplog.set_level(logging.WARNING, logger="airflow_provider_doitong")
    assert make_api().get_account().credits == 100_000
    assert statuses(emu, "account") == [500, 500, 200]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2


@pytest.mark.parametrize(
    ("call", "kind", "attempts"),
    [("get_job", "status", FAST.max_attempts), ("submit", "submit", 1)],
)
def test_dropped_connection(emu: Any, make_api: MakeApi, call: str, kind: str, attempts: int) -> None:
    emu.set_faults(FaultConfig(drop_rate=1.0))
    args: tuple[Any, ...] = {"submit": (REQUEST,), "get_job": ("x",)}[call]
    with pytest.raises(DoitongConnectionError) as info:
        getattr(make_api(), call)(*args)
    assert info.value.request_sent is True
    assert statuses(emu, kind) == [0] * attempts
    assert emu.stats()["dropped"] == attempts


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_on_submission_is_retried(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_doitong")
    api = make_api(base_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DoitongConnectionError) as info:
        api.submit(REQUEST)
    assert info.value.request_sent is False
    assert "could not connect" in str(info.value)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == FAST.max_attempts - 1
    assert f"attempt {FAST.max_attempts - 1} of {FAST.max_attempts}" in retries[-1]


def test_submission_survives_a_server_restart(emu: Any, make_api: MakeApi) -> None:
    """Refused connections are resent, even for a submission; the job is created exactly once."""
    api = make_api(retry_policy=RetryPolicy(max_attempts=60, backoff_base=0.02, backoff_max=0.05))
    emu.stop()
    restarter = threading.Timer(0.3, emu.start)
    restarter.start()
    try:
        job = api.submit(REQUEST)
    finally:
        restarter.join()
    assert job.id
    assert statuses(emu, "submit") == [200]
    assert emu.stats()["jobs"]["total"] == 1


def _seed_with_failures_first(*, rate: float, failures: int) -> int:
    """A seed whose first draws fall under ``rate`` exactly ``failures`` times, then above it."""
    import random

    for seed in range(10_000):
        rng = random.Random(seed)
        draws = [rng.random() for _ in range(failures + 1)]
        if all(d < rate for d in draws[:failures]) and draws[failures] >= rate:
            return seed
    raise AssertionError("no seed found")


@pytest.fixture(params=["sync", "async"])
def paced_api(
    request: pytest.FixtureRequest, doitong_emulators: EmulatorFactory
) -> Iterator[tuple[Any, Any]]:
    """A client against an emulator allowing 3 requests per 0.3 s window, running 1 s jobs."""
    with doitong_emulators(time_scale=TIME_SCALE, job_seconds=200, requests_per_minute=3) as emu:
        cls = SyncApi if request.param == "sync" else AsyncApi
        api = cls(api_key=emu.api_key, base_url=emu.base_url, retry_policy=FAST, timeout=5.0)
        try:
            yield emu, api
        finally:
            api.close()


def test_wait_for_job_paces_its_polls_within_the_plan(paced_api: tuple[Any, Any]) -> None:
    emu, api = paced_api
    job = api.submit(REQUEST)
    done = api.wait_for_job(job.id, poll_interval=0.005, deadline=time.time() + 10)
    assert done.status is JobStatus.COMPLETED
    polls = statuses(emu, "status")
    assert 429 not in polls  # the rate-limit headers spread the polls over each window
    windows = 200 * TIME_SCALE / WINDOW_SECONDS
    assert len(polls) <= 3 * (windows + 2)
