"""Reading the ``X-RateLimit-*`` and ``Retry-After`` headers, defensively.

[A] ``X-RateLimit-Reset`` is a Unix time in seconds, but services disagree, so a value is read as
a Unix time when it is large, as seconds-until when it is small, and as an HTTP date otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

from airflow_provider_doitong.contract import (
    RATE_LIMIT_LIMIT_HEADER,
    RATE_LIMIT_REMAINING_HEADER,
    RATE_LIMIT_RESET_HEADER,
    RETRY_AFTER_HEADER,
)

#: A number above this is a Unix time, at or below it a count of seconds (about 3 years).
_EPOCH_THRESHOLD = 100_000_000.0


def parse_time_value(value: str | None, *, now: float) -> float | None:
    """Read a reset or retry time as a Unix time.

    :param value: a Unix time, a count of seconds from now, or an HTTP date.
    :param now: the current Unix time.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # "-0000" or no zone: HTTP dates are always UTC
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if not math.isfinite(number) or number < 0:
        return None
    return number if number > _EPOCH_THRESHOLD else now + number


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class RateLimitInfo:
    """What an answer's headers say about the caller's rate-limit window.

    :param limit: requests allowed per window.
    :param remaining: requests left in the window.
    :param reset_at: Unix time the window resets.
    :param retry_at: Unix time from ``Retry-After``, if sent.
    :param observed_at: Unix time the answer was read.
    """

    limit: int | None
    remaining: int | None
    reset_at: float | None
    retry_at: float | None
    observed_at: float

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, now: float) -> RateLimitInfo:
        """Parse a case-insensitive header mapping.

        :param headers: the answer's headers (``requests`` and ``httpx`` both give case-insensitive ones).
        :param now: the current Unix time.
        """
        return cls(
            limit=_int(headers.get(RATE_LIMIT_LIMIT_HEADER)),
            remaining=_int(headers.get(RATE_LIMIT_REMAINING_HEADER)),
            reset_at=parse_time_value(headers.get(RATE_LIMIT_RESET_HEADER), now=now),
            retry_at=parse_time_value(headers.get(RETRY_AFTER_HEADER), now=now),
            observed_at=now,
        )

    @property
    def resume_at(self) -> float | None:
        """When a refused request may be tried again: ``Retry-After`` first, else the reset."""
        return self.retry_at if self.retry_at is not None else self.reset_at

    def pace_delay(self, *, now: float, min_interval: float) -> float:
        """How long a steady poller should wait before its next request.

        Spreads what is left of the window over the time left in it, and never polls faster than
        ``min_interval``.

        :param now: the current Unix time.
        :param min_interval: the shortest wait the caller accepts.
        """
        if self.remaining is None or self.reset_at is None:
            return min_interval
        until_reset = max(0.0, self.reset_at - now)
        if self.remaining <= 0:
            return max(min_interval, until_reset)
        return max(min_interval, until_reset / self.remaining)
