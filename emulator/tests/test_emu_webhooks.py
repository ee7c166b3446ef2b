"""Webhooks: signed contract payloads on terminal states, with retries."""

from __future__ import annotations

import socket
import time

import pytest

from airflow_provider_doitong.client.contract import SIGNATURE_HEADER
from airflow_provider_doitong.client.webhooks import verify_signature
from doitong_emulator import DoitongEmulator, EmulatorAccount, FaultConfig

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


def _webhook_stats(emu, delivered: int, timeout: float = 5.0) -> dict:
    """The webhook counters once ``delivered`` deliveries were acknowledged (the receiver answers
    before the emulator has read the answer)."""
    deadline = time.monotonic() + timeout
    while (stats := emu.stats()["webhooks"])["delivered"] < delivered:
        assert time.monotonic() < deadline, stats
        time.sleep(0.01)
    return stats


PAYLOAD_KEYS = {"id", "status", "url", "service", "createdAt", "completedAt", "metadata"}


def test_completed_job_posts_a_signed_payload(emu, api, receiver):
    job_id = api.submit_id(service="flux-dev", width=512, height=768, webhookUrl=receiver.url)
    receiver.wait_for(1)
    job = api.job(job_id).json()["data"]["job"]
    body, headers = receiver.deliveries[0]
    assert verify_signature(body, headers[SIGNATURE_HEADER.lower()], emu.webhook_secret)
    assert not verify_signature(body, headers[SIGNATURE_HEADER.lower()], "another-secret")
    assert headers["content-type"] == "application/json"
    payload = receiver.payloads()[0]
    assert set(payload) == PAYLOAD_KEYS
    assert payload["id"] == job_id
    assert payload["status"] == "completed"
    assert payload["url"] == job["url"]
    assert payload["service"] == "flux-dev"
    assert payload["createdAt"] == job["createdAt"]
    assert payload["completedAt"] == job["completedAt"]
    assert payload["metadata"] == {"duration": job["duration"], "width": 512, "height": 768}
    assert _webhook_stats(emu, 1) == {"attempts": 1, "delivered": 1, "failed": 0}


def test_failed_job_posts_failed(emu, api, receiver):
    emu.set_faults(FaultConfig(fail_job_rate=1.0))
    api.submit_id(webhookUrl=receiver.url)
    receiver.wait_for(1)
    payload = receiver.payloads()[0]
    assert payload["status"] == "failed" and payload["url"] is None


def test_each_account_signs_with_its_own_secret(make_api, receiver):
    with DoitongEmulator(time_scale=0.02, job_seconds=2) as emu:
        emu.add_account(EmulatorAccount(api_key="k2", webhook_secret="second-secret", name="second"))
        make_api(emu, "k2").submit_id(webhookUrl=receiver.url)
        receiver.wait_for(1)
        body, headers = receiver.deliveries[0]
        assert verify_signature(body, headers[SIGNATURE_HEADER.lower()], "second-secret")
        assert not verify_signature(body, headers[SIGNATURE_HEADER.lower()], emu.webhook_secret)


def test_failing_receiver_gets_retries_until_success(emu, api, receiver):
    receiver.fail_first = 2
    job_id = api.submit_id(webhookUrl=receiver.url)
    receiver.wait_for(3)
    assert receiver.answered == [503, 503, 200]
    assert {p["id"] for p in receiver.payloads()} == {job_id}
    assert len({body for body, _ in receiver.deliveries}) == 1
    assert _webhook_stats(emu, 1) == {"attempts": 3, "delivered": 1, "failed": 0}


def test_unreachable_receiver_is_given_up_after_the_attempts(make_api):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with DoitongEmulator(time_scale=0.01, job_seconds=1, webhook_attempts=3) as emu:
        make_api(emu).submit_id(webhookUrl=f"http://127.0.0.1:{port}/hook")
        deadline = time.monotonic() + 5
        while emu.stats()["webhooks"]["failed"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert emu.stats()["webhooks"] == {"attempts": 3, "delivered": 0, "failed": 1}
