"""A receiver for Doitong webhook deliveries on Starlette and uvicorn, fit to face the internet.

A delivery must carry ``X-Doitong-Signature``, the HMAC-SHA256 of the raw body under the account's
webhook secret, checked by the provider's ``verify_signature`` (constant time); else 401. The scheme
has no timestamp, so replays are caught by job ``id``: a redelivered id is answered 200 (Doitong
stops retrying) but not processed again. Verified deliveries are appended to a JSONL file (fsynced)
whose ids are read back on start, so the deduplication survives a restart. The secret comes from
the environment, never the command line (where ``ps`` shows it to every user of the machine).

Limits, so that slow, broken or many clients cannot keep a genuine delivery out:

- **Headers**: a connection must send its request line and headers within ``--header-timeout``
  (10 s) of connecting or of its previous answer, and in at most 8 KiB (else closed, or 400).
  uvicorn has no such deadline (``timeout_keep_alive`` starts after an answer and restarts with
  every byte, so a byte every few seconds holds a connection for hours): :class:`HeaderDeadlineProtocol`
  adds it to uvicorn's h11 protocol.
- **Body**: read from ``request.stream()`` under one deadline for all of it, ``--body-timeout``
  (10 s, else 408), and never past ``--max-body-bytes`` (1 MiB, else 413, judged from
  ``Content-Length`` before reading). No ``Content-Length`` is a 411, a malformed one a 400.
- **Connections**: with ``--limit-concurrency`` (100) open, a request is answered 503 at once. A
  slow client costs the event loop a socket, not a worker, and the deadlines bound how long it
  holds it. Limits per client address belong in the reverse proxy or firewall in front.

Hypercorn bounds the header phase by itself but has no connection limit; uvicorn serves this
project's emulator already, and the deadline it lacks takes a few lines.

Run it (``pip install "airflow-provider-doitong[examples]"`` brings Starlette and uvicorn)::

    export DOITONG_WEBHOOK_SECRET=...   # the account's webhook secret
    python example_dags/webhook_receiver.py --port 8799

and give the ``doitong_webhook`` DAG ``webhook_url=http://<this host>:8799/doitong/webhook``. In
Python (tests, notebooks)::

    with WebhookReceiver(secret=secret, record_file="deliveries.jsonl") as receiver:
        ...  # receiver.url, receiver.wait_for(1), receiver.deliveries
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from airflow_provider_doitong.client.webhooks import SIGNATURE_HEADER, verify_signature

log = logging.getLogger("doitong.webhook_receiver")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8799
DEFAULT_PATH = "/doitong/webhook"
DEFAULT_RECORD_FILE = "webhook_deliveries.jsonl"
SECRET_ENV = "DOITONG_WEBHOOK_SECRET"
#: The largest body accepted; a Doitong delivery is well under a kilobyte.
MAX_BODY_BYTES = 1 << 20
#: The largest request line and headers accepted.
MAX_HEADER_BYTES = 8 << 10
#: Seconds a connection has for its request line and headers, then for its whole body.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
#: Open connections beyond which a request is answered 503.
LIMIT_CONCURRENCY = 100
#: Connections the operating system queues before they are accepted.
BACKLOG = 128

ACCEPTED = "accepted"
DUPLICATE = "duplicate"


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not in on time.

    The deadline is armed when the connection opens and again after each answer; it does nothing
    once a request is being served (the app's body deadline takes over from there).
    """

    header_timeout = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._header_deadline.cancel()
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline.cancel()
        super().connection_lost(exc)

    def _headers_too_late(self) -> None:
        serving = self.cycle is not None and not self.cycle.response_complete
        if not serving and not self.transport.is_closing():
            log.warning("Closed a connection from %s: no request in %ss", self.client, self.header_timeout)
            self.transport.close()


def _refused(request: Request, status: int, message: str) -> HTTPException:
    """A refusal to raise: answered ``{"error": message}`` with ``status``, closing the connection."""
    log.warning("Refused a request from %s: %s", request.client, message)
    return HTTPException(status, message, headers={"connection": "close"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True})


class WebhookReceiver:
    """Verifies, deduplicates and records Doitong webhook deliveries over HTTP.

    :param secret: the account's webhook secret.
    :param host: the interface to listen on.
    :param port: the port; 0 picks a free one.
    :param path: the URL path deliveries are POSTed to.
    :param record_file: the JSONL file verified deliveries are appended to (``None``: memory only).
    :param header_timeout: seconds a connection has for its request line and headers.
    :param body_timeout: seconds a request has for its whole body.
    :param max_body_bytes: the largest body accepted.
    :param limit_concurrency: open connections beyond which a request is answered 503.
    :param backlog: connections the operating system queues before they are accepted.
    """

    def __init__(
        self,
        *,
        secret: str,
        host: str = DEFAULT_HOST,
        port: int = 0,
        path: str = DEFAULT_PATH,
        record_file: str | os.PathLike[str] | None = None,
        header_timeout: float = HEADER_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        limit_concurrency: int = LIMIT_CONCURRENCY,
        backlog: int = BACKLOG,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        positive = min(header_timeout, body_timeout) > 0 and min(max_body_bytes, backlog) >= 1
        if not positive or limit_concurrency < 2:
            raise ValueError("timeouts must be positive, sizes at least 1, limit_concurrency at least 2")
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.max_body_bytes, self.limit_concurrency, self.backlog = max_body_bytes, limit_concurrency, backlog
        self._secret, self.host, self.port = secret, host, port
        self.path = path if path.startswith("/") else f"/{path}"
        self.record_file = Path(record_file) if record_file is not None else None
        self.counts = {ACCEPTED: 0, DUPLICATE: 0, "rejected": 0, "invalid": 0}
        self._deliveries: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._lock = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._load_seen()

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

    async def _read_body(self, request: Request) -> bytes:
        """The whole body, within the body deadline and the cap; else an :class:`HTTPException`."""
        length = request.headers.get("content-length")
        if length is None:
            raise _refused(request, HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not (length.isascii() and length.isdigit()):
            raise _refused(request, HTTPStatus.BAD_REQUEST, "malformed Content-Length")
        if int(length) > self.max_body_bytes:
            raise _refused(request, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        body = bytearray()
        try:
            with anyio.fail_after(self.body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > self.max_body_bytes:
                        raise _refused(request, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        except TimeoutError:
            raise _refused(request, HTTPStatus.REQUEST_TIMEOUT, "body not received in time") from None
        except ClientDisconnect:
            raise _refused(request, HTTPStatus.BAD_REQUEST, "body cut short") from None
        return bytes(body)

    async def _receive(self, request: Request) -> Response:
        body = await self._read_body(request)
        status, answer = await run_in_threadpool(self.handle, body, request.headers.get(SIGNATURE_HEADER))
        return JSONResponse(answer, status)

    def app(self) -> Starlette:
        """The ASGI app: ``POST <path>`` for deliveries, ``GET /healthz``, JSON errors elsewhere."""
        routes = [
            Route(self.path, self._receive, methods=["POST"]),
            Route("/healthz", _health, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})

    def _make_server(self) -> tuple[uvicorn.Server, socket.socket]:
        protocol = type("Protocol", (HeaderDeadlineProtocol,), {"header_timeout": self.header_timeout})
        config = uvicorn.Config(
            self.app(),
            http=protocol,
            lifespan="off",
            ws="none",
            log_config=None,
            server_header=False,
            limit_concurrency=self.limit_concurrency,
            backlog=self.backlog,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
        )
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        return uvicorn.Server(config), sock

    def start(self, timeout: float = 30.0) -> WebhookReceiver:
        """Serve from a background thread; return once the server accepts connections.

        :param timeout: seconds to wait for the server to start.
        """
        if self._server is None:
            server, sock = self._make_server()
            self._server = server
            self._thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
            self._thread.start()
            deadline = time.monotonic() + timeout
            while not server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the webhook receiver did not start")
                time.sleep(0.01)
            log.info("Receiving Doitong webhooks on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving (open requests get a few seconds to finish)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (SIGINT or SIGTERM)."""
        server, sock = self._make_server()
        log.info("Receiving Doitong webhooks on %s", self.url)
        server.run(sockets=[sock])

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver until Ctrl-C or SIGTERM.

    :param argv: the command-line arguments.
    """
    parser = argparse.ArgumentParser(description="Receive, verify and record Doitong webhook deliveries.")
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST)
    add("--port", type=int, default=DEFAULT_PORT)
    add("--path", default=DEFAULT_PATH)
    add("--record", default=DEFAULT_RECORD_FILE, help="the JSONL file deliveries are appended to")
    add("--header-timeout", type=float, default=HEADER_TIMEOUT_S, help="seconds for a request's headers")
    add("--body-timeout", type=float, default=BODY_TIMEOUT_S, help="seconds for a request's whole body")
    add("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="the largest body accepted")
    add("--limit-concurrency", type=int, default=LIMIT_CONCURRENCY, help="open connections, then 503")
    add("--backlog", type=int, default=BACKLOG, help="connections queued by the operating system")
    # Options of the earlier thread-pool receiver: --socket-timeout sets both deadlines.
    add("--socket-timeout", type=float, default=None, help=argparse.SUPPRESS)
    add("--workers", type=int, default=None, help=argparse.SUPPRESS)
    parser.epilog = f"The webhook secret is read from ${SECRET_ENV}, never from the command line."
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"set ${SECRET_ENV} to the account's webhook secret")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.workers is not None:
        log.warning("--workers is no longer used: one event loop serves every connection")
    if args.socket_timeout is not None:
        args.header_timeout = args.body_timeout = args.socket_timeout
    limits = ("header_timeout", "body_timeout", "max_body_bytes", "limit_concurrency", "backlog")
    try:
        receiver = WebhookReceiver(
            secret=secret,
            host=args.host,
            port=args.port,
            path=args.path,
            record_file=args.record,
            **{name: getattr(args, name) for name in limits},
        )
    except ValueError as error:
        parser.error(str(error))
    with contextlib.suppress(KeyboardInterrupt):
        receiver.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
