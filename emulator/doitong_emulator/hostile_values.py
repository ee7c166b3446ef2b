"""Hostile values in API answers: time headers in milliseconds or absurd, a ``creditCost`` that is not a
count, an output host that parses two ways, a status answer too large to hold, a job slot held by
another client. Each is a :class:`~doitong_emulator.faults.FaultConfig` option, off by default.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.types import Send

from airflow_provider_doitong.client.contract import RATE_LIMIT_RESET_HEADER, RETRY_AFTER_HEADER

if TYPE_CHECKING:
    from doitong_emulator.faults import FaultConfig

#: What ``time_headers`` may be: as the contract says, Unix times in milliseconds (``Retry-After``
#: too, as the moment to retry at), or absurd (a reset in the year 33658, a ``Retry-After`` of 1e300 s).
TIME_HEADER_FORMS = ("plain", "epoch_ms", "absurd")
ABSURD_RESET = "999999999999999999"
ABSURD_RETRY_AFTER = "1e300"
#: What ``credit_cost_as`` may be: the integer, a digit string, or its negative.
CREDIT_COST_FORMS = ("int", "string", "negative")
#: A huge status answer is sent in pieces of this size (and never held whole).
HUGE_CHUNK = b" " * (1024 * 1024)
HUGE_START = b'{"data": {"j0": {"id": "'


def check_value_options(config: FaultConfig) -> None:
    """Refuse hostile value options that cannot work.

    :raises ValueError: naming the option.
    """
    if config.time_headers not in TIME_HEADER_FORMS:
        raise ValueError(f"time_headers must be one of {', '.join(TIME_HEADER_FORMS)}")
    if config.credit_cost_as not in CREDIT_COST_FORMS:
        raise ValueError(f"credit_cost_as must be one of {', '.join(CREDIT_COST_FORMS)}")
    if config.huge_answer_mib < 0 or config.hold_slot_s < 0:
        raise ValueError("huge_answer_mib and hold_slot_s must not be negative")
    host = config.two_way_output_host
    if host is not None and not host.replace(".", "").replace("-", "").isalnum():
        raise ValueError("two_way_output_host must be a host name, e.g. evil.example")


def time_headers(raw: list[tuple[bytes, bytes]], *, form: str, now: float) -> list[tuple[bytes, bytes]]:
    """An answer's headers with ``X-RateLimit-Reset`` and ``Retry-After`` in the hostile ``form``."""
    if form == "plain":
        return raw
    reset, retry = RATE_LIMIT_RESET_HEADER.lower().encode(), RETRY_AFTER_HEADER.lower().encode()
    out = []
    for name, value in raw:
        if name.lower() in (reset, retry):
            if form == "absurd":
                value = (ABSURD_RESET if name.lower() == reset else ABSURD_RETRY_AFTER).encode()
            else:
                seconds = float(value)
                moment = seconds if name.lower() == reset else now + seconds
                value = str(int(moment * 1000)).encode()
        out.append((name, value))
    return out


def credit_cost(cost: int, *, form: str) -> Any:
    """A job's ``creditCost`` in the hostile ``form``."""
    if form == "string":
        return str(cost)
    if form == "negative":
        return -cost
    return cost


def credit_costs_as_strings(data: dict[str, Any]) -> None:
    """Turn every job's integer ``creditCost`` under a GraphQL answer's ``data`` into a digit string."""
    for value in data.values():
        if isinstance(value, dict) and isinstance(value.get("creditCost"), int):
            value["creditCost"] = str(value["creditCost"])


def two_way_base_url(host: str) -> str:
    """A base URL whose host parses two ways: ``urllib.parse`` sees a subdomain of ``cdn.doitong.com``,
    requests/urllib3 and httpx connect to ``host``."""
    return f"https://{host}\\.cdn.doitong.com"


async def send_huge_answer(send: Send, mib: int) -> None:
    """Answer 200 with a JSON start and then ``mib`` MiB of blanks, streamed (never held whole, no
    ``Content-Length``); a client that stops reading ends it."""
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": HUGE_START, "more_body": True})
    started = time.monotonic()
    for _ in range(mib):
        await send({"type": "http.response.body", "body": HUGE_CHUNK, "more_body": True})
        if time.monotonic() - started > 600:  # pragma: no cover - a stuck client
            break
    await send({"type": "http.response.body", "body": b'"}}}', "more_body": False})
