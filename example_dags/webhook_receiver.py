"""A small receiver for Doitong webhook deliveries (stdlib only, besides the provider).

Every delivery is checked before anything else: the ``X-Doitong-Signature`` header must be the
HMAC-SHA256 of the raw body under the account's webhook secret (compared in constant time), or the
delivery is refused with 401. The signature scheme has no timestamp, so replays cannot be rejected by
age: deliveries are deduplicated on the job ``id`` instead. A redelivered id is acknowledged with 200
(so Doitong stops retrying) but not processed again. Each verified delivery is appended to a JSONL
file, whose ids are read back on start, so the deduplication survives a restart.

It is meant to face the internet, so it holds out against slow and many clients: every socket has
a timeout (a client that stops sending is dropped), requests are served by a fixed pool of
threads, and when every thread is busy and the waiting line is full a new connection gets a 503 at
once instead of another thread. The secret comes from the environment, never the command line
(where ``ps`` shows it to every user of the machine).

Run it::

    export DOITONG_WEBHOOK_SECRET=...   # the account's webhook secret
    python example_dags/webhook_receiver.py --port 8799

and give the ``doitong_webhook`` DAG ``webhook_url=http://<this host>:8799/doitong/webhook``. In
Python (tests, notebooks)::

    with WebhookReceiver(secret=secret, record_file="deliveries.jsonl") as receiver:
        ...  # receiver.url, receiver.wait_for(1), receiver.deliveries
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_provider_doitong.webhooks import SIGNATURE_HEADER, verify_signature

log = logging.getLogger("doitong.webhook_receiver")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8799
DEFAULT_PATH = "/doitong/webhook"
DEFAULT_RECORD_FILE = "webhook_deliveries.jsonl"
SECRET_ENV = "DOITONG_WEBHOOK_SECRET"
#: The largest body accepted; a Doitong delivery is well under a kilobyte.
MAX_BODY_BYTES = 1 << 20
#: Seconds a socket may stay silent (while a request is read or an answer written).
SOCKET_TIMEOUT_S = 10.0
#: Threads serving requests, and connections waiting for one; beyond both, a 503 at once.
WORKERS = 8
BACKLOG = 32

ACCEPTED = "accepted"
DUPLICATE = "duplicate"


class PooledHTTPServer(HTTPServer):
    """An ``HTTPServer`` whose requests are served by a fixed pool of threads.

    ``ThreadingHTTPServer`` starts a thread per connection, without limit: a flood of connections
    (or a few slow ones per second) grows the process without bound. Here accepted connections
    wait in a bounded queue for one of ``workers`` threads; when the queue is full the connection
    is answered ``503`` from the accepting thread and closed.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, *, workers: int, backlog: int) -> None:
        super().__init__(address, handler)
        self._waiting: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(maxsize=max(1, backlog))
        self.refused = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"doitong-webhooks-worker-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._waiting.put_nowait((request, client_address))
        except queue.Full:
            self.refused += 1
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._waiting.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._waiting.put(None, timeout=1)
        for thread in self._threads:
            thread.join(timeout=5)


class WebhookReceiver:
    """Verifies, deduplicates and records Doitong webhook deliveries over HTTP.

    :param secret: the account's webhook secret.
    :param host: the interface to listen on.
    :param port: the port; 0 picks a free one.
    :param path: the URL path deliveries are POSTed to.
    :param record_file: the JSONL file verified deliveries are appended to (``None``: memory only).
    :param workers: threads serving requests.
    :param backlog: accepted connections waiting for a thread; beyond it, a 503 at once.
    :param socket_timeout: seconds a client may stay silent before its connection is dropped.
    """

    def __init__(
        self,
        *,
        secret: str,
        host: str = DEFAULT_HOST,
        port: int = 0,
        path: str = DEFAULT_PATH,
        record_file: str | os.PathLike[str] | None = None,
        workers: int = WORKERS,
        backlog: int = BACKLOG,
        socket_timeout: float = SOCKET_TIMEOUT_S,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        if workers < 1 or backlog < 0 or socket_timeout <= 0:
            raise ValueError("workers must be at least 1, backlog not negative, socket_timeout positive")
        self.workers, self.backlog, self.socket_timeout = workers, backlog, socket_timeout
        self._secret = secret
        self.host = host
        self.port = port
        self.path = path if path.startswith("/") else f"/{path}"
        self.record_file = Path(record_file) if record_file is not None else None
        self.counts = {ACCEPTED: 0, DUPLICATE: 0, "rejected": 0, "invalid": 0}
        self._deliveries: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._lock = threading.Condition()
        self._server: PooledHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._load_seen()

    # --- state ----------------------------------------------------------------------------
    def _load_seen(self) -> None:
        if self.record_file is None or not self.record_file.exists():
            return
        with self.record_file.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    job_id = json.loads(line).get("job_id")
                except (ValueError, AttributeError):
                    continue
                if job_id:
                    self._seen.add(str(job_id))
        log.info("Read %d delivered job ids from %s", len(self._seen), self.record_file)

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """The deliveries verified and processed by this receiver, oldest first."""
        with self._lock:
            return list(self._deliveries)

    @property
    def url(self) -> str:
        """Where to send deliveries: ``http://HOST:PORT/PATH``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}{self.path}"

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until at least ``count`` deliveries were processed.

        :param count: how many.
        :param timeout: seconds to wait at most.
        :return: whether they arrived in time.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._deliveries) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    # --- one delivery ---------------------------------------------------------------------
    def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        """Judge and process one delivery.

        :param body: the raw request body, exactly as received.
        :param signature: the ``X-Doitong-Signature`` header, or ``None``.
        :return: the HTTP status and a JSON answer.
        """
        if not verify_signature(body, signature, self._secret):
            with self._lock:
                self.counts["rejected"] += 1
            log.warning("Rejected a delivery with a missing or wrong signature (%d bytes)", len(body))
            return HTTPStatus.UNAUTHORIZED, {"error": "invalid signature"}
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        job_id = payload.get("id") if isinstance(payload, dict) else None
        if not job_id or not isinstance(job_id, str):
            with self._lock:
                self.counts["invalid"] += 1
            log.warning("Refused a signed delivery that is not a job (%d bytes)", len(body))
            return HTTPStatus.BAD_REQUEST, {"error": "expected a JSON job object with an id"}
        with self._lock:
            if job_id in self._seen:
                self.counts[DUPLICATE] += 1
                log.info("Job %s was already delivered; acknowledged, not processed again", job_id)
                return HTTPStatus.OK, {"status": DUPLICATE, "id": job_id}
            record = self._record(job_id, payload)
            self._seen.add(job_id)
            self._deliveries.append(record)
            self.counts[ACCEPTED] += 1
            self._lock.notify_all()
        log.info("Job %s delivered: %s %s", job_id, payload.get("status"), payload.get("url") or "")
        return HTTPStatus.OK, {"status": ACCEPTED, "id": job_id}

    def _record(self, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        record = {
            "received_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "job_id": job_id,
            "status": payload.get("status"),
            "url": payload.get("url"),
            "service": payload.get("service"),
            "completed_at": payload.get("completedAt"),
            "payload": payload,
        }
        if self.record_file is not None:
            self.record_file.parent.mkdir(parents=True, exist_ok=True)
            with self.record_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        return record

    # --- HTTP -------------------------------------------------------------------------------
    def _make_server(self) -> PooledHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "DoitongWebhookReceiver/1.0"
            timeout = receiver.socket_timeout  # applied to the connection by StreamRequestHandler

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._answer(HTTPStatus.OK, {"ok": True})
                else:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != receiver.path:
                    self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})
                    return
                length_header = self.headers.get("Content-Length")
                if length_header is None or not length_header.isdigit():
                    self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length required"})
                    return
                length = int(length_header)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                    return
                body = self.rfile.read(length)
                status, answer = receiver.handle(body, self.headers.get(SIGNATURE_HEADER))
                self._answer(status, answer)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s - " + format, self.address_string(), *args)

        server = PooledHTTPServer((self.host, self.port), Handler, workers=self.workers, backlog=self.backlog)
        self.port = server.server_address[1]
        return server

    def start(self) -> WebhookReceiver:
        """Serve from a background thread."""
        if self._server is None:
            self._server = self._make_server()
            self._thread = threading.Thread(
                target=self._server.serve_forever, name=f"doitong-webhooks-{self.port}", daemon=True
            )
            self._thread.start()
            log.info("Receiving Doitong webhooks on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, and the worker threads."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        server = self._make_server()
        log.info("Receiving Doitong webhooks on %s", self.url)
        try:
            server.serve_forever()
        finally:
            server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver until Ctrl-C.

    :param argv: the command-line arguments.
    """
    parser = argparse.ArgumentParser(description="Receive, verify and record Doitong webhook deliveries.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument(
        "--record", default=DEFAULT_RECORD_FILE, help="the JSONL file deliveries are appended to"
    )
    parser.add_argument("--workers", type=int, default=WORKERS, help="threads serving requests")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="connections waiting for a thread")
    parser.add_argument(
        "--socket-timeout", type=float, default=SOCKET_TIMEOUT_S, help="seconds of silence allowed"
    )
    parser.epilog = f"The webhook secret is read from ${SECRET_ENV}, never from the command line."
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"set ${SECRET_ENV} to the account's webhook secret")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    receiver = WebhookReceiver(
        secret=secret,
        host=args.host,
        port=args.port,
        path=args.path,
        record_file=args.record,
        workers=args.workers,
        backlog=args.backlog,
        socket_timeout=args.socket_timeout,
    )
    with contextlib.suppress(KeyboardInterrupt):
        receiver.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
