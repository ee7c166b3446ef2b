"""Injected faults: 500s, 429s, dropped connections, latency, failed and stuck jobs, restarts."""

from __future__ import annotations

import time

import httpx
import pytest
import requests

from doitong_emulator import DoitongEmulator, FaultConfig


def test_error_500_share(emu, api):
    emu.set_faults(FaultConfig(error_500_rate=0.3, seed=11))
    statuses = [api.account().status_code for _ in range(200)]
    failures = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 40 <= failures <= 80
    emu.set_faults(FaultConfig(error_500_rate=1.0))
    body = api.account().json()
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert emu.stats()["http_5xx"] == failures + 1


def test_error_500_draws_are_reproducible(emu, api):
    runs = []
    for _ in range(2):
        emu.set_faults(FaultConfig(error_500_rate=0.5, seed=3))
        runs.append([api.account().status_code for _ in range(30)])
    assert runs[0] == runs[1]


def test_error_429_share_carries_headers(emu, api):
    emu.set_faults(FaultConfig(error_429_rate=0.25, seed=5))
    answers = [api.account() for _ in range(200)]
    limited = [r for r in answers if r.status_code == 429]
    assert 30 <= len(limited) <= 70
    for response in limited:
        assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert float(response.headers["Retry-After"]) > 0
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert "X-RateLimit-Reset" in response.headers and "X-RateLimit-Limit" in response.headers
    assert emu.stats()["http_429"] == len(limited)


def test_dropped_connection_is_a_client_connection_error(emu, api):
    emu.set_faults(FaultConfig(drop_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        api.account()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{emu.base_url}/v1/account", headers={"X-API-Key": emu.api_key}, timeout=5)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{emu.base_url}/graphql", json={"query": "{ account { plan } }"}, timeout=5)
    assert emu.stats()["dropped"] == 3
    assert [entry["status"] for entry in emu.request_log()] == [0, 0, 0]
    assert emu.stats()["jobs"]["total"] == 0
    emu.set_faults(FaultConfig())
    assert api.account().status_code == 200


def test_partial_drops_leave_the_server_serving(emu, api):
    emu.set_faults(FaultConfig(drop_rate=0.3, seed=9))
    outcomes = []
    for _ in range(60):
        try:
            outcomes.append(api.account().status_code)
        except requests.ConnectionError:
            outcomes.append(0)
    assert outcomes.count(0) == emu.stats()["dropped"]
    assert 8 <= outcomes.count(0) <= 30
    assert set(outcomes) == {0, 200}


def test_latency_is_added_to_api_requests_only(emu, api):
    emu.set_faults(FaultConfig(latency_s=0.25))
    start = time.monotonic()
    assert api.account().status_code == 200
    assert time.monotonic() - start >= 0.25
    start = time.monotonic()
    assert requests.get(f"{emu.base_url}/_emulator/stats", timeout=5).status_code == 200
    assert time.monotonic() - start < 0.2


def test_faults_spare_admin_and_outputs(emu, api):
    job_id = api.submit_id()
    api.wait(job_id)
    emu.set_faults(FaultConfig(error_500_rate=1.0))
    assert requests.get(f"{emu.base_url}/outputs/{job_id}.jpg", timeout=5).status_code == 200
    assert requests.get(f"{emu.base_url}/_emulator/stats", timeout=5).status_code == 200
    assert api.account().status_code == 500


def test_stuck_jobs_never_finish(emu, api):
    emu.set_faults(FaultConfig(stuck_job_rate=1.0))
    job_id = api.submit_id()
    time.sleep(0.5)
    job = api.job(job_id).json()["data"]["job"]
    assert job["status"] == "processing" and job["completedAt"] is None
    stats = emu.stats()
    assert stats["jobs"]["stuck"] == 1 and stats["jobs"]["running"] == 1
    assert stats["in_flight"]["overall"] == 1


def test_faults_change_over_http(emu, api):
    url = f"{emu.base_url}/_emulator/faults"
    response = requests.post(url, json={"error_500_rate": 1.0, "seed": 1}, timeout=5)
    assert response.status_code == 200
    assert response.json()["error_500_rate"] == 1.0
    assert emu.faults.error_500_rate == 1.0
    assert api.account().status_code == 500
    assert requests.post(url, json={"error_500_rate": 2}, timeout=5).status_code == 400
    assert requests.post(url, json={"bogus": 1}, timeout=5).status_code == 400
    assert requests.post(url, json={}, timeout=5).json()["error_500_rate"] == 0.0
    assert api.account().status_code == 200


def test_fault_config_validates():
    with pytest.raises(ValueError):
        FaultConfig(drop_rate=-0.1)
    with pytest.raises(ValueError):
        FaultConfig(error_500_rate=0.6, error_429_rate=0.6)


@pytest.mark.integration
def test_restart_keeps_state_and_port(make_api):
    with DoitongEmulator(time_scale=0.02, job_seconds=5) as emu:
        client = make_api(emu)
        port, base_url = emu.port, emu.base_url
        done = client.wait(client.submit_id(prompt="before restart"))
        running = client.submit_id(prompt="across restart", quality="high")
        emu.restart()
        assert emu.running and emu.port == port and emu.base_url == base_url
        client.session.close()
        assert client.wait(running)["status"] == "completed"
        assert client.job(done["id"]).json()["data"]["job"]["url"] == done["url"]
        assert requests.get(done["url"], timeout=5).status_code == 200
        assert client.credits() == 100_000 - 30
        stats = emu.stats()
        assert stats["submissions_by_prompt"] == {"before restart": 1, "across restart": 1}
        assert stats["requests"]["submit"] == 2


@pytest.mark.integration
def test_stop_then_start_refuses_then_serves(make_api):
    with DoitongEmulator(time_scale=0.02, job_seconds=5) as emu:
        client = make_api(emu)
        emu.stop()
        assert not emu.running
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{emu.base_url}/v1/account", headers={"X-API-Key": emu.api_key}, timeout=2)
        emu.start()
        assert client.account().status_code == 200


def test_unexpected_errors_become_json_500s_and_are_logged(emu, api, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("an internal bug")

    job_id = api.submit_id()
    monkeypatch.setattr(emu.state, "find_job", broken)
    caplog.set_level("ERROR")
    rest = api.job(job_id)
    assert rest.status_code == 500
    assert rest.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    graphql = api.gql(f'{{ job(id: "{job_id}") {{ id }} }}')
    assert graphql.status_code == 500
    assert graphql.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "an internal bug" in caplog.text
    monkeypatch.undo()
    assert api.job(job_id).status_code == 200
    assert emu.stats()["http_5xx"] == 2


def test_dropping_leaves_no_server_error_logs(emu, api, caplog):
    caplog.set_level("WARNING")
    emu.set_faults(FaultConfig(drop_rate=1.0))
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            api.account()
    emu.set_faults(FaultConfig())
    assert api.account().status_code == 200
    assert "without starting response" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text
