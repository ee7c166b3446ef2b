"""``DoitongBatchTrigger`` against the emulator, and its event's allow-list."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_doitong.client import DoitongClient, ImageRequest
from airflow_provider_doitong.triggers.batch import DoitongBatchTrigger
from airflow_provider_doitong.triggers.events import InvalidBatchEvent, make_batch_event, read_batch_event
from doitong_emulator import FaultConfig


def submit(emu: Any, n: int) -> list[str]:
    with DoitongClient(base_url=emu.base_url, api_key=emu.api_key) as client:
        return [
            client.submit(ImageRequest(provider="flux-krea", prompt=f"p{i}", width=256, height=256)).id
            for i in range(n)
        ]


def first_event(trigger: DoitongBatchTrigger) -> dict[str, Any]:
    async def _run() -> dict[str, Any]:
        return (await trigger.run().asend(None)).payload

    return asyncio.run(_run())


def test_kwargs_are_plain_json_job_ids_and_times() -> None:
    trigger = DoitongBatchTrigger(job_ids=["a", "b"], doitong_conn_id="c", poll_interval=3, wake_at=5.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_doitong.triggers.batch.DoitongBatchTrigger"
    assert (
        json.loads(json.dumps(kwargs))
        == kwargs
        == {
            "job_ids": ["a", "b"],
            "doitong_conn_id": "c",
            "poll_interval": 3.0,
            "wake_at": 5.5,
            "deadline": None,
            "min_ended": 1,
            "read_at": None,
            "first_read_at": None,
            "not_before": None,
        }
    )
    assert DoitongBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_no_event_before_not_before() -> None:
    not_before = time.time() + 0.8  # within the tests' settle time (1 s)
    payload = first_event(DoitongBatchTrigger(job_ids=[], wake_at=time.time(), not_before=not_before))
    assert time.time() >= not_before and payload["status"] == "wake"
    assert read_batch_event(payload)[2] >= not_before  # the event says when it fired: after the hold


def test_fires_when_a_job_ends(doitong_conn: Any) -> None:
    ids = submit(doitong_conn, 3)
    started = time.time()
    status, ended, fired_at, message, _ = read_batch_event(
        first_event(DoitongBatchTrigger(job_ids=ids, poll_interval=0.05))
    )
    assert status == "ended" and set(ended) <= set(ids) and ended
    assert started < fired_at <= time.time() and "jobs ended" in message


def test_fires_at_wake_before_any_job_ends(doitong_conn: Any) -> None:
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=1))
    ids = submit(doitong_conn, 2)
    payload = first_event(DoitongBatchTrigger(job_ids=ids, poll_interval=0.05, wake_at=time.time() + 0.3))
    assert read_batch_event(payload)[:2] == ("wake", [])
    payload = first_event(
        DoitongBatchTrigger(
            job_ids=ids, poll_interval=0.05, wake_at=time.time() + 60, deadline=time.time() + 0.3
        )
    )
    assert payload["status"] == "timeout"
    assert first_event(DoitongBatchTrigger(job_ids=[], wake_at=time.time() + 0.1))["status"] == "wake"


def test_an_unknown_job_counts_as_ended(doitong_conn: Any) -> None:
    payload = first_event(DoitongBatchTrigger(job_ids=["no-such-job"], poll_interval=0.05))
    assert read_batch_event(payload)[:2] == ("ended", ["no-such-job"])


@pytest.mark.parametrize(
    "event",
    [
        None,
        {"status": "ended", "ended": [], "fired_at": 1.0},
        {"status": "boom", "ended": [], "fired_at": 1.0, "message": ""},
        {"status": "ended", "ended": [1], "fired_at": 1.0, "message": ""},
        {"status": "ended", "ended": [], "fired_at": True, "message": ""},
        {"status": "ended", "ended": [], "fired_at": 1.0, "message": "", "extra": 1},
    ],
)
def test_events_outside_the_allow_list_are_refused(event: Any) -> None:
    with pytest.raises(InvalidBatchEvent):
        read_batch_event(event)
    good = make_batch_event(status="wake", ended=["a"], fired_at=2, message="m")
    assert read_batch_event(good) == ("wake", ["a"], 2.0, "m", None)


@pytest.mark.parametrize("read_at", [True, "1.0", [1.0]])
def test_a_read_time_that_is_not_a_number_is_refused(read_at: Any) -> None:
    with pytest.raises(InvalidBatchEvent):
        read_batch_event({"status": "wake", "ended": [], "fired_at": 1.0, "message": "", "read_at": read_at})


def test_an_event_without_a_read_time_is_read() -> None:
    # An earlier release's trigger, still running while the provider is upgraded, sends no read_at.
    event = read_batch_event({"status": "wake", "ended": [], "fired_at": 1.0, "message": "m"})
    assert event.read_at is None and event.status == "wake"


def status_reads(emu: Any) -> list[float]:
    return [e["t"] for e in emu.request_log() if e["kind"] == "status"]


def test_a_wake_before_the_next_read_is_due_costs_no_read(doitong_conn: Any) -> None:
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=1))
    ids = submit(doitong_conn, 2)
    read_at = time.time()
    event = read_batch_event(
        first_event(
            DoitongBatchTrigger(job_ids=ids, poll_interval=30, wake_at=time.time() + 0.3, read_at=read_at)
        )
    )
    assert (event.status, event.ended) == ("wake", [])
    assert event.read_at == read_at  # still the task's own read: the trigger made none
    assert status_reads(doitong_conn) == []


def test_a_first_read_due_after_the_wake_costs_no_read(doitong_conn: Any) -> None:
    # Jobs whose end the task predicts: it wakes before they are due, and reads them itself then.
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=1))
    ids = submit(doitong_conn, 2)
    now = time.time()
    trigger = DoitongBatchTrigger(
        job_ids=ids, poll_interval=0.2, wake_at=now + 0.8, read_at=now, first_read_at=now + 30
    )
    event = read_batch_event(first_event(trigger))
    assert (event.status, event.read_at) == ("wake", now)
    assert status_reads(doitong_conn) == []  # a poll interval (0.2 s) after the task's read: 3 reads


def test_the_first_read_comes_a_poll_interval_after_the_tasks_read(doitong_conn: Any) -> None:
    ids = submit(doitong_conn, 2)
    read_at = time.time()
    event = read_batch_event(
        first_event(DoitongBatchTrigger(job_ids=ids, poll_interval=1.0, read_at=read_at))
    )
    assert event.status == "ended" and event.ended
    assert event.read_at is not None and event.read_at >= read_at + 1.0
    assert event.fired_at >= read_at + 1.0
    assert len(status_reads(doitong_conn)) == 1  # the jobs (0.4 s) were over by the first read


def test_without_a_read_time_the_trigger_reads_at_once(doitong_conn: Any) -> None:
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=1))
    ids = submit(doitong_conn, 2)
    started = time.time()
    event = read_batch_event(
        first_event(DoitongBatchTrigger(job_ids=ids, poll_interval=30, wake_at=time.time() + 0.5))
    )
    reads = status_reads(doitong_conn)
    assert event.status == "wake" and reads and reads[0] < started + 5  # not a poll interval (30 s) later
    assert event.read_at is not None and started <= event.read_at <= event.fired_at
