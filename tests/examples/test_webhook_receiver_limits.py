"""The webhook receiver holds out against silent and many clients, and keeps its secret off argv."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from airflow_provider_doitong.webhooks import sign_payload
from tests.examples._helpers import EXAMPLES, load_example
from tests.examples.test_webhooks import SECRET, job_body, post


@pytest.fixture(scope="module")
def receiver_module() -> Any:
    return load_example("webhook_receiver")


def _silent_client(url: str) -> socket.socket:
    """A connection that sends half a request and then nothing."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /doitong/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(1024):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def test_a_silent_client_is_dropped_after_the_socket_timeout(receiver_module: Any) -> None:
    with receiver_module.WebhookReceiver(secret=SECRET, socket_timeout=0.5) as receiver:
        sock = _silent_client(receiver.url)
        try:
            took = _closed_within(sock, 5.0)
        finally:
            sock.close()
        assert took is not None and took < 3.0, "the receiver kept a silent connection open"
        body = job_body("after-silence")
        assert post(receiver.url, body, sign_payload(body, SECRET))[0] == 200


def test_a_full_pool_answers_503_at_once_and_serves_again_later(receiver_module: Any) -> None:
    with receiver_module.WebhookReceiver(secret=SECRET, workers=1, backlog=1, socket_timeout=2.0) as receiver:
        holders = []
        for _ in range(2):  # one in the thread, then one waiting for it
            holders.append(_silent_client(receiver.url))
            time.sleep(0.3)
        try:
            started = time.monotonic()
            third = _silent_client(receiver.url)
            third.settimeout(5)
            answer = third.recv(1024)
            third.close()
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert time.monotonic() - started < 1.5
        finally:
            for sock in holders:
                sock.close()
        # Once the silent ones time out, deliveries are served again.
        body = job_body("after-the-flood")
        deadline = time.monotonic() + 15
        while True:
            try:
                status, _ = post(receiver.url, body, sign_payload(body, SECRET))
            except (OSError, ValueError):  # refused, or the empty body of a 503
                status = 0
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200


def test_the_secret_is_refused_on_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--port", "0", "--secret", SECRET],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unrecognized arguments: --secret" in done.stderr
