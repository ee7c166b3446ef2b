"""Answers the emulator cannot give (non-JSON bodies, redirects), from a tiny local HTTP stub."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_doitong.client import DoitongProtocolError, DoitongServerError, ImageRequest, JobStatus

from .doitong_support import FAST, MakeApi

REQUEST = ImageRequest(provider="flux-krea", prompt="a lighthouse")


class _Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status, self.body, self.content_type = status, body, content_type
        self.location: str | None = None
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Stub
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.seen.append((self.command, self.path))
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[_Stub]:
    status, body, content_type = request.param
    server = _Stub(status, body, content_type)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


HTML_200 = (200, b"<html><body>Service temporarily unavailable</body></html>", "text/html")
TRUNCATED_200 = (200, b'{"data": {"generate": {"id": "abc", "sta', "application/json")
HTML_502 = (502, b"<html><body>Bad Gateway</body></html>", "text/html")


@pytest.mark.parametrize(
    ("stub", "call", "error_type", "attempts"),
    [
        pytest.param(
            HTML_200, "get_job", DoitongProtocolError, FAST.max_attempts, id="html-200-read-retried"
        ),
        pytest.param(
            HTML_200, "get_account", DoitongProtocolError, FAST.max_attempts, id="html-200-account-retried"
        ),
        pytest.param(HTML_200, "submit", DoitongProtocolError, 1, id="html-200-submission-once"),
        pytest.param(TRUNCATED_200, "submit", DoitongProtocolError, 1, id="truncated-json-submission-once"),
        pytest.param(HTML_502, "get_job", DoitongServerError, FAST.max_attempts, id="html-502-read-retried"),
        pytest.param(HTML_502, "submit", DoitongServerError, 1, id="html-502-submission-once"),
    ],
    indirect=["stub"],
)
def test_malformed_answers(
    stub: _Stub, make_api: MakeApi, call: str, error_type: type[Exception], attempts: int
) -> None:
    api = make_api(base_url=f"http://127.0.0.1:{stub.server_address[1]}", api_key="stub-key-123456")
    args: tuple[Any, ...] = {"submit": (REQUEST,), "get_job": ("x",), "get_account": ()}[call]
    with pytest.raises(error_type) as info:
        getattr(api, call)(*args)
    assert info.value.status == stub.status  # type: ignore[attr-defined]
    assert len(stub.seen) == attempts
    assert {path for _, path in stub.seen} == {"/graphql"}


REDIRECT = (302, b"", "text/plain")


@pytest.mark.parametrize("stub", [REDIRECT], indirect=True)
def test_download_follows_a_cdn_redirect(stub: _Stub, emu: Any, make_api: MakeApi) -> None:
    """Output URLs may redirect (CDNs, signed storage URLs); both clients follow to the image."""
    api = make_api()
    job = api.wait_for_job(api.submit(REQUEST).id, poll_interval=0.01, deadline=time.time() + 10)
    assert job.status is JobStatus.COMPLETED and job.url
    stub.location = job.url
    image = api.download(f"http://127.0.0.1:{stub.server_address[1]}/outputs/{job.id}.jpg")
    assert image[:3] == b"\xff\xd8\xff"
    assert len(stub.seen) == 1
    assert [e["status"] for e in emu.request_log() if e["kind"] == "download"] == [200]
