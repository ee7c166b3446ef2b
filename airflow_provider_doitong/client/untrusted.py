"""One parser for the values an API answer carries: each value read once, with a type and bounds.

Every reader (the sync and async clients, the triggers' shared poller, a batch's reads) goes
through here, so an answer that breaks the contract is judged the same way everywhere:

- a reset or ``Retry-After`` time is read as seconds, a Unix time in seconds or in milliseconds,
  or an HTTP date, and never lies further ahead than the limit it is about allows (a rate window,
  a day for the daily limit): an absurd value is capped and logged, never slept on;
- ``creditCost`` is a non-negative integer or unknown, never a crash after payment;
- a job's status is a string (a known one, or one the contract says to treat as still running);
  a job's other fields have their types and bounds, or are dropped with a warning;
- an answer's body is read up to :data:`~airflow_provider_doitong.client.contract.MAX_ANSWER_BYTES`.

Output URLs are judged by :func:`~airflow_provider_doitong.client.safety.check_download_url`.
"""

from __future__ import annotations

import logging
import math
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import DoitongAnswerTooLarge, DoitongProtocolError

log = logging.getLogger(__name__)

#: A number above this is a Unix time, at or below it a count of seconds (about 3 years).
EPOCH_THRESHOLD = 100_000_000.0
#: A number above this is a Unix time in milliseconds (as seconds it would be past the year 5000).
EPOCH_MS_THRESHOLD = 100_000_000_000.0
#: The longest a string field of a job may be (ids, statuses, timestamps, error codes).
MAX_FIELD_CHARS = 256
#: The longest error message kept from a job (longer ones are cut).
MAX_MESSAGE_CHARS = 2000
#: The largest ``creditCost`` or balance believed; a larger one is not a number of credits.
MAX_CREDITS = 10**12
#: Header names already warned about (each absurd header is logged once per process).
_WARNED: set[str] = set()


def _warn_once(name: str, message: str, *args: object) -> None:
    if name in _WARNED:
        log.debug(message, *args)
        return
    _WARNED.add(name)
    log.warning(message + " (further such values are logged at debug level)", *args)


def read_time_value(value: object, *, now: float, max_ahead: float, name: str = "time value") -> float | None:
    """A reset or retry time as a Unix time, never more than ``max_ahead`` seconds from ``now``.

    A number is a Unix time in milliseconds above :data:`EPOCH_MS_THRESHOLD`, a Unix time in
    seconds above :data:`EPOCH_THRESHOLD`, else seconds from now; seconds from now that exceed
    ``max_ahead`` but not ``max_ahead`` thousandths are milliseconds from now. Anything else is an
    HTTP date. A time further ahead than ``max_ahead`` is capped to it and logged (once, with the
    raw value); a time in the past is kept (the caller's backoff floor spaces the retries).

    :param value: the header's value.
    :param now: the current Unix time.
    :param max_ahead: the furthest ahead the time may be, in seconds.
    :param name: the header's name, for the log.
    :returns: ``None`` for a missing, negative, non-finite or unreadable value.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:  # "-0000" or no zone: HTTP dates are always UTC
            moment = moment.replace(tzinfo=timezone.utc)
        at = moment.timestamp()
    else:
        if not math.isfinite(number) or number < 0:
            return None
        if number > EPOCH_MS_THRESHOLD:
            at = number / 1000.0
        elif number > EPOCH_THRESHOLD:
            at = number
        elif number > max_ahead and number / 1000.0 <= max_ahead:
            at = now + number / 1000.0
        else:
            at = now + number
    if at > now + max_ahead:
        _warn_once(
            name,
            "Doitong sent %s %r, %.0fs ahead; waiting at most %.0fs instead",
            name,
            text,
            min(at - now, 1e18),
            max_ahead,
        )
        return now + max_ahead
    return at


def cap_resume_at(resume_at: float | None, *, now: float, daily: bool) -> float | None:
    """Bound a 429's resume time by what its limit allows: a rate window, or a day for the daily limit."""
    if resume_at is None:
        return None
    limit = contract.DAILY_LIMIT_MAX_WAIT_SECONDS if daily else contract.RATE_LIMIT_WINDOW_SECONDS
    return min(resume_at, now + limit)


def read_int_header(value: object) -> int | None:
    """A count from a header (``X-RateLimit-Limit``, ``-Remaining``): a non-negative number (a
    fraction is cut), at most :data:`MAX_CREDITS`, else ``None``."""
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and 0 <= number <= MAX_CREDITS else None


def read_credit_cost(value: object, *, job_id: str = "?") -> int | None:
    """A job's ``creditCost``: a non-negative integer, else unknown (``None``) with a warning.

    A digit string, a float, a negative or an enormous number is not a charge the provider can
    count; it is logged and left unknown rather than failing a job that is already paid for.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CREDITS:
        return value
    log.warning(
        "Doitong job %s: creditCost %s is not a non-negative integer; the charge is unknown",
        job_id,
        _short(value),
    )
    return None


def read_credits(value: object) -> int:
    """An account's ``credits``: a non-negative integer.

    :raises DoitongProtocolError: for anything else (a string, a bool, a negative number).
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CREDITS:
        return value
    raise DoitongProtocolError(f"the account's credits must be a non-negative integer, got {_short(value)}")


def read_status(value: object) -> tuple[JobStatus, str]:
    """A job's status, parsed, and as sent.

    An unknown string is :attr:`JobStatus.UNKNOWN` (the contract says: still running).

    :raises DoitongProtocolError: for a status that is not a string of at most :data:`MAX_FIELD_CHARS`.
    """
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise DoitongProtocolError(f"a job's status must be a non-empty string, got {_short(value)}")
    return JobStatus.parse(value), value


def _text(data: dict[str, Any], key: str, job_id: str, *, limit: int = MAX_FIELD_CHARS) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        if limit >= MAX_MESSAGE_CHARS:
            return value[:limit] + "..."
    log.warning("Doitong job %s: %s %s is not a string; ignored", job_id, key, _short(value))
    return None


def _side(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 4 * contract.MAX_SIDE:
        return value
    return None


def _duration(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def read_job(data: object) -> dict[str, Any]:
    """The fields of a job object, read with their types and bounds (the arguments of ``Job``).

    :raises DoitongProtocolError: for an object without a string id (at most
        :data:`MAX_FIELD_CHARS` characters), a status that is not a string, or a ``url`` that is
        not a string.
    """
    if not isinstance(data, dict):
        raise DoitongProtocolError(f"expected a job object with an id, got {type(data).__name__}")
    job_id = data.get("id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_FIELD_CHARS:
        raise DoitongProtocolError(f"expected a job object with a string id, got id {_short(job_id)}")
    status, raw_status = read_status(data.get("status"))
    url = data.get("url")
    if url is not None and not isinstance(url, str):
        raise DoitongProtocolError(f"Doitong job {job_id}: its url is not a string ({_short(url)})")
    error, metadata = _object(data.get("error")), _object(data.get("metadata"))
    duration = data.get("duration") if data.get("duration") is not None else metadata.get("duration")
    return {
        "id": job_id,
        "status": status,
        "raw_status": raw_status,
        "provider": _text(data, "provider", job_id) or _text(data, "service", job_id),
        "url": url or None,
        "width": _side(data.get("width")) or _side(metadata.get("width")),
        "height": _side(data.get("height")) or _side(metadata.get("height")),
        "credit_cost": read_credit_cost(data.get("creditCost"), job_id=job_id),
        "created_at": _text(data, "createdAt", job_id),
        "completed_at": _text(data, "completedAt", job_id),
        "duration": _duration(duration),
        "error_code": _text(error, "code", job_id),
        "error_message": _text(error, "message", job_id, limit=MAX_MESSAGE_CHARS),
        "metadata": dict(metadata),
    }


def _object(value: object) -> dict[str, Any]:
    """``value`` if the answer put an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class CappedBody:
    """An API answer's body, collected up to ``limit`` bytes; the clients feed it as they read.

    :param what: the request, named in the error.
    :param limit: the most bytes kept.
    """

    def __init__(self, *, what: str, limit: int = contract.MAX_ANSWER_BYTES) -> None:
        self.what = what
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def declared(self, content_length: str | None, *, status: int) -> None:
        """Refuse at once an answer whose ``Content-Length`` is over the cap."""
        if content_length and content_length.strip().isdecimal() and int(content_length) > self.limit:
            raise self._too_large(f"it declares {int(content_length)} bytes", status)

    def feed(self, chunk: bytes, *, status: int) -> None:
        """Take the next piece.

        :raises DoitongAnswerTooLarge: past the cap (the caller stops reading and closes).
        """
        self._size += len(chunk)
        if self._size > self.limit:
            raise self._too_large("more was coming", status)
        self._parts.append(chunk)

    def content(self) -> bytes:
        return b"".join(self._parts)

    def _too_large(self, detail: str, status: int) -> DoitongAnswerTooLarge:
        return DoitongAnswerTooLarge(
            f"Doitong {self.what}: the answer is larger than {self.limit} bytes ({detail}); reading stopped",
            status=status,
        )
