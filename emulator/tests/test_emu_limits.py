"""Rate limits: the request window and its headers, concurrent jobs, the daily limit."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_doitong.client.contract import PLANS
from doitong_emulator import DoitongEmulator

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


@pytest.fixture
def limited(make_api):
    with DoitongEmulator(time_scale=0.025, job_seconds=5, requests_per_minute=5) as emu:
        yield emu, make_api(emu)


def test_window_counts_every_authenticated_request_and_resets(limited):
    emu, client = limited
    answers = [
        client.account(),
        client.job("unknown"),
        client.submit(width=13),
        client.gql('{ a: job(id: "x") { id } b: job(id: "y") { id } account { plan } }'),
        client.submit(),
    ]
    assert [r.status_code for r in answers] == [200, 404, 400, 200, 200]
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in answers] == [4, 3, 2, 1, 0]
    assert {r.headers["X-RateLimit-Limit"] for r in answers} == {"5"}
    resets = {r.headers["X-RateLimit-Reset"] for r in answers}
    assert len(resets) == 1
    reset = resets.pop()
    assert len(reset.split(".")[1]) == 3
    assert 0 < float(reset) - time.time() <= 60 * 0.025 + 0.01

    refused = client.account()
    assert refused.status_code == 429
    body = refused.json()
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    retry_after = float(refused.headers["Retry-After"])
    assert 0 < retry_after <= 1.5
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Reset"] == reset
    assert client.gql("{ account { plan } }").status_code == 429

    time.sleep(max(float(reset) - time.time(), 0) + 0.01)
    again = client.account()
    assert again.status_code == 200
    assert again.headers["X-RateLimit-Remaining"] == "4"
    assert float(again.headers["X-RateLimit-Reset"]) > float(reset)
    assert emu.stats()["http_429"] == 2


def test_unscaled_reset_is_an_integer_unix_time(make_api):
    with DoitongEmulator(time_scale=1.0) as emu:
        response = make_api(emu).account()
        reset = response.headers["X-RateLimit-Reset"]
        assert reset.isdigit()
        assert 59 <= int(reset) - time.time() <= 61
        assert response.headers["X-RateLimit-Limit"] == str(PLANS["pro"].requests_per_minute)


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_plan_limits_come_from_the_contract(make_api, plan):
    with DoitongEmulator(plan=plan, time_scale=0.5) as emu:
        assert make_api(emu).account().headers["X-RateLimit-Limit"] == str(PLANS[plan].requests_per_minute)


def test_concurrency_limit(make_api):
    with DoitongEmulator(time_scale=0.02, job_seconds=10, concurrent_jobs=2) as emu:
        client = make_api(emu)
        first, second = client.submit_id(), client.submit_id()
        refused = client.submit()
        assert refused.status_code == 429
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "CONCURRENCY_LIMIT"
        assert error["extensions"]["concurrentJobs"] == 2
        retry_after = float(refused.headers["Retry-After"])
        assert 0.01 <= retry_after <= 0.2
        assert "X-RateLimit-Remaining" in refused.headers
        assert emu.credits() == 100_000 - 20
        time.sleep(retry_after + 0.01)
        assert client.submit().status_code == 200
        assert emu.stats()["max_in_flight"] == {"overall": 2, "by_account": {"default": 2}}
        client.wait(first), client.wait(second)


def test_daily_limit_resets_at_utc_midnight(make_api):
    with DoitongEmulator(time_scale=0.02, job_seconds=1, daily_limit=2, concurrent_jobs=10) as emu:
        client = make_api(emu)
        client.submit_id(), client.submit_id()
        refused = client.submit()
        assert refused.status_code == 429
        extensions = refused.json()["errors"][0]["extensions"]
        assert extensions["code"] == "DAILY_LIMIT"
        now = datetime.now(timezone.utc)
        midnight = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) + timedelta(days=1)
        assert extensions["resetAt"] == midnight.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert abs(float(refused.headers["Retry-After"]) - (midnight - now).total_seconds()) < 2
        assert client.account().status_code == 200
