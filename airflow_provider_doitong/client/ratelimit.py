"""Reading the ``X-RateLimit-*`` and ``Retry-After`` headers, defensively.

[A] ``X-RateLimit-Reset`` is a Unix time in seconds, but services disagree, so a value is read as
a Unix time (seconds, or milliseconds when very large) when it is large, as seconds-until when it
is small, and as an HTTP date otherwise; the one parser of these values is
:mod:`~airflow_provider_doitong.client.untrusted`, which also bounds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from airflow_provider_doitong.client.contract import (
    DAILY_LIMIT_MAX_WAIT_SECONDS,
    RATE_LIMIT_LIMIT_HEADER,
    RATE_LIMIT_REMAINING_HEADER,
    RATE_LIMIT_RESET_HEADER,
    RATE_LIMIT_WINDOW_SECONDS,
    RETRY_AFTER_HEADER,
)
from airflow_provider_doitong.client.untrusted import read_int_header, read_time_value


def parse_time_value(
    value: str | None,
    *,
    now: float,
    max_ahead: float = DAILY_LIMIT_MAX_WAIT_SECONDS,
    name: str = "time value",
) -> float | None:
    """Read a reset or retry time as a Unix time, at most ``max_ahead`` seconds from ``now``.

    See :func:`~airflow_provider_doitong.client.untrusted.read_time_value`.

    :param value: a Unix time (seconds or milliseconds), a count of seconds from now, or an HTTP date.
    :param now: the current Unix time.
    """
    return read_time_value(value, now=now, max_ahead=max_ahead, name=name)


@dataclass(frozen=True)
class RateLimitInfo:
    """What an answer's headers say about the caller's rate-limit window.

    :param limit: requests allowed per window.
    :param remaining: requests left in the window.
    :param reset_at: Unix time the window resets.
    :param retry_at: Unix time from ``Retry-After``, if sent.
    """

    limit: int | None
    remaining: int | None
    reset_at: float | None
    retry_at: float | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, now: float) -> RateLimitInfo:
        """Parse a case-insensitive header mapping.

        :param headers: the answer's headers (``requests`` and ``httpx`` both give case-insensitive ones).
        :param now: the current Unix time.
        """
        return cls(
            limit=read_int_header(headers.get(RATE_LIMIT_LIMIT_HEADER)),
            remaining=read_int_header(headers.get(RATE_LIMIT_REMAINING_HEADER)),
            # The window's reset is never more than a window away; Retry-After (the daily limit's
            # too) at most a day: the 429 it comes with bounds it further (``untrusted.cap_resume_at``).
            reset_at=parse_time_value(
                headers.get(RATE_LIMIT_RESET_HEADER),
                now=now,
                max_ahead=RATE_LIMIT_WINDOW_SECONDS,
                name=RATE_LIMIT_RESET_HEADER,
            ),
            retry_at=parse_time_value(headers.get(RETRY_AFTER_HEADER), now=now, name=RETRY_AFTER_HEADER),
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
