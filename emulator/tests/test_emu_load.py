"""Load: 1,000 simultaneous status polls, all answered, none dropped."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx
import pytest

from doitong_emulator import DoitongEmulator

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


POLLS = 1000


@pytest.fixture(scope="module")
def busy():
    with DoitongEmulator(time_scale=0.02, job_seconds=5, requests_per_minute=1_000_000) as emu:
        yield emu


def _submit(emu: DoitongEmulator) -> str:
    response = httpx.post(
        f"{emu.base_url}/v1/text_to_image",
        json={"service": "flux-krea", "prompt": "load"},
        headers={"X-API-Key": emu.api_key},
    )
    return response.json()["data"]["generateimage"]["id"]


async def _raw_polls(emu: DoitongEmulator, request: bytes, count: int) -> list[tuple[int, bytes]]:
    """Open ``count`` connections, then send one request on each at once, then read every answer."""
    address = urlsplit(emu.base_url)
    streams = await asyncio.gather(
        *(asyncio.open_connection(address.hostname, address.port) for _ in range(count))
    )
    for _, writer in streams:
        writer.write(request)
    await asyncio.gather(*(writer.drain() for _, writer in streams))

    async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await reader.readexactly(length)

    try:
        return await asyncio.wait_for(asyncio.gather(*(answer(reader) for reader, _ in streams)), 60)
    finally:
        for _, writer in streams:
            writer.close()


def test_thousand_simultaneous_rest_polls(busy):
    job_id = _submit(busy)
    host = urlsplit(busy.base_url).netloc
    request = f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {busy.api_key}\r\n\r\n".encode()
    before = busy.stats()
    answers = asyncio.run(_raw_polls(busy, request, POLLS))
    assert [status for status, _ in answers] == [200] * POLLS
    assert {json.loads(body)["data"]["job"]["id"] for _, body in answers} == {job_id}
    after = busy.stats()
    assert after["requests"]["status"] - before["requests"]["status"] == POLLS
    assert after["dropped"] == 0 and after["http_5xx"] == 0


def test_thousand_simultaneous_graphql_polls(busy):
    job_id = _submit(busy)
    host = urlsplit(busy.base_url).netloc
    body = json.dumps(
        {"query": "query J($id: ID!) { job(id: $id) { id status } }", "variables": {"id": job_id}}
    )
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {busy.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    answers = asyncio.run(_raw_polls(busy, request, POLLS))
    assert [status for status, _ in answers] == [200] * POLLS
    assert {json.loads(raw)["data"]["job"]["id"] for _, raw in answers} == {job_id}


def test_thousand_concurrent_polls_over_httpx_connections(busy):
    job_id = _submit(busy)

    async def run() -> list[int]:
        # httpx's pool costs grow with the square of its connections, so 1,000 connections are
        # spread over twenty clients: the server still sees 1,000 concurrent connections.
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        clients = [
            httpx.AsyncClient(
                base_url=busy.base_url, headers={"X-API-Key": busy.api_key}, limits=limits, timeout=60
            )
            for _ in range(POLLS // 50)
        ]
        try:
            responses = await asyncio.gather(
                *(clients[i % len(clients)].get(f"/v1/jobs/{job_id}") for i in range(POLLS))
            )
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))
        return [response.status_code for response in responses]

    assert asyncio.run(run()) == [200] * POLLS
    assert busy.stats()["dropped"] == 0
