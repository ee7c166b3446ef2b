"""Several emulators at once in one process, clean shutdown, and the pytest plugin fixture."""

from __future__ import annotations

import threading

import pytest
import requests

from doitong_emulator import DoitongEmulator

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


def _emulator_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("doitong-emulator")}


def test_several_emulators_at_once_and_no_leaked_threads():
    before = _emulator_threads()
    with (
        DoitongEmulator(api_key="one", credits=10, time_scale=0.02, job_seconds=5) as first,
        DoitongEmulator(api_key="two", credits=20, plan="free", time_scale=0.02, job_seconds=5) as second,
    ):
        assert first.port != second.port
        assert len(_emulator_threads() - before) == 2
        one = requests.get(f"{first.base_url}/v1/account", headers={"X-API-Key": "one"}, timeout=5).json()
        two = requests.get(f"{second.base_url}/v1/account", headers={"X-API-Key": "two"}, timeout=5).json()
        assert one["data"]["account"] == {"plan": "pro", "credits": 10}
        assert two["data"]["account"] == {"plan": "free", "credits": 20}
        assert (
            requests.get(f"{first.base_url}/v1/account", headers={"X-API-Key": "two"}, timeout=5).status_code
            == 401
        )
    assert _emulator_threads() == before


def test_given_port_and_defaults():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with DoitongEmulator(port=port) as emu:
        assert emu.base_url == f"http://127.0.0.1:{port}"
        assert emu.api_key == "emulator-key"
        assert emu.webhook_secret == "emulator-webhook-secret"
        assert emu.accounts[0].name == "default"
        assert "emulator-key" not in repr(emu) and "emulator-key" not in repr(emu.accounts[0])


def test_pytest_plugin_fixture(doitong_emulator):
    response = requests.get(
        f"{doitong_emulator.base_url}/v1/account", headers={"X-API-Key": doitong_emulator.api_key}, timeout=5
    )
    assert response.json()["data"]["account"]["plan"] == "pro"
    assert doitong_emulator.state.config.time_scale == 0.02


def test_state_file_in_process(tmp_path, make_api):
    state_file = tmp_path / "emulator-state.json"
    with DoitongEmulator(time_scale=0.02, job_seconds=5, state_file=state_file) as first:
        job_id = make_api(first).submit_id(prompt="persisted")
    with DoitongEmulator(time_scale=0.02, job_seconds=5, state_file=state_file) as second:
        client = make_api(second)
        assert client.wait(job_id)["metadata"]["prompt"] == "persisted"
        assert client.credits() == 100_000 - 10
        assert second.stats()["jobs"]["total"] == 1


def test_webhook_due_while_stopped_is_sent_after_start(make_api, receiver):
    import time

    with DoitongEmulator(time_scale=0.02, job_seconds=25) as emu:
        job_id = make_api(emu).submit_id(webhookUrl=receiver.url)
        emu.stop()
        time.sleep(0.6)
        assert receiver.deliveries == []
        assert emu.job(job_id)["status"] == "completed"
        emu.start()
        receiver.wait_for(1)
        assert receiver.payloads()[0]["id"] == job_id
