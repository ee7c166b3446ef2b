"""The worker's short wait for a job just submitted (``wait_while_young``), against the emulator.

A deferrable ``FluxGenerateOperator`` waits so before it defers: the job, or ``None`` to hand the
wait to the triggerer. The reads are counted from the emulator's own request log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_provider_doitong.client import DoitongJobFailed, DoitongTimeout, ImageRequest, JobStatus
from doitong_emulator import DoitongEmulator, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory

from .doitong_support import FAST, TIME_SCALE, SyncApi, statuses

#: Starts servers: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration

REQUEST = ImageRequest(provider="flux-krea", prompt="a kite over the dunes", width=256, height=256)


@pytest.fixture
def long_jobs(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    """Jobs of 2 s (400 emulated seconds at the client tests' time scale)."""
    with doitong_emulators(time_scale=TIME_SCALE, job_seconds=400) as emu:
        yield emu


def _api(emu: DoitongEmulator) -> SyncApi:
    return SyncApi(api_key=emu.api_key, base_url=emu.base_url, retry_policy=FAST, timeout=5.0)


def test_a_job_that_ends_while_young_is_returned_after_one_read(emu: DoitongEmulator) -> None:
    api = _api(emu)  # jobs of 0.1 s
    try:
        job = api.submit(REQUEST)
        done = api.wait_while_young(job.id, until=time.time() + 5, poll_interval=0.3)
    finally:
        api.close()
    assert done is not None and done.status is JobStatus.COMPLETED and done.id == job.id
    assert statuses(emu, "status") == [200]  # the first read, a poll_interval after the submission


def test_a_job_still_running_at_until_is_handed_back(long_jobs: DoitongEmulator) -> None:
    api = _api(long_jobs)
    try:
        job = api.submit(REQUEST)
        started = time.monotonic()
        done = api.wait_while_young(job.id, until=time.time() + 0.5, poll_interval=0.2)
        waited = time.monotonic() - started
    finally:
        api.close()
    assert done is None and long_jobs.job(job.id)["status"] != "completed"
    assert 0.45 <= waited  # it read until `until`, not past the 2-s job's end
    reads = statuses(long_jobs, "status")
    assert 2 <= len(reads) <= 4 and set(reads) == {200}  # about 0.2, 0.4 and 0.5 s


def test_a_deadline_before_until_ends_the_wait_as_a_timeout(long_jobs: DoitongEmulator) -> None:
    api = _api(long_jobs)
    try:
        job = api.submit(REQUEST)
        with pytest.raises(DoitongTimeout):
            api.wait_while_young(job.id, until=time.time() + 5, poll_interval=0.1, deadline=time.time() + 0.3)
    finally:
        api.close()


def test_a_failed_job_ends_the_short_wait_with_its_error(emu: DoitongEmulator) -> None:
    emu.set_faults(FaultConfig(fail_job_rate=1.0))
    api = _api(emu)
    try:
        job = api.submit(REQUEST)
        with pytest.raises(DoitongJobFailed):
            api.wait_while_young(job.id, until=time.time() + 5, poll_interval=0.2)
    finally:
        api.close()


def test_a_window_known_to_be_spent_hands_over_without_a_read(doitong_emulators: EmulatorFactory) -> None:
    with doitong_emulators(time_scale=0.05, job_seconds=400, requests_per_minute=2) as emu:  # 3-s windows
        api = _api(emu)
        try:
            job = api.submit(REQUEST)
            api.get_account()  # the window's second request: its answer says the window is spent
            done = api.wait_while_young(job.id, until=time.time() + 0.5, poll_interval=0.1)
        finally:
            api.close()
    assert done is None and statuses(emu, "status") == []


def test_a_refused_read_is_sent_once_and_a_reset_past_until_hands_over_at_once(
    doitong_emulators: EmulatorFactory,
) -> None:
    """Another process spends the window after this one's last answer: one refused read, then the
    wait is handed over, not sat out until the reset."""
    with doitong_emulators(time_scale=0.05, job_seconds=400, requests_per_minute=4) as emu:  # 3-s windows
        api, other = _api(emu), _api(emu)
        try:
            job = api.submit(REQUEST)  # 3 requests left, as this client knows
            for _ in range(3):
                other.get_account()
            until = time.time() + 2.0
            done = api.wait_while_young(job.id, until=until, poll_interval=0.1)
            ended = time.time()
        finally:
            api.close()
            other.close()
    assert done is None and ended < until  # handed over at the refusal, the reset being past `until`
    assert statuses(emu, "status") == [429]  # sent once, not retried inside the read
