"""A second loopback HTTP server that records every request it gets (method, path, headers).

Tests point output URLs and redirects at it to prove that a client never contacted a host it must
not, or never sent it a key. It listens on 127.0.0.1 and is addressed as ``localhost``: a
different host name from the emulator's ``127.0.0.1``, so an allow-list can tell them apart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "cookie"})


@dataclass
class Answer:
    """What the recorder answers every request with."""

    status: int = 404
    body: bytes = b"not here"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/plain"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    answer: Answer
    seen: list[tuple[str, str, dict[str, str]]]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.seen.append(
                (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            )
            answer = self.server.answer
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class Recorder:
    """``with Recorder() as rec:`` serves until the block ends; :attr:`seen` lists the requests."""

    def __init__(self, answer: Answer | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.answer = answer or Answer()
        self._server.seen = []
        self._server.lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://localhost:PORT``: loopback, under a host name of its own."""
        return f"http://localhost:{self.port}"

    def answer_with(self, answer: Answer) -> None:
        with self._server.lock:
            self._server.answer = answer

    @property
    def seen(self) -> list[tuple[str, str, dict[str, str]]]:
        with self._server.lock:
            return list(self._server.seen)

    def credentials_seen(self) -> set[str]:
        """The credential headers any request carried (none, if all is well)."""
        return {name for _, _, headers in self.seen for name in headers if name in CREDENTIAL_HEADERS}

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
