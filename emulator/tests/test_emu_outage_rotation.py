"""An outage window, stale rate-limit headers and key rotation: each off by default."""

from __future__ import annotations

import time

import pytest
import requests

from doitong_emulator import FaultConfig


def test_an_outage_window_answers_503_then_ends(emu, api):
    job_id = api.submit_id(prompt="before the outage")
    emu.set_faults(FaultConfig(outage_s=0.6, outage_after_s=0.3))
    assert api.job(job_id).status_code == 200  # not started yet
    time.sleep(0.35)
    answers = [api.job(job_id), api.account(), api.submit(prompt="in the outage")]
    assert [a.status_code for a in answers] == [503, 503, 503]
    assert answers[0].json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert requests.get(f"{emu.base_url}/_emulator/health", timeout=5).status_code == 200  # admin unaffected
    time.sleep(max(0.0, emu.state.faults.configured_at + 0.9 - time.time()) + 0.05)  # past its end
    assert api.job(job_id).status_code == 200
    stats = emu.stats()
    assert stats["http_5xx"] == 3 and stats["submissions_by_prompt"] == {"before the outage": 1}


def test_an_outage_can_drop_connections(emu, api):
    emu.set_faults(FaultConfig(outage_s=30, outage_drop_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        api.account()
    assert emu.stats()["dropped"] == 1
    emu.set_faults(FaultConfig())
    assert api.account().status_code == 200


def test_stale_reset_headers_are_in_the_past_without_retry_after(emu, api):
    emu.set_faults(FaultConfig(error_429_rate=1.0, stale_reset_s=120))
    answer = api.account()
    assert answer.status_code == 429
    assert "Retry-After" not in answer.headers
    assert float(answer.headers["X-RateLimit-Reset"]) <= time.time() - 119
    emu.set_faults(FaultConfig(error_429_rate=1.0))
    fresh = api.account()
    assert "Retry-After" in fresh.headers and float(fresh.headers["X-RateLimit-Reset"]) > time.time() - 1


@pytest.mark.integration
def test_stale_reset_applies_to_the_plans_own_429s(make_api):
    from doitong_emulator import DoitongEmulator

    with DoitongEmulator(requests_per_minute=1, faults=FaultConfig(stale_reset_s=30)) as emu:
        api = make_api(emu)
        assert api.account().status_code == 200
        refused = api.account()
        assert refused.status_code == 429 and "Retry-After" not in refused.headers
        assert float(refused.headers["X-RateLimit-Reset"]) < time.time()


def test_a_rotated_key_serves_the_account_and_the_old_one_stops(emu, api):
    job_id = api.submit_id(prompt="rotation")
    try:
        emu.rotate_key("rotated-key-123456", old_key_valid_for=0.5)
        assert api.job(job_id, api_key="rotated-key-123456").status_code == 200
        assert api.job(job_id).status_code == 200  # the old key, still within its grace
        time.sleep(0.6)
        refused = api.job(job_id)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        # The same account: its balance, seen through the new key.
        credits = api.account(api_key="rotated-key-123456").json()["data"]["account"]["credits"]
        assert credits == emu.credits() < 100_000
    finally:
        emu.app.rotations.clear()
    assert api.job(job_id).status_code == 200
    assert api.job(job_id, api_key="rotated-key-123456").status_code == 401


def test_rotation_needs_two_different_keys(emu):
    with pytest.raises(ValueError):
        emu.rotate_key(emu.api_key)


def test_the_cli_refuses_a_negative_outage(capsys):
    from doitong_emulator.cli import main

    assert main(["--port", "0", "--outage", "-1"]) == 2
    assert "must not be negative" in capsys.readouterr().err
