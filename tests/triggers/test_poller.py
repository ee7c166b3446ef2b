"""The shared poller with a fake client: registration, clean-up, pacing, and what failed polls do."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_doitong.client import (
    DoitongError,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongUnauthorized,
    Job,
    RetryPolicy,
)
from airflow_provider_doitong.triggers import poller as poller_module
from airflow_provider_doitong.triggers.poller import MIN_POLL_GAP, JobPoller, get_poller

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.02)


def _job(job_id: str, status: str = "processing") -> Job:
    return Job.from_api({"id": job_id, "status": status, "createdAt": "2025-01-01T00:00:00Z"})


class FakeClient:
    """Answers ``get_jobs`` from a script: a callable of the poll number giving statuses or an error."""

    def __init__(self, answer: Callable[[int, list[str]], dict[str, Job | None]], log: list[Any]) -> None:
        self.answer = answer
        self.log = log
        self.last_rate_limit = None
        self.closed = False
        self.api_key = "old"
        self.forgotten: list[str] = []

    def forget_jobs(self, job_ids: list[str]) -> None:
        self.forgotten.extend(job_ids)

    def set_api_key(self, api_key: str) -> None:
        self.api_key = api_key

    async def get_jobs(self, ids: list[str]) -> dict[str, Job | None]:
        self.log.append((time.monotonic(), list(ids)))
        return self.answer(len(self.log), list(ids))

    async def aclose(self) -> None:
        self.closed = True


def _factory(answer: Callable[[int, list[str]], dict[str, Job | None]]) -> tuple[Any, list[Any], list[Any]]:
    polls: list[Any] = []
    clients: list[FakeClient] = []

    async def make() -> FakeClient:
        clients.append(FakeClient(answer, polls))
        return clients[-1]

    return make, polls, clients


def _all(status: str) -> Callable[[int, list[str]], dict[str, Job | None]]:
    return lambda n, ids: {i: _job(i, status) for i in ids}


def test_a_watcher_arriving_as_the_last_one_leaves_is_still_polled() -> None:
    """The race: B's first step runs after A left in the same loop step (wait_for's own task on 3.10/3.11)."""
    make, polls, _ = _factory(
        lambda n, ids: {i: _job(i, "completed" if i == "b" else "processing") for i in ids}
    )

    async def scenario() -> Job:
        poller = get_poller("race", make)
        a = poller.watch("a", poll_interval=0.05)
        assert (await anext(a)).id == "a"  # A is registered and polled
        b = poller.watch("b", poll_interval=0.05)
        first_of_b = asyncio.ensure_future(anext(b))  # scheduled, not yet run
        await a.aclose()  # A leaves in this same step: the poller's task is cancelled
        job = await asyncio.wait_for(first_of_b, 5)
        await b.aclose()
        return job

    job = asyncio.run(scenario())
    assert job.id == "b" and job.status.value == "completed"
    assert any("b" in ids for _, ids in polls)


def test_departed_watchers_leave_nothing_behind() -> None:
    make, _, clients = _factory(_all("processing"))

    async def scenario() -> JobPoller:
        poller = get_poller("cleanup", make)
        updates = [poller.watch(j, poll_interval=0.05) for j in ("x", "y")]
        for u in updates:
            await anext(u)
        assert set(poller._created_at) == {"x", "y"}
        await updates[0].aclose()
        assert set(poller._created_at) == {"y"}
        assert clients[0].forgotten == ["x"]  # no longer told of as running on the host's board
        await updates[1].aclose()
        return poller

    poller = asyncio.run(scenario())
    assert poller._created_at == {} and len(poller._watchers) == 0


@pytest.mark.parametrize("interval", [0.0, 1e-6, 0.01])
def test_polls_never_come_faster_than_the_minimum_gap(interval: float) -> None:
    make, polls, _ = _factory(_all("processing"))

    async def scenario() -> None:
        updates = get_poller(f"gap-{interval}", make).watch("j", poll_interval=interval)
        await anext(updates)
        await asyncio.sleep(1.3)
        await updates.aclose()

    asyncio.run(scenario())
    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:], strict=False)]
    assert len(polls) <= 1.3 / MIN_POLL_GAP + 2
    assert min(gaps) >= MIN_POLL_GAP * 0.9


def _run_watch(poller: JobPoller, seconds: float) -> list[Any]:
    seen: list[Any] = []

    async def scenario() -> None:
        updates = poller.watch("j", poll_interval=0.05)
        try:
            async with asyncio.timeout(seconds) if hasattr(asyncio, "timeout") else _nullcontext():
                async for job in updates:
                    seen.append(job.raw_status)
        except (TimeoutError, asyncio.TimeoutError):
            seen.append("still waiting")
        except DoitongError as exc:
            seen.append(exc)
        finally:
            await updates.aclose()

    asyncio.run(scenario())
    return seen


class _nullcontext:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_an_outage_reaches_no_watcher_and_ends_when_the_api_answers() -> None:
    def answer(n: int, ids: list[str]) -> dict[str, Job | None]:
        if n <= 12:
            raise DoitongServerError("Doitong job status: down", status=503)
        return {i: _job(i, "completed") for i in ids}

    make, polls, _ = _factory(answer)
    poller = JobPoller(key="outage", client_factory=make, retry_policy=FAST, max_consecutive_errors=3)
    assert _run_watch(poller, 10) == ["completed"]
    assert len(polls) == 13 and poller.last_error is None


def test_polls_held_for_a_window_seen_spent_are_no_failures_and_wait_for_its_reset() -> None:
    """More holds in a row than ``max_consecutive_errors``: no wait ends, nothing is taken for an outage."""

    def answer(n: int, ids: list[str]) -> dict[str, Job | None]:
        if n <= 5:
            raise DoitongRateLimited("held", retry_at=time.time() + 0.05, code="RATE_LIMITED", held=True)
        return {i: _job(i, "completed") for i in ids}

    make, polls, _ = _factory(answer)
    poller = JobPoller(key="held", client_factory=make, retry_policy=FAST, max_consecutive_errors=2)
    assert _run_watch(poller, 10) == ["completed"]
    assert len(polls) == 6 and poller.last_error is None and poller.failing_since is None


def test_a_refused_key_is_read_again_once_then_fails() -> None:
    make, polls, clients = _factory(
        lambda n, ids: (_ for _ in ()).throw(DoitongUnauthorized("bad key", status=401))
    )
    reads: list[str] = []

    async def current_key() -> str:
        reads.append("old")
        return "old"

    poller = JobPoller(key="401", client_factory=make, refresh_key=current_key, retry_policy=FAST)
    (error,) = _run_watch(poller, 10)
    assert isinstance(error, DoitongUnauthorized)
    assert reads == ["old"] and len(clients) == 1  # the connection was read again once, same client
    assert len(polls) == 2


def test_without_a_way_to_read_the_key_a_refused_key_is_final() -> None:
    make, polls, _ = _factory(
        lambda n, ids: (_ for _ in ()).throw(DoitongUnauthorized("bad key", status=401))
    )
    poller = JobPoller(key="401-final", client_factory=make, retry_policy=FAST)
    (error,) = _run_watch(poller, 10)
    assert isinstance(error, DoitongUnauthorized) and len(polls) == 1


def test_a_rotated_key_is_picked_up() -> None:
    clients: list[FakeClient] = []

    async def make() -> FakeClient:
        def answer(n: int, ids: list[str]) -> dict[str, Job | None]:
            if clients[0].api_key == "old":
                raise DoitongUnauthorized("bad key", status=401)
            return {i: _job(i, "completed") for i in ids}

        clients.append(FakeClient(answer, []))
        return clients[-1]

    async def current_key() -> str:
        return "new"

    poller = JobPoller(key="rotated", client_factory=make, refresh_key=current_key, retry_policy=FAST)
    assert _run_watch(poller, 10) == ["completed"]
    assert len(clients) == 1 and clients[0].api_key == "new"


def test_answers_that_keep_breaking_the_contract_end_the_wait() -> None:
    def answer(n: int, ids: list[str]) -> dict[str, Job | None]:
        raise DoitongProtocolError("not JSON", status=200)

    make, polls, _ = _factory(answer)
    poller = JobPoller(key="odd", client_factory=make, retry_policy=FAST, max_consecutive_errors=3)
    (error,) = _run_watch(poller, 10)
    assert isinstance(error, DoitongProtocolError) and len(polls) == 3


@pytest.fixture(autouse=True)
def _fresh_registry() -> Any:
    yield
    poller_module._REGISTRY.clear()


def test_a_starting_poller_told_its_jobs_starts_reads_first_when_they_are_due() -> None:
    """No read at once to learn when a job started: at its expected end (durations learned)."""
    make, polls, _ = _factory(_all("completed"))
    poller_module._DURATIONS["told"] = deque([0.6] * 3, maxlen=50)

    async def scenario(key: str, started_at: float | None) -> float:
        began = time.monotonic()
        updates = get_poller(key, make).watch("j", poll_interval=5.0, started_at=started_at)
        await asyncio.wait_for(anext(updates), 5)
        await updates.aclose()
        return polls[-1][0] - began

    told = asyncio.run(scenario("told", time.time()))
    assert 0.55 <= told <= 1.5  # at the job's expected end (0.6 s), not at once
    poller_module._DURATIONS["untold"] = deque([0.6] * 3, maxlen=50)
    untold = asyncio.run(scenario("untold", None))
    assert untold < 0.3  # the read tells when it started
    poller_module._DURATIONS["old"] = deque([0.6] * 3, maxlen=50)
    old = asyncio.run(scenario("old", time.time() - 600))
    assert old < 0.3  # long past its expected end (a triggerer's restart): read at once
    assert len(polls) == 3
