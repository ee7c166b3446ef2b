"""DoitongJobTrigger and its shared poller, run for real against the emulator."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any

import pytest

from airflow_provider_doitong.client import DoitongClient, ImageRequest
from airflow_provider_doitong.client.pacing import next_read_delay
from airflow_provider_doitong.triggers import events
from airflow_provider_doitong.triggers import poller as poller_module
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger
from doitong_emulator import FaultConfig


def submit(emu: Any, prompt: str = "a trigger test") -> str:
    with DoitongClient(base_url=emu.base_url, api_key=emu.api_key) as client:
        return client.submit(ImageRequest(provider="flux-krea", prompt=prompt, width=256, height=256)).id


def first_event(trigger: DoitongJobTrigger) -> dict[str, Any]:
    async def _run() -> dict[str, Any]:
        event = await trigger.run().asend(None)
        return event.payload

    return asyncio.run(_run())


def test_serialize_is_plain_json_without_secrets() -> None:
    trigger = DoitongJobTrigger(
        job_id="abc", doitong_conn_id="my_conn", poll_interval=2, deadline=1700000000.5
    )
    assert trigger.serialize() == (
        "airflow_provider_doitong.triggers.doitong.DoitongJobTrigger",
        {
            "job_id": "abc",
            "doitong_conn_id": "my_conn",
            "poll_interval": 2.0,
            "deadline": 1700000000.5,
            "not_before": None,
            "started_at": None,
        },
    )
    classpath, kwargs = trigger.serialize()
    assert DoitongJobTrigger(**kwargs).serialize() == (classpath, kwargs)
    # a trigger serialized before ``not_before`` existed is still read
    del kwargs["not_before"]
    assert DoitongJobTrigger(**kwargs).not_before is None


def test_a_job_that_ends_before_not_before_is_told_at_it(doitong_conn: Any) -> None:
    job_id = submit(doitong_conn)
    with DoitongClient(base_url=doitong_conn.base_url, api_key=doitong_conn.api_key) as client:
        assert (
            client.wait_for_job(job_id, poll_interval=0.05, deadline=time.time() + 30).status.value
            == "completed"
        )
    not_before = time.time() + 1.0
    payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05, not_before=not_before))
    assert time.time() >= not_before
    assert events.read_event(payload)[:2] == ("success", job_id)


@pytest.mark.timeout(60)
def test_not_before_holds_the_event_no_longer_than_the_settle_time(
    doitong_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__DOITONG__DEFERRAL_SETTLE_SECONDS", "0.3")
    job_id = submit(doitong_conn)
    started = time.monotonic()  # a worker's clock an hour ahead of the triggerer's
    payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05, not_before=time.time() + 3600))
    assert events.read_event(payload)[:2] == ("success", job_id)
    assert time.monotonic() - started < 30


def test_completed_job_gives_a_success_event(doitong_conn: Any) -> None:
    job_id = submit(doitong_conn)
    payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05))
    status, got_id, job, _ = events.read_event(payload)
    assert (status, got_id) == ("success", job_id)
    assert job is not None and job.status.value == "completed" and job.url


def test_failed_job_gives_a_failed_event(doitong_conn: Any) -> None:
    doitong_conn.set_faults(FaultConfig(fail_job_rate=1.0, seed=2))
    job_id = submit(doitong_conn)
    payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05))
    assert payload["status"] == "failed" and "GENERATION_FAILED" in payload["message"]
    assert payload["job"]["error_code"] == "GENERATION_FAILED"


def test_unknown_job_gives_not_found(doitong_conn: Any) -> None:
    payload = first_event(DoitongJobTrigger(job_id="no-such-job", poll_interval=0.05))
    assert payload["status"] == "not_found"


def test_deadline_gives_timeout(doitong_conn: Any) -> None:
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=2))
    job_id = submit(doitong_conn)
    payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05, deadline=time.time() + 0.5))
    assert payload["status"] == "timeout" and payload["job"]["status"] == "processing"


_original_init = poller_module.JobPoller.__init__


def _fast_poller_init(self: Any, **kwargs: Any) -> None:
    from airflow_provider_doitong.client import RetryPolicy

    _original_init(
        self,
        **{
            **kwargs,
            "max_consecutive_errors": 3,
            "retry_policy": RetryPolicy(max_attempts=2, backoff_base=0.05, backoff_max=0.2),
        },
    )


async def _one_attempt_client(self: DoitongJobTrigger) -> Any:
    """Each poll is one request, so every failed request is a failed poll the poller must ride out."""
    from airflow_provider_doitong.client import RetryPolicy
    from airflow_provider_doitong.hooks.doitong import DoitongHook

    hook = DoitongHook(doitong_conn_id=self.doitong_conn_id, retry_policy=RetryPolicy(max_attempts=1))
    return await hook.get_async_conn()


def test_an_api_that_stays_down_ends_the_wait_at_the_deadline_only(doitong_conn: Any) -> None:
    job_id = submit(doitong_conn)
    doitong_conn.set_faults(FaultConfig(error_500_rate=1.0, seed=2))
    started = time.monotonic()
    # The client's own retries of the first poll take up to ~4 s before the poller hears of it.
    payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05, deadline=time.time() + 8))
    assert time.monotonic() - started >= 7.9
    assert payload["status"] == "timeout", payload
    assert "did not finish by its deadline: the API did not answer" in payload["message"]
    assert "HTTP 500" in payload["message"]


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(error_500_rate=1.0, seed=2), FaultConfig(drop_rate=1.0, seed=2)],
    ids=["500", "dropped"],
)
def test_an_outage_is_waited_out(doitong_conn: Any, monkeypatch: Any, faults: FaultConfig) -> None:
    """Polls fail for 3 s while the job completes; the trigger still fires with the completed job."""
    monkeypatch.setattr(poller_module.JobPoller, "__init__", _fast_poller_init)
    monkeypatch.setattr(DoitongJobTrigger, "_client_factory", _one_attempt_client)
    job_id = submit(doitong_conn)
    doitong_conn.set_faults(faults)
    timer = threading.Timer(3.0, doitong_conn.set_faults, args=(FaultConfig(),))
    timer.start()
    try:
        payload = first_event(DoitongJobTrigger(job_id=job_id, poll_interval=0.05, deadline=time.time() + 60))
    finally:
        timer.cancel()
    assert payload["status"] == "success", payload
    stats = doitong_conn.stats()
    assert stats["http_5xx"] + stats["dropped"] > 3  # the outage was seen, and ridden out
    assert stats["requests"]["submit"] == 1


def test_many_triggers_share_one_poller(doitong_conn: Any) -> None:
    """Twenty waiting triggers cost one status request per interval, not twenty."""
    emu = doitong_conn
    job_ids = [submit(emu, f"shared {n}") for n in range(20)]
    before = emu.stats()["requests"].get("status", 0)

    async def _all() -> list[dict[str, Any]]:
        triggers = [DoitongJobTrigger(job_id=j, poll_interval=0.05) for j in job_ids]
        return [e.payload for e in await asyncio.gather(*(t.run().asend(None) for t in triggers))]

    started = time.monotonic()
    payloads = asyncio.run(_all())
    elapsed = time.monotonic() - started
    assert [p["status"] for p in payloads] == ["success"] * len(job_ids)
    status_requests = emu.stats()["requests"]["status"] - before
    # One request per poll cycle for all jobs together: at most one per interval, plus slack.
    assert status_requests <= elapsed / 0.05 + 2
    assert status_requests < len(job_ids) * 2


def test_cancelled_trigger_leaves_the_poller_and_the_last_one_stops_it(doitong_conn: Any) -> None:
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=2))
    a, b = submit(doitong_conn, "a"), submit(doitong_conn, "b")

    async def _scenario() -> None:
        loop = asyncio.get_running_loop()
        t1 = asyncio.create_task(DoitongJobTrigger(job_id=a, poll_interval=0.05).run().asend(None))
        t2 = asyncio.create_task(DoitongJobTrigger(job_id=b, poll_interval=0.05).run().asend(None))
        await asyncio.sleep(0.3)
        poller = poller_module._REGISTRY[loop]["doitong_default"]
        assert len(poller._watchers) == 2
        t1.cancel()
        await asyncio.gather(t1, return_exceptions=True)
        assert len(poller._watchers) == 1 and not poller._task.done()
        t2.cancel()
        await asyncio.gather(t2, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert len(poller._watchers) == 0 and poller._task.done()
        assert "doitong_default" not in poller_module._REGISTRY.get(loop, {})

    asyncio.run(_scenario())


@pytest.mark.parametrize(
    "event",
    [
        None,
        "success",
        {"status": "success"},
        {"status": "weird", "job_id": "a", "job": None, "message": ""},
        {"status": "success", "job_id": "a", "job": None, "message": ""},
        {"status": "success", "job_id": "a", "job": {"id": "a"}, "message": "", "extra": 1},
        {"status": "success", "job_id": "a", "job": "pickled", "message": ""},
    ],
)
def test_events_outside_the_allow_list_are_refused(event: Any) -> None:
    with pytest.raises(events.InvalidTriggerEvent):
        events.read_event(event)


def test_what_the_poller_learns_outlives_it(doitong_conn: Any) -> None:
    """Job durations learned by one poller serve the next one on the same connection."""
    poller_module._DURATIONS.pop("doitong_default", None)
    first = first_event(DoitongJobTrigger(job_id=submit(doitong_conn, "first"), poll_interval=0.05))
    assert first["status"] == "success"
    learned = list(poller_module._DURATIONS["doitong_default"])
    assert len(learned) == 1 and 0.2 < learned[0] < 5  # the emulator's 0.4 s job, by its own clock

    # A new poller of the same connection (as after the last trigger left) starts from what was learned,
    # so with a 30 s interval it still looks right after a just-created job is due, not 30 s later.
    async def _unused_factory() -> Any:
        raise AssertionError("no client is made")

    second = poller_module.JobPoller(key="doitong_default", client_factory=_unused_factory)
    assert list(second._durations) == learned
    now = time.time()
    delay = next_read_delay(
        now=now,
        last_read_at=now,
        poll_interval=30.0,
        started=[now],
        typical_duration=statistics.median(learned),
    )
    assert delay < 5.0
