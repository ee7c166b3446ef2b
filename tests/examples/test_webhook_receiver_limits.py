"""The webhook receiver keeps serving signed deliveries while slow, broken and many clients connect.

Real sockets on loopback, against the receiver started from the command line with its default
limits, as it runs in production. The slow clients send a byte every second for a bounded number of
bytes and stop by themselves; the tests judge outcomes (what each client was answered, and whether
the slow ones were still connected), not durations.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.client.webhooks import SIGNATURE_HEADER, sign_payload
from tests.examples._helpers import EXAMPLES, load_example
from tests.examples.test_webhooks import SECRET, _free_port, job_body, post, records

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


HEAD = b"POST /doitong/webhook HTTP/1.1\r\nHost: receiver\r\n"


class Trickler(threading.Thread):
    """A client that sends ``head``, then ``drip`` every ``interval`` seconds, ``count`` times at most.

    It stops by itself: when its drips are spent, or as soon as the server answers or closes.
    """

    def __init__(
        self, port: int, head: bytes, drip: bytes, *, interval: float = 1.0, count: int = 40
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.drip, self.interval, self.count = port, head, drip, interval, count
        self.sent = 0
        self.answer = b""
        self.closed_by_server = threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(self.head)
            for _ in range(self.count):
                if self._server_closed(sock, self.interval):
                    return
                try:
                    sock.sendall(self.drip)
                except OSError:
                    self.closed_by_server.set()
                    return
                self.sent += 1
            self._server_closed(sock, self.interval)

    def _server_closed(self, sock: socket.socket, wait: float) -> bool:
        if not select.select([sock], [], [], wait)[0]:
            return False
        try:
            while chunk := sock.recv(65536):
                self.answer += chunk
        except OSError:
            pass
        self.closed_by_server.set()
        return True


def _status(answer: bytes) -> int | None:
    parts = answer.split(b" ", 2)
    return int(parts[1]) if answer.startswith(b"HTTP/1.") and len(parts) > 2 else None


def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; what the server answered before closing."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def _deliver(url: str, job_id: str) -> int:
    """POST a signed delivery; the status it was answered."""
    body = job_body(job_id)
    headers = {SIGNATURE_HEADER: sign_payload(body, SECRET), "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _wait_until(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition was not met"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The receiver as it runs in production: the command line, default limits. Its port and record."""
    folder, port = tmp_path_factory.mktemp("receiver"), _free_port()
    record, output = folder / "deliveries.jsonl", folder / "receiver.log"
    command = [sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--port", str(port)]
    with output.open("w") as log:
        process = subprocess.Popen(
            [*command, "--record", str(record)],
            env={**os.environ, "DOITONG_WEBHOOK_SECRET": SECRET},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        assert process.poll() is None, output.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        _wait_until(healthy)
        yield port, record
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_signed_deliveries_are_accepted_while_slow_clients_trickle(production: tuple[int, Path]) -> None:
    port, record = production
    url = f"http://127.0.0.1:{port}/doitong/webhook"
    slow_headers = [Trickler(port, HEAD + b"X-Slow: ", b"a") for _ in range(8)]
    slow_bodies = [Trickler(port, HEAD + b"Content-Length: 1000\r\n\r\n", b" ") for _ in range(8)]
    tricklers = slow_headers + slow_bodies
    for client in tricklers:
        client.start()
    _wait_until(lambda: all(client.sent >= 2 for client in tricklers))

    statuses = [_deliver(url, f"job-while-slow-{n}") for n in range(5)]
    still_connected = [not client.closed_by_server.is_set() for client in tricklers]

    assert statuses == [200] * 5
    assert all(still_connected), "the deliveries were not answered while the slow clients were connected"
    assert {f"job-while-slow-{n}" for n in range(5)} <= {r["job_id"] for r in records(record)}
    # The slow clients are cut by the header and body deadlines, long before their drips are spent.
    for client in tricklers:
        client.join(timeout=60)
    assert all(client.closed_by_server.is_set() and client.sent < client.count for client in tricklers)
    assert {_status(client.answer) for client in slow_bodies} == {408}
    assert {_status(client.answer) for client in slow_headers} <= {None, 408}


def test_a_body_shorter_than_its_content_length_gets_408_and_holds_no_one(
    production: tuple[int, Path],
) -> None:
    port, _ = production
    short = Trickler(port, HEAD + b"Content-Length: 100\r\n\r\n{", b"", count=0, interval=60)
    short.start()
    statuses = [
        _deliver(f"http://127.0.0.1:{port}/doitong/webhook", f"job-beside-short-{n}") for n in range(3)
    ]
    served_while_short_was_open = not short.closed_by_server.is_set()
    short.join(timeout=90)

    assert statuses == [200] * 3 and served_while_short_was_open
    assert _status(short.answer) == 408, short.answer


@pytest.mark.parametrize(
    "length",
    [b"abc", b"\xb2", b"-5", b"1 2", b"0x10", b"+10", b"10\r\nContent-Length: 11"],
    ids=["letters", "superscript", "negative", "two-numbers", "hex", "plus", "two-headers"],
)
def test_a_malformed_content_length_gets_400_and_the_server_keeps_serving(
    production: tuple[int, Path], length: bytes
) -> None:
    port, _ = production
    answer = _exchange(port, HEAD + b"Content-Length: " + length + b"\r\n\r\n0123456789")
    assert _status(answer) == 400, answer
    assert _deliver(f"http://127.0.0.1:{port}/doitong/webhook", f"job-after-{length.hex()}") == 200


def test_a_missing_or_too_large_content_length_is_refused_unread(production: tuple[int, Path]) -> None:
    port, _ = production
    chunked = _exchange(port, HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert _status(chunked) == 411, chunked
    too_large = _exchange(port, HEAD + b"Content-Length: %d\r\n\r\n{" % ((1 << 20) + 1))
    assert _status(too_large) == 413, too_large
    body = job_body("job-unsigned")
    assert post(f"http://127.0.0.1:{port}/doitong/webhook", body, sign_payload(body, "forged"))[0] == 401
    assert _deliver(f"http://127.0.0.1:{port}/doitong/webhook", "job-after-refusals") == 200


def test_slow_clients_hold_the_connection_slots_only_until_the_header_deadline() -> None:
    module = load_example("webhook_receiver")
    with module.WebhookReceiver(secret=SECRET, limit_concurrency=4, header_timeout=4.0) as receiver:
        tricklers = [Trickler(receiver.port, HEAD + b"X-Slow: ", b"a", interval=0.5) for _ in range(3)]
        for client in tricklers:
            client.start()
        _wait_until(lambda: all(client.sent >= 1 for client in tricklers))
        refused = _deliver(receiver.url, "job-at-the-limit")
        refused_while_full = not any(client.closed_by_server.is_set() for client in tricklers)
        for client in tricklers:
            client.join(timeout=60)
        assert refused == 503 and refused_while_full
        assert all(client.closed_by_server.is_set() and client.sent < client.count for client in tricklers)
        assert _deliver(receiver.url, "job-after-the-deadline") == 200


def test_the_secret_is_refused_on_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--port", "0", "--secret", SECRET],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unrecognized arguments: --secret" in done.stderr
