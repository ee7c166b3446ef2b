"""The outermost ASGI layer: reads the request, injects faults (an outage window, stale rate-limit
headers included), applies key rotations, counts and logs API requests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_doitong.client.contract import (
    GRAPHQL_AUTH_SCHEME,
    GRAPHQL_PATH,
    RATE_LIMIT_RESET_HEADER,
    REST_ACCOUNT_PATH,
    REST_AUTH_HEADER,
    REST_SUBMIT_PATH,
    RETRY_AFTER_HEADER,
    ErrorCode,
)
from doitong_emulator import graphql_api
from doitong_emulator.accounts import KeyRotations
from doitong_emulator.errors import error_body_bytes
from doitong_emulator.faults import FAULT_429, FAULT_500, FAULT_503, FAULT_DROP, drop_connection
from doitong_emulator.hostile_values import send_huge_answer, time_headers
from doitong_emulator.state import EmulatorState
from doitong_emulator.stats import (
    KIND_ACCOUNT,
    KIND_DOWNLOAD,
    KIND_OTHER,
    KIND_STATUS,
    KIND_SUBMIT,
    STATUS_DROPPED,
)

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_emulator/"
OUTPUTS_PREFIX = "/outputs/"
JOB_PATH_PREFIX = "/v1/jobs/"
#: Emulated seconds an injected 429 asks the client to wait.
INJECTED_RETRY_AFTER_SECONDS = 1.0
#: The ASGI scope key holding the :class:`RequestInfo` of an API request.
SCOPE_KEY = "doitong.request"


@dataclass
class RequestInfo:
    """An API request as read by the gate.

    :param kind: ``submit``, ``status``, ``account``, ``download`` or ``other``.
    :param body: the raw body.
    :param payload: the decoded JSON body (``None`` when absent or invalid).
    :param payload_error: why the body is not JSON, if it is not.
    :param form: how it was sent, for the request log: the GraphQL field (``generate``,
        ``generateImage``, ``job``, ``account``) or ``rest``.
    """

    kind: str
    body: bytes
    payload: Any
    payload_error: str | None
    form: str | None = None

    @classmethod
    def read(cls, method: str, path: str, body: bytes) -> RequestInfo:
        """Decode and classify a request.

        :param method: the HTTP method.
        :param path: the URL path.
        :param body: the raw body.
        """
        payload, payload_error = None, None
        if method == "POST":
            if not body.strip():
                payload_error = "the request body is empty"
            else:
                try:
                    payload = json.loads(body)
                except (ValueError, UnicodeDecodeError) as error:
                    payload_error = f"the request body is not valid JSON ({error})"
        if path == GRAPHQL_PATH and method == "POST":
            form = graphql_api.form(payload)
        else:
            form = "rest" if path.startswith("/v1/") else None
        return cls(_kind(method, path, payload), body, payload, payload_error, form)


def _kind(method: str, path: str, payload: Any) -> str:
    if path == GRAPHQL_PATH and method == "POST":
        return graphql_api.classify(payload)
    if path == REST_SUBMIT_PATH and method == "POST":
        return KIND_SUBMIT
    if path.startswith(JOB_PATH_PREFIX) and method == "GET":
        return KIND_STATUS
    if path == REST_ACCOUNT_PATH and method == "GET":
        return KIND_ACCOUNT
    return KIND_OTHER


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _with_key(scope: Scope, presented: str, account_key: str) -> None:
    """Make the request carry ``account_key`` where it carried ``presented`` (a rotated key)."""
    headers = []
    for name, value in scope.get("headers") or []:
        if name == REST_AUTH_HEADER.lower().encode() and value.decode("latin-1").strip() == presented:
            value = account_key.encode("latin-1")
        elif name == b"authorization" and value.decode("latin-1").strip().endswith(" " + presented):
            value = f"{GRAPHQL_AUTH_SCHEME} {account_key}".encode("latin-1")
        headers.append((name, value))
    scope["headers"] = headers


def stale_rate_limit_headers(
    raw: list[tuple[bytes, bytes]], *, stale_s: float, now: float
) -> list[tuple[bytes, bytes]]:
    """A 429's headers as a stale server sends them: a reset ``stale_s`` in the past, no ``Retry-After``."""
    drop = {RETRY_AFTER_HEADER.lower().encode(), RATE_LIMIT_RESET_HEADER.lower().encode()}
    kept = [(name, value) for name, value in raw if name.lower() not in drop]
    return [*kept, (RATE_LIMIT_RESET_HEADER.lower().encode(), f"{now - stale_s:.3f}".encode())]


def _api_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers") or [])
    key = headers.get(REST_AUTH_HEADER.lower().encode())
    if key:
        return key.decode("latin-1").strip()
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == GRAPHQL_AUTH_SCHEME.lower() and token.strip():
        return token.strip()
    return None


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    stale_s: float = 0.0,
    time_form: str = "plain",
) -> None:
    """Send a complete JSON answer on a raw ASGI ``send``.

    :param send: the ASGI send callable.
    :param status: the HTTP status.
    :param body: the encoded body.
    :param headers: extra headers.
    :param stale_s: for a 429, send the rate-limit headers stale by this many seconds (0: as they are).
    :param time_form: the hostile form of the time headers (``FaultConfig.time_headers``).
    """
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw.extend((key.lower().encode(), value.encode()) for key, value in (headers or {}).items())
    if status == 429 and stale_s > 0:
        raw = stale_rate_limit_headers(raw, stale_s=stale_s, now=time.time())
    raw = time_headers(raw, form=time_form, now=time.time())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ApiGate:
    """Wraps the Starlette app. For API paths it reads the body once, classifies the request,
    injects the configured faults, turns any unexpected exception into a JSON 500 and records the
    request; admin paths pass straight through, downloads are recorded without faults.

    :param app: the inner ASGI app.
    :param state: the emulator's state.
    """

    def __init__(self, app: ASGIApp, *, state: EmulatorState) -> None:
        self.app = app
        self.state = state
        #: Keys rotated at runtime (see :meth:`KeyRotations.rotate`).
        self.rotations = KeyRotations()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.time()
        if scope["path"].startswith(OUTPUTS_PREFIX):
            send, record = self._recorder(send, started, KIND_DOWNLOAD, None)
            record(await self._call(scope, receive, send))
            return
        body = await _read_body(receive)
        if body is None:
            return
        try:
            info = RequestInfo.read(scope["method"], scope["path"], body)
        except Exception:
            log.exception("Could not classify a request to %s", scope["path"])
            info = RequestInfo(KIND_OTHER, body, None, "the request could not be read")
        scope[SCOPE_KEY] = info
        send, record = self._recorder(send, started, info.kind, info.form)
        record(await self._api(scope, receive, send, info))

    def _recorder(
        self, send: Send, started: float, kind: str, form: str | None
    ) -> tuple[Send, Callable[[int], None]]:
        """``send`` that logs the request as its answer starts (before the client can have it), and
        the call that logs it afterwards if no answer started (a dropped connection: status 0)."""
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.state.record_request(started, kind, status, form=form)

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                record(message["status"])
            await send(message)

        return send_logged, record

    async def _api(self, scope: Scope, receive: Receive, send: Send, info: RequestInfo) -> int:
        faults = self.state.faults
        fault = faults.outage_fault()
        if fault is None:
            if faults.config.latency_s > 0:
                await asyncio.sleep(faults.config.latency_s)
            fault = faults.draw_request()
        if fault == FAULT_DROP:
            if await drop_connection(receive, send):
                return STATUS_DROPPED
            log.warning("No transport found to drop a connection; answering 500 instead")
            fault = FAULT_500
        if fault in (FAULT_500, FAULT_503):
            status = 503 if fault == FAULT_503 else 500
            message = (
                "Service unavailable, please retry"
                if status == 503
                else "Internal server error, please retry"
            )
            await send_json(send, status, error_body_bytes(ErrorCode.INTERNAL_SERVER_ERROR, message))
            return status
        if fault == FAULT_429:
            await self._rate_limited(scope, send)
            return 429
        if info.kind == KIND_STATUS and faults.config.huge_answer_mib > 0:
            await send_huge_answer(send, faults.config.huge_answer_mib)
            return 200
        presented = _api_key(scope)
        account_key, revoked = self.rotations.resolve(presented)
        if revoked:
            body = error_body_bytes(ErrorCode.UNAUTHENTICATED, "Invalid API key (it was rotated)")
            await send_json(send, 401, body)
            return 401
        if presented is not None and account_key is not None and account_key != presented:
            _with_key(scope, presented, account_key)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": info.body, "more_body": False}
            return await receive()

        return await self._call(scope, replay, send)

    async def _rate_limited(self, scope: Scope, send: Send) -> None:
        state = self.state
        retry_after = state.retry_after(INJECTED_RETRY_AFTER_SECONDS * state.config.time_scale)
        headers = {RETRY_AFTER_HEADER: retry_after}
        account = state.authenticate(self.rotations.resolve(_api_key(scope))[0])
        if account is not None:
            headers.update(state.peek(account, exhausted=True).headers)
        message = "Rate limit exceeded, please retry later"
        body = error_body_bytes(ErrorCode.RATE_LIMITED, message, retryAfter=float(retry_after))
        config = state.faults.config
        await send_json(send, 429, body, headers, stale_s=config.stale_reset_s, time_form=config.time_headers)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> int:
        status = 0
        stale_s = self.state.faults.config.stale_reset_s

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if status == 429 and stale_s > 0:
                    headers = stale_rate_limit_headers(headers, stale_s=stale_s, now=time.time())
                form = self.state.faults.config.time_headers
                message = {**message, "headers": time_headers(headers, form=form, now=time.time())}
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            log.exception("Unexpected error answering %s %s", scope["method"], scope["path"])
            if status == 0:
                body = error_body_bytes(ErrorCode.INTERNAL_SERVER_ERROR, "Internal server error")
                await send_json(send, 500, body)
                status = 500
        return status
