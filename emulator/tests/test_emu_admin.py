"""Counters, the request log and resets, over HTTP and in process."""

from __future__ import annotations

import json
import time

import pytest
import requests

from doitong_emulator import DoitongEmulator, EmulatorAccount

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


def test_stats_count_what_clients_did(emu, api):
    ids = [api.submit_id(prompt="same"), api.submit_id(prompt="same"), api.submit_id(prompt="other")]
    api.gql(f'{{ a: job(id: "{ids[0]}") {{ id }} b: job(id: "{ids[1]}") {{ id }} }}')
    api.job(ids[2])
    api.account()
    api.gql("{ __typename }")
    for job_id in ids:
        api.wait(job_id)
    requests.get(api.job(ids[0]).json()["data"]["job"]["url"], timeout=5)

    stats = requests.get(f"{emu.base_url}/_emulator/stats", timeout=5).json()
    assert stats == emu.stats()
    assert stats["submissions_by_prompt"] == {"same": 2, "other": 1}
    assert stats["requests"]["submit"] == 3
    assert stats["requests"]["account"] == 1
    assert stats["requests"]["other"] == 1
    assert stats["requests"]["download"] == 1
    assert stats["requests"]["status"] >= 5
    assert stats["jobs_read"] == stats["requests"]["status"] + 1
    assert stats["max_in_flight"] == {"overall": 3, "by_account": {"default": 3}}
    assert stats["credits"] == {"default": 100_000 - 30}
    assert stats["jobs"] == {"total": 3, "completed": 3, "failed": 0, "stuck": 0, "running": 0}
    assert stats["http_429"] == 0 and stats["http_5xx"] == 0 and stats["dropped"] == 0
    assert emu.api_key not in json.dumps(stats)


def test_max_in_flight_per_account(make_api):
    with DoitongEmulator(time_scale=0.02, job_seconds=10) as emu:
        emu.add_account(EmulatorAccount(api_key="second-key", name="second"))
        first, second = make_api(emu), make_api(emu, "second-key")
        for _ in range(3):
            first.submit_id()
        second.submit_id()
        stats = emu.stats()
        assert stats["max_in_flight"] == {"overall": 4, "by_account": {"default": 3, "second": 1}}
        assert "second-key" not in json.dumps(stats)


def test_request_log(emu, api):
    start = time.time()
    api.account()
    api.job("missing")
    api.submit(width=13)
    log = requests.get(f"{emu.base_url}/_emulator/requests", timeout=5).json()
    assert log == emu.request_log()
    assert [(e["kind"], e["status"]) for e in log] == [("account", 200), ("status", 404), ("submit", 400)]
    assert all(start - 0.01 <= e["t"] <= time.time() for e in log)


def test_reset_over_http_and_in_process(emu, api):
    api.submit_id()
    api.account()
    assert requests.post(f"{emu.base_url}/_emulator/reset", timeout=5).status_code == 200
    stats = emu.stats()
    assert stats["jobs"]["total"] == 0
    assert stats["credits"]["default"] == 100_000
    assert sum(stats["requests"].values()) == 0
    assert emu.request_log() == []
    job_id = api.submit_id()
    emu.reset()
    assert api.job(job_id).status_code == 404
    assert emu.credits() == 100_000


def test_health(emu):
    assert requests.get(f"{emu.base_url}/_emulator/health", timeout=5).json() == {"status": "ok"}


def test_unknown_paths_answer_json_errors(emu, api):
    missing = requests.get(f"{emu.base_url}/nowhere", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    wrong_method = requests.get(f"{emu.base_url}/graphql", timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert emu.stats()["requests"]["other"] == 2
