"""DoitongJobSensor's pokes against the emulator: an unavailable API is "not yet", a refused key is
read again once, and the outcome table decides how a poke ends."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_doitong._compat import deferral_settle_s
from airflow_provider_doitong.client import DoitongClient, ImageRequest
from airflow_provider_doitong.client.pacing import RESET_MARGIN
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.sensors.doitong import DoitongJobSensor
from doitong_emulator import FaultConfig
from doitong_emulator.gate import INJECTED_RETRY_AFTER_SECONDS


def _submit(emu: Any) -> str:
    """A job, completed (the emulator's jobs take 0.4 s)."""
    with DoitongClient(base_url=emu.base_url, api_key=emu.api_key) as client:
        job = client.submit(ImageRequest(provider="flux-krea", prompt="sensed", width=256, height=256))
        return client.wait_for_job(job.id, poll_interval=0.05, deadline=time.time() + 10).id


def _use_key(monkeypatch: pytest.MonkeyPatch, emu: Any, key: str) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT",
        json.dumps({"conn_type": "doitong", "host": emu.base_url, "password": key}),
    )


@pytest.mark.parametrize("interval", [0, -1.0])
def test_poll_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        DoitongJobSensor(task_id="sense", job_id="j", poll_interval=interval)


def test_min_defer_seconds_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="min_defer_seconds must not be negative"):
        DoitongJobSensor(task_id="sense", job_id="j", min_defer_seconds=-1)


def test_a_deferrable_sensor_returns_a_job_done_in_its_first_seconds_without_deferring(
    doitong_conn: Any,
) -> None:
    with DoitongClient(base_url=doitong_conn.base_url, api_key=doitong_conn.api_key) as client:
        job = client.submit(ImageRequest(provider="flux-krea", prompt="sensed", width=256, height=256))
    sensor = DoitongJobSensor(
        task_id="sense", job_id=job.id, poll_interval=0.1, deferrable=True, min_defer_seconds=10, timeout=30
    )
    result = sensor.execute({})  # no TaskDeferred: the 0.4-s job ended within min_defer_seconds
    assert result["id"] == job.id and result["status"] == "completed"


def test_a_deferrable_sensor_defers_a_job_that_outlives_min_defer_seconds(doitong_conn: Any) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=1))
    with DoitongClient(base_url=doitong_conn.base_url, api_key=doitong_conn.api_key) as client:
        job = client.submit(ImageRequest(provider="flux-krea", prompt="sensed", width=256, height=256))
    sensor = DoitongJobSensor(
        task_id="sense", job_id=job.id, poll_interval=0.1, deferrable=True, min_defer_seconds=0.3, timeout=30
    )
    started = time.monotonic()
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    assert 0.3 <= time.monotonic() - started < 5
    # not resumed within the settle time of the deferral (Airflow's resume race)
    assert info.value.trigger.not_before >= time.time() + deferral_settle_s() - 1
    statuses = [e["status"] for e in doitong_conn.request_log() if e["kind"] == "status"]
    assert 2 <= len(statuses) <= 6  # at once, then every 0.1 s to 0.3 s


@pytest.mark.parametrize(
    "faults",
    [
        FaultConfig(outage_s=60),
        FaultConfig(outage_s=60, outage_drop_rate=1.0),
        FaultConfig(error_429_rate=1.0),
    ],
    ids=["503", "dropped", "429"],
)
def test_a_poke_while_the_api_is_unavailable_says_not_yet(
    doitong_conn: Any, monkeypatch: pytest.MonkeyPatch, faults: FaultConfig
) -> None:
    from airflow_provider_doitong.client import RetryPolicy

    job_id = _submit(doitong_conn)
    fast = RetryPolicy(max_attempts=2, backoff_base=0.01, max_rate_limit_wait=0)
    monkeypatch.setattr(DoitongHook, "__init__", _with_policy(fast))
    doitong_conn.set_faults(faults)
    answer = DoitongJobSensor(task_id="sense", job_id=job_id, poll_interval=0.1).poke({})
    assert answer.is_done is False  # the job is completed, but the API cannot say so now
    doitong_conn.set_faults(FaultConfig())
    if faults.error_429_rate:
        # a 429 says when to try again (its Retry-After, 0.02 s here), which every process of this
        # host keeps to (the board of spent windows), a margin past it
        time.sleep(INJECTED_RETRY_AFTER_SECONDS * 0.02 + RESET_MARGIN + 0.05)
    assert DoitongJobSensor(task_id="sense", job_id=job_id, poll_interval=0.1).poke({}).is_done is True


def test_a_refused_key_is_read_again_once_and_a_rotated_one_is_used(
    doitong_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = doitong_conn
    job_id = _submit(emu)
    _use_key(monkeypatch, emu, emu.api_key)
    emu.rotate_key("rotated-sensor-key-0123", old_key_valid_for=0.0)
    original = DoitongHook.reread_settings

    def rotated_meanwhile(self: DoitongHook) -> Any:
        _use_key(monkeypatch, emu, "rotated-sensor-key-0123")  # the connection is updated...
        return original(self)  # ...and read again

    monkeypatch.setattr(DoitongHook, "reread_settings", rotated_meanwhile)
    before = len(emu.request_log())
    answer = DoitongJobSensor(task_id="sense", job_id=job_id, poll_interval=0.1).poke({})
    statuses = [e["status"] for e in emu.request_log()[before:]]
    assert statuses == [401, 200]
    assert answer.is_done is True and answer.xcom_value["id"] == job_id


def test_a_key_refused_again_after_the_reread_fails_at_once(
    doitong_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = doitong_conn
    job_id = _submit(emu)
    _use_key(monkeypatch, emu, emu.api_key)
    emu.rotate_key("rotated-elsewhere-0123", old_key_valid_for=0.0)  # nobody updates the connection
    before = len(emu.request_log())
    with pytest.raises(AirflowFailException, match="UNAUTHENTICATED"):
        DoitongJobSensor(task_id="sense", job_id=job_id, poll_interval=0.1).poke({})
    assert [e["status"] for e in emu.request_log()[before:]] == [401, 401]


def test_an_unknown_job_fails_the_sensor_at_once(doitong_conn: Any) -> None:
    with pytest.raises(AirflowFailException, match="does not exist"):
        DoitongJobSensor(task_id="sense", job_id="no-such-job", poll_interval=0.1).poke({})


def _with_policy(policy: Any) -> Any:
    original = DoitongHook.__init__

    def init(self: DoitongHook, **kwargs: Any) -> None:
        original(self, **{**kwargs, "retry_policy": policy})

    return init
