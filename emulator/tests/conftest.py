"""Fixtures for the emulator tests: running emulators, a small API client, a webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_provider_doitong.client.contract import JobStatus
from doitong_emulator import DoitongEmulator, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory, doitong_emulator  # noqa: F401

#: Fast emulated time: a 5 s job takes 0.1 s, the rate-limit window 1.2 s.
TIME_SCALE = 0.02
JOB_SECONDS = 5.0


class Api:
    """A small synchronous client speaking to an emulator.

    :param base_url: the emulator's base URL.
    :param api_key: the key to send.
    """

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.session = requests.Session()

    def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        api_key: str | None = None,
    ) -> requests.Response:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        if operation_name is not None:
            body["operationName"] = operation_name
        headers = {"Authorization": f"Bearer {api_key or self.api_key}"}
        return self.session.post(f"{self.base_url}/graphql", json=body, headers=headers, timeout=10)

    def submit(self, body: Any = None, *, api_key: str | None = None, **fields: Any) -> requests.Response:
        payload = body if body is not None else {"service": "flux-krea", "prompt": "a lighthouse", **fields}
        return self.session.post(
            f"{self.base_url}/v1/text_to_image",
            json=payload,
            headers={"X-API-Key": api_key or self.api_key},
            timeout=10,
        )

    def submit_id(self, **fields: Any) -> str:
        response = self.submit(**fields)
        assert response.status_code == 200, response.text
        return response.json()["data"]["generateimage"]["id"]

    def job(self, job_id: str, *, api_key: str | None = None) -> requests.Response:
        return self.session.get(
            f"{self.base_url}/v1/jobs/{job_id}", headers={"X-API-Key": api_key or self.api_key}, timeout=10
        )

    def account(self, *, api_key: str | None = None) -> requests.Response:
        return self.session.get(
            f"{self.base_url}/v1/account", headers={"X-API-Key": api_key or self.api_key}, timeout=10
        )

    def credits(self) -> int:
        return self.account().json()["data"]["account"]["credits"]

    def wait(self, job_id: str, *, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id).json()["data"]["job"]
            if JobStatus.parse(job["status"]).is_terminal:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            time.sleep(0.02)


@pytest.fixture(scope="session")
def shared_emulator(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    with doitong_emulators(
        time_scale=TIME_SCALE, job_seconds=JOB_SECONDS, requests_per_minute=100_000
    ) as emu:
        yield emu


@pytest.fixture
def emu(shared_emulator: DoitongEmulator) -> DoitongEmulator:
    """The shared emulator, reset, without faults, and with a generous rate limit."""
    shared_emulator.set_faults(FaultConfig())
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def api(emu: DoitongEmulator) -> Iterator[Api]:
    client = Api(emu.base_url, emu.api_key)
    yield client
    client.session.close()


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    """A factory of clients for any emulator (and key)."""
    clients: list[Api] = []

    def make(emulator: DoitongEmulator, api_key: str | None = None) -> Api:
        client = Api(emulator.base_url, api_key or emulator.api_key)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.session.close()


@dataclass
class Receiver:
    """A webhook receiver on loopback that records deliveries and can fail the first few."""

    url: str = ""
    fail_first: int = 0
    deliveries: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.deliveries]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < count:
            assert time.monotonic() < deadline, f"only {len(self.answered)} deliveries"
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    record = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                record.deliveries.append((body, {k.lower(): v for k, v in self.headers.items()}))
                status = 503 if len(record.deliveries) <= record.fail_first else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            record.answered.append(status)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield record
    server.shutdown()
    server.server_close()
    thread.join(5)
